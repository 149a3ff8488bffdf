#!/usr/bin/env bash
# vvu-traffic (vvu's front-end) against DPDK 22.11 testpmd's net_vhost back-end.
#   --direction tx: vvu-traffic sends 1 000 000 64-byte frames, testpmd (rxonly) must count
#                   exactly 1 000 000.
#   --direction rx: testpmd (txonly) sends, vvu-traffic receives 1 000 000 frames: every one
#                   64 bytes with a plain net header (no flags, no GSO, num_buffers >= 1).
#   --direction echo: testpmd forwards in macswap mode, back to vvu-traffic (--mode echo), which
#                   checks each of the 1 000 000 frames end to end: its sequence number (none
#                   lost, late or twice) and every byte but the MAC addresses, which come back
#                   swapped.
# Usage: traffic-dpdk.sh --traffic PATH-TO-vvu-traffic --direction tx|rx|echo --ring split|packed
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

traffic="" direction=tx ring=split packets=${PACKETS:-1000000}
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --direction) direction=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "frontend.dpdk.$direction.$ring" "$TESTPMD"
need_exe "$traffic"
packed=()
[[ $ring == packed ]] && packed=(--packed)
sock=$work/vhost.sock
read -r -a pin <<<"$(pin0)"

if [[ $direction == tx ]]; then
  testpmd_vhost_start testpmd "$sock" rxonly
  PEER_STDOUT=1 peer_run traffic "${pin[@]}" "$traffic" --connect "$sock" --mode tx --packets "$packets" \
    --size 64 "${packed[@]}" --timeout 10000
  peer_wait traffic 90
  ((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
  expect_eq "vvu-traffic sent" "$(json_field "$work/traffic.out" sent)" "$packets"
  expect_eq "vvu-traffic completed" "$(json_field "$work/traffic.out" completed)" "$packets"
  echo "vvu-traffic: $(grep -a '^{' "$work/traffic.out" | tail -n 1)"
  # Every buffer came back, so testpmd has counted every frame; its final stats say so.
  peer_stop testpmd INT 20
  rx=$(testpmd_final testpmd 0 RX-packets) || exit 1
  expect_eq "testpmd RX-packets" "$rx" "$packets"
elif [[ $direction == echo ]]; then
  testpmd_vhost_start testpmd "$sock" macswap
  PEER_STDOUT=1 peer_run traffic "${pin[@]}" "$traffic" --connect "$sock" --mode echo --packets "$packets" \
    --size 64 "${packed[@]}" --timeout 10000
  peer_wait traffic 90
  ((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
  echo "vvu-traffic: $(grep -a '^{' "$work/traffic.out" | tail -n 1)"
  for f in sent received; do expect_eq "vvu-traffic $f" "$(json_field "$work/traffic.out" "$f")" "$packets"; done
  for f in lost gaps late duplicates bad_frames rx_errors; do
    expect_eq "vvu-traffic $f" "$(json_field "$work/traffic.out" "$f")" 0
  done
  peer_stop testpmd INT 20
  fwd=$(testpmd_final testpmd 0 TX-packets) || exit 1
  expect_eq "testpmd TX-packets (macswap)" "$fwd" "$packets"
else
  testpmd_vhost_start testpmd "$sock" txonly
  PEER_STDOUT=1 peer_run traffic "${pin[@]}" "$traffic" --connect "$sock" --mode rx --packets "$packets" \
    --size 64 --seq ignore "${packed[@]}" --timeout 10000
  peer_wait traffic 90
  ((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
  echo "vvu-traffic: $(grep -a '^{' "$work/traffic.out" | tail -n 1)"
  expect_eq "vvu-traffic received" "$(json_field "$work/traffic.out" received)" "$packets"
  expect_eq "frames with a wrong length or header" "$(json_field "$work/traffic.out" bad_frames)" 0
  expect_eq "receive buffers too short for a header" "$(json_field "$work/traffic.out" rx_errors)" 0
  expect_eq "bytes" "$(json_field "$work/traffic.out" bytes)" "$((packets * 64))"
  pps=$(json_field "$work/traffic.out" pps)
  ((pps > 0)) || fail "no receive rate reported (pps $pps)"
  peer_stop testpmd INT 20
  tx=$(testpmd_final testpmd 0 TX-packets) || exit 1
  ((tx >= packets)) || fail "testpmd sent $tx frames, fewer than the $packets received"
  echo "ok: testpmd TX-packets $tx >= $packets received; rate $pps pps"
fi
echo "PASS: $test_name"
