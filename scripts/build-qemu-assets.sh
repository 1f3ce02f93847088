#!/usr/bin/env bash
# Build the dutlab QEMU test assets (kernel + busybox initramfs) from Debian
# packages only. See docs/qemu-assets.md.
#
#   scripts/build-qemu-assets.sh [--arch amd64|arm64|all] [--dest DIR] [--force]
#                                [--no-host-tools]
#
# Output: DIR/<arch>/{vmlinuz,initramfs.cpio.gz,manifest.json}, and for amd64 a
# bootable disk image DIR/amd64/disk.qcow2.xz (SYSLINUX + busybox root), DIR defaulting
# to ${DUTLAB_ASSETS:-/var/cache/dutlab/assets}. Nothing is installed into the
# host from the kernel or busybox packages: they are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` in a temporary directory.
# Host tools (qemu-system-*, ipxe-qemu, e2fsprogs, and for the amd64 disk image
# syslinux, mtools, dosfstools, qemu-utils, xz-utils; python3) are installed only
# when missing (all but python3 not with --no-host-tools).
# A stamp keyed by the package versions and this script makes a second run a
# no-op (well under a second).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELPER="$HERE/_initramfs.py"
KMOD_HELPER="$HERE/_kmodules.py"
DISK_HELPER="$HERE/_diskimage.py"

ARCH=all
DEST="${DUTLAB_ASSETS:-/var/cache/dutlab/assets}"
FORCE=0
HOST_TOOLS=1

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH="${2:?--arch needs a value}"; shift 2 ;;
        --arch=*) ARCH="${1#*=}"; shift ;;
        --dest) DEST="${2:?--dest needs a value}"; shift 2 ;;
        --dest=*) DEST="${1#*=}"; shift ;;
        --force) FORCE=1; shift ;;
        --no-host-tools) HOST_TOOLS=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-qemu-assets: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

case "$ARCH" in
    all) ARCHES=(amd64 arm64) ;;
    amd64|arm64) ARCHES=("$ARCH") ;;
    *) echo "build-qemu-assets: --arch must be amd64, arm64 or all, not '$ARCH'" >&2; exit 2 ;;
esac

# Kernel meta-packages per arch, first one available wins. The cloud flavours
# are small and boot on QEMU's pc / virt machines.
kernel_meta() {
    case "$1" in
        amd64) echo "linux-image-cloud-amd64 linux-image-amd64" ;;
        arm64) echo "linux-image-cloud-arm64 linux-image-arm64" ;;
    esac
}
qemu_pkg() { case "$1" in amd64) echo qemu-system-x86 ;; arm64) echo qemu-system-arm ;; esac; }
qemu_bin() { case "$1" in amd64) echo qemu-system-x86_64 ;; arm64) echo qemu-system-aarch64 ;; esac; }

log() { echo "build-qemu-assets: $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "'$*' needs root (run as root or configure sudo)"; fi
}

# Run an apt/dpkg command, retrying while another process holds the dpkg/apt lock.
with_lock_retry() {
    local out rc i
    for i in $(seq 1 120); do
        set +e
        out="$("$@" 2>&1)"; rc=$?
        set -e
        if [ $rc -eq 0 ]; then [ -n "$out" ] && printf '%s\n' "$out" >&2; return 0; fi
        if printf '%s' "$out" | grep -qiE 'could not get lock|unable to lock|is another process using it|dpkg frontend lock'; then
            [ "$i" -eq 1 ] && log "apt/dpkg is locked by another process, waiting..."
            sleep 5
            continue
        fi
        printf '%s\n' "$out" >&2
        return $rc
    done
    die "apt/dpkg lock still held after 10 minutes: $*"
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    log "apt-get update"
    with_lock_retry as_root apt-get update -q || log "warning: apt-get update reported errors, continuing"
    APT_UPDATED=1
}

