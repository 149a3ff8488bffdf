#!/usr/bin/env bash
# Capture the vhost-user session QEMU opens for a virtio-net-pci device with a vhost-user netdev.
#
#   tests/captures/capture-qemu.sh OUT.vhu [capture.py options...]
#
# No guest runs a driver (no kernel is given), so this is QEMU's opening sequence: what it sends
# at -netdev vhost-user initialisation, before any guest sets DRIVER_OK. Environment: QEMU
# (binary, qemu-system-x86_64) and those described in capture-lib.sh.
set -uo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT.vhu [capture.py options...]" >&2
  exit 2
fi
out=$1
shift
# shellcheck source=capture-lib.sh
source "$(dirname "$0")/capture-lib.sh"

qemu=${QEMU:-qemu-system-x86_64}
# shellcheck disable=SC2054 # the commas belong to QEMU's options
peer=("$qemu" -accel tcg -m 256 -nographic -nodefaults
      -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem
      -chardev socket,id=c0,path=SOCK -netdev vhost-user,id=n0,chardev=c0
      -device virtio-net-pci,netdev=n0,romfile=,vectors=0)
version=$("$qemu" --version 2>/dev/null | head -n 1)

CAPTURE_OPTS="${CAPTURE_OPTS:-} $*" # read by run_capture
run_capture "$out" \
  "peer: ${version:-$qemu (version unknown)}" \
  "command: ${peer[*]}" \
  "capture.py options:${CAPTURE_OPTS}" \
  -- "${peer[@]}"
