#!/usr/bin/env bash
# Two QEMU guests (Linux virtio-net drivers) ping each other through a vhost-user back-end with
# two ports:
#
#   guest A (ping 10.0.0.2) ── SOCK0 ── back-end port 0 ⇄ port 1 ── SOCK1 ── guest B (responder)
#
#   tests/guest/check-guest.sh dpdk [GUESTDIR]                       dpdk-testpmd, io forwarding
#   tests/guest/check-guest.sh vvu-forward:MODE [GUESTDIR] [BINARY]  vvu-forward --mode MODE
#                                                                    (xconnect or learn)
#   tests/guest/check-guest.sh vvu-device:MODE [GUESTDIR] [BINARY] [VVU_DEVICE]
#       virtio-vhost-user: guest B connects to vvu-device's vhost-user socket instead, and
#       vvu-forward serves it over the device's PCI function (vfio-user):
#
#   guest A ── SOCK0 ── vvu-forward port 0 (unix:SOCK0) ⇄ port 1 (vvu:PCI) ── PCI ── vvu-device
#                                                                     SOCK1 ── guest B ──┘
#
#       Also required: vvu-device counted a front-end ("frontends" >= 1 in the JSON it prints on
#       SIGTERM) and logged "front-end connected to the driver (FRONTEND_UP)".
#   tests/guest/check-guest.sh vvu-trace:MODE [GUESTDIR] [BINARY]
#       vvu-forward as for vvu-forward:MODE, with vvu-trace between guest B and port 1:
#
#   guest A ── SOCK0 ── vvu-forward port 0 ⇄ port 1 ── SOCK1R ── vvu-trace ── SOCK1 ── guest B
#
#       Also required: the trace shows guest B's session (features, memory table with its fds,
#       each vring's set-up and kick), vvu-trace exits 0 on SIGTERM, and vvu-decode of its
#       --capture file gives the trace's lines, one for one. vvu-trace and vvu-decode are
#       taken from BINARY's directory.
#
# The dpdk back-end proves the guest itself. GUESTDIR defaults to build/guest (built by
# build-guest.sh when missing). Exit 0 only if guest A reports "VVU-GUEST-RESULT ping ok".
# Missing dpdk-testpmd or qemu: exit 77 (SKIP), or 1 when CI=true. Environment:
# VVU_CHECK_TIMEOUT (seconds for the result line, default 120), VVU_PING_COUNT (default 5),
# VVU_KEEP=1 keeps the work directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/guest/guest-lib.sh
. "$HERE/guest-lib.sh"

BACKEND=${1:?usage: $0 dpdk|vvu-forward:MODE|vvu-device:MODE|vvu-trace:MODE [GUESTDIR] [VVU_FORWARD] [VVU_DEVICE]}
GUESTDIR=${2:-$ROOT/build/guest}
VVU_FORWARD=${3:-${VVU_FORWARD:-$ROOT/build/gcc-release/examples/vvu-forward}}
VVU_DEVICE=${4:-${VVU_DEVICE:-$(dirname "$VVU_FORWARD")/vvu-device}}
case $BACKEND in
  dpdk) ;;
  vvu-forward:xconnect|vvu-forward:learn) [ -x "$VVU_FORWARD" ] || { echo "FAIL: no $VVU_FORWARD"; exit 1; } ;;
  vvu-device:xconnect|vvu-device:learn)
    [ -x "$VVU_FORWARD" ] || { echo "FAIL: no $VVU_FORWARD"; exit 1; }
    [ -x "$VVU_DEVICE" ] || { echo "FAIL: no $VVU_DEVICE"; exit 1; } ;;
  vvu-trace:xconnect|vvu-trace:learn)
    VVU_TRACE=$(dirname "$VVU_FORWARD")/vvu-trace VVU_DECODE=$(dirname "$VVU_FORWARD")/vvu-decode
    for exe in "$VVU_FORWARD" "$VVU_TRACE" "$VVU_DECODE"; do [ -x "$exe" ] || { echo "FAIL: no $exe"; exit 1; }; done ;;
  *) echo "usage: $0 dpdk|vvu-forward:MODE|vvu-device:MODE|vvu-trace:MODE (MODE: xconnect or learn) [GUESTDIR] [VVU_FORWARD] [VVU_DEVICE]" >&2; exit 2 ;;
