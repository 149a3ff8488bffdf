#!/usr/bin/env bash
# The main job: builds vvu and runs it end to end against real peers on this machine.
#   0. Live update: vvu-traffic echoes numbered frames at 1 Mpps through vvu-forward, and a new
#      vvu-forward takes the session over mid-stream, 5 times, on a unix: port and on a vvu:
#      port behind vvu-device (the VVU driver handed over); then vvu-forward under DPDK
#      testpmd (virtio-user server=1) is killed with SIGKILL and restarted, twice. Frames lost
#      and the longest stall printed.
#   1. virtio-vhost-user, the seed's topology: DPDK 22.11 testpmd (virtio-user, txonly) ->
#      vvu-device (the VVU PCI function, over vfio-user) -> vvu-forward --port vvu:PCI (rxonly),
#      then vvu-traffic echoing 1 000 000 frames through vvu-device and vvu-forward --mode
#      loopback; every count printed and checked.
#   2. vvu-forward between two DPDK testpmd front-ends, one on a unix: port and one through
#      vvu-device on a vvu: port (io forwarding): frames circulate A -> port 0 -> port 1 -> B
#      -> port 1 -> port 0 -> A; every count printed.
#   3. Two QEMU 7.2 guests (Linux virtio-net) ping each other through vvu-forward's L2 switch;
#      then the seed's topology itself: the VVU driver inside a QEMU 11 guest B (vvu-forward
#      --port vfio:BDF over vfio-user-pci functions of two vvu-devices), guests A and C pinging
#      each other through B. The first run builds QEMU 11 from Debian sid into the build tree
#      (a few minutes; tests/guest/build-qemu11.sh).
#   4. Devices other than a NIC: vvu-blk verify against vvu-blk-server behind vvu-device; a QEMU
#      guest writing files to a vhost-user-blk disk on vvu-blk-server while the server is killed
#      with SIGKILL three times (inflight requests taken again), a second boot reading them back;
#      a guest reading /dev/hwrng from vvu-rng-server.
#   5. The real opening sessions of QEMU and DPDK, decoded message by message (vvu-decode).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VVU_BUILD_ROOT:-$root/build}/gcc-release

bash "$root/scripts/install-deps.sh" all
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ >/dev/null
cmake --build "$build" -j "${VVU_JOBS:-$(nproc)}" --target vvu-forward vvu-device vvu-traffic vvu-decode \
  vvu-blk vvu-blk-server vvu-rng-server
ex=$build/examples

printf '\n==== live update: vvu-traffic echo at 1 Mpps, vvu-forward taken over 5 times mid-stream\n'
bash "$root/tests/interop/live-update/takeover-echo.sh" --traffic "$ex/vvu-traffic" --forward "$ex/vvu-forward" \
  --ring split --takeovers 5

printf '\n==== live update of a vvu: port: the same through vvu-device, the driver handed over 5 times\n'
bash "$root/tests/interop/live-update/takeover-echo.sh" --traffic "$ex/vvu-traffic" --forward "$ex/vvu-forward" \
  --device "$ex/vvu-device" --ring split --takeovers 5

printf '\n==== crash recovery: testpmd (virtio-user server=1) -> vvu-forward unix-client:, killed -9 twice\n'
bash "$root/tests/interop/live-update/crash-testpmd.sh" --backend "$ex/vvu-forward" --ring split

printf '\n==== testpmd txonly -> vvu-device -> vvu-forward --port vvu:PCI --mode rxonly\n'
bash "$root/tests/interop/dpdk/one-way.sh" --backend "$ex/vvu-forward" --via vvu --device "$ex/vvu-device" \
  --direction to-backend --ring split --seconds 5

printf '\n==== vvu-traffic echo -> vvu-device -> vvu-forward --port vvu:PCI --mode loopback\n'
bash "$root/tests/interop/frontend/echo-forward.sh" --traffic "$ex/vvu-traffic" --forward "$ex/vvu-forward" \
  --device "$ex/vvu-device" --ring split

printf '\n==== vvu-forward --mode xconnect: testpmd A on unix:, testpmd B through vvu-device on vvu:\n'
bash "$root/tests/interop/dpdk/xconnect.sh" --backend "$ex/vvu-forward" --via mixed --device "$ex/vvu-device" \
  --seconds 5

printf '\n==== two QEMU guests ping each other through vvu-forward --mode learn\n'
bash "$root/tests/guest/check-guest.sh" vvu-forward:learn "$build/guest" "$ex/vvu-forward"

printf '\n==== the seed topology: guests A and C ping each other through the VVU driver inside QEMU 11 guest B\n'
bash "$root/tests/interop/vvu-guest/vvu-guest.sh" ping "$build/guest" "$ex/vvu-forward" "$ex/vvu-device" "$build/qemu11"

printf '\n==== vvu-blk verify -> vvu-device -> vvu-blk-server --port vvu:PCI (64 MiB image)\n'
bash "$root/tests/interop/frontend/blk-verify.sh" --blk "$ex/vvu-blk" --server "$ex/vvu-blk-server" \
  --device "$ex/vvu-device"

printf '\n==== a QEMU guest writes 12 files to a vhost-user-blk disk; vvu-blk-server killed -9 three times\n'
bash "$root/tests/interop/devices/guest-disk-crash.sh" --server "$ex/vvu-blk-server" --guest-dir "$build/guest"

printf '\n==== a QEMU guest reads /dev/hwrng from vvu-rng-server\n'
bash "$root/tests/interop/devices/guest-rng.sh" --server "$ex/vvu-rng-server" --guest-dir "$build/guest"

printf '\n==== the opening sessions of QEMU 7.2 and DPDK 22.11, decoded\n'
"$ex/vvu-decode" "$root"/tests/captures/qemu-7.2-net-opening.vhu \
  "$root"/tests/captures/dpdk-22.11-virtio-user-split.vhu
