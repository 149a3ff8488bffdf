#!/usr/bin/env bash
# The back-end's VM restarts under traffic: vvu-traffic --mode echo (split rings, --rate RATE
# for about SECONDS s) runs through one vvu-device and `vvu-forward --mode loopback --port
# vvu:PCI`; mid-stream that vvu-forward is killed with SIGKILL (the child of `timeout`, by the
# pid this script started, as a crash would) and a new one attaches to the same PCI socket.
# The device keeps the front-end's session while no driver is there and replays its setup to
# the new driver (device_model.hpp, "Driver restart"); the front-end never sees a disconnect.
# Checks: vvu-traffic exits 0 and the echo is complete: the rings resume at their used index,
# so chains the killed process took and never completed are taken again, and loopback completes
# a burst's TX chains only after its frames are in RX chains (net_port::received_burst) — a
# kill anywhere loses nothing: lost 0, no gap, nothing late. A kill after a burst's RX chains
# were completed and before its TX chains were resends that burst: vvu-traffic counts those
# frames as duplicates (at most one burst, ring::max_burst = 32; seen: 0). lost, duplicates and
# max_stall_us (the outage) are printed;
# vvu-device logs the session kept and resumed, and its counters say driver_restarts = 1,
# drivers = 2, frontends = 1 and disconnects = 1 — the front-end's own close once the echo is
# done, nothing at the restart (its one disconnect line says "front-end closed the socket" and
# comes after the resume).
# With --stop TERM the old vvu-forward is not killed but stopped (SIGTERM, a clean exit, as an
# update of the back-end's VM would stop it): it must exit 0 and leave the session to the device
# (BACKEND_UP stays set; basic_vvu_pci::leave_session) — the same checks hold.
# With --ring packed the rings are packed: a packed ring's position cannot be read back from ring
# memory, so vvu-device gives the driver an inflight area of its own (a window area,
# SET_INFLIGHT_FD) and replays it to the next driver, which resumes each ring from it: vvu-device
# must log the area made, forward1 must log each ring resuming from it, and the same checks hold.
# Usage: driver-restart.sh --traffic PATH-TO-vvu-traffic --forward PATH-TO-vvu-forward
#                          --device PATH-TO-vvu-device [--rate PPS] [--seconds S] [--stop KILL|TERM]
#                          [--ring split|packed]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"