esac
TMO=${VVU_CHECK_TIMEOUT:-120}
COUNT=${VVU_PING_COUNT:-5}
TESTPMD=${VVU_TESTPMD:-dpdk-testpmd}

if [ "$BACKEND" = dpdk ]; then
  command -v "$TESTPMD" >/dev/null 2>&1 || { vvu_skip_or_fail "$TESTPMD not installed (apt-get install dpdk-dev)"; exit $?; }
fi
vvu_guest_require || exit $?

t_start=$(vvu_now)
if [ ! -f "$GUESTDIR/vmlinuz" ] || [ ! -f "$GUESTDIR/initramfs.cpio.gz" ]; then
  timeout 900 "$HERE/build-guest.sh" "$GUESTDIR"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vvu-guest.XXXXXX")
SOCK0=$WORK/vhost0.sock SOCK1=$WORK/vhost1.sock PCI=$WORK/pci.sock SOCK1R=$WORK/vhost1-real.sock
PMD_PID='' A_PID='' B_PID='' DEV_PID='' TRACE_PID=''
PREFIX=vvu-guest-$$
ok=0

dump() {
  local f
  for f in "$WORK/guest-a.log" "$WORK/guest-a.log.qemu" "$WORK/guest-b.log" "$WORK/guest-b.log.qemu" "$WORK/backend.log" \
           "$WORK/device.log" "$WORK/device.out" "$WORK/trace.out" "$WORK/trace.log"; do
    [ -s "$f" ] || continue
    echo "===== $f (last 80 lines) ====="
    tail -n 80 "$f" | tr -d '\r'
  done
}
cleanup() {
  # No errexit here: vvu_stop's `wait` returns the status of a peer that already died (e.g.
  # vvu-forward exiting 1), which would end the trap before the logs are printed.
  set +e
  vvu_stop "$A_PID"; vvu_stop "$B_PID"; vvu_stop "$TRACE_PID"; vvu_stop "$PMD_PID"; vvu_stop "$DEV_PID"
  # EAL's runtime directory for our --file-prefix (testpmd leaves it behind).
  rm -rf "/var/run/dpdk/$PREFIX" "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk/$PREFIX"
  [ "$ok" -eq 1 ] || dump
  if [ "${VVU_KEEP:-0}" = 1 ] || [ "$ok" -ne 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two vhost-user ports (servers), frames forwarded port 0 <-> port 1.
if [ "$BACKEND" = dpdk ]; then
  # --no-huge: memory is memfd-backed, -m 512 with 32768 mbufs fits (peers.md).
  # --stats-period is load-bearing: without it a non-interactive testpmd waits on "Press enter
  # to exit", reads EOF from stdin and quits about a second after creating its sockets.
  timeout --kill-after=5 $((TMO + 60)) "$TESTPMD" -l 0,1 --main-lcore 0 -n 1 --no-huge -m 512 --no-pci \
    --file-prefix="$PREFIX" \
    --vdev "net_vhost0,iface=$SOCK0,queues=1" --vdev "net_vhost1,iface=$SOCK1,queues=1" \
    -- --total-num-mbufs=32768 --forward-mode=io --auto-start --nb-cores=1 --stats-period 10 \
    >"$WORK/backend.log" 2>&1 </dev/null &
elif [ "${BACKEND%%:*}" = vvu-trace ]; then
  timeout --kill-after=5 $((TMO + 60)) "$VVU_FORWARD" --mode "${BACKEND#vvu-trace:}" \
    --port "unix:$SOCK0" --port "unix:$SOCK1R" --poll event \
    >"$WORK/backend.log" 2>&1 </dev/null &
  PMD_PID=$!
  vvu_wait_socket "$SOCK1R" 30 || { echo "FAIL: vvu-forward did not create $SOCK1R within 30 s"; exit 1; }
  timeout --kill-after=5 $((TMO + 60)) "$VVU_TRACE" --listen "$SOCK1" --connect "$SOCK1R" \
    --capture "$WORK/session.vhu" >"$WORK/trace.out" 2>"$WORK/trace.log" </dev/null &
  TRACE_PID=$!
elif [ "${BACKEND%%:*}" = vvu-forward ]; then
  # Event mode: the forwarder sleeps on the guests' kicks when idle instead of taking a core
  # from the two TCG guests (2 cores here).
  timeout --kill-after=5 $((TMO + 60)) "$VVU_FORWARD" --mode "${BACKEND#vvu-forward:}" \
    --port "unix:$SOCK0" --port "unix:$SOCK1" --poll event \
    >"$WORK/backend.log" 2>&1 </dev/null &
else
  # vvu-device: the front-end (guest B) on SOCK1, the driver (vvu-forward's port 1) on PCI.
  # Its counters (one JSON line, on SIGTERM) go to device.out, its event log to device.log.
  timeout --kill-after=5 $((TMO + 60)) "$VVU_DEVICE" --vhost-user "$SOCK1" --pci "$PCI" \
    >"$WORK/device.out" 2>"$WORK/device.log" </dev/null &
  DEV_PID=$!
  if ! vvu_wait_socket "$PCI" 20 || ! vvu_wait_socket "$SOCK1" 20; then
    echo "FAIL: vvu-device did not create $PCI and $SOCK1 within 20 s"; exit 1
  fi
  timeout --kill-after=5 $((TMO + 60)) "$VVU_FORWARD" --mode "${BACKEND#vvu-device:}" \
    --port "unix:$SOCK0" --port "vvu:$PCI" --poll event \
    >"$WORK/backend.log" 2>&1 </dev/null &
fi
[ "${BACKEND%%:*}" = vvu-trace ] || PMD_PID=$!

if ! vvu_wait_socket "$SOCK0" 30 || ! vvu_wait_socket "$SOCK1" 30; then
  echo "FAIL: the back-end did not create $SOCK0 and $SOCK1 within 30 s"; exit 1
fi
if [ -n "$DEV_PID" ]; then
  # Guest B may connect once vvu-forward's driver is ready behind the device (BACKEND_UP).
  if ! vvu_guest_wait "$WORK/device.log" "driver ready" 20 "$DEV_PID" >/dev/null; then
    echo "FAIL: vvu-device did not log \"driver ready\" within 20 s"; exit 1
  fi
  kill -0 "$PMD_PID" 2>/dev/null || { echo "FAIL: vvu-forward ended"; exit 1; }
fi
t_pmd=$(vvu_now)

vvu_guest_start "$GUESTDIR" "$SOCK1" "$WORK/guest-b.log" 52:54:00:00:00:02 \
  "vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=$TMO"
B_PID=$VVU_GUEST_PID
vvu_guest_start "$GUESTDIR" "$SOCK0" "$WORK/guest-a.log" 52:54:00:00:00:01 \
  "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=$COUNT vvu.interval=0.2 vvu.wait=$((TMO / 2))"
A_PID=$VVU_GUEST_PID
t_boot=$(vvu_now)

ready_a=$(vvu_guest_wait "$WORK/guest-a.log" VVU-GUEST-READY "$TMO" "$A_PID") || true
t_ready=$(vvu_now)
result=$(vvu_guest_wait "$WORK/guest-a.log" VVU-GUEST-RESULT "$TMO" "$A_PID") || true
t_done=$(vvu_now)
ready_b=$(grep -a -m1 VVU-GUEST-READY "$WORK/guest-b.log" | tr -d '\r' || true)

timing() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
echo "guest A: ${ready_a:-no READY line}"
echo "guest B: ${ready_b:-no READY line}"
echo "guest A: ${result:-no RESULT line}"
echo "timings: build/check $(timing "$t_start" "$t_pmd") s (incl. testpmd up), guests READY $(timing "$t_boot" "$t_ready") s after start, RESULT $(timing "$t_boot" "$t_done") s after start, total $(timing "$t_start" "$t_done") s"

case "$result" in
  *"VVU-GUEST-RESULT ping ok "*) ;;
  *) echo "FAIL: no successful ping result"; exit 1 ;;
