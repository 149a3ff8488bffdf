#!/usr/bin/env bash
# Live update under DPDK: testpmd's virtio-user (the front-end, --forward-mode=txonly, 64-byte
# frames as fast as it can) sends to `vvu-forward --mode rxonly --control C`, and while the
# traffic flows new vvu-forward processes take the port over (`--takeover C --control C`), one
# after another. Checks:
#   - before each hand-over and after the last one, testpmd's TX-packets grows by more than two
#     rings in --seconds (a txonly sender only counts what the back-end takes off its ring, so
#     this is the new process serving);
#   - each old process exits 0, prints {"handed_over":true,...}, and the rx_packets it handed
#     over are larger than its predecessor's; the new process's first --stats line starts from
#     the old one's rx_packets (the port's counter is carried and grows);
#   - testpmd never saw the back-end go: none of what its virtio-user prints when the socket
#     closes ("virtio-user port 0 is down", "Port 0: link state change event",
#     "virtio_user_dev_delayed_disconnect_handler", and at stop "Broken pipe" / "Failed to ..."
#     — seen by killing a vvu-forward under it by hand) is in its log;
#   - the front-end connected once (first process), every other process logged "session taken
#     over", and no process but the last saw its session end;
#   - at the end (testpmd stopped first, then the last vvu-forward): testpmd's final TX-packets
#     equals the last process's rx_packets, cumulative over all of them, less at most one ring
#     (frames still in the ring when testpmd stopped its queues).
# With --queues N --threads T the port has N queue pairs (testpmd sends on all of them) and each
# vvu-forward moves them on T threads (the hand-over carries each thread's engine state).
# Usage: takeover-testpmd.sh --forward VVU_FORWARD [--ring split|packed] [--takeovers N]
#                            [--seconds S] [--queues N --threads T]
# Environment: as dpdk/lib.sh (CI, PEER_TIMEOUT, RING, KEEP_LOGS, DPDK_TESTPMD).
# Exit 0 pass, 1 fail, 77 skip (no dpdk-testpmd; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
# frontend/lib.sh for peer_wait, json_field and expect_eq; dpdk/lib.sh (second: its globals and
# cleanup win) for testpmd: frontend_start, periodic_max, final_stat, check_within.
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=../dpdk/lib.sh
source "$here/../dpdk/lib.sh"

forward="" ring=split takeovers=3 seconds=2 queues=1 threads=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --forward) forward=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --takeovers) takeovers=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
FE_VDEV_EXTRA=""
case $ring in
  split) ;;
  packed) FE_VDEV_EXTRA=",packed_vq=1" ;;
  *) echo "$0: --ring split|packed" >&2; exit 2 ;;
esac
BACKEND=$forward # what dpdk_init checks
suffix=""
((queues > 1 || threads > 1)) && suffix=".q$queues.t$threads"
dpdk_init "live-update.takeover-testpmd.$ring$suffix"
FE_QUEUES=$queues
echo "$test_name: vvu-forward $forward, ring $RING ($ring), $takeovers take-overs, work dir $work"
sock=$work/port.sock control=$work/control.sock
# Every vvu-forward's forwarding thread on core 1 (--cpu 1), testpmd's forwarding lcore busy-polls
# core 0: left to the scheduler, the two pollers now and then share one core and the rate falls
# to a ring per time slice (~25 kpps instead of ~25 Mpps here, with or without take-overs).
pin=(--queues "$queues" --threads "$threads")
# More threads than cores left to them: the second shares core 0 with testpmd.
(($(nproc) >= 2)) && pin+=(--cpu 1,0)

# flowing WHEN: let the traffic run --seconds (a duration, not a readiness wait), then wait
# (bounded) for testpmd's next stats block; TX-packets must have grown by more than two rings.
flowing() {
  local when=$1 v0 v1 n i
  v0=$(periodic_max frontend TX-packets)
  sleep "$seconds"
  n=$(blocks frontend)
  for ((i = 0; i < 50; i++)); do
    (($(blocks frontend) > n)) && break
    sleep 0.1
  done
  v1=$(periodic_max frontend TX-packets)
  peer_alive frontend || fail "testpmd ended $when"
  ((v1 - v0 > 2 * RING)) ||
    fail "traffic stalled $when: testpmd's TX-packets went from $v0 to $v1 in ${seconds}s"
  echo "ok: traffic flows $when: testpmd's TX-packets $v0 -> $v1"
}

# What testpmd's virtio-user prints when its back-end's socket goes away.
gone='is down|link state change|disconnect|Broken pipe|Failed to'

PEER_STDOUT=1 peer_run forward0 "$forward" --mode rxonly --port "unix:$sock" --control "$control" "${pin[@]}"
wait_socket "$sock" forward0 20
wait_socket "$control" forward0 20
frontend_start frontend "$sock" txonly 1
wait_log forward0 "front-end connected" 30
wait_stats frontend TX-packets 30

