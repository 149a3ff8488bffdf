#!/usr/bin/env bash
# The seed's topology for real: the VVU driver runs inside a QEMU guest ("B", QEMU 11 from a
# Debian sid root, see tests/guest/build-qemu11.sh), whose PCI bus holds vfio-user-pci
# functions served by vvu-devices on this host; vvu-forward in B reaches them through VFIO
# (--port vfio:BDF) behind QEMU's emulated IOMMU.
#
#   vvu-guest.sh ping|restart|garbage|txonly GUESTDIR VVU_FORWARD VVU_DEVICE QEMU11DIR
#
#   ping     guests A and C (QEMU 7.2, virtio-net over vhost-user to vvu-devices 1 and 2) ping
#            each other 5/5 through vvu-forward --mode learn in B, which holds both functions:
#
#              A ─ fe1.sock ─ vvu-device 1 ─ pci1.sock ─┐                    ┌─ vfio:BDF1
#                                                       ├─ B (QEMU 11) ─ vvu-forward --mode learn
#              C ─ fe2.sock ─ vvu-device 2 ─ pci2.sock ─┘                    └─ vfio:BDF2
#
#   restart  the same; while A pings (every 0.2 s), B is killed (SIGKILL to QEMU) and started
#            again. A's pings must get replies again, and vvu-device 1 must have kept A's
#            session: no "front-end disconnected" in its log before the end, driver_restarts 1.
#   garbage  the ping topology, but before vvu-forward attaches, a hostile driver in B
#            (tests/guest/vvu-garbage.c) sets queues up with garbage, rings every doorbell and
#            writes 3000 random values into each function's registers: both vvu-devices must live
#            on, and the ping through the well-behaved vvu-forward that attaches next must pass.
#   txonly   DPDK testpmd (virtio-user, txonly) → vvu-device 1 → vvu-forward --mode rxonly in B:
#            testpmd's TX count and B's rx_packets agree within one ring; the rate is printed.
#
# GUESTDIR holds the test guest (tests/guest/build-guest.sh; built here when missing) and gets
# the back-end guest's initramfs (tests/guest/build-backend-guest.sh). QEMU11DIR caches sid's
# QEMU 11 (built here when missing: root and the Debian mirror are needed; without them the test
# skips, and fails under CI=true). Every wait is bounded; failures print every peer's log.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
GUEST_SCRIPTS=$HERE/../../guest
BACKEND=${3:-}
# shellcheck source=tests/interop/dpdk/lib.sh
source "$HERE/../dpdk/lib.sh"

scenario=${1:-}
GUESTDIR=${2:-}
VVU_DEVICE=${4:-}
QEMU11DIR=${5:-}
case $scenario in ping | restart | garbage | txonly) ;; *)
  echo "usage: $0 ping|restart|garbage|txonly GUESTDIR VVU_FORWARD VVU_DEVICE QEMU11DIR" >&2
  exit 2
  ;;
esac
[[ -n $GUESTDIR && -x $VVU_DEVICE && -n $QEMU11DIR ]] || {
  echo "usage: $0 $scenario GUESTDIR VVU_FORWARD VVU_DEVICE QEMU11DIR" >&2
  exit 2
}
PEER_TIMEOUT=${PEER_TIMEOUT:-400}
dpdk_init "vvu-guest.$scenario"
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 (QEMU 7.2, for guests A and C) not installed"

# ---- what the topology needs, built once and cached in the build tree
mkdir -p "$GUESTDIR" "$QEMU11DIR"
bash "$GUEST_SCRIPTS/build-guest.sh" "$GUESTDIR" >"$work/build-guest.log" 2>&1 ||
  skip "the test guest cannot be built here: $(tail -n 3 "$work/build-guest.log")"
bash "$GUEST_SCRIPTS/build-backend-guest.sh" "$GUESTDIR" "$BACKEND" >"$work/build-backend-guest.log" 2>&1 ||
  fail "the back-end guest's initramfs: $(tail -n 5 "$work/build-backend-guest.log")"
bash "$GUEST_SCRIPTS/build-qemu11.sh" "$QEMU11DIR" >"$work/build-qemu11.log" 2>&1 ||
  skip "QEMU 11 (Debian sid) cannot be built here: $(tail -n 3 "$work/build-qemu11.log")"
QEMU11=$QEMU11DIR/qemu11
GUESTDIR=$(cd "$GUESTDIR" && pwd)

json_field() { grep -o "\"$2\":[0-9]*" "$1" | head -n 1 | cut -d: -f2; }

