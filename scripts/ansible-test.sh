#!/usr/bin/env bash
# ansible-test for the collection in collection/: ansible-test needs the collection at
# .../ansible_collections/<namespace>/<name> as a real directory (it uses the physical cwd, so the
# ansible_collections/dutlab/lab symlink does not do), hence a staged copy.
#
#   scripts/ansible-test.sh sanity --python 3.12
#   scripts/ansible-test.sh units --venv --python 3.12
#
# Sanity builds its own virtualenvs and bootstraps pip with a get-pip script from a host this
# machine cannot reach; an offline stand-in (ensurepip, then pip from PyPI) is put in its cache.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${DUTLAB_VENV:-$ROOT/.venv}/bin/python"
export PATH="$(dirname "$PY"):$PATH"

read -r NS NAME < <("$PY" - "$ROOT/galaxy.yml" <<'PY'
import sys, yaml
meta = yaml.safe_load(open(sys.argv[1]))
print(meta["namespace"], meta["name"])
PY
)
# outside the checkout: inside it, ansible-test would list files with git, which ignores the stage
STAGE_ROOT="${ANSIBLE_TEST_STAGE:-${TMPDIR:-/tmp}/dutlab-ansible-test-$(printf %s "$ROOT" | md5sum | cut -c1-8)}"
DEST="$STAGE_ROOT/ansible_collections/$NS/$NAME"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -rL "$ROOT/collection" "$DEST"     # -L: galaxy.yml, README.md, LICENSE, CHANGELOG.md are links
rm -rf "$DEST/tests/output"

# the pip version ansible-test bootstraps, read from the installed ansible-test
REQS="$("$PY" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py"
PIPV=$(grep -ho "pip='[0-9.]*'" "$REQS" | head -1 | tr -dc '0-9.')
CACHE="${HOME}/.ansible/test/cache"
mkdir -p "$CACHE"
STANDIN="$CACHE/get_pip_${PIPV//./_}.py"
[ -f "$STANDIN" ] || cat > "$STANDIN" <<'PY'
# offline stand-in for get-pip.py (written by dutlab's scripts/ansible-test.sh)
import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args)
PY

cd "$DEST"
rc=0
ansible-test "$@" || rc=$?
mkdir -p "$ROOT/tests/output"
cp -r "$DEST/tests/output/." "$ROOT/tests/output/" 2>/dev/null || true
exit $rc