declare -a handed_rx=() paused=()
for ((i = 1; i <= takeovers; i++)); do
  flowing "before take-over $i"
  # --stats 1: the new process's counters on stderr each second, to see where they resume.
  PEER_STDOUT=1 peer_run "forward$i" "$forward" --mode rxonly --port "unix:$sock" --control "$control" \
    --takeover "$control" "${pin[@]}" --stats 1
  wait_log "forward$i" "took 1 ports over" 20
  old=forward$((i - 1))
  peer_wait "$old" 20
  ((peer_rc == 0)) || fail "the old vvu-forward ($old) exited with status $peer_rc"
  grep -a -q '"handed_over":true' "$work/$old.out" || fail "$old printed no hand-over line"
  line=$(grep -a '^{"port":0,' "$work/$old.out") || fail "$old printed no JSON for port 0"
  handed_rx[i]=$(sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p' <<<"$line")
  paused[i]=$(json_field "$work/$old.out" paused_us)
  [[ ${handed_rx[i]} =~ ^[0-9]+$ ]] || fail "$old: no rx_packets in $line"
  if ((i > 1 && handed_rx[i] <= handed_rx[i - 1])); then
    fail "no progress: forward$((i - 2)) handed over at rx_packets ${handed_rx[i - 1]}, $old at ${handed_rx[i]}"
  fi
  # The port's counter goes on in the new process: its first stats line (a second after it took
  # over) starts from what the old one handed over.
  wait_log "forward$i" '^{"port":0,' 10
  first=$(grep -a -m 1 '^{"port":0,' "$work/forward$i.log" | sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p')
  ((first >= handed_rx[i])) ||
    fail "forward$i's counter did not resume from the old one's: old rx_packets ${handed_rx[i]}, new ${first} a second later"
  echo "take-over $i: old (forward$((i - 1))) rx_packets ${handed_rx[i]} at hand-over (paused ${paused[i]} us)," \
    "new (forward$i) rx_packets $first a second later; $(grep -a "took 1 ports over" "$work/forward$i.log")"
  grep -a -q -E "$gone" "$work/frontend.log" && fail "testpmd saw its back-end go during take-over $i"
done
flowing "after the last take-over"

# The sender first (its stop takes the rings back from the back-end), then the receiver.
peer_stop frontend INT 20
peer_stop "forward$takeovers" TERM 20
line=$(grep -a '^{"port":0,' "$work/forward$takeovers.out") || fail "the last vvu-forward printed no JSON for port 0"
echo "vvu-forward (last, forward$takeovers): $line"
final_rx=$(sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p' <<<"$line")
[[ $final_rx =~ ^[0-9]+$ ]] || fail "no rx_packets in $line"
((final_rx > handed_rx[takeovers])) ||
  fail "no progress after the last take-over: rx_packets ${handed_rx[takeovers]} -> $final_rx"
for ((i = 1; i <= takeovers; i++)); do
  next=$final_rx
  ((i < takeovers)) && next=${handed_rx[i + 1]}
  echo "hand-over $i: old (forward$((i - 1))) rx_packets ${handed_rx[i]} -> new (forward$i) rx_packets $next when it ended"
done

sent=$(final_stat frontend 0 TX-packets) || exit 1
# Frames testpmd queued on a TX ring while it was disabled are drained and dropped, as the
# vhost-user spec asks: each process counts its own (rx_discarded; with 2 queue pairs
# virtio-user enables the second pair's rings after its first frames).
discarded=0
for ((i = 0; i <= takeovers; i++)); do
  d=$(grep -a '^{"port":0,' "$work/forward$i.out" | tail -n 1 | sed -n 's/.*"rx_discarded":\([0-9]*\).*/\1/p')
  [[ $d =~ ^[0-9]+$ ]] || fail "forward$i printed no rx_discarded"
  discarded=$((discarded + d))
done
echo "frames discarded on a disabled ring, all processes: $discarded"
check_within "testpmd txonly -> vvu-forward rxonly across $takeovers take-overs (received and discarded)" "$sent" \
  "$((final_rx + discarded))" "$((queues * RING))"

seen=$(tr -d '\033' <"$work/frontend.log" | grep -a -E "$gone")
[[ -z $seen ]] || fail "testpmd saw its back-end go: $seen"
echo "ok: testpmd's log has no link-down or disconnect message"
connects=$(cat "$work"/forward*.log | grep -a -c "front-end connected$")
expect_eq "fresh front-end sessions (all processes)" "$connects" 1
resumed=$(cat "$work"/forward*.log | grep -a -c "front-end connected (session taken over)")
expect_eq "sessions resumed by a new process" "$resumed" "$takeovers"
for ((i = 0; i < takeovers; i++)); do
  grep -a -q "session ended" "$work/forward$i.log" && fail "forward$i saw its session end (a disconnect)"
done
echo "PASS: $test_name"
