#!/bin/sh
# send-to-lava.sh RESULT_FILE: report each "<case> <result> [<measurement> <units>]" line
# with lava-test-case when running under a LAVA-compatible test shell, else print it.
RESULT_FILE="$1"
[ -f "$RESULT_FILE" ] || { echo "send-to-lava.sh: no result file $RESULT_FILE"; exit 1; }

command -v lava-test-case >/dev/null 2>&1 && under_lava=true || under_lava=false

while read -r case result measurement units; do
    [ -n "$case" ] || continue
    if [ "$under_lava" = false ]; then
        echo "<TEST_CASE_ID=$case RESULT=$result${measurement:+ MEASUREMENT=$measurement}${units:+ UNITS=$units}>"
    elif [ -n "$measurement" ]; then
        lava-test-case "$case" --result "$result" --measurement "$measurement" ${units:+--units "$units"}
    else
        lava-test-case "$case" --result "$result"
    fi
done < "$RESULT_FILE"
