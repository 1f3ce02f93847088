"""Image downloads: checksums, decompression, the worker cache, errors that name the URL."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import lzma
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dutlab.dispatcher.download import ImageSpec, fetch, unpack, validate_image
from dutlab.dispatcher.errors import InfrastructureError, JobError

PAYLOAD = b"dutlab image " * 50_000


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        self.server.seen.append((self.command, self.path, args[1] if len(args) > 1 else ""))  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list]]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, httpd.seen  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def get(spec: ImageSpec, tmp_path: Path, cache: bool = True) -> tuple[Path, list[str]]:
    lines: list[str] = []
    source = fetch(spec, tmp_path / "cache" if cache else None, tmp_path, lines.append, lambda: 30.0)
    (tmp_path / "out").mkdir(exist_ok=True)
    return unpack(spec, source, tmp_path / "out"), lines


@pytest.mark.parametrize("compression, suffix, compress", [
    ("gz", ".gz", gzip.compress), ("xz", ".xz", lzma.compress), ("bz2", ".bz2", bz2.compress),
    ("zstd", ".zst", lambda data: subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                                                  check=True).stdout),
    (None, "", lambda data: data),
])
def test_each_compression_unpacks_to_the_original(server: Any, tmp_path: Path, compression: str | None,
                                                  suffix: str, compress: Any) -> None:
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    url, root, _ = server
    (root / f"image{suffix}").write_bytes(compress(PAYLOAD))
    spec = ImageSpec("rootfs", f"{url}/image{suffix}", compression=compression)
    path, lines = get(spec, tmp_path)
    assert path.name == "image" and path.read_bytes() == PAYLOAD
    assert lines[0].startswith(f"downloading {url}/image{suffix} (")
    assert lines[-1].startswith(f"downloaded {url}/image{suffix}: ")


@pytest.mark.parametrize("algo, key", [("md5", "md5sum"), ("sha256", "sha256sum"), ("sha512", "sha512sum")])
def test_checksums_are_checked_and_a_mismatch_names_both(server: Any, tmp_path: Path, algo: str, key: str) -> None:
    url, root, _ = server
    (root / "k").write_bytes(PAYLOAD)
    good = hashlib.new(algo, PAYLOAD).hexdigest()
    get(ImageSpec.from_job("kernel", {"url": f"{url}/k", key: good}), tmp_path / "a")
    wrong = "0" * len(good)
    with pytest.raises(JobError) as err:
        get(ImageSpec.from_job("kernel", {"url": f"{url}/k", key: wrong}), tmp_path / "b")
    assert str(err.value) == (f"checksum mismatch for {url}/k: the job expects {algo} {wrong}, "
                              f"the downloaded file has {good}")
    assert not [p for p in (tmp_path / "b" / "cache").iterdir() if p.suffix not in (".lock",)]


def test_a_checksummed_image_is_downloaded_once(server: Any, tmp_path: Path) -> None:
    url, root, seen = server
    (root / "k").write_bytes(PAYLOAD)
    spec = ImageSpec.from_job("kernel", {"url": f"{url}/k", "sha256sum": hashlib.sha256(PAYLOAD).hexdigest()})
    get(spec, tmp_path)
    path, lines = get(spec, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert [s[:2] for s in seen] == [("GET", "/k")]
    assert "in the worker cache" in lines[0]


def test_without_a_checksum_the_cache_is_revalidated(server: Any, tmp_path: Path) -> None:
    url, root, seen = server
    (root / "k").write_bytes(PAYLOAD)
    spec = ImageSpec("kernel", f"{url}/k")
    get(spec, tmp_path)
    _, lines = get(spec, tmp_path)
    assert "not modified since cached" in lines[0]
    assert [s[2] for s in seen] == ["200", "304"]


def test_http_errors_and_refused_connections_are_infrastructure(server: Any, tmp_path: Path) -> None:
    url, _, _ = server
    with pytest.raises(InfrastructureError, match=f"downloading {url}/none failed: HTTP 404 File not found"):
        get(ImageSpec("kernel", f"{url}/none"), tmp_path)
    with pytest.raises(InfrastructureError, match="downloading http://127.0.0.1:1/x failed: Connection refused"):
        get(ImageSpec("kernel", "http://127.0.0.1:1/x"), tmp_path)


def test_file_urls_are_read_in_place_and_checked(tmp_path: Path) -> None:
    (tmp_path / "k.gz").write_bytes(gzip.compress(PAYLOAD))
    path, _ = get(ImageSpec("kernel", f"file://{tmp_path}/k.gz", compression="gz"), tmp_path)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(InfrastructureError, match="does not exist on this worker"):
        get(ImageSpec("kernel", f"file://{tmp_path}/nope"), tmp_path)


def test_a_corrupt_archive_is_a_job_error(tmp_path: Path) -> None:
    (tmp_path / "k.xz").write_bytes(b"not xz at all")
    with pytest.raises(JobError, match="is not a valid xz file"):
        get(ImageSpec("kernel", f"file://{tmp_path}/k.xz", compression="xz"), tmp_path)


def test_validation_names_the_image() -> None:
    assert validate_image(ImageSpec("kernel", "ftp://x/y", compression="rar")) == [
        "images.kernel.url 'ftp://x/y': only http, https and file URLs are supported",
        "images.kernel.compression 'rar' is not one of gz, xz, bz2, zstd, zip",
    ]
