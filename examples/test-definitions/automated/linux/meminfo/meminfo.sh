#!/bin/sh
# meminfo: one measured case per /proc/meminfo field (value in kB, or a count).
. ../../lib/sh-test-lib

SKIP_INSTALL="false"
while getopts "s:h" opt; do
    case "$opt" in
        s) SKIP_INSTALL="$OPTARG" ;;
        *) echo "Usage: $0 [-s true|false]" >&2; exit 1 ;;
    esac
done

create_out_dir "${OUTPUT}"
if [ ! -r /proc/meminfo ]; then
    report meminfo-read fail
    exit 0
fi
report meminfo-read pass
while read -r key value unit; do
    key=${key%:}
    # Names like "Active(anon)" become "Active_anon" (case ids allow no parentheses).
    key=$(echo "$key" | sed 's/[()]/_/g; s/_$//')
    report "$key" pass "$value" "${unit:-count}"
done < /proc/meminfo
