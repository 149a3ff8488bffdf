#!/usr/bin/env bash
# The connection lifecycle through vvu-device: one vvu-device and one vvu-forward (--mode
# loopback --port vvu:PCI, the PCI-BAR transport) stay up while three vvu-traffic --mode echo
# front-ends connect one after another, each moving PACKETS (200 000) frames with no gap and no
# loss. Between runs the device must announce the disconnect and the next FRONTEND_UP, and
# vvu-forward must end its session and take the next front-end — without restarting either.
# At the end both exit 0 on SIGTERM and their counters agree: vvu-device frontends = 3,
# disconnects = 3, drivers = 1, config_interrupts >= 6 (FRONTEND_UP set and cleared, each
# announced); vvu-forward's port 0 rx_packets = tx_packets = 3 x PACKETS.
# Usage: lifecycle.sh --traffic PATH-TO-vvu-traffic --forward PATH-TO-vvu-forward
#                     --device PATH-TO-vvu-device [--runs N]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"

traffic="" forward="" runs=3 packets=${PACKETS:-200000}
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
VVU_DEVICE=${VVU_DEVICE:-}
fe_init "vvu.lifecycle"
need_exe "$traffic"
need_exe "$forward"
need_exe "$VVU_DEVICE"
sock=$work/vhost.sock
pci=$work/pci.sock
read -r -a pin <<<"$(pin0)"
cpu=()
[[ ${#pin[@]} -gt 0 ]] && cpu=(--cpu 1)

device_start device "$sock" "$pci"
PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --port "vvu:$pci" "${cpu[@]}"
wait_log device "driver ready" 20

for ((run = 1; run <= runs; run++)); do
  name=traffic$run
  PEER_STDOUT=1 peer_run "$name" "${pin[@]}" "$traffic" --connect "$sock" --mode echo --packets "$packets" \
    --size 64 --timeout 10000 --idle 5000
  peer_wait "$name" 120
  ((peer_rc == 0)) || fail "$name: vvu-traffic exited with status $peer_rc"
  echo "$name: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
  expect_eq "run $run sent" "$(json_field "$work/$name.out" sent)" "$packets"
  expect_eq "run $run received" "$(json_field "$work/$name.out" received)" "$packets"
  expect_eq "run $run gaps" "$(json_field "$work/$name.out" gaps)" 0
  expect_eq "run $run lost" "$(json_field "$work/$name.out" lost)" 0

  # This front-end reached FRONTEND_UP and vvu-forward's back-end; once it has gone the
  # device announces the disconnect and vvu-forward ends the session (close_session clears
  # BACKEND_UP: the re-acknowledgement the device waits for). The next run starts only then.
  wait_log_count device "front-end connected to the driver (FRONTEND_UP)" "$run" 10
  wait_log_count forward "front-end connected" "$run" 10
  wait_log_count device "front-end disconnected" "$run" 10
  wait_log_count forward "session ended" "$run" 10
  expect_eq "run $run: device FRONTEND_UP lines" "$(log_count device "front-end connected to the driver (FRONTEND_UP)")" "$run"
  expect_eq "run $run: device disconnect lines" "$(log_count device "front-end disconnected")" "$run"
  expect_eq "run $run: vvu-forward sessions" "$(log_count forward "front-end connected")" "$run"
  peer_alive device || fail "vvu-device ended after run $run"
  peer_alive forward || fail "vvu-forward ended after run $run"
done
echo "device log:"
grep -a -E "front-end (connected|disconnected)|BACKEND_UP|driver" "$work/device.log" | sed 's/^/  /'

peer_stop forward TERM 20
line=$(grep -a '^{"port":0,' "$work/forward.out") || fail "vvu-forward printed no JSON for port 0"
echo "vvu-forward: $line"
total=$((runs * packets))
for f in rx_packets tx_packets; do
  expect_eq "vvu-forward $f" "$(sed -n "s/.*\"$f\":\([0-9]*\).*/\1/p" <<<"$line")" "$total"
done
expect_eq "vvu-forward tx_dropped" "$(sed -n 's/.*"tx_dropped":\([0-9]*\).*/\1/p' <<<"$line")" 0

peer_stop device TERM 20
echo "vvu-device: $(grep -a '^{' "$work/device.out" | tail -n 1)"
expect_eq "vvu-device frontends" "$(json_field "$work/device.out" frontends)" "$runs"
expect_eq "vvu-device disconnects" "$(json_field "$work/device.out" disconnects)" "$runs"
expect_eq "vvu-device drivers" "$(json_field "$work/device.out" drivers)" 1
irqs=$(json_field "$work/device.out" config_interrupts)
((irqs >= 2 * runs)) || fail "vvu-device config_interrupts: got $irqs, want >= $((2 * runs))"
echo "ok: vvu-device config_interrupts = $irqs (>= $((2 * runs)))"
echo "PASS: $test_name"
