#!/usr/bin/env python3
"""Build a bootable amd64 disk image for LAVA-style ``deploy: images: rootfs`` jobs.

Helper of scripts/build-qemu-assets.sh, run after _initramfs.py. The result boots on
QEMU's ``pc`` machine from its first IDE disk, as a distribution image does, with no
``-kernel`` from the device or the job:

* MBR: SYSLINUX's ``mbr.bin`` and a partition table written here;
* partition 1 (FAT16, bootable): SYSLINUX (installed with the mtools-based ``syslinux``, so
  nothing is mounted), the Debian kernel and the dutlab initramfs, ``syslinux.cfg`` with
  ``root=LABEL=dutlab-root console=ttyS0``;
* partition 2 (ext2 made by ``mke2fs -d``, label ``dutlab-root``): a busybox system with
  a serial getty, ``root`` without a password, hostname ``debian`` and the prompt
  ``root@debian:~#``, the shape of the Debian image LAVA's QEMU example job expects.

The raw image is converted to qcow2 (``qemu-img``) and compressed with xz:
``disk.qcow2.xz``. Its sha256 and boot facts are added to manifest.json under ``disk``.

Host tools: syslinux, syslinux-common (mbr.bin), mtools, dosfstools, e2fsprogs,
qemu-utils, xz-utils.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from _initramfs import PROFILE as INITRAMFS_PROFILE
from _initramfs import sha256

SECTOR = 512
MIB = 1 << 20
BOOT_START_MIB = 1
BOOT_SIZE_MIB = 40  # kernel ~14 MB + initramfs ~2 MB, with room for a bigger kernel
ROOT_SIZE_MIB = 24  # busybox ~2 MB; the rest is room for tests writing files
ROOT_LABEL = "dutlab-root"
HOSTNAME = "debian"
PROMPT = "root@debian:~# "
MBR_CANDIDATES = ["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin", "/usr/share/syslinux/mbr.bin"]

SYSLINUX_CFG = f"""\
SERIAL 0 115200
DEFAULT dutlab
PROMPT 0
TIMEOUT 0
LABEL dutlab
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND root=LABEL={ROOT_LABEL} console=ttyS0,115200
"""

INITTAB = """\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
"""

RCS = f"""\
#!/bin/sh
# Early boot of the dutlab disk image: the initramfs has mounted /dev, /proc, /sys, /run.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname {HOSTNAME}
ip link set lo up
# Only warnings and worse on the console, so kernel chatter does not cut into the login.
dmesg -n 5
"""

# The initramfs's profile with a prompt like Debian's: "root@debian:~# " at home.
PROFILE = INITRAMFS_PROFILE.replace("@PROMPT@", r"\u@\h:\w\$ ")

OS_RELEASE = """\
PRETTY_NAME="dutlab busybox disk image"
NAME="dutlab"
ID=dutlab
ID_LIKE=debian
"""


def run(*argv: str | Path, **kwargs) -> None:
    try:
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        sys.exit(f"_diskimage.py: {argv[0]} is not installed")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"_diskimage.py: {' '.join(map(str, argv))} failed (exit {exc.returncode}): "
                 f"{(exc.stderr or exc.stdout).strip()[-600:]}")


def stage_rootfs(root: Path, busybox: Path) -> None:
    """The root filesystem tree: busybox and the few files a login system needs."""
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "dev", "proc", "sys", "run", "tmp",
              "mnt", "var/log", "root"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    # Each applet as a symlink, as `busybox --install -s` would do on the target.
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = root / applet
        if link.exists() or link.is_symlink() or applet == "bin/busybox":
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin/busybox", link.parent))
    files = {
        "etc/inittab": INITTAB,
        "etc/init.d/rcS": (RCS, 0o755),
        "etc/profile": PROFILE,
        "etc/hostname": HOSTNAME + "\n",
        "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n",
        # root has no password: LAVA's auto_login with a username only logs in.
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/shadow": ("root::19000:0:99999:7:::\n", 0o600),
        "etc/group": "root:x:0:\n",
        "etc/shells": "/bin/sh\n/bin/ash\n",
        "etc/issue": "dutlab disk image \\n \\l\n\n",
        "etc/os-release": OS_RELEASE,
        "etc/fstab": "",
    }
    for name, value in files.items():
        text, mode = value if isinstance(value, tuple) else (value, 0o644)
        (root / name).write_text(text)
        (root / name).chmod(mode)


def partition_entry(bootable: bool, kind: int, start: int, sectors: int) -> bytes:
    # CHS fields say "use LBA" (the maximum); SeaBIOS and SYSLINUX's MBR read LBA.
    return struct.pack("<B3sB3sII", 0x80 if bootable else 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", start, sectors)


def build_disk(raw: Path, vmlinuz: Path, initramfs: Path, busybox: Path, mbr: Path, work: Path) -> None:
    boot_start = BOOT_START_MIB * MIB
    root_start = boot_start + BOOT_SIZE_MIB * MIB
    total = root_start + ROOT_SIZE_MIB * MIB
    with open(raw, "wb") as f:
        f.truncate(total)
        f.write(mbr.read_bytes()[:440].ljust(446, b"\0"))
        f.write(partition_entry(True, 0x0E, boot_start // SECTOR, BOOT_SIZE_MIB * MIB // SECTOR))
        f.write(partition_entry(False, 0x83, root_start // SECTOR, ROOT_SIZE_MIB * MIB // SECTOR))
        f.write(b"\0" * 32 + b"\x55\xaa")

    # Partition 1: FAT16 written in place (--offset in sectors), files copied with mtools.
    run("mkfs.fat", "-F", "16", "-n", "DUTLABBOOT", "-h", str(boot_start // SECTOR),
        "--offset", str(boot_start // SECTOR), raw, str(BOOT_SIZE_MIB * 1024))
    cfg = work / "syslinux.cfg"
    cfg.write_text(SYSLINUX_CFG)
    image = f"{raw}@@{boot_start}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for source, name in [(vmlinuz, "vmlinuz"), (initramfs, "initrd.gz"), (cfg, "syslinux.cfg")]:
        run("mcopy", "-o", "-i", image, source, f"::/{name}", env=env)
    run("syslinux", "--install", "--offset", str(boot_start), raw, env=env)

    # Partition 2: ext2 from the staged tree, written at its offset (no loop device, no mount).
    tree = work / "rootfs"
    stage_rootfs(tree, busybox)
    run("mke2fs", "-q", "-F", "-t", "ext2", "-L", ROOT_LABEL, "-d", tree, "-E", f"offset={root_start}",
        raw, f"{ROOT_SIZE_MIB * 1024}k")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the amd64 assets directory (vmlinuz, initramfs, "
                    "manifest.json from _initramfs.py); disk.qcow2.xz is written there")
    ap.add_argument("--busybox-root", required=True, type=Path, help="busybox-static package unpacked")
    args = ap.parse_args(argv)

    mbr = next((Path(p) for p in MBR_CANDIDATES if Path(p).exists()), None)
    if mbr is None:
        sys.exit(f"_diskimage.py: no SYSLINUX mbr.bin (looked in {', '.join(MBR_CANDIDATES)}): "
                 "install syslinux-common")
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    with tempfile.TemporaryDirectory(prefix="dutlab-disk.") as tmp:
        work = Path(tmp)
        raw = work / "disk.raw"
        build_disk(raw, args.out / "vmlinuz", args.out / "initramfs.cpio.gz",
                   args.busybox_root / "bin" / "busybox", mbr, work)
        qcow2 = work / "disk.qcow2"
        run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2)
        run("xz", "-T0", "-6", "-f", qcow2)
        tmp_out = args.out / ".disk.qcow2.xz.tmp"
        shutil.move(work / "disk.qcow2.xz", tmp_out)

    manifest["files"]["disk.qcow2.xz"] = {"sha256": sha256(tmp_out), "size": tmp_out.stat().st_size}
    manifest["disk"] = {
        "file": "disk.qcow2.xz",
        "format": "qcow2",
        "compression": "xz",
        "image_arg": "-drive format=qcow2,file={rootfs}",
        "root_label": ROOT_LABEL,
        "login_prompt": "login:",
        "username": "root",
        "prompt": PROMPT,
        "hostname": HOSTNAME,
    }
    tmp_manifest = args.out / ".manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_out, args.out / "disk.qcow2.xz")
    os.replace(tmp_manifest, manifest_path)
    print(f"amd64: disk image {manifest['files']['disk.qcow2.xz']['size']} bytes (qcow2, xz)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