# A test guest (QEMU 7.2): NAME's console in NAME.log, QEMU's own messages in NAME.qemu.log.
guest_start() {
  local name=$1 sock=$2 mac=$3 args=$4
  peer_run "$name.qemu" qemu-system-x86_64 -accel tcg -machine pc -cpu max -smp 1 -m 256M \
    -nodefaults -nic none -no-reboot -display none -serial "file:$work/$name.log" \
    -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
    -chardev "socket,id=c0,path=$sock" -netdev vhost-user,id=n0,chardev=c0 \
    -device "virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=$mac" \
    -kernel "$GUESTDIR/vmlinuz" -initrd "$GUESTDIR/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 vvu.mac=$mac $args"
  peer_names+=("$name")
}

# B (QEMU 11): one vfio-user-pci function per PCI socket, behind an emulated IOMMU
# (caching-mode: QEMU learns each mapping the guest makes and passes it to vvu-device as a
# DMA map). Its console in NAME.log.
backend_guest_start() {
  local name=$1 args=$2
  shift 2
  local -a functions=()
  local pci
  for pci in "$@"; do
    functions+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$pci\"}}")
  done
  : >"$work/$name.log"
  peer_run "$name.qemu" "$QEMU11" -accel tcg -machine q35,memory-backend=mem,kernel-irqchip=split -cpu max -smp 1 \
    -m 512M -object memory-backend-memfd,id=mem,size=512M,share=on \
    -nodefaults -no-reboot -display none -serial "file:$work/$name.log" \
    -device intel-iommu,caching-mode=on,intremap=off "${functions[@]}" \
    -kernel "$GUESTDIR/vmlinuz" -initrd "$GUESTDIR/initramfs-backend.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 intel_iommu=on $args"
  peer_names+=("$name")
}

# wait_console NAME TEXT SECS: like wait_log, for a guest whose console is NAME.log and whose
# QEMU is the peer NAME.qemu.
wait_console() {
  local name=$1 text=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    grep -a -q -F -- "$text" "$work/$name.log" 2>/dev/null && return 0
    peer_alive "$name.qemu" || { grep -a -q -F -- "$text" "$work/$name.log" && return 0; fail "$name's QEMU ended before its console said '$text'"; }
    nap 0.1
  done
  fail "$name's console did not say '$text' within ${secs}s"
}

case $scenario in
ping | restart | garbage)
  device_start d1 "$work/fe1.sock" "$work/pci1.sock" --max-queues 2
  device_start d2 "$work/fe2.sock" "$work/pci2.sock" --max-queues 2
  extra=""
  [[ $scenario == garbage ]] && extra="vvu.garbage=3000"
  backend_guest_start b "vvu.mode=learn vvu.timeout=300 $extra" "$work/pci1.sock" "$work/pci2.sock"
  wait_console b VVU-GUEST-READY 180
  if [[ $scenario == garbage ]]; then
    (($(log_count b VVU-GUEST-GARBAGE) == 2)) || fail "the hostile driver did not run on both functions"
    grep -a -F VVU-GUEST-GARBAGE "$work/b.log" | tr -d '\r' | sed 's/^/ok: B: /'
    peer_alive d1 && peer_alive d2 || fail "a vvu-device ended under the hostile driver"
    echo "ok: both vvu-devices live on under the hostile driver"
  fi
  wait_log d1 "driver ready (BACKEND_UP)" 60
  wait_log d2 "driver ready (BACKEND_UP)" 60
  guest_start c "$work/fe2.sock" 52:54:00:00:00:02 "vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=200"
  if [[ $scenario != restart ]]; then
    guest_start a "$work/fe1.sock" 52:54:00:00:00:01 \
      "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=5 vvu.interval=0.2 vvu.wait=120"
    wait_console a VVU-GUEST-RESULT 200
    result=$(grep -a -F VVU-GUEST-RESULT "$work/a.log" | tr -d '\r')
    [[ $result == *"ping ok sent=5 received=5"* ]] || fail "guest A: $result"
    echo "ok: A pinged C through vvu-forward in B: $result"
    grep -a -F "round-trip" "$work/a.log" | tr -d '\r' | sed 's/^/ok: A: /'
  else
    guest_start a "$work/fe1.sock" 52:54:00:00:00:01 \
      "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=400 vvu.interval=0.2 vvu.wait=120"
    wait_console a VVU-GUEST-RUN 200
    wait_console a "seq=5 " 60
    before=$(log_count a "bytes from")
    echo "ok: A gets replies through B ($before so far); killing B"
    kill -KILL "$(peer_process b.qemu)"
    peer_wait b.qemu 20
    t0=$(awk '{print $1}' /proc/uptime)
    wait_log d1 "front-end session kept for the next driver" 30
    mv "$work/b.log" "$work/b-first.log"
    peer_names+=(b-first)
    backend_guest_start b "vvu.mode=learn vvu.timeout=300" "$work/pci1.sock" "$work/pci2.sock"
    wait_console b VVU-GUEST-READY 120
    stopped=$(log_count a "bytes from")
    for ((i = 0; i < 900; i++)); do
      (($(log_count a "bytes from") >= stopped + 5)) && break
      peer_alive a.qemu || fail "A ended before its pings were answered again"
      nap 0.1
    done
    after=$(log_count a "bytes from")
    ((after >= stopped + 5)) || fail "A's pings got no replies after B came back ($stopped before, $after now)"
    t1=$(awk '{print $1}' /proc/uptime)
    echo "ok: A's pings answered again after B's restart ($before replies before the kill, $after now; $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s from the kill to the fifth reply after it)"
    gone=$(log_count d1 "front-end disconnected")
    ((gone == 0)) || fail "vvu-device 1 let A's front-end go ($gone times) while B restarted"
    echo "ok: vvu-device 1 kept A's session: no front-end disconnect"
  fi
  # B first: QEMU 11 aborts (an assertion) when a vfio-user server goes away under it.
  peer_stop b.qemu TERM 20
  peer_stop d1 TERM 20
  peer_stop d2 TERM 20
  echo "ok: vvu-device 1: $(cat "$work/d1.out")"
  echo "ok: vvu-device 2: $(cat "$work/d2.out")"
  if [[ $scenario == restart ]]; then
    restarts=$(json_field "$work/d1.out" driver_restarts)
    [[ $restarts == 1 ]] || fail "vvu-device 1: driver_restarts $restarts, want 1"
    drivers=$(json_field "$work/d1.out" drivers)
    [[ $drivers == 2 ]] || fail "vvu-device 1: drivers $drivers, want 2"
  fi
  ;;
