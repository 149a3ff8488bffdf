#!/usr/bin/env bash
# Re-run one committed capture against the live peer and compare the two (compare.py: direction,
# request, flags, size and fd count of every message must match; values may differ).
#
#   tests/captures/check-live.sh NAME [OUT-DIR]     check: capture into OUT-DIR/NAME.vhu, compare
#   tests/captures/check-live.sh --update NAME      re-capture tests/captures/NAME.vhu in place
#   tests/captures/check-live.sh --list             the names
#
# NAME is a capture file's name without .vhu; the table below says how each one is captured.
# Exit: 0 match; 1 mismatch or failure; 77 (ctest SKIP_RETURN_CODE) the peer is not installed,
# unless CI=true is set, which turns a missing peer into a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SKIP=77

# name -> peer binary, then the capture command (run from $here; OUT is the output file).
capture_spec() {
  case $1 in
    qemu-7.2-net-opening)
      peer=${QEMU:-qemu-system-x86_64}; cmd=(./capture-qemu.sh OUT) ;;
    qemu-7.2-net-opening-memslots) # + CONFIGURE_MEM_SLOTS (15): QEMU adds GET_MAX_MEM_SLOTS
      peer=${QEMU:-qemu-system-x86_64}; cmd=(./capture-qemu.sh OUT --protocol-features 0x18029) ;;
    dpdk-22.11-virtio-user-split)
      peer=${DPDK_TESTPMD:-dpdk-testpmd}; cmd=(./capture-dpdk.sh OUT) ;;
    dpdk-22.11-virtio-user-packed)
      peer=${DPDK_TESTPMD:-dpdk-testpmd}; cmd=(./capture-dpdk.sh OUT packed_vq=1) ;;
    dpdk-22.11-virtio-user-mq2)
      peer=${DPDK_TESTPMD:-dpdk-testpmd}; cmd=(./capture-dpdk.sh OUT queues=2) ;;
    dpdk-22.11-virtio-user-split-stop) # + testpmd's shutdown (SIGTERM after the setup)
      peer=${DPDK_TESTPMD:-dpdk-testpmd}; cmd=(env STOP_PEER=1 ./capture-dpdk.sh OUT) ;;
    *) return 1 ;;
  esac
}
names=(qemu-7.2-net-opening qemu-7.2-net-opening-memslots dpdk-22.11-virtio-user-split
       dpdk-22.11-virtio-user-packed dpdk-22.11-virtio-user-mq2 dpdk-22.11-virtio-user-split-stop)

update=0
case ${1:-} in
  --list) printf '%s\n' "${names[@]}"; exit 0 ;;
  --update) update=1; shift ;;
esac
name=${1:-}
if [[ -z $name ]] || ! capture_spec "$name"; then
  echo "usage: $0 [--update] NAME [OUT-DIR] | --list; NAME one of: ${names[*]}" >&2
  exit 2
fi

for tool in "$peer" "${PYTHON:-python3}" timeout; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [[ ${CI:-} == true ]]; then
      echo "FAIL: $tool not found (CI=true: a missing peer is an error)" >&2
      exit 1
    fi
    echo "SKIP: $tool not found; install it to check $name (see tests/captures/README.md)"
    exit $SKIP
  fi
done

committed=$here/$name.vhu
if [[ $update == 1 ]]; then
  out=$committed
else
  outdir=${2:-${TMPDIR:-/tmp}/vvu-captures-live}
  mkdir -p "$outdir" || exit 1
  out=$(cd "$outdir" && pwd)/$name.vhu
  if [[ ! -f $committed ]]; then
    echo "FAIL: no committed capture $committed" >&2
    exit 1
  fi
fi
cmd=("${cmd[@]/#OUT/$out}")

# A longer idle bound than the default 3 s: a loaded machine (ctest -j) must not end a capture
# early in the middle of a peer's setup.
export CAPTURE_IDLE=${CAPTURE_IDLE:-5}
cd "$here" || exit 1
echo "check-live: ${cmd[*]}"
rm -f "$out"
"${cmd[@]}" || { echo "FAIL: capture of $name failed" >&2; exit 1; }
[[ $update == 1 ]] && exit 0
"${PYTHON:-python3}" "$here/compare.py" "$committed" "$out"
