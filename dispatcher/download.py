"""Fetch job images (http, https, file), verify checksums, decompress; a per-worker cache.

The cache lives in ``<work-dir>/cache``: one file per (URL, expected checksum), named by
sha256(url + checksum). With a checksum in the job a hit needs no network at all; without
one the entry is revalidated with ETag / Last-Modified, so a changed file is fetched again.

A ``file://`` URL reads a file of the worker, with the worker's rights (often root), for
whoever submitted the job: dutlab-worker therefore passes its ``file_roots`` and only files
under them or under the job's own folders may be named (``local_file``).
"""

from __future__ import annotations

import bz2
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import InfrastructureError, JobError

CHECKSUM_KEYS = {"md5sum": "md5", "sha256sum": "sha256", "sha512sum": "sha512"}
COMPRESSIONS = ("gz", "xz", "bz2", "zstd", "zip")
SUFFIXES = {"gz": (".gz",), "xz": (".xz",), "bz2": (".bz2",), "zstd": (".zst", ".zstd"), "zip": (".zip",)}
CHUNK = 1 << 20
PROGRESS_EVERY = 1.0  # seconds between progress lines at least


@dataclass
class ImageSpec:
    """One ``images:`` entry of a deploy block."""

    name: str
    url: str
    checksums: dict[str, str] = field(default_factory=dict)  # hashlib name -> hex digest
    compression: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_job(cls, name: str, data: dict[str, Any]) -> ImageSpec:
        checksums = {algo: str(data[key]).lower() for key, algo in CHECKSUM_KEYS.items() if data.get(key)}
        return cls(name=name, url=str(data.get("url", "")), checksums=checksums,
                   compression=data.get("compression"), headers=dict(data.get("headers") or {}))

    @property
    def cache_key(self) -> str:
        checksum = ",".join(f"{a}:{v}" for a, v in sorted(self.checksums.items()))
        return hashlib.sha256((self.url + checksum).encode()).hexdigest()

    @property
    def scheme(self) -> str:
        return urllib.parse.urlsplit(self.url).scheme


Log = Callable[[str], Any]


def validate_image(spec: ImageSpec) -> list[str]:
    problems = []
    if spec.scheme not in ("http", "https", "file"):
        problems.append(f"images.{spec.name}.url {spec.url!r}: only http, https and file URLs are supported")
    if spec.compression and spec.compression not in COMPRESSIONS:
        problems.append(f"images.{spec.name}.compression {spec.compression!r} is not one of "
                        f"{', '.join(COMPRESSIONS)}")
    return problems


def local_file(url: str, roots: Sequence[Path] | None) -> Path:
    """The file a file:// URL names, symlinks resolved; a JobError naming the URL and the
    allowed folders when it lies outside `roots` (None: anywhere, as for dutlab-run by hand)."""
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if roots is None:
        return path
    real = path.resolve()
    if any(real.is_relative_to(root.resolve()) for root in roots):
        return real
    allowed = ", ".join(str(root) for root in roots)
    raise JobError(f"{url}: this worker serves file:// URLs only from {allowed} (its file_roots setting "
                   "and the job's own folders); use an http(s) URL, or ask the worker's admin to add the "
                   "folder to file_roots")


def fetch(spec: ImageSpec, cache_dir: Path | None, scratch: Path, log: Log,
          timeout: Callable[[], float], file_roots: Sequence[Path] | None = None) -> Path:
    """The image as published (still compressed), verified; from the cache when possible.

    :param timeout: returns the seconds left for this download (socket timeout bound).
    :param file_roots: the folders file:// URLs may name (None: any).
    """
    if spec.scheme == "file":
        path = local_file(spec.url, file_roots)
        if not path.is_file():
            raise InfrastructureError(f"downloading {spec.url} failed: {path} does not exist on this worker")
        _verify(spec, _digests(path, spec.checksums))
        return path
    if cache_dir is None:
        target = scratch / f"{spec.name}.download"
        _verify(spec, _http_get(spec, target, log, timeout, {}))
        return target
    return _cached(spec, cache_dir, log, timeout)