txonly)
  device_start d1 "$work/fe1.sock" "$work/pci1.sock" --max-queues 2
  # --stats 1: B's vvu-forward prints its port counters every second on B's console.
  backend_guest_start b "vvu.mode=rxonly vvu.timeout=300 vvu.args=--stats,1" "$work/pci1.sock"
  wait_console b VVU-GUEST-READY 120
  wait_log d1 "driver ready (BACKEND_UP)" 60
  frontend_start fe "$work/fe1.sock" txonly 1
  wait_stats fe TX-packets 120
  sleep 10 # traffic time, not a readiness wait
  # SIGINT: testpmd stops forwarding, prints its final statistics and exits.
  peer_stop fe INT 60
  tx=$(final_stat fe 0 TX-packets) || exit 1
  # B's counters once they stop moving: its last two complete stats lines (one a second) show
  # the same rx_packets.
  rx=""
  for ((i = 0; i < 600; i++)); do
    last_two=$(grep -a -o '{"port":0,"rx_packets":[0-9]*,[^}]*}' "$work/b.log" | cut -d: -f3 | cut -d, -f1 | tail -n 2)
    if [[ $last_two =~ ^([0-9]+)$'\n'([0-9]+)$ ]] && [[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]]; then
      rx=${BASH_REMATCH[2]}
      break
    fi
    peer_alive b.qemu || fail "B ended before its counters settled"
    nap 0.1
  done
  [[ -n $rx ]] || fail "B's rx_packets did not settle"
  # The rate: B's rx_packets over the seconds in which they grew (first to last stats line).
  rate=$(grep -a -o '{"port":0,"rx_packets":[0-9]*,[^}]*}' "$work/b.log" | cut -d: -f3 | cut -d, -f1 |
    awk '$1 > 0 && !s { s = NR; f = $1 } { if ($1 != p) e = NR; p = $1 } END { if (e > s) printf "%.0f", (p - f) / (e - s); else print 0 }')
  check_within "testpmd TX-packets vs vvu-forward rx_packets in B" "$tx" "$rx" "$RING"
  echo "ok: testpmd sent $tx frames, vvu-forward in B received $rx (rxonly over VFIO in a QEMU 11 guest): about $rate frames/s"
  peer_stop b.qemu TERM 20
  peer_stop d1 TERM 20
  echo "ok: vvu-device 1: $(cat "$work/d1.out")"
  ;;
esac
echo "PASS: vvu-guest.$scenario"