esac

# vvu-forward's own counters: on SIGTERM it prints one JSON line per port. Every ping and its
# reply crossed both ports. (Drops are allowed: a guest may ARP before the other one's driver
# has given the port receive buffers, and those frames have nowhere to go.)
if [ "$BACKEND" != dpdk ]; then
  if [ -n "$DEV_PID" ]; then
    # The guests go first, so the device's session ends with the front-end's own disconnect.
    vvu_stop "$A_PID"; A_PID=''
    vvu_stop "$B_PID"; B_PID=''
  fi
  vvu_stop_clean vvu-forward "$PMD_PID" || exit 1
  PMD_PID=''
  port0=$(grep -a '^{"port":0,' "$WORK/backend.log" || true)
  port1=$(grep -a '^{"port":1,' "$WORK/backend.log" || true)
  echo "vvu-forward: $port0"
  echo "vvu-forward: $port1"
  field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"; }
  for line in "$port0" "$port1"; do
    rx=$(field "$line" rx_packets) tx=$(field "$line" tx_packets)
    if [ -z "$rx" ] || [ "$rx" -lt "$COUNT" ] || [ "${tx:-0}" -lt "$COUNT" ]; then
      echo "FAIL: vvu-forward's counters do not show the ping traffic: $line"; exit 1
    fi
  done
