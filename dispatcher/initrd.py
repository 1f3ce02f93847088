"""Ramdisks for bootloaders: u-boot's image header, and kernel modules as an extra cpio archive.

A u-boot legacy image is a 64-byte header (big-endian, starting with the magic 0x27051956)
followed by the payload; ``mkimage -T ramdisk -C none`` makes one, and ``bootm``/``booti``
then read the ramdisk's size from it. dutlab never unpacks a ramdisk: it appends archives to
it (overlay.py), as the kernel unpacks concatenated cpio archives in order, so a ramdisk
keeps the compression it was published with.
"""

from __future__ import annotations

import io
import shlex
import stat
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from .errors import InfrastructureError, JobError
from .overlay import cpio_entry

UBOOT_MAGIC = 0x27051956
UBOOT_HEADER_SIZE = 64
#: dutlab/LAVA architecture names -> mkimage -A names
MKIMAGE_ARCH = {
    "arm64": "arm64", "aarch64": "arm64", "arm": "arm", "armhf": "arm", "armel": "arm", "armv7": "arm",
    "amd64": "x86_64", "x86_64": "x86_64", "i386": "x86", "riscv64": "riscv", "riscv32": "riscv",
    "mips": "mips", "mipsel": "mips", "mips64": "mips64", "mips64el": "mips64",
    "ppc": "powerpc", "ppc64": "powerpc", "ppc64le": "powerpc", "powerpc": "powerpc",
}


def has_uboot_header(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return len(head) == 4 and int.from_bytes(head, "big") == UBOOT_MAGIC


def strip_uboot_header(source: Path, target: Path, what: str) -> None:
    """``target`` = the payload of the u-boot image ``source``; JobError when it is not one."""
    if not has_uboot_header(source):
        with open(source, "rb") as handle:
            head = handle.read(4)
        raise JobError(f"{what} has header: u-boot, but it does not start with u-boot's image magic 0x27051956 "
                       f"(it starts with 0x{head.hex() or 'nothing'}): remove header: u-boot for a plain ramdisk")
    with open(source, "rb") as src, open(target, "wb") as out:
        src.seek(UBOOT_HEADER_SIZE)
        while chunk := src.read(1 << 20):
            out.write(chunk)


def add_uboot_header(source: Path, target: Path, arch: str) -> None:
    """``target`` = ``source`` wrapped as a u-boot ramdisk image for ``arch`` (a mkimage -A name)."""
    argv = ["mkimage", "-A", arch, "-T", "ramdisk", "-C", "none", "-d", str(source), str(target)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InfrastructureError("mkimage is missing on this worker: install u-boot-tools "
                                  "(the device adds a u-boot header to ramdisks)") from None
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-400:]
        raise InfrastructureError(f"{shlex.join(argv)} failed (exit code {proc.returncode}): {output}")


def mkimage_arch(arch: str) -> str:
    """The mkimage -A name of a dutlab architecture ('' when unknown)."""
    return MKIMAGE_ARCH.get(arch, "")


def tar_to_cpio(tarball: Path, what: str) -> bytes:
    """A newc cpio archive of a tarball's members (a modules tarball: ``lib/modules/<version>/...``).

    Top-level directories are left out: they come from the ramdisk itself, and a directory
    entry for ``lib`` would replace a ``/lib`` symlink (usrmerge) with an empty directory.
    """
    out = io.BytesIO()
    written: set[str] = set()
    try:
        with tarfile.open(tarball, "r:*") as archive:
            for member in archive:
                name = _member_name(member.name, what)
                if not name or name in written:
                    continue
                _parents(out, name, written)
                entry = _entry(archive, member)
                if entry is None:
                    continue
                mode, data = entry
                if stat.S_ISDIR(mode) and "/" not in name:
                    continue
                cpio_entry(out, len(written) + 1, name, mode, data)
                written.add(name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise JobError(f"{what} is not a usable tar archive: {exc}") from None
    cpio_entry(out, 0, "TRAILER!!!", 0, b"")
    return out.getvalue()


def _member_name(name: str, what: str) -> str:
    parts = [part for part in PurePosixPath(name).parts if part not in ("/", ".")]
    if ".." in parts:
        raise JobError(f"{what} has a member outside its root ({name!r}): refusing to install it")
    return "/".join(parts)


def _parents(out: io.BytesIO, name: str, written: set[str]) -> None:
    """Directory entries for parents the tarball did not list (below the top level)."""
    parts = name.split("/")[:-1]
    for depth in range(2, len(parts) + 1):
        parent = "/".join(parts[:depth])
        if parent not in written:
            cpio_entry(out, len(written) + 1, parent, stat.S_IFDIR | 0o755, b"")
            written.add(parent)


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[int, bytes] | None:
    permissions = member.mode & 0o7777
    if member.isdir():
        return stat.S_IFDIR | permissions, b""
    if member.issym():
        return stat.S_IFLNK | 0o777, member.linkname.encode()
    if member.isfile() or member.islnk():  # a hard link becomes a copy
        handle = archive.extractfile(member)
        return (stat.S_IFREG | permissions, handle.read()) if handle is not None else None
    return None  # device nodes and fifos have no place in a modules tarball
