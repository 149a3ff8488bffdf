#!/usr/bin/env bash
# Installs every Debian 12 package vvu builds, tests and benchmarks with.
# Usage: scripts/install-deps.sh [build|peers|all]   (default: all)
set -euo pipefail
what=${1:-all}

build_pkgs=(
  cmake g++ clang-14 libclang-rt-14-dev lld-14 llvm-14 pkg-config git
  libboost-dev      # Boost.Asio: local sockets, timers, signals
  libfmt-dev        # formatting of logs, errors and JSON stats
  catch2            # unit tests (v2.13)
  libbenchmark-dev  # Google Benchmark: codec and ring micro-benchmarks
  valgrind          # callgrind: instructions per frame (benchmarks/instructions.sh)
)
peer_pkgs=(
  dpdk dpdk-dev                         # dpdk-testpmd: virtio-user / net_vhost peers
  qemu-system-x86 qemu-utils            # QEMU 7.2 front-end, qemu-storage-daemon
  busybox-static cpio                   # the test guest's initramfs
  gcc libc6-dev                         # the test guest's vvu-stream (gcc -static)
  e2fsprogs                             # debugfs: the guest disk test reads the image on the host
  python3                               # capture and peer scripts
  meson ninja-build libjson-c-dev libcmocka-dev pkg-config  # libvfio-user (vfio-user interop peer)
)

pkgs=()
case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  peers) pkgs=("${peer_pkgs[@]}") ;;
  all)   pkgs=("${build_pkgs[@]}" "${peer_pkgs[@]}") ;;
  *) echo "usage: $0 [build|peers|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
