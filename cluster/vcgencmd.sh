#!/bin/sh
# vcgencmd of a virtual Raspberry Pi node (installed by `edgekit cluster up`).
# The node's supervisor renders each answer, in the real firmware's format, into
# @STATE@/<command>; this program only picks the right one. Unknown commands fail the way the
# real vcgencmd does when the firmware does not know them.
state='@STATE@'
answer() {
    if [ -r "$state/$1" ]; then
        cat "$state/$1"
        exit 0
    fi
    echo 'error=2 error_msg="Command not registered"'
    exit 2
}
case "$1" in
    get_throttled|measure_temp|pmic_read_adc)
        [ $# -eq 1 ] || { echo 'error=2 error_msg="Invalid arguments"'; exit 2; }
        answer "$1" ;;
    measure_clock)
        case "$2" in
            arm) answer measure_clock_arm ;;
            *) echo "error=2 error_msg=\"Invalid arguments\""; exit 2 ;;
        esac ;;
    "")
        echo 'Usage: vcgencmd [-t] command [args...]' >&2
        exit 255 ;;
    *)
        echo 'error=2 error_msg="Command not registered"'
        exit 2 ;;
esac
