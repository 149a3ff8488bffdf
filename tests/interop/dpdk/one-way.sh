#!/usr/bin/env bash
# One-way traffic between DPDK's virtio-user (in testpmd, the front-end) and a vhost-user back-end
# listening on a UNIX socket, and a count of what crossed.
#
#   one-way.sh --backend PATH|dpdk --direction to-backend|from-backend [--ring split|packed]
#              [--mem nohuge|huge] [--seconds N] [--vdev-args ,KEY=VALUE...] [--unlike-template]
#              [--queues N [--threads T]]
#
#   to-backend:   testpmd --forward-mode=txonly  ->  vvu-forward --mode rxonly
#                 vvu's rx_packets must equal testpmd's final TX-packets, less at most one ring
#                 (frames testpmd queued that the back-end had not taken when testpmd stopped),
#                 and vvu-forward (--check testpmd-txonly) must have found every frame it took
#                 to be testpmd's txonly template (Ethernet/IPv4/UDP 198.18.0.1:9 -> 198.18.0.2:9).
#                 --unlike-template (the check of that check): testpmd sends to 198.18.0.3
#                 instead, and vvu-forward must find every frame unlike the template.
#   from-backend: vvu-forward --mode txonly  ->  testpmd --forward-mode=rxonly
#                 testpmd's final RX-packets must equal vvu's tx_packets, less at most one ring.
#
# --backend dpdk runs DPDK's vhost PMD (a second testpmd, same modes) in vvu-forward's place.
# --mem huge: the front-end's memory is hugetlbfs (--single-file-segments, so the back-end maps
# 2 MiB-aligned fds); needs root to reserve pages and mount a private hugetlbfs (else skip).
# Traffic runs --seconds (3) after testpmd's stats first show it, and must keep flowing: testpmd's
# counter must grow by more than two rings meanwhile (a ring that stalls at its first wrap-around
# moves exactly one ring's worth). --vdev-args extends virtio-user's vdev arguments (diagnostics,
# e.g. ",in_order=0" or ",mrg_rxbuf=0"). --queues N: N queue pairs (virtio-user queues=N, testpmd
# --rxq/--txq N, vvu-forward --queues N), the counts then within N rings; --threads T: vvu-forward
# moves them on T threads (--threads T), and each thread must have moved frames (its
# "thread_frames" in the data_path line). Exit 0 pass, 1 fail, 77 skip
# (dpdk-testpmd or hugepages missing; a failure when CI=true). See lib.sh for the environment.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

parse_backend_arg "$@"
direction="" ring=split mem=nohuge seconds=3 vdev_args="" unlike_template=0 queues=1 threads=1
set -- "${rest_args[@]}"
while [[ $# -gt 0 ]]; do
  case $1 in
    --direction) direction=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --vdev-args) vdev_args=$2; shift 2 ;;
    --unlike-template) unlike_template=1; shift ;;
    --queues) queues=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: $0 --backend PATH|dpdk --direction to-backend|from-backend" \
            "[--ring split|packed] [--mem nohuge|huge] [--seconds N] [--vdev-args ,K=V...]" \
            "[--unlike-template]" >&2
       exit 2 ;;
  esac
done
case $direction in
  to-backend) fe_mode=txonly be_mode=rxonly key=TX-packets ;;
  from-backend) fe_mode=rxonly be_mode=txonly key=RX-packets ;;
  *) echo "$0: --direction to-backend|from-backend" >&2; exit 2 ;;
esac
FE_VDEV_EXTRA=""
case $ring in
  split) ;;
  packed) FE_VDEV_EXTRA=",packed_vq=1" ;;
  *) echo "$0: --ring split|packed" >&2; exit 2 ;;
esac
FE_VDEV_EXTRA+=$vdev_args

suffix=""
((queues > 1 || threads > 1)) && suffix=".q$queues.t$threads"
dpdk_init "dpdk.$direction.$ring.$mem$suffix"
FE_QUEUES=$queues
case $mem in
  nohuge) FE_HUGE=0 ;;
  huge) need_hugepages 160; FE_HUGE=1 ;; # -m 256 is 128 pages, with room to spare
  *) echo "$0: --mem nohuge|huge" >&2; exit 2 ;;
