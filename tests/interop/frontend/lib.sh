# shellcheck shell=bash
# Shared by the front-end interop tests (tests/interop/frontend/*.sh; sourced, not run): vvu's
# front-end tools (vvu-traffic, vvu-blk) against real back-ends (DPDK testpmd's net_vhost,
# vvu-forward, qemu-storage-daemon).
#
#   fe_init NAME TOOL...         tools present (else skip/fail), work dir, cleanup on exit
#   peer_run NAME CMD...         CMD in the background under `timeout`; stdout+stderr in NAME.log
#                                (PEER_STDOUT=1: stdout alone in NAME.out)
#   peer_stop NAME SIGNAL [SECS] signal it; it must end within SECS (10) and exit 0
#   peer_wait NAME SECS          wait for a peer that ends by itself; its exit status in $peer_rc
#   wait_socket SOCK NAME SECS   bounded poll until SOCK exists (fails if NAME ends first)
#   testpmd_final NAME PORT KEY  KEY of testpmd's final "Forward statistics for port PORT" block
#   json_field FILE KEY          a number (or null/true/false) of the last JSON line in FILE
#   expect_eq WHAT GOT WANT      equal, else fail
#   skip MESSAGE / fail MESSAGE  exit 77 (1 under CI=true) / print every peer's log and exit 1
#
# Environment: CI=true turns every skip into a failure; PEER_TIMEOUT (seconds each peer may
# live, 120); KEEP_LOGS=1 keeps the work directory; DPDK_TESTPMD, QEMU_STORAGE_DAEMON.
# Cores (2 on the reference machine): testpmd runs `-l 0,1 --main-lcore 0` (its forwarding lcore
# busy-polls core 1), the vvu tool runs on core 0 (taskset).

set -uo pipefail
# shellcheck source=tests/interop/peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../peers.sh"

SKIP=77
PEER_TIMEOUT=${PEER_TIMEOUT:-120}
TESTPMD=${DPDK_TESTPMD:-dpdk-testpmd}
QSD=${QEMU_STORAGE_DAEMON:-qemu-storage-daemon}

declare -A peer_pid=()
declare -a peer_names=()
declare -a eal_prefixes=()
work=""
test_name=""
peer_rc=0

cleanup() {
  end_peers
  remove_work
}

fe_init() {
  test_name=$1
  shift
  local tool
  for tool in timeout pgrep "$@"; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool not found (see /work/shared/peers.md)"
  done
  # Short paths: a UNIX socket path has at most 107 bytes.
  work=$(mktemp -d "${TMPDIR:-/tmp}/vvu-fe.XXXXXX") || exit 1
  trap cleanup EXIT
  trap 'echo "interrupted" >&2; exit 1' INT TERM
}

need_exe() { [[ -x $1 ]] || { echo "FAIL: $test_name: $1 is not an executable" >&2; exit 1; }; }


testpmd_final() {
  local name=$1 port=$2 key=$3 v
  v=$(tr -d '\033' <"$work/$name.log" | awk -v hdr="Forward statistics for port $port " -v key="$key:" '
    index($0, hdr) { inb = 1; next }
    inb && /^ *-----/ { inb = 0 }
    inb { for (i = 1; i < NF; i++) if ($i == key) { v = $(i + 1) } }
    END { print v }')
  [[ $v =~ ^[0-9]+$ ]] || fail "no final $key for port $port in $name's log"
  echo "$v"
}

# testpmd with one net_vhost port (a vhost-user back-end, server mode) on SOCK.
testpmd_vhost_start() {
  local name=$1 sock=$2 mode=$3 prefix=vvu-fe-$1-$$
  eal_prefixes+=("$prefix")
  # shellcheck disable=SC2054 # the commas belong to DPDK's options
  peer_run "$name" env --ignore-signal=PIPE "$TESTPMD" -l 0,1 --main-lcore 0 -n 1 --file-prefix="$prefix" \
    --no-huge -m 512 --no-pci --vdev "net_vhost0,iface=$sock,queues=1" \
    -- --total-num-mbufs=32768 --forward-mode="$mode" --auto-start --stats-period 1 --nb-cores=1 --no-flush-rx
  wait_socket "$sock" "$name" 30
}

json_field() {
  local file=$1 key=$2 v
  v=$(grep -a '^{' "$file" | tail -n 1 | sed -n "s/.*\"$key\":\([^,}]*\).*/\1/p")
  [[ -n $v ]] || fail "no \"$key\" in the JSON of $file"
  echo "$v"
}

expect_eq() {
  [[ $2 == "$3" ]] || fail "$1: got $2, want $3"
  echo "ok: $1 = $2"
}

# traffic_echo_complete PACKETS: vvu-traffic (peer "traffic", --mode echo) ends by itself within 120 s,
# exits 0, and its JSON says every one of PACKETS frames came back once, in order, intact.
traffic_echo_complete() {
  local packets=$1 key
  peer_wait traffic 120
  ((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
  echo "vvu-traffic: $(grep -a '^{' "$work/traffic.out" | tail -n 1)"
  expect_eq "sent" "$(json_field "$work/traffic.out" sent)" "$packets"
  expect_eq "received" "$(json_field "$work/traffic.out" received)" "$packets"
  for key in gaps lost late duplicates bad_frames; do
    expect_eq "${key/_/ }" "$(json_field "$work/traffic.out" "$key")" 0
  done
}

# The vvu tool on core 0 when taskset works (testpmd's poller has core 1).
pin0() { if command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null; then echo "taskset -c 0"; fi; }
