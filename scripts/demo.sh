#!/usr/bin/env bash
# The main job: builds vvu and runs its end-to-end demo.
# Today: decode and print the real vhost-user sessions that QEMU 7.2 and DPDK 22.11 opened
# with a listening back-end (captured in tests/captures/), message by message.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VVU_BUILD_ROOT:-$root/build}/gcc-release

bash "$root/scripts/install-deps.sh" build
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ >/dev/null
cmake --build "$build" -j "${VVU_JOBS:-$(nproc)}" --target vvu-decode

for capture in "$root"/tests/captures/*.vhu; do
  "$build/examples/vvu-decode" "$capture"
done
