#!/usr/bin/env bash
# The main job: builds vvu and runs it end to end against real peers on this machine.
#   1. vvu-forward between two DPDK 22.11 testpmd front-ends (virtio-user, io forwarding): frames
#      circulate A -> vvu port 0 -> port 1 -> B -> port 1 -> port 0 -> A; every count printed.
#   2. Two QEMU 7.2 guests (Linux virtio-net) ping each other through vvu-forward's L2 switch.
#   3. The real opening sessions of QEMU and DPDK, decoded message by message (vvu-decode).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VVU_BUILD_ROOT:-$root/build}/gcc-release

bash "$root/scripts/install-deps.sh" all
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ >/dev/null
cmake --build "$build" -j "${VVU_JOBS:-$(nproc)}" --target vvu-forward vvu-decode

printf '\n==== vvu-forward --mode xconnect between two DPDK testpmd front-ends\n'
bash "$root/tests/interop/dpdk/xconnect.sh" --backend "$build/examples/vvu-forward" --seconds 5

printf '\n==== two QEMU guests ping each other through vvu-forward --mode learn\n'
bash "$root/tests/guest/check-guest.sh" vvu-forward:learn "$build/guest" "$build/examples/vvu-forward"

printf '\n==== the opening sessions of QEMU 7.2 and DPDK 22.11, decoded\n'
"$build/examples/vvu-decode" "$root"/tests/captures/qemu-7.2-net-opening.vhu \
  "$root"/tests/captures/dpdk-22.11-virtio-user-split.vhu