apt_install() {
    log "apt-get install $*"
    with_lock_retry as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

NATIVE="$(dpkg --print-architecture)"

# "name:arch candidate-version" for each package apt knows (one apt-cache call:
# each costs ~1 s where apt keeps no binary cache, as in Docker images).
policy() {
    apt-cache policy "$@" 2>/dev/null | awk -v native="$NATIVE" '
        /^[^ ]/ { p = $0; sub(/:$/, "", p); if (p !~ /:/) p = p ":" native; next }
        /^  Candidate:/ { if ($2 != "(none)") print p, $2 }'
}

# Fills KPKG[arch] KVER[arch] BVER[arch] for the given arches from the apt
# lists, following the kernel meta-package to the concrete linux-image package.
declare -A KPKG KVER BVER
resolve_versions() {
    local -A cand=() meta=() dep=()
    local q=() metas=() a m name ver
    for a in "$@"; do
        for m in $(kernel_meta "$a"); do q+=("$m:$a"); done
        q+=("busybox-static:$a")
    done
    while read -r name ver; do cand[$name]=$ver; done < <(policy "${q[@]}")
    for a in "$@"; do
        BVER[$a]="${cand[busybox-static:$a]:-}"
        [ -n "${BVER[$a]}" ] || return 1
        for m in $(kernel_meta "$a"); do
            if [ -n "${cand[$m:$a]:-}" ]; then meta[$a]="$m:$a"; metas+=("$m:$a"); break; fi
        done
        [ -n "${meta[$a]:-}" ] || return 1
    done
    while read -r name ver; do dep[$name]=$ver; done < <(
        apt-cache depends "${metas[@]}" 2>/dev/null | awk -v native="$NATIVE" '
            function q(n) { return (n ~ /:/) ? n : n ":" native }
            /^[^ ]/ { p = q($1); next }
            /^  Depends: linux-image-/ && !(p in seen) { seen[p] = 1; print p, q($2) }')
    q=()
    for a in "$@"; do
        [ -n "${dep[${meta[$a]}]:-}" ] || return 1
        q+=("${dep[${meta[$a]}]}")
    done
    cand=()
    while read -r name ver; do cand[$name]=$ver; done < <(policy "${q[@]}")
    for a in "$@"; do
        name="${dep[${meta[$a]}]}"
        KPKG[$a]="${name%:*}"
        KVER[$a]="${cand[$name]:-}"
        [ -n "${KVER[$a]}" ] || return 1
    done
}

ensure_foreign_arch() {
    local a="$1"
    [ "$a" = "$(dpkg --print-architecture)" ] && return 0
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        log "dpkg --add-architecture $a"
        with_lock_retry as_root dpkg --add-architecture "$a"
        APT_UPDATED=0
        apt_update
    fi
}

# The disk image is built for amd64 only (SYSLINUX boots PC BIOS machines).
wants_disk() { local a; for a in "${ARCHES[@]}"; do [ "$a" = amd64 ] && return 0; done; return 1; }

ensure_host_tools() {
    local need=() a
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
        || die "this script needs a Debian-like host with apt-get and dpkg-deb"
    command -v "${PYTHON:-python3}" >/dev/null 2>&1 || need+=(python3)
    command -v flock >/dev/null 2>&1 || need+=(util-linux)
    if [ "$HOST_TOOLS" -eq 1 ]; then
        command -v mke2fs >/dev/null 2>&1 || need+=(e2fsprogs)
        for a in "${ARCHES[@]}"; do
            command -v "$(qemu_bin "$a")" >/dev/null 2>&1 || need+=("$(qemu_pkg "$a")")
        done
        # QEMU's default NIC wants its option ROM (pc: e1000, virt: virtio-net).
        [ -d /usr/lib/ipxe/qemu ] || need+=(ipxe-qemu)
        if wants_disk; then
            for t in syslinux:syslinux mcopy:mtools mkfs.fat:dosfstools qemu-img:qemu-utils xz:xz-utils; do
                command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
            done
            [ -e /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux-common)
        fi
    fi
    if [ ${#need[@]} -gt 0 ]; then
        apt_update
        apt_install "${need[@]}"
    fi
}

ensure_host_tools
PYTHON="${PYTHON:-python3}"
SELF_HASH="$(cat "${BASH_SOURCE[0]}" "$HELPER" "$KMOD_HELPER" "$DISK_HELPER" | sha256sum | cut -d' ' -f1)"
CLEANUP=()
cleanup() { local d; for d in "${CLEANUP[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9   # one builder at a time per destination

# Cheap key of "nothing changed since the last build": apt lists, dpkg
# architectures, this script and its helper.
lists_key() {
    { dpkg --print-foreign-architectures
      stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true
      echo "$SELF_HASH"; } | sha256sum | cut -d' ' -f1
}

built() {
    local out="$DEST/$1"
    [ -s "$out/.stamp" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/manifest.json" ] \
        && { [ "$1" != amd64 ] || [ -s "$out/disk.qcow2.xz" ]; }
}

build_arch() {
    local a="$1" out="$DEST/$1" kpkg="${KPKG[$1]}" kver="${KVER[$1]}" bver="${BVER[$1]}" stamp tmp
    stamp="$(printf '%s\n' "arch=$a" "$kpkg=$kver" "busybox-static=$bver" "script=$SELF_HASH" \
             | sha256sum | cut -d' ' -f1)"
    if [ "$FORCE" -eq 0 ] && built "$a" && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
        log "$a: up to date ($kpkg $kver, busybox-static $bver) in $out"
        lists_key > "$out/.lists-key"
        return 0
    fi

    log "$a: building from $kpkg $kver and busybox-static $bver"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/dutlab-qemu-assets.XXXXXX")"
    CLEANUP+=("$tmp")
    # apt-get download drops privileges to _apt when that user may write here
    if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    (cd "$tmp" && with_lock_retry apt-get download -q "$kpkg:$a=$kver" "busybox-static:$a=$bver")
    mkdir -p "$tmp/kernel" "$tmp/busybox"
    dpkg-deb -x "$tmp"/linux-image-*_"$a".deb "$tmp/kernel"
    dpkg-deb -x "$tmp"/busybox-static_*_"$a".deb "$tmp/busybox"
    rm -f "$out/.stamp" "$out/.lists-key"
    "$PYTHON" "$HELPER" --arch "$a" --kernel-root "$tmp/kernel" --busybox-root "$tmp/busybox" \
        --out "$out" --package "$kpkg=$kver:$a" --package "busybox-static=$bver:$a" --stamp "$stamp"
    if [ "$a" = amd64 ]; then
        "$PYTHON" "$DISK_HELPER" --out "$out" --busybox-root "$tmp/busybox"
    fi
    echo "$stamp" > "$out/.stamp"
    lists_key > "$out/.lists-key"
    rm -rf "$tmp"
    log "$a: done: $out"
}

# Fast path: same apt lists and same script as at the last build: nothing to do.
TODO=()
KEY="$(lists_key)"
for a in "${ARCHES[@]}"; do
    if [ "$FORCE" -eq 0 ] && built "$a" && [ "$(cat "$DEST/$a/.lists-key" 2>/dev/null)" = "$KEY" ]; then
        log "$a: up to date in $DEST/$a"
    else
        TODO+=("$a")
    fi
done
[ ${#TODO[@]} -gt 0 ] || exit 0

for a in "${TODO[@]}"; do ensure_foreign_arch "$a"; done
if ! resolve_versions "${TODO[@]}"; then
    APT_UPDATED=0
    apt_update
    resolve_versions "${TODO[@]}" \
        || die "could not find the kernel (one of: $(for a in "${TODO[@]}"; do kernel_meta "$a"; done)) or busybox-static for ${TODO[*]} in the apt lists"
fi
for a in "${TODO[@]}"; do
    build_arch "$a"
done
