#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian 12 machine (run as root):
# Debian packages, the Python venv with dutlab and its test tools, and the QEMU test assets.
# Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DUTLAB_VENV:-$ROOT/.venv}"
# one place for the QEMU test kernel/initramfs: examples and the shipped health check point here
export DUTLAB_ASSETS="${DUTLAB_ASSETS:-/var/cache/dutlab/assets}"

APT_PACKAGES=(
  qemu-system-x86 qemu-system-arm qemu-utils      # devices
  busybox-static cpio xz-utils zstd bzip2 gzip    # QEMU test assets and image decompression
  e2fsprogs                                       # mke2fs -d: the test overlay drive, built without root
  syslinux syslinux-common mtools dosfstools      # the bootable amd64 disk image (LAVA's qcow2 job form)
  ser2net dnsmasq telnet tftp-hpa isc-dhcp-client # lab plumbing and its probes
  pdudaemon u-boot-qemu u-boot-tools              # the emulated u-boot board: PDU, firmware, mkimage
  postgresql redis-server                         # the scale backends, tested in CI
  ngircd                                          # the IRC server of the notification tests
  lava-coordinator                                # LAVA's own coordinator: the compatibility test (not started)
  chromium chromium-driver                        # the browser tests (Selenium drives /usr/bin/chromedriver)
  slapd ldap-utils                                # the LDAP server of the login tests
  git iproute2 systemd python3-apt make curl      # from: git tests, netns, systemd-analyze, Ansible apt, demo
  logrotate                                       # the roles' log rotation, checked with logrotate -d
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  # Debian starts a daemon when its package is installed (slapd, ngircd, redis, PostgreSQL...);
  # the tests and the demo start their own on free ports and stop them, so a policy-rc.d that
  # refuses service starts keeps anything from outliving them. An admin's own policy is kept.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# dutlab setup.sh: no daemon starts while packages install\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if grep -q "dutlab setup.sh" "$policy" 2>/dev/null; then rm -f "$policy"; trap - EXIT; fi
fi

# Debian's pdudaemon has no client; dutlab's pduclient (the pdudaemon role installs the same file)
# lets device dictionaries say `pduclient --daemon ... --command on` as LAVA labs do
PDUCLIENT=/usr/local/bin/pduclient
client="$(printf '#!/usr/bin/python3\n'; cat collection/roles/pdudaemon/files/pduclient.py)"
if [ "$(cat "$PDUCLIENT" 2>/dev/null)" != "$client" ]; then
  if [ -e "$PDUCLIENT" ] && ! grep -q "dutlab" "$PDUCLIENT"; then
    echo "setup: $PDUCLIENT is not dutlab's: left alone"
  else
    printf '%s\n' "$client" > "$PDUCLIENT" && chmod 0755 "$PDUCLIENT"
  fi
fi

# ansible-core >= 2.20 needs Python 3.12; pyenv ships it on these machines. Fall back to what exists.
pick_python() {
  local c
  for c in "${DUTLAB_PYTHON:-}" "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)" \
           "$(command -v python3.12 || true)" "$(command -v python3 || true)"; do
    if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "setup: no Python >= 3.11 found" >&2; exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)"
  echo "setup: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dutlab-setup"
want="$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[postgres,redis,ansible,test]"
  echo "$want" > "$stamp"
fi

# the QEMU kernel + busybox initramfs, built from Debian packages by our own script
if [ -x scripts/build-qemu-assets.sh ]; then
  scripts/build-qemu-assets.sh --arch "${DUTLAB_ASSET_ARCHES:-all}"
fi
echo "setup: done (venv: $VENV)"
