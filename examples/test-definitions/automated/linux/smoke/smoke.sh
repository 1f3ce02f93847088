#!/bin/sh
# Smoke test: run each command of a comma-separated list; a case per command, named by
# its first word, passes when the command exits 0.
. ../../lib/sh-test-lib

SKIP_INSTALL="false"
TESTS="pwd, uname -a, ip a, free, df, ps"

usage() {
    echo "Usage: $0 [-s true|false] [-t \"cmd1, cmd2 args, ...\"]" >&2
    exit 1
}

while getopts "s:t:h" opt; do
    case "$opt" in
        s) SKIP_INSTALL="$OPTARG" ;;
        t) TESTS="$OPTARG" ;;
        *) usage ;;
    esac
done

create_out_dir "${OUTPUT}"
install_deps "iproute2 procps" "${SKIP_INSTALL}"

old_ifs="$IFS"
IFS=","
set -- $TESTS
IFS="$old_ifs"
for cmd in "$@"; do
    cmd=$(echo "$cmd" | sed 's/^ *//; s/ *$//')
    [ -n "$cmd" ] || continue
    name=${cmd%% *}
    echo "=== $cmd"
    sh -c "$cmd"
    check_return "$name"
done
