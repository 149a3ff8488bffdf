#!/usr/bin/env bash
# Two DPDK virtio-user front-ends (testpmd, --forward-mode=io: each sends back what it receives)
# cross-connected by a back-end with two ports:
#
#   testpmd A (port 0) <-> vvu-forward --mode xconnect --port unix:A --port unix:B <-> testpmd B
#
#   xconnect.sh --backend PATH|dpdk [--ring split|packed] [--seconds N]
#
# B starts first; once it is forwarding, A starts with --tx-first, whose first burst then
# circulates A -> 0 -> 1 -> B -> 1 -> 0 -> A for --seconds (3), long enough to wrap every ring
# (B's RX-packets must grow by more than two rings meanwhile). Then the back-end stops first and
# the two testpmds drain and stop. Pass: both testpmds received frames, and every count matches
# its counterpart within one ring: A's TX = vvu port 0 rx, vvu port 0 rx = port 1 tx + tx_dropped,
# port 1 tx = B's RX, and the same the other way round.
# --backend dpdk runs DPDK's vhost PMD (testpmd io mode, two net_vhost ports) in vvu-forward's
# place. Exit 0 pass, 1 fail, 77 skip (dpdk-testpmd missing; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

parse_backend_arg "$@"
ring=split seconds=3
set -- "${rest_args[@]}"
while [[ $# -gt 0 ]]; do
  case $1 in
    --ring) ring=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 --backend PATH|dpdk [--ring split|packed] [--seconds N]" >&2; exit 2 ;;
  esac
done
FE_VDEV_EXTRA=""
case $ring in
  split) ;;
  packed) FE_VDEV_EXTRA=",packed_vq=1" ;;
  *) echo "$0: --ring split|packed" >&2; exit 2 ;;
esac

dpdk_init "dpdk.xconnect.$ring"
echo "$test_name: back-end $BACKEND, ring $RING ($ring), work dir $work"

sock_a=$work/a.sock sock_b=$work/b.sock
backend_start xconnect "$sock_a" "$sock_b"
# Forwarding lcores on different cores: B on core 0, A on core 1.
frontend_start testpmd-b "$sock_b" io 1
wait_log() { # NAME REGEX SECS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -a -q -E "$2" "$work/$1.log" && return 0
    peer_alive "$1" || fail "$1 ended before its log showed /$2/"
    sleep 0.1
  done
  fail "$1's log did not show /$2/ within $3s"
}
# B forwards once its first periodic stats appear (auto-start has launched its lcore by then).
wait_log testpmd-b 'NIC statistics for port 0' 30
frontend_start testpmd-a "$sock_a" io 0 --tx-first
wait_stats testpmd-a RX-packets 30
wait_stats testpmd-b RX-packets 30
check_progress testpmd-b RX-packets "$seconds"

backend_stop 2
wait_stats_settled testpmd-a RX-packets 10
wait_stats_settled testpmd-b RX-packets 10
peer_stop testpmd-a INT 20
peer_stop testpmd-b INT 20

for side in a b; do
  for key in RX-packets TX-packets; do
    v=$(final_stat "testpmd-$side" 0 "$key") || exit 1
    declare "${side}_${key%-packets}=$v"
  done
done
for p in 0 1; do
  for f in rx_packets tx_packets tx_dropped; do
    v=$(backend_stat "$p" "$f") || exit 1
    declare "p${p}_$f=$v"
  done
done
# shellcheck disable=SC2154 # declared above
{
  echo "testpmd A: RX $a_RX TX $a_TX; testpmd B: RX $b_RX TX $b_TX"
  echo "back-end port 0: rx $p0_rx_packets tx $p0_tx_packets tx_dropped $p0_tx_dropped;" \
       "port 1: rx $p1_rx_packets tx $p1_tx_packets tx_dropped $p1_tx_dropped"
  ((a_RX > 0)) || fail "testpmd A received nothing"
  ((b_RX > 0)) || fail "testpmd B received nothing"
  check_within "A -> back-end port 0" "$a_TX" "$p0_rx_packets" "$RING"
  check_within "back-end port 0 -> port 1 (tx + tx_dropped)" "$p0_rx_packets" \
    $((p1_tx_packets + p1_tx_dropped)) "$RING"
  check_within "back-end port 1 -> B" "$p1_tx_packets" "$b_RX" "$RING"
  check_within "B -> back-end port 1" "$b_TX" "$p1_rx_packets" "$RING"
  check_within "back-end port 1 -> port 0 (tx + tx_dropped)" "$p1_rx_packets" \
    $((p0_tx_packets + p0_tx_dropped)) "$RING"
  check_within "back-end port 0 -> A" "$p0_tx_packets" "$a_RX" "$RING"
}
echo "PASS: $test_name"