fi

# vvu-trace: guest B's whole session in the trace, and the capture decodes to the same lines.
if [ -n "$TRACE_PID" ]; then
  vvu_stop "$B_PID"; B_PID=''
  vvu_stop_clean vvu-trace "$TRACE_PID" 20 || exit 1
  TRACE_PID=''
  live=$(grep -a -E '^ *[0-9]+\.[0-9]+ (->|<-|<=|=>) ' "$WORK/trace.out" | sed -E 's/^ *[0-9]+\.[0-9]+ //')
  for pattern in '^-> SET_FEATURES' '^-> (SET_MEM_TABLE|ADD_MEM_REG)( need_reply)? .* fds=[1-8]$' '^-> SET_VRING_NUM( need_reply)? index=1 ' \
                 '^-> SET_VRING_ADDR( need_reply)? index=1 ' '^-> SET_VRING_KICK( need_reply)? .*fds=1$' \
                 '^-> SET_VRING_CALL( need_reply)? .*fds=1$'; do
    line=$(grep -a -m 1 -E -- "$pattern" <<<"$live") || { echo "FAIL: the trace has no line matching $pattern"; exit 1; }
    echo "trace: $line"
  done
  decoded=$("$VVU_DECODE" "$WORK/session.vhu" | grep -a -E '^  (->|<-|<=|=>) ' | sed 's/^  //')
  if [ "$live" != "$decoded" ]; then
    diff <(echo "$live") <(echo "$decoded") | head -20
    echo "FAIL: vvu-decode of the capture differs from the live trace"; exit 1
  fi
  echo "vvu-trace: $(wc -l <<<"$live") messages traced; vvu-decode of the capture gives the same lines"
fi

# vvu-device: a front-end (guest B's QEMU) reached the driver, and its counters say so.
if [ -n "$DEV_PID" ]; then
  vvu_stop_clean vvu-device "$DEV_PID" 20 || exit 1
  DEV_PID=''
  dev=$(grep -a '^{' "$WORK/device.out" | tail -n 1 || true)
  echo "vvu-device: ${dev:-no JSON line}"
  frontends=$(field "$dev" frontends)
  if [ -z "$frontends" ] || [ "$frontends" -lt 1 ]; then
    echo "FAIL: vvu-device's counters show no front-end: ${dev:-no JSON line}"; exit 1
  fi
  up=$(grep -a -m1 -F "front-end connected to the driver (FRONTEND_UP)" "$WORK/device.log" || true)
  [ -n "$up" ] || { echo "FAIL: vvu-device never logged FRONTEND_UP"; exit 1; }
  echo "$up"
fi
ok=1
echo "PASS: two guests pinged each other through $BACKEND"