esac
echo "$test_name: back-end $BACKEND, ring $RING ($ring), front-end memory $mem, work dir $work"

sock=$work/vhost-user.sock
[[ $direction == to-backend && $BACKEND != dpdk ]] && BACKEND_ARGS=(--check testpmd-txonly)
if ((queues > 1 || threads > 1)); then
  [[ $BACKEND == dpdk ]] && fail "--queues and --threads are vvu-forward's"
  BACKEND_ARGS+=(--queues "$queues" --threads "$threads")
fi
backend_start "$be_mode" "$sock"
frontend_args=()
((unlike_template)) && frontend_args=(--tx-ip=198.18.0.1,198.18.0.3)
frontend_start frontend "$sock" "$fe_mode" 1 "${frontend_args[@]}"
wait_stats frontend "$key" 30
check_progress frontend "$key" "$seconds"

# The sender first, then the receiver once it has drained what was sent (its periodic stats stop
# moving; bounded). to-backend: testpmd stops its queues (GET_VRING_BASE) and prints its final
# counters; the back-end's can no longer move. from-backend: the back-end's exit ends the session;
# what it had put in the RX ring is in testpmd's memory, and testpmd reads it.
if [[ $direction == to-backend ]]; then
  peer_stop frontend INT 20
  backend_stop 1
else
  backend_stop 1
  wait_stats_settled frontend RX-packets 10
  peer_stop frontend INT 20
fi

if [[ $direction == to-backend ]]; then
  sent=$(final_stat frontend 0 TX-packets) || exit 1
  got=$(backend_stat 0 rx_packets) || exit 1
  discarded=0
  if [[ $BACKEND != dpdk ]]; then
    # Frames testpmd queued on a TX ring while it was disabled are drained and discarded, as the
    # vhost-user spec asks ("Ring states"); with several queue pairs virtio-user enables the
    # second pair's rings after its first frames, and disables them before its last.
    discarded=$(backend_stat 0 rx_discarded) || exit 1
    echo "vvu-forward discarded $discarded frames sent on a disabled ring"
  fi
  check_within "testpmd txonly -> back-end rxonly (received and discarded)" "$sent" "$((got + discarded))" "$((queues * RING))"
  if [[ $BACKEND != dpdk ]]; then
    checked=$(backend_stat 0 checked) || exit 1
    failed=$(backend_stat 0 check_failed) || exit 1
    if ((unlike_template)); then
      ((checked == got && failed == checked && got > 0)) ||
        fail "testpmd sent to 198.18.0.3, yet vvu-forward found only $failed of $checked frames ($got taken) unlike the template"
      grep -q "first frame unlike testpmd's txonly template: IPv4 addresses" "$work/backend.log" ||
        fail "vvu-forward did not say why the first frame is unlike the template"
      echo "ok: every frame vvu-forward took ($checked) is unlike the template, as sent"
    else
      ((checked == got && failed == 0)) ||
        fail "vvu-forward checked $checked of $got frames against testpmd's txonly template, $failed unlike it"
      echo "ok: every frame vvu-forward took ($checked) is testpmd's txonly template"
    fi
  fi
else
  sent=$(backend_stat 0 tx_packets) || exit 1
  got=$(final_stat frontend 0 RX-packets) || exit 1
  check_within "back-end txonly -> testpmd rxonly" "$sent" "$got" "$((queues * RING))"
fi
if ((threads > 1)); then
  per_thread=$(grep -a -o '"thread_frames":\[[0-9,]*\]' "$work/backend.out" | tail -n 1)
  [[ -n $per_thread ]] || fail "vvu-forward printed no thread_frames"
  echo "vvu-forward's threads: $per_thread"
  IFS=, read -r -a counts <<<"$(sed 's/.*\[\(.*\)\]/\1/' <<<"$per_thread")"
  ((${#counts[@]} == threads)) || fail "vvu-forward reports ${#counts[@]} forwarding threads, not $threads"
  for c in "${counts[@]}"; do ((c > 0)) || fail "a forwarding thread moved no frame: $per_thread"; done
  echo "ok: every forwarding thread moved frames"
fi
echo "PASS: $test_name"
