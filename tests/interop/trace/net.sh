#!/usr/bin/env bash
# vvu-trace on a virtio-net session: vvu-traffic (front-end) -> vvu-trace -> DPDK 22.11 testpmd's
# net_vhost (rxonly). In the same run the frames go once straight to testpmd and once through the
# tracer; both rates are printed, and testpmd must count every frame of both.
#   - the trace shows the session: SET_FEATURES, SET_MEM_TABLE with its fds, SET_VRING_*, the
#     kick and call fds (which the tracer passed on: the frames never cross it);
#   - vvu-decode of the --capture file prints the very same message lines as the live trace;
#   - the tracer (--once) ends cleanly with status 0 when the front-end has gone.
# Usage: net.sh --trace PATH --decode PATH --traffic PATH
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/interop/frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"

TRACE="" DECODE="" traffic="" packets=${PACKETS:-1000000}
while [[ $# -gt 0 ]]; do
  case $1 in
    --trace) TRACE=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --traffic) traffic=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "trace.net" "$TESTPMD" diff
need_exe "$TRACE"
need_exe "$DECODE"
need_exe "$traffic"
sock=$work/vhost.sock
tsock=$work/trace.sock
read -r -a pin <<<"$(pin0)"

testpmd_vhost_start testpmd "$sock" rxonly

send() { # NAME SOCK: one vvu-traffic tx run of $packets frames, every one completed
  PEER_STDOUT=1 peer_run "$1" "${pin[@]}" "$traffic" --connect "$2" --mode tx --packets "$packets" --size 64 \
    --timeout 10000
  peer_wait "$1" 90
  ((peer_rc == 0)) || fail "vvu-traffic ($1) exited with status $peer_rc"
  expect_eq "$1: frames sent" "$(json_field "$work/$1.out" sent)" "$packets"
  expect_eq "$1: frames completed" "$(json_field "$work/$1.out" completed)" "$packets"
}

send direct "$sock"
direct_pps=$(json_field "$work/direct.out" pps) || exit 1
trace_start tracer "$tsock" "$sock" --capture "$work/session.vhu" --once
send traced "$tsock"
traced_pps=$(json_field "$work/traced.out" pps) || exit 1
# The front-end has gone: the tracer closes the back-end's side and (--once) exits 0.
trace_wait_end tracer 10
peer_stop testpmd INT 20
rx=$(testpmd_final testpmd 0 RX-packets) || exit 1
expect_eq "testpmd RX-packets (both runs)" "$rx" "$((2 * packets))"
echo "rate: $direct_pps pps straight to testpmd, $traced_pps pps through vvu-trace ($packets frames each)"

grep -a -q "session 1 ended (front-end closed)" "$work/tracer.out" || fail "the tracer did not report the session's end"
expect_in_trace tracer '^-> SET_FEATURES( need_reply)? u64=0x[0-9a-f]+' "SET_FEATURES"
expect_in_trace tracer '^-> SET_MEM_TABLE( need_reply)? nregions=[1-8] .* fds=[1-8]$' "SET_MEM_TABLE with its fds"
expect_in_trace tracer '^-> SET_VRING_NUM( need_reply)? index=1 num=' "SET_VRING_NUM"
expect_in_trace tracer '^-> SET_VRING_ADDR( need_reply)? index=1 ' "SET_VRING_ADDR"
expect_in_trace tracer '^-> SET_VRING_BASE( need_reply)? index=1 ' "SET_VRING_BASE"
expect_in_trace tracer '^-> SET_VRING_KICK( need_reply)? index=1 fds=1$' "SET_VRING_KICK with the kick fd"
expect_in_trace tracer '^-> SET_VRING_CALL( need_reply)? index=1 fds=1$' "SET_VRING_CALL with the call fd"
expect_in_trace tracer '^<- reply GET_FEATURES u64=' "the back-end's reply to GET_FEATURES"
# The capture, decoded, is the live trace line for line.
check_trace tracer "$work/session.vhu" 15
echo "PASS: $test_name"