def _cached(spec: ImageSpec, cache_dir: Path, log: Log, timeout: Callable[[], float]) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / spec.cache_key
    meta_path = entry.with_suffix(".json")
    with _locked(entry.with_suffix(".lock")):
        meta = json.loads(meta_path.read_text()) if meta_path.exists() and entry.exists() else None
        if meta and spec.checksums:
            log(f"{spec.url}: in the worker cache ({entry.name[:12]}), not downloading again")
            return entry
        validators = {}
        if meta:
            validators = {k: v for k, v in (("If-None-Match", meta.get("etag")),
                                            ("If-Modified-Since", meta.get("last_modified"))) if v}
        part = entry.with_suffix(f".part{os.getpid()}")
        digests = _http_get(spec, part, log, timeout, validators)
        if digests is None:
            log(f"{spec.url}: not modified since cached ({entry.name[:12]}), not downloading again")
            return entry
        try:
            _verify(spec, digests)
        except JobError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, entry)
        meta_path.write_text(json.dumps({"url": spec.url, "checksums": spec.checksums, **digests.pop("_http")}))
        return entry


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two jobs on one worker wanting the same kernel: the second waits and then hits.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _http_get(spec: ImageSpec, target: Path, log: Log, timeout: Callable[[], float],
              validators: dict[str, str]) -> dict[str, Any] | None:
    """Download to ``target``; return digests (+ ``_http`` validators), None on 304."""
    # imported here: urllib.request brings http.client, email and ssl (20 ms), which a job
    # with file:// images or a cache hit never needs
    import urllib.error
    import urllib.request

    request = urllib.request.Request(spec.url, headers={**spec.headers, **validators})
    try:
        response = urllib.request.urlopen(request, timeout=max(1.0, min(timeout(), 60.0)))  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and validators:
            return None
        raise InfrastructureError(f"downloading {spec.url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror  # "Connection refused", not "[Errno 111] Connection refused"
        raise InfrastructureError(f"downloading {spec.url} failed: {reason}") from None
    with response:
        size = int(response.headers.get("Content-Length") or 0)
        log(f"downloading {spec.url} ({_mb(size) if size else 'size unknown'})")
        digests = _copy_with_progress(response, target, size, spec, log)
        digests["_http"] = {"etag": response.headers.get("ETag"),
                            "last_modified": response.headers.get("Last-Modified")}
    return digests


def _copy_with_progress(source: IO[bytes], target: Path, size: int, spec: ImageSpec, log: Log) -> dict[str, Any]:
    hashes = {algo: hashlib.new(algo) for algo in spec.checksums}
    progress = _Progress(size, log)
    with open(target, "wb") as out:
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                out.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
                progress.update(len(chunk))
        except OSError as exc:
            raise InfrastructureError(f"downloading {spec.url} failed after {_mb(progress.done)}: {exc}") from None
    if size and progress.done != size:
        raise InfrastructureError(f"downloading {spec.url} failed: got {progress.done} of {size} bytes")
    elapsed = max(time.monotonic() - progress.started, 1e-6)
    log(f"downloaded {spec.url}: {_mb(progress.done)} in {elapsed:.1f} s ({progress.done / elapsed / 1e6:.1f} MB/s)")
    return {algo: h.hexdigest() for algo, h in hashes.items()}


class _Progress:
    """A progress line per 10 % (or per 10 MB when the size is unknown), at most one a second."""

    def __init__(self, size: int, log: Log) -> None:
        self.size, self.log = size, log
        self.done = 0
        self.started = self.last = time.monotonic()
        self.reported_step = 0

    def update(self, count: int) -> None:
        self.done += count
        step = self.done * 10 // self.size if self.size else self.done // 10_000_000
        now = time.monotonic()
        if step > self.reported_step and now - self.last >= PROGRESS_EVERY:
            self.reported_step, self.last = step, now
            percent = f"{self.done * 100 // self.size:3d} % " if self.size else ""
            self.log(f"progress {percent}({_mb(self.done)})")


def _digests(path: Path, checksums: dict[str, str]) -> dict[str, str]:
    hashes = {algo: hashlib.new(algo) for algo in checksums}
    if hashes:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                for h in hashes.values():
                    h.update(chunk)
    return {algo: h.hexdigest() for algo, h in hashes.items()}


def _verify(spec: ImageSpec, digests: dict[str, Any]) -> None:
    for algo, expected in spec.checksums.items():
        if digests[algo] != expected:
            raise JobError(f"checksum mismatch for {spec.url}: the job expects {algo} {expected}, "
                           f"the downloaded file has {digests[algo]}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# -- decompression ---------------------------------------------------------------------------

_OPENERS: dict[str, Callable[[Path], IO[bytes]]] = {
    "gz": lambda p: gzip.open(p, "rb"),
    "xz": lambda p: lzma.open(p, "rb"),
    "bz2": lambda p: bz2.open(p, "rb"),
}


def unpack(spec: ImageSpec, source: Path, dest_dir: Path) -> Path:
    """A private, uncompressed copy of ``source`` in ``dest_dir`` (QEMU may write to it)."""
    name = Path(urllib.parse.urlsplit(spec.url).path).name or spec.name
    for suffix in SUFFIXES.get(spec.compression or "", ()):
        name = name.removesuffix(suffix)
    target = dest_dir / spec.name / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _decompress(spec.compression, source, target)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, subprocess.CalledProcessError) as exc:
        raise JobError(f"{spec.url} is not a valid {spec.compression} file: {exc}") from None
    return target


def _decompress(compression: str | None, source: Path, target: Path) -> None:
    if not compression:
        shutil.copyfile(source, target)
    elif compression in _OPENERS:
        with _OPENERS[compression](source) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    elif compression == "zstd":
        if shutil.which("zstd") is None:
            raise InfrastructureError("zstd compressed images need the zstd program on this worker")
        with open(target, "wb") as out:
            subprocess.run(["zstd", "-dc", str(source)], stdout=out, stderr=subprocess.PIPE, check=True)
    elif compression == "zip":
        with zipfile.ZipFile(source) as archive, archive.open(archive.namelist()[0]) as src, \
                open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
