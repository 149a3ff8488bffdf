# shellcheck shell=bash
# Shared by the device tests (tests/interop/devices/*.sh; sourced, not run): a QEMU 7.2 guest
# (tests/guest: Debian's cloud kernel, busybox, TCG) drives a vhost-user device other than a NIC
# — a disk, an RNG — served by a real back-end. On top of tests/interop/frontend/lib.sh (peers
# started and ended by pid, skip/fail, logs printed on failure) and tests/guest/guest-lib.sh.
#
#   dev_init NAME GUESTDIR TOOL...   fe_init, then builds (or refreshes) the guest in GUESTDIR
#   guest_boot NAME SOCK DEVICE ARGS  one QEMU as a vhost-user client of SOCK with -device
#                                    DEVICE, kernel args ARGS; registered as peer NAME (console
#                                    NAME.log, QEMU's stderr NAME.out)
#   guest_done NAME SECS             waits for NAME's VVU-GUEST-RESULT line (prints it) and for
#                                    QEMU to exit after the guest powers off; fails otherwise
#   host_check_files IMG SUMS        reads each file of SUMS ("name size sha256" lines) out of
#                                    the ext2 image IMG with debugfs and compares its sha256

here_devices=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest_src=$(cd "$here_devices/../../guest" && pwd)
# Two guest boots and the back-end between them: each peer's hard bound.
PEER_TIMEOUT=${PEER_TIMEOUT:-400}
# shellcheck source=../frontend/lib.sh
source "$here_devices/../frontend/lib.sh"
# shellcheck source=../../guest/guest-lib.sh
source "$guest_src/guest-lib.sh"
VVU_GUEST_TIMEOUT=$PEER_TIMEOUT

guest_dir=""

dev_init() {
  local name=$1
  guest_dir=$2
  shift 2
  fe_init "$name" "$VVU_GUEST_QEMU" "$@"
  [[ -n $guest_dir ]] || { echo "FAIL: $test_name: --guest-dir DIR is needed" >&2; exit 2; }
  timeout 900 "$guest_src/build-guest.sh" "$guest_dir" >"$work/build-guest.log" 2>&1 ||
    { cat "$work/build-guest.log" >&2; fail "tests/guest/build-guest.sh $guest_dir failed"; }
}

guest_boot() {
  local name=$1 sock=$2 device=$3 args=$4
  vvu_guest_start_device "$guest_dir" "$sock" "$work/$name.log" "$device" "$args" || fail "cannot start $name"
  ln -sf "$name.log.qemu" "$work/$name.out"
  peer_pid[$name]=$VVU_GUEST_PID
  peer_names+=("$name")
  guest_t0[$name]=$(vvu_now)
  echo "started $name (pid $VVU_GUEST_PID): -device $device,chardev=c0 -append '$args'"
}
declare -A guest_t0=()

guest_done() {
  local name=$1 secs=$2 line rc
  line=$(vvu_guest_wait "$work/$name.log" VVU-GUEST-RESULT "$secs" "${peer_pid[$name]}")
  rc=$?
  ((rc == 0)) || fail "$name printed no result line within ${secs}s ($([[ $rc == 2 ]] && echo "QEMU exited" || echo "timed out"))"
  echo "$name: $line"
  # After its result the guest powers off and QEMU exits (status 0).
  peer_wait "$name" 30
  ((peer_rc == 0)) || fail "$name: QEMU exited with status $peer_rc"
  echo "$name: QEMU start to exit $(awk -v a="${guest_t0[$name]}" -v b="$(vvu_now)" 'BEGIN{printf "%.1f", b-a}') s"
}

# The image on the host, read with e2fsprogs' debugfs: the bytes really are in the file.
host_check_files() {
  local img=$1 sums=$2 name sum got n=0
  if ! command -v debugfs >/dev/null 2>&1; then
    [[ ${CI:-} == true ]] && fail "debugfs (e2fsprogs) is not installed: the image cannot be read on the host"
    echo "note: debugfs (e2fsprogs) not installed: the image was not read on the host"
    return 0
  fi
  while read -r name _ sum; do
    debugfs -R "dump /$name $work/host.$name" "$img" >/dev/null 2>&1 || fail "debugfs cannot dump /$name from the image"
    got=$(sha256sum "$work/host.$name" | cut -d' ' -f1)
    [[ $got == "$sum" ]] || fail "/$name in the image on the host: sha256 $got, the guest read $sum"
    n=$((n + 1))
  done <"$sums"
  echo "ok: the $n files dumped from the image on the host (debugfs) have the guest's sha256"
}
