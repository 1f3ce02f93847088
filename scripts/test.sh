#!/usr/bin/env bash
# The whole test suite: setup, then pytest on SQLite + SqliteHuey (everything) and, alongside it,
# the server tests again on PostgreSQL + Redis (they share nothing with the first run: their own
# databases, queue and temporary folders; most of the first run waits on QEMU) followed by
# tests/ansible. Arguments (pytest's) run them in one SQLite stream beside the PostgreSQL one. Starts
# PostgreSQL/Redis only when they are not running and stops exactly what it started.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DUTLAB_ASSETS="${DUTLAB_ASSETS:-/var/cache/dutlab/assets}"
scripts/setup.sh || exit 1
PY="${DUTLAB_VENV:-$ROOT/.venv}/bin/python"

started_pg=""; redis_pid=""; pg_pid=""
pg_run="$(mktemp -d /tmp/dutlab-pg-tests.XXXXXX)"
cleanup() {
  if [ -n "$pg_pid" ]; then kill -- "-$pg_pid" 2>/dev/null; wait "$pg_pid" 2>/dev/null; fi
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  rm -rf "$pg_run"
  if [ -n "$started_pg" ]; then pg_ctlcluster "$started_pg" main stop || true; fi
}
trap cleanup EXIT

# PostgreSQL: the Debian cluster, a role for the tests (each test creates its own database)
PG_VER=$(pg_lsclusters -h 2>/dev/null | awk '$2=="main"{print $1; exit}')
if [ -n "$PG_VER" ] && ! pg_lsclusters -h | awk '$2=="main"' | grep -q online; then
  pg_ctlcluster "$PG_VER" main start && started_pg="$PG_VER"
fi
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='dutlab_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE dutlab_test LOGIN CREATEDB PASSWORD 'dutlab_test'\""
# Redis on a port of our own, no persistence: nothing outlives the run
REDIS_PORT="${DUTLAB_TEST_REDIS_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >/tmp/dutlab-test-redis.log 2>&1 &
redis_pid=$!

rc=0
# Two streams, so the suite takes about half as long on two cores: stream B runs the server tests
# on PostgreSQL + Redis, then (a whole run only) tests/ansible on SQLite; stream A runs everything
# else on SQLite. Each has its own temp folders; stream B is its own process group (set -m), so
# the cleanup can stop all of it.
split=""; [ $# -eq 0 ] && split=1
set -m
(DUTLAB_TEST_DATABASE="postgresql://dutlab_test:dutlab_test@127.0.0.1:5432/postgres" \
 DUTLAB_TEST_QUEUE="redis://127.0.0.1:$REDIS_PORT/0" \
   "$PY" -m pytest -m "backend and not qemu and not ansible" -p no:cacheprovider --durations=15 \
   --basetemp "$pg_run/tmp" "$@" >"$pg_run/log" 2>&1; echo $? >"$pg_run/rc"
 if [ -n "$split" ]; then
   "$PY" -m pytest tests/ansible -p no:cacheprovider --durations=15 --basetemp "$pg_run/ansible-tmp" \
     >"$pg_run/ansible-log" 2>&1; echo $? >"$pg_run/ansible-rc"
 fi) &
pg_pid=$!
set +m
if [ -n "$split" ]; then
  echo "== tests on SQLite + SqliteHuey but tests/ansible (PostgreSQL + Redis, then tests/ansible, go on alongside) =="
  "$PY" -m pytest --durations=25 --ignore=tests/ansible || rc=$?
else
  echo "== tests on SQLite + SqliteHuey (the PostgreSQL + Redis run goes on alongside) =="
  "$PY" -m pytest --durations=25 "$@" || rc=$?
fi
wait "$pg_pid"; pg_pid=""
echo "== server tests on PostgreSQL + Redis =="
cat "$pg_run/log"
pg_rc="$(cat "$pg_run/rc" 2>/dev/null || echo 1)"
[ "$pg_rc" = 0 ] || rc=$((rc ? rc : pg_rc))
if [ -n "$split" ]; then
  echo "== tests/ansible on SQLite =="
  cat "$pg_run/ansible-log"
  ansible_rc="$(cat "$pg_run/ansible-rc" 2>/dev/null || echo 1)"
  [ "$ansible_rc" = 0 ] || rc=$((rc ? rc : ansible_rc))
fi
echo "== ruff =="
"$PY" -m ruff check . || rc=$((rc ? rc : $?))
exit $rc
