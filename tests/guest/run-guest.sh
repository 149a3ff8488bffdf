#!/usr/bin/env bash
# Start one test guest on a vhost-user socket, in the background (a thin CLI over guest-lib.sh).
#
#   tests/guest/run-guest.sh [-d GUESTDIR] [-w SECONDS] SOCK LOG MAC KEY=VALUE...
#
#   SOCK   the back-end's listening vhost-user socket (QEMU connects as client)
#   LOG    console log; the QEMU pid goes to LOG.pid, QEMU's own stderr to LOG.qemu
#   MAC    the virtio-net MAC, e.g. 52:54:00:00:00:01
#   KEY=VALUE  kernel command line, e.g. vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2
#   -d     guest directory from build-guest.sh (default: build/guest)
#   -w S   also wait up to S seconds for the result line, print it, stop QEMU, and exit 0 only
#          for "ping ok" / "responder done" (default: print the pid and return at once)
#
# Example (two guests on a back-end listening on /tmp/s0 and /tmp/s1):
#   tests/guest/run-guest.sh /tmp/s1 /tmp/b.log 52:54:00:00:00:02 vvu.role=responder vvu.ip=10.0.0.2/24
#   tests/guest/run-guest.sh -w 120 /tmp/s0 /tmp/a.log 52:54:00:00:00:01 \
#       vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2
#   kill "$(cat /tmp/b.log.pid)"
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/guest/guest-lib.sh
. "$HERE/guest-lib.sh"

dir=$HERE/../../build/guest wait_s=
while getopts d:w: o; do
  case $o in d) dir=$OPTARG ;; w) wait_s=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 3 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
sock=$1 log=$2 mac=$3; shift 3

vvu_guest_require || exit $?
[ -S "$sock" ] || { echo "run-guest: $sock is not a listening socket" >&2; exit 1; }
vvu_guest_start "$dir" "$sock" "$log" "$mac" "$*"
pid=$VVU_GUEST_PID
if [ -z "$wait_s" ]; then
  echo "$pid"
  exit 0
fi
rc=0
vvu_guest_result "$log" "$wait_s" "$pid" || rc=1
vvu_stop "$pid"
[ $rc -eq 0 ] || { echo "run-guest: no successful result; console log:" >&2; tail -n 40 "$log" >&2; cat "$log.qemu" >&2; }
exit $rc
