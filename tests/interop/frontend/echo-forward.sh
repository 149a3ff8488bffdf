#!/usr/bin/env bash
# vvu-traffic --mode echo through vvu-forward --mode loopback: 1 000 000 sequence-numbered frames
# out and back, none lost, none out of order, and vvu-forward's counters agree.
# Usage: echo-forward.sh --traffic PATH-TO-vvu-traffic --forward PATH-TO-vvu-forward --ring split|packed
#                        [--device PATH-TO-vvu-device]
# With --device the session crosses a vvu-device: vvu-traffic connects to the device's vhost-user
# socket and vvu-forward serves it over the PCI-BAR transport (--port vvu:PCI).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

traffic="" forward="" ring=split packets=${PACKETS:-1000000}
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
VVU_DEVICE=${VVU_DEVICE:-}
fe_init "frontend.echo.$ring${VVU_DEVICE:+.via-vvu}"
need_exe "$traffic"
need_exe "$forward"
packed=()
[[ $ring == packed ]] && packed=(--packed)
sock=$work/loop.sock
read -r -a pin <<<"$(pin0)"
cpu=()
[[ ${#pin[@]} -gt 0 ]] && cpu=(--cpu 1)

if [[ -n $VVU_DEVICE ]]; then
  device_start device "$sock" "$work/pci.sock"
  PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --port "vvu:$work/pci.sock" "${cpu[@]}"
  wait_log device "driver ready" 20
else
  PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --port "unix:$sock" "${cpu[@]}"
  wait_socket "$sock" forward 20
fi
PEER_STDOUT=1 peer_run traffic "${pin[@]}" "$traffic" --connect "$sock" --mode echo --packets "$packets" \
  --size 64 "${packed[@]}" --timeout 10000 --idle 5000
traffic_echo_complete "$packets"
peer_stop forward TERM 20
line=$(grep -a '^{"port":0,' "$work/forward.out") || fail "vvu-forward printed no JSON for port 0"
echo "vvu-forward: $line"
for f in rx_packets tx_packets; do
  v=$(sed -n "s/.*\"$f\":\([0-9]*\).*/\1/p" <<<"$line")
  expect_eq "vvu-forward $f" "$v" "$packets"
done
expect_eq "vvu-forward tx_dropped" "$(sed -n 's/.*"tx_dropped":\([0-9]*\).*/\1/p' <<<"$line")" 0
if [[ -n $VVU_DEVICE ]]; then
  peer_stop device TERM 20
  echo "vvu-device: $(grep -a '^{' "$work/device.out" | tail -n 1)"
  expect_eq "vvu-device front-ends" "$(json_field "$work/device.out" frontends)" 1
fi
echo "PASS: $test_name"
