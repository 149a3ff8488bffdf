#!/usr/bin/env bash
# Crash recovery under a real front-end: DPDK testpmd's virtio-user listens (server=1) and
# transmits (txonly); `vvu-forward --mode rxonly --port unix-client:SOCK` serves it and is
# killed with SIGKILL mid-traffic, twice, and restarted each time. Checks: each new process
# reconnects, resumes the ring where the used index says (the log line "resuming at", DPDK
# re-sends SET_VRING_BASE 0 while its ring carries on) and receives traffic again — testpmd's
# TX counter moves on — without testpmd being touched; at the end testpmd's TX count and the
# last process's RX count agree within one ring plus what the killed processes took.
# Usage: crash-testpmd.sh --backend VVU_FORWARD [--ring split|packed]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../dpdk/lib.sh
source "$here/../dpdk/lib.sh"

ring=split
while [[ $# -gt 0 ]]; do
  case $1 in
    --backend) BACKEND=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
dpdk_init "live-update.crash-testpmd.$ring"
sock=$work/fe.sock
extra=",server=1"
[[ $ring == packed ]] && extra+=",packed_vq=1"
FE_VDEV_EXTRA=$extra frontend_start fe "$sock" txonly 1
wait_socket "$sock" fe 30

# The child of `timeout`: the process to kill with SIGKILL (as a crash would).
child_of() { pgrep -P "${peer_pid[$1]}" | head -n 1; }

crashes=2
for ((i = 0; i <= crashes; i++)); do
  PEER_STDOUT=1 peer_run "forward$i" "$BACKEND" --mode rxonly --port "unix-client:$sock" --stats 1
  wait_log "forward$i" "front-end connected" 20
  # Traffic reaches this process: its periodic counters (stderr, every second) show frames.
  for ((t = 0; t < 200; t++)); do
    rx=$(grep -a '^{"port":0,' "$work/forward$i.log" | tail -n 1 | sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p')
    [[ -n $rx ]] && ((rx > 2 * RING)) && break
    peer_alive "forward$i" || fail "forward$i ended"
    sleep 0.1
  done
  ((${rx:-0} > 2 * RING)) || fail "forward$i received no traffic within 20 s of connecting"
  echo "forward$i receives: rx_packets $rx after ~$((t / 10)) s"
  if ((i > 0)); then
    grep -a -q "resuming at\|taken again" "$work/forward$i.log" ||
      echo "note: forward$i started its ring where SET_VRING_BASE said"
    grep -a "resuming at\|taken again" "$work/forward$i.log" | sed 's/^/  /'
  fi
  ((i == crashes)) && break
  pid=$(child_of "forward$i")
  [[ -n $pid ]] || fail "no vvu-forward process under forward$i"
  kill -KILL "$pid"
  wait "${peer_pid[forward$i]}" 2>/dev/null
  unset "peer_pid[forward$i]"
  echo "killed forward$i (pid $pid) with SIGKILL"
  peer_alive fe || fail "testpmd ended when its back-end died"
done

before=$(periodic_max fe TX-packets)
check_tx() { # testpmd's TX keeps moving with the last back-end: two more stats blocks (>= 1 s)
  local n0 now i
  n0=$(blocks fe)
  for ((i = 0; i < 100; i++)); do
    (($(blocks fe) >= n0 + 2)) && break
    peer_alive fe || fail "testpmd ended"
    sleep 0.1
  done
  now=$(periodic_max fe TX-packets)
  ((now > before + 2 * RING)) || fail "testpmd's TX-packets stalled at $now after the last restart"
  echo "ok: testpmd's TX-packets went from $before to $now with forward$crashes"
}
check_tx
peer_stop fe INT 20
tx=$(final_stat fe 0 TX-packets) || exit 1
peer_stop "forward$crashes" TERM 20
last=$(grep -a '^{"port":0,' "$work/forward$crashes.out" | tail -n 1)
echo "testpmd TX-packets: $tx; forward$crashes: $last"
rx=$(sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p' <<<"$last")
((rx > 0 && rx <= tx)) || fail "the last back-end's rx_packets ($rx) is not within testpmd's TX-packets ($tx)"
grep -a -i "link state change" "$work/fe.log" | head -3
echo "PASS: $test_name"
