#!/usr/bin/env bash
# vvu-trace between two DPDK 22.11 testpmds: virtio-user (txonly) -> vvu-trace -> net_vhost
# (rxonly). In the same run the front-end sends once straight to the back-end and once through
# the tracer, --seconds each; both rates are printed, and the back-end must count what the
# front-ends sent (up to one ring each, which may sit in a ring when a front-end stops).
#   - the trace shows testpmd's session: SET_FEATURES, SET_MEM_TABLE with its fds, SET_VRING_*,
#     the kick and call fds (passed on: the frames never cross the tracer);
#   - vvu-decode of the --capture file prints the very same message lines as the live trace;
#   - the tracer (--once) ends with status 0 when the front-end has gone.
# Usage: dpdk.sh --trace PATH --decode PATH [--seconds N]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/interop/dpdk/lib.sh
source "$here/../dpdk/lib.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"

TRACE="" DECODE="" seconds=3
while [[ $# -gt 0 ]]; do
  case $1 in
    --trace) TRACE=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
BACKEND=dpdk # the DPDK stand-in: testpmd net_vhost
dpdk_init "trace.dpdk"
for exe in "$TRACE" "$DECODE"; do
  [[ -x $exe ]] || { echo "FAIL: $test_name: $exe is not an executable" >&2; exit 1; }
done
sock=$work/vhost.sock
tsock=$work/trace.sock

backend_start rxonly "$sock"

run_frontend() { # NAME SOCK: testpmd txonly for $seconds of traffic, then SIGINT
  frontend_start "$1" "$2" txonly 1
  wait_stats "$1" TX-packets 30
  check_progress "$1" TX-packets "$seconds"
  peer_stop "$1" INT 20
}

run_frontend direct "$sock"
trace_start tracer "$tsock" "$sock" --capture "$work/session.vhu" --once
run_frontend traced "$tsock"
# The front-end has gone: the tracer closes the back-end's side and (--once) exits 0.
trace_wait_end tracer 10
backend_stop 1

direct_sent=$(final_stat direct 0 TX-packets) || exit 1
traced_sent=$(final_stat traced 0 TX-packets) || exit 1
got=$(backend_stat 0 rx_packets) || exit 1
check_within "testpmd virtio-user -> (vvu-trace) -> testpmd net_vhost, both runs" \
  "$((direct_sent + traced_sent))" "$got" "$((2 * RING))"
echo "rate: $(window_mpps direct TX-packets 1) Mpps straight to net_vhost, $(window_mpps traced TX-packets 1) Mpps through vvu-trace (${seconds}s each; $direct_sent and $traced_sent frames)"

grep -a -q "session 1 ended (front-end closed)" "$work/tracer.out" || fail "the tracer did not report the session's end"
expect_in_trace tracer '^-> SET_FEATURES( need_reply)? u64=0x[0-9a-f]+' "SET_FEATURES"
expect_in_trace tracer '^-> SET_MEM_TABLE( need_reply)? nregions=[1-8] .* fds=[1-8]$' "SET_MEM_TABLE with its fds"
expect_in_trace tracer '^-> SET_VRING_NUM( need_reply)? index=1 num=' "SET_VRING_NUM"
expect_in_trace tracer '^-> SET_VRING_ADDR( need_reply)? index=1 ' "SET_VRING_ADDR"
expect_in_trace tracer '^-> SET_VRING_KICK( need_reply)? index=1 fds=1$' "SET_VRING_KICK with the kick fd"
expect_in_trace tracer '^-> SET_VRING_CALL( need_reply)? index=1 fds=1$' "SET_VRING_CALL with the call fd"
expect_in_trace tracer '^-> GET_VRING_BASE index=1 ' "GET_VRING_BASE at testpmd's stop"
# The capture, decoded, is the live trace line for line.
check_trace tracer "$work/session.vhu" 20
echo "PASS: $test_name"