traffic="" forward="" rate=200000 seconds=8 stop=KILL ring=split
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --stop) stop=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
VVU_DEVICE=${VVU_DEVICE:-}
name_suffix=""
[[ $ring == packed ]] && name_suffix=.packed
fe_init "vvu.driver-restart.$(tr "[:upper:]" "[:lower:]" <<<"$stop")$name_suffix"
packed=()
[[ $ring == packed ]] && packed=(--packed)
need_exe "$traffic"
need_exe "$forward"
need_exe "$VVU_DEVICE"
sock=$work/vhost.sock
pci=$work/pci.sock
packets=$((rate * seconds))
read -r -a pin <<<"$(pin0)"
cpu=()
[[ ${#pin[@]} -gt 0 ]] && cpu=(--cpu 1)

# The child of `timeout`: the process to kill with SIGKILL.
child_of() { pgrep -P "${peer_pid[$1]}" | head -n 1; }
# rx_packets of vvu-forward's port 0 in its latest periodic counters (stderr, --stats 1).
forward_rx() { grep -a '^{"port":0,' "$work/$1.log" | tail -n 1 | sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p'; }

device_start device "$sock" "$pci"
PEER_STDOUT=1 peer_run forward0 "$forward" --mode loopback --port "vvu:$pci" --stats 1 "${cpu[@]}"
wait_log device "driver ready" 20
PEER_STDOUT=1 peer_run traffic "${pin[@]}" "$traffic" --connect "$sock" --mode echo --rate "$rate" \
  --packets "$packets" --size 64 --timeout 10000 --idle 5000 "${packed[@]}"
wait_log forward0 "front-end connected" 20

# Mid-stream: once forward0 has echoed about a third of the frames.
for ((t = 0; t < 200; t++)); do
  rx=$(forward_rx forward0)
  [[ -n $rx ]] && ((rx >= packets / 3)) && break
  peer_alive forward0 || fail "forward0 ended"
  peer_alive traffic || fail "vvu-traffic ended before the restart"
  sleep 0.1
done
((${rx:-0} >= packets / 3)) || fail "forward0 echoed ${rx:-0} frames within 20 s, want $((packets / 3))"
pid=$(child_of forward0)
[[ -n $pid ]] || fail "no vvu-forward process under forward0"
case $stop in
  KILL)
    kill -KILL "$pid"
    killed_at=$(date +%s%N)
    wait "${peer_pid[forward0]}" 2>/dev/null
    unset "peer_pid[forward0]"
    echo "killed forward0 (pid $pid) with SIGKILL after ~${rx} echoed frames" ;;
  TERM)
    killed_at=$(date +%s%N)
    peer_stop forward0 TERM 20 # fails unless it exits 0
    echo "stopped forward0 (pid $pid) with SIGTERM after ~${rx} echoed frames: exit status 0" ;;
  *) fail "--stop takes KILL or TERM" ;;
esac
wait_log device "front-end session kept for the next driver" 10
peer_alive traffic || fail "vvu-traffic ended when its back-end died"

PEER_STDOUT=1 peer_run forward1 "$forward" --mode loopback --port "vvu:$pci" --stats 1 "${cpu[@]}"
wait_log device "front-end session resumed on a new driver" 20
echo "the session resumed on forward1 ~$((($(date +%s%N) - killed_at) / 1000000)) ms after the kill (50 ms polls)"
wait_log forward1 "front-end connected" 20
grep -a -h "session kept\|session resumed" "$work/device.log" | sed 's/^/  /'
grep -a "resuming at\|resuming from\|taken again" "$work/forward1.log" | sed 's/^/  /' ||
  echo "note: forward1 started its rings where SET_VRING_BASE said"
if [[ $ring == packed ]]; then
  grep -a -h "inflight area" "$work/device.log" | sed 's/^/  /'
  grep -a -q "an inflight area for .* made for the driver" "$work/device.log" || fail "vvu-device made no inflight area"
  resumed_rings=$(grep -a -c "resuming from the inflight area" "$work/forward1.log")
  expect_eq "forward1's rings resumed from the inflight area" "$resumed_rings" 2
fi

peer_wait traffic $((seconds * 4 + 30))
((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
json=$(grep -a '^{' "$work/traffic.out" | tail -n 1)
echo "vvu-traffic: $json"
sent=$(json_field "$work/traffic.out" sent)
received=$(json_field "$work/traffic.out" received)
lost=$(json_field "$work/traffic.out" lost)
late=$(json_field "$work/traffic.out" late)
duplicates=$(json_field "$work/traffic.out" duplicates)
stall=$(json_field "$work/traffic.out" max_stall_us)
echo "lost $lost, late $late, duplicates $duplicates, max_stall_us $stall"
expect_eq "vvu-traffic sent" "$sent" "$packets"
expect_eq "vvu-traffic received - duplicates" "$((received - duplicates))" "$packets"
expect_eq "vvu-traffic lost" "$lost" 0
expect_eq "vvu-traffic gaps" "$(json_field "$work/traffic.out" gaps)" 0
expect_eq "vvu-traffic late" "$late" 0
((duplicates <= 32)) || fail "vvu-traffic received $duplicates duplicates, more than one burst (32)"
echo "ok: vvu-traffic duplicates $duplicates (<= 32: the burst of the kill, at most)"
expect_eq "vvu-traffic bad_frames" "$(json_field "$work/traffic.out" bad_frames)" 0

peer_stop forward1 TERM 20
echo "forward1: $(grep -a '^{"port":0,' "$work/forward1.out" | tail -n 1)"
peer_stop device TERM 20
echo "vvu-device: $(grep -a '^{' "$work/device.out" | tail -n 1)"
expect_eq "vvu-device driver_restarts" "$(json_field "$work/device.out" driver_restarts)" 1
expect_eq "vvu-device drivers" "$(json_field "$work/device.out" drivers)" 2
expect_eq "vvu-device frontends" "$(json_field "$work/device.out" frontends)" 1
expect_eq "vvu-device disconnects" "$(json_field "$work/device.out" disconnects)" 1
replayed=$(json_field "$work/device.out" replayed)
((replayed > 0)) || fail "vvu-device replayed $replayed messages"
echo "ok: vvu-device replayed $replayed messages"
# The one disconnect is the front-end's close at the end, after the resume.
expect_eq "vvu-device disconnect lines" "$(grep -a -c "front-end disconnected" "$work/device.log")" 1
grep -a -q "front-end disconnected: front-end closed the socket" "$work/device.log" ||
  fail "vvu-device's disconnect was not the front-end's close: $(grep -a "front-end disconnected" "$work/device.log")"
order=$(grep -a -n "session resumed\|front-end disconnected" "$work/device.log" | cut -d: -f1 | tr '\n' ' ')
read -r resumed_at disconnected_at <<<"$order"
((resumed_at < disconnected_at)) || fail "vvu-device disconnected the front-end before resuming it (log lines $order)"
echo "PASS: $test_name"
