#!/usr/bin/env bash
# Capture the vhost-user session DPDK's virtio-user PMD (in dpdk-testpmd) opens and sets up.
#
#   tests/captures/capture-dpdk.sh OUT.vhu [vdev args...]     e.g. packed_vq=1, queues=2
#
# testpmd starts the port at once (--auto-start, rxonly), so the capture holds virtio-user's whole
# setup: features, memory table, every vring's num/base/addr/kick/call, enable, status. queues=N
# also sets testpmd's --rxq/--txq to N. Environment: DPDK_TESTPMD (binary, dpdk-testpmd) and those
# described in capture-lib.sh (STOP_PEER=1 adds testpmd's shutdown to the capture).
set -uo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT.vhu [vdev args...]" >&2
  exit 2
fi
out=$1
shift
# shellcheck source=capture-lib.sh
source "$(dirname "$0")/capture-lib.sh"

testpmd=${DPDK_TESTPMD:-dpdk-testpmd}
queues=1
vdev_extra=""
for arg in "$@"; do
  case $arg in
    queues=*) queues=${arg#queues=} ;;
    *) vdev_extra+=",$arg" ;;
  esac
done
# A unique prefix keeps concurrent DPDK processes apart (--in-memory would leave no runtime
# files, but EAL refuses it with --no-huge); its runtime directory is removed at the end.
prefix=vvu-capture-$$
# shellcheck disable=SC2054 # the commas belong to DPDK's options
peer=("$testpmd" -l 0,1 --main-lcore 1 -n 1 --file-prefix="$prefix" --no-huge -m 512
      --no-pci --iova-mode=va
      --vdev "net_virtio_user0,path=SOCK,queues=$queues$vdev_extra"
      -- --total-num-mbufs=32768 --forward-mode=rxonly --auto-start --stats-period 60 --nb-cores=1
      --rxq="$queues" --txq="$queues")
# More than one queue pair needs VIRTIO_NET_F_MQ (22) from the back-end, else testpmd refuses
# --rxq=N ("can't be greater than max_rx_queues (1)"). VIRTIO_NET_F_CTRL_VQ (17) is offered too, but
# 22.11's virtio-user leaves it out of SET_FEATURES: it emulates the control queue itself (no vring
# of it reaches the back-end) and enables the second pair with SET_VRING_ENABLE after DRIVER_OK.
if [[ $queues -gt 1 && ${CAPTURE_OPTS:-} != *--features* ]]; then
  CAPTURE_OPTS="${CAPTURE_OPTS:-} --features 0xd70428000" # capture.py's default | MQ | CTRL_VQ
fi
version=$(pkg-config --modversion libdpdk 2>/dev/null || dpkg-query -W -f='${Version}' dpdk 2>/dev/null)

# EAL's runtime directory (/var/run/dpdk/PREFIX for root, else under $XDG_RUNTIME_DIR or /tmp)
# is removed on every exit, interrupted ones included.
remove_runtime_dir() {
  local d
  for d in /var/run/dpdk "${XDG_RUNTIME_DIR:-/tmp}/dpdk"; do
    if [[ -d $d/$prefix ]]; then rm -rf -- "${d:?}/${prefix:?}"; fi
  done
}
trap remove_runtime_dir EXIT
shown=("${peer[@]/#--file-prefix=*/--file-prefix=vvu-capture-PID}")
run_capture "$out" \
  "peer: DPDK ${version:-(version unknown)} $testpmd, virtio-user PMD" \
  "command: ${shown[*]}" \
  "capture.py options: ${CAPTURE_OPTS:-}${STOP_PEER:+ (STOP_PEER=$STOP_PEER)}" \
  -- "${peer[@]}"
