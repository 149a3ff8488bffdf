#!/usr/bin/env bash
# Live update of vvu-device itself under traffic: vvu-traffic echoes sequence-numbered frames at
# a steady rate through `vvu-device --control C` and `vvu-forward --mode loopback --port
# vvu:PCI` (event mode); mid-stream a new vvu-device takes the device over (`--takeover C
# --control C`), again and again. Each hand-over carries both listening sockets, the driver's
# vfio-user connection (what VERSION negotiated, its DMA maps), the PCI function's state (config
# space, registers, MSI-X table, irq eventfds), the rxq/txq positions and the front-end's whole
# session (device_model.hpp, "Live update of the device itself").
# Checks, for every hand-over: the old vvu-device exits 0 and prints its hand-over line; at the
# end: every frame came back (lost, gaps, late, duplicates 0); vvu-forward saw one driver
# session all along (one "front-end connected", no driver restart, no session end) and echoed
# every frame; the last vvu-device's counters, carried across the processes, say one driver
# (drivers 1, driver_restarts 0), one front-end (frontends 1) and one disconnect (vvu-traffic's
# close at the end). Prints the longest outage vvu-traffic saw (max_stall_us).
# Usage: device-takeover.sh --traffic VVU_TRAFFIC --forward VVU_FORWARD --device VVU_DEVICE
#                           [--ring split|packed] [--takeovers N] [--rate PPS]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"

traffic="" forward="" ring=split takeovers=10 rate=500000 VVU_DEVICE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --takeovers) takeovers=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "vvu.device-takeover.$ring"
need_exe "$traffic"
need_exe "$forward"
need_exe "$VVU_DEVICE"
packed=()
[[ $ring == packed ]] && packed=(--packed)
sock=$work/vhost.sock control=$work/control.sock pci=$work/pci.sock
packets=$(((takeovers + 5) * rate))

device_start device0 "$sock" "$pci" --control "$control"
wait_socket "$control" device0 20
PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --poll event --port "vvu:$pci"
wait_log device0 "driver ready" 20
PEER_STDOUT=1 peer_run traffic "$traffic" --connect "$sock" --mode echo --packets "$packets" --rate "$rate" \
  "${packed[@]}" --timeout 10000 --idle 5000
wait_log forward "front-end connected" 20

for ((i = 1; i <= takeovers; i++)); do
  nap 0.25 # let traffic flow between hand-overs (not a readiness wait)
  peer_alive traffic || fail "vvu-traffic ended before take-over $i"
  PEER_STDOUT=1 peer_run "device$i" "$VVU_DEVICE" --vhost-user "$sock" --pci "$pci" --control "$control" \
    --takeover "$control"
  wait_log "device$i" "took the device over" 20
  peer_wait "device$((i - 1))" 20
  ((peer_rc == 0)) || fail "the old vvu-device (device$((i - 1))) exited with status $peer_rc"
  handed=$(grep -a '"handed_over":true' "$work/device$((i - 1)).out") || fail "device$((i - 1)) printed no hand-over line"
  echo "take-over $i: $handed"
done
peer_alive traffic && grep -a -q "session ended" "$work/forward.log" &&
  fail "vvu-forward's session ended while vvu-traffic still ran: $(grep -a "session ended" "$work/forward.log")"

traffic_echo_complete "$packets"
echo "max_stall_us = $(json_field "$work/traffic.out" max_stall_us) over $takeovers device take-overs"

expect_eq "vvu-forward's front-end sessions" "$(grep -a -c "front-end connected" "$work/forward.log")" 1
# One session end: vvu-traffic's close, once the echo is done.
expect_eq "vvu-forward's session ends" "$(grep -a -c "session ended" "$work/forward.log")" 1
peer_stop forward TERM 20
line=$(grep -a '^{"port":0,' "$work/forward.out") || fail "vvu-forward printed no JSON for port 0"
echo "vvu-forward: $line"
for f in rx_packets tx_packets; do
  expect_eq "vvu-forward $f" "$(sed -n "s/.*\"$f\":\([0-9]*\).*/\1/p" <<<"$line")" "$packets"
done
last=device$takeovers
peer_stop "$last" TERM 20
echo "vvu-device (last): $(grep -a '^{' "$work/$last.out" | head -n 1)"
expect_eq "vvu-device drivers (one, across $takeovers hand-overs)" "$(json_field "$work/$last.out" drivers)" 1
expect_eq "vvu-device driver_restarts" "$(json_field "$work/$last.out" driver_restarts)" 0
expect_eq "vvu-device frontends" "$(json_field "$work/$last.out" frontends)" 1
expect_eq "vvu-device disconnects (vvu-traffic's close at the end)" "$(json_field "$work/$last.out" disconnects)" 1
for ((i = 0; i < takeovers; i++)); do
  grep -a -q "front-end disconnected\|driver detached\|driver dropped" "$work/device$i.log" &&
    fail "device$i lost a peer: $(grep -a "front-end disconnected\|driver detached\|driver dropped" "$work/device$i.log")"
done
echo "PASS: $test_name"
