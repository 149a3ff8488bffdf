#!/usr/bin/env bash
# A front-end breaks one of its rings under vvu-forward while another front-end's traffic runs
# through the same vvu-forward (--mode loopback, two ports):
#   port 0: vvu-traffic echo, 100 000 frames at 12 500 a second (8 s): every one must come back;
#   port 1: vvu-traffic echo of 1 000 frames, then --break-ring (a transmit buffer at an address
#           outside its memory). vvu-forward must log "vring 1 broken by the front-end" once,
#           signal the ring's error eventfd (SET_VRING_ERR) and answer GET_STATUS with
#           DEVICE_NEEDS_RESET (0x40);
#   port 1 again: the next front-end's 1 000 frames come back (the port serves on);
#   port 0 must still have been running when its neighbour's ring broke, and lose nothing.
# Usage: broken-ring.sh --traffic PATH --forward PATH --ring split|packed [--device PATH]
# With --device both ports cross vvu-devices: the device keeps SET_VRING_ERR's fd behind the
# vring's error doorbell, which the driver's back-end rings — the same two signals must arrive.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

traffic="" forward="" ring=split
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
fe_init "frontend.broken-ring.$ring${VVU_DEVICE:+.via-vvu}"
need_exe "$traffic"
need_exe "$forward"
packed=()
[[ $ring == packed ]] && packed=(--packed)

socks=("$work/p0.sock" "$work/p1.sock")
ports=()
if [[ -n $VVU_DEVICE ]]; then
  for i in 0 1; do
    device_start "device$i" "${socks[$i]}" "$work/pci$i.sock"
    ports+=(--port "vvu:$work/pci$i.sock")
  done
else
  for i in 0 1; do ports+=(--port "unix:${socks[$i]}"); done
fi
PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --poll event "${ports[@]}"
if [[ -n $VVU_DEVICE ]]; then
  for i in 0 1; do wait_log "device$i" "driver ready" 20; done
else
  for i in 0 1; do wait_socket "${socks[$i]}" forward 20; done
fi

# traffic NAME PORT ARGS...: a vvu-traffic echo session on port PORT.
traffic() {
  local name=$1 port=$2
  shift 2
  PEER_STDOUT=1 peer_run "$name" "$traffic" --connect "${socks[$port]}" --mode echo --size 64 "${packed[@]}" \
    --timeout 5000 --idle 5000 "$@"
}
# echo_complete NAME PACKETS: the session ended by itself with status 0, every frame back intact.
echo_complete() {
  local name=$1 packets=$2 f
  ((peer_rc == 0)) || fail "$name: vvu-traffic exited with status $peer_rc"
  echo "$name: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
  for f in sent received; do expect_eq "$name $f" "$(json_field "$work/$name.out" $f)" "$packets"; done
  for f in gaps lost late duplicates bad_frames; do expect_eq "$name $f" "$(json_field "$work/$name.out" $f)" 0; done
}

traffic steady 0 --packets 100000 --rate 12500
wait_log forward "port 0: front-end connected" 20

traffic breaker 1 --packets 1000 --break-ring
peer_wait breaker 60
echo_complete breaker 1000
peer_alive steady || fail "port 0's traffic had ended before port 1's ring broke: the test proved nothing about it"
expect_eq "breaker: buffer posted" "$(json_field "$work/breaker.out" posted)" true
status=$(json_field "$work/breaker.out" status)
[[ $status =~ ^[0-9]+$ ]] || fail "breaker: GET_STATUS gave no status ($status)"
((status & 0x40)) || fail "breaker: GET_STATUS $status lacks DEVICE_NEEDS_RESET (0x40)"
expect_eq "breaker: error eventfd signalled" "$(json_field "$work/breaker.out" error_signalled)" true
echo "ok: the broken ring was reported: status $status${VVU_DEVICE:+ (through vvu-device)}"

# The port takes the next front-end.
traffic next 1 --packets 1000
peer_wait next 60
echo_complete next 1000

peer_wait steady 60
echo_complete steady 100000

peer_stop forward TERM 20
reports=$(log_count forward "vring 1 broken by the front-end (buffer outside guest memory)")
expect_eq "vvu-forward's reports of the broken ring" "$reports" 1
grep -a "broken by the front-end" "$work/forward.log"
for port in 0 1; do
  line=$(grep -a "^{\"port\":$port," "$work/forward.out") || fail "vvu-forward printed no JSON for port $port"
  echo "vvu-forward: $line"
done
# Port 0 moved exactly its front-end's frames; port 1 its two sessions' (the broken ring's
# buffer was never taken).
expect_eq "vvu-forward port 0 rx_packets" "$(sed -n 's/^{"port":0,"rx_packets":\([0-9]*\).*/\1/p' "$work/forward.out")" 100000
expect_eq "vvu-forward port 1 rx_packets" "$(sed -n 's/^{"port":1,"rx_packets":\([0-9]*\).*/\1/p' "$work/forward.out")" 2000
echo "PASS: $test_name"
