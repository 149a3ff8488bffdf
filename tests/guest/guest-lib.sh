# shellcheck shell=bash
# Functions to run vvu test guests (built by build-guest.sh) against a vhost-user back-end.
# Source it from a bash test script:
#
#   . tests/guest/guest-lib.sh
#   vvu_guest_require || exit $?                       # SKIP (77) / fail (CI=true) without qemu
#   vvu_wait_socket "$sock" 20 || ...                  # back-end's listening socket exists
#   vvu_guest_start GUESTDIR SOCK LOG MAC "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2"
#   pid=$VVU_GUEST_PID                                 # also written to LOG.pid
#   line=$(vvu_guest_wait LOG VVU-GUEST-RESULT 120 "$pid")   # bounded poll; prints the line
#   vvu_guest_stop "$pid"
#
# Every process it starts runs under `timeout`, so nothing outlives its bound even if the caller
# dies without cleaning up.

VVU_GUEST_QEMU=${VVU_GUEST_QEMU:-qemu-system-x86_64}
VVU_GUEST_MEM=${VVU_GUEST_MEM:-256M}          # also the memfd backend size shared with the back-end
VVU_GUEST_TIMEOUT=${VVU_GUEST_TIMEOUT:-300}   # hard bound on each QEMU process, seconds

# Monotonic seconds with centiseconds, for timings in logs.
vvu_now() { awk '{print $1}' /proc/uptime; }

# Missing tool: exit status 77 (SKIP) normally, 1 when CI=true. Prints the reason.
# Usage: vvu_skip_or_fail "reason"; then `exit $?` at the call site.
vvu_skip_or_fail() {
  if [ "${CI:-}" = true ]; then echo "FAIL: $1 (CI=true: not skipping)" >&2; return 1; fi
  echo "SKIP: $1" >&2
  return 77
}

# Checks that QEMU is installed. Returns 0, or vvu_skip_or_fail's status.
vvu_guest_require() {
  command -v "$VVU_GUEST_QEMU" >/dev/null 2>&1 || { vvu_skip_or_fail "$VVU_GUEST_QEMU not installed"; return $?; }
}

# Bounded wait for a UNIX socket to exist. Usage: vvu_wait_socket PATH SECONDS
vvu_wait_socket() {
  local path=$1 deadline
  deadline=$(awk -v t="$(vvu_now)" -v d="$2" 'BEGIN{print t+d}')
  while [ ! -S "$path" ]; do
    awk -v n="$(vvu_now)" -v d="$deadline" 'BEGIN{exit !(n>=d)}' && return 1
    sleep 0.05
  done
}

# Starts one guest in the background, its virtio-net attached to the vhost-user socket SOCK
# (QEMU is the client: the back-end must already listen). The console goes to LOG.
# Usage: vvu_guest_start GUESTDIR SOCK LOG MAC "KERNEL-ARGS"
#   GUESTDIR    build-guest.sh's OUTDIR (vmlinuz, initramfs.cpio.gz)
#   KERNEL-ARGS vvu.* keys (see README.md); vvu.mac=MAC is added for you
# Sets VVU_GUEST_PID (the `timeout` wrapping QEMU; SIGTERM to it ends QEMU) and writes LOG.pid.
# Extra QEMU options may be given in the array VVU_GUEST_EXTRA=(...).
vvu_guest_start() {
  local dir=$1 sock=$2 log=$3 mac=$4 args=$5
  if [ ! -f "$dir/vmlinuz" ] || [ ! -f "$dir/initramfs.cpio.gz" ]; then
    echo "vvu_guest_start: no guest in $dir (run tests/guest/build-guest.sh $dir)" >&2; return 1
  fi
  : > "$log"
  # -nodefaults -nic none: the vhost-user NIC is the guest's only network device.
  # vectors=0: QEMU 7.2 under TCG crashes in vhost start with MSI-X vectors (peers.md).
  # -no-reboot: a guest panic ends QEMU instead of looping.
  timeout --kill-after=5 "$VVU_GUEST_TIMEOUT" "$VVU_GUEST_QEMU" \
    -accel tcg -machine pc -cpu max -smp 1 -m "$VVU_GUEST_MEM" \
    -nodefaults -nic none -no-reboot -display none -serial "file:$log" \
    -object "memory-backend-memfd,id=mem,size=$VVU_GUEST_MEM,share=on" -numa node,memdev=mem \
    -chardev "socket,id=c0,path=$sock" \
    -netdev vhost-user,id=n0,chardev=c0 \
    -device "virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=$mac" \
    -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 vvu.mac=$mac $args" \
    ${VVU_GUEST_EXTRA[@]+"${VVU_GUEST_EXTRA[@]}"} \
    >"$log.qemu" 2>&1 </dev/null &
  VVU_GUEST_PID=$!
  echo "$VVU_GUEST_PID" > "$log.pid"
}

# Starts one guest whose only device is another vhost-user device (a disk, an RNG) on SOCK;
# the rest as vvu_guest_start. Usage: vvu_guest_start_device GUESTDIR SOCK LOG DEVICE "KERNEL-ARGS"
#   DEVICE      QEMU's -device value without its chardev, e.g. vhost-user-blk-pci,num-queues=2
#   KERNEL-ARGS vvu.job=... and its keys (see README.md)
# VVU_GUEST_SMP (default 1) is the number of guest CPUs. no_timer_check: under TCG on a busy
# host the kernel's IO-APIC timer check can time out and panic the boot ("IO-APIC + timer
# doesn't work!", seen while two compilers ran); QEMU's timer is known to work.
vvu_guest_start_device() {
  local dir=$1 sock=$2 log=$3 device=$4 args=$5
  if [ ! -f "$dir/vmlinuz" ] || [ ! -f "$dir/initramfs.cpio.gz" ]; then
    echo "vvu_guest_start_device: no guest in $dir (run tests/guest/build-guest.sh $dir)" >&2; return 1
  fi
  : > "$log"
  timeout --kill-after=5 "$VVU_GUEST_TIMEOUT" "$VVU_GUEST_QEMU" \
    -accel tcg -machine pc -cpu max -smp "${VVU_GUEST_SMP:-1}" -m "$VVU_GUEST_MEM" \
    -nodefaults -nic none -no-reboot -display none -serial "file:$log" \
    -object "memory-backend-memfd,id=mem,size=$VVU_GUEST_MEM,share=on" -numa node,memdev=mem \
    -chardev "socket,id=c0,path=$sock" \
    -device "$device,chardev=c0" \
    -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check $args" \
    ${VVU_GUEST_EXTRA[@]+"${VVU_GUEST_EXTRA[@]}"} \
    >"$log.qemu" 2>&1 </dev/null &
  VVU_GUEST_PID=$!
  echo "$VVU_GUEST_PID" > "$log.pid"
}

# Bounded poll of a console log for the first line containing PATTERN (fixed string).
# Usage: vvu_guest_wait LOG PATTERN SECONDS [PID]
# Prints the line and returns 0; returns 1 on timeout, 2 if PID exited without the line.
vvu_guest_wait() {
  local log=$1 pat=$2 pid=${4:-} deadline line
  deadline=$(awk -v t="$(vvu_now)" -v d="$3" 'BEGIN{print t+d}')
  # grep's own status decides (no pipeline), whatever the caller's pipefail setting.
  while :; do
    line=$(grep -a -F -m1 -- "$pat" "$log" 2>/dev/null) && { echo "${line//$'\r'/}"; return 0; }
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      line=$(grep -a -F -m1 -- "$pat" "$log" 2>/dev/null) && { echo "${line//$'\r'/}"; return 0; }
      return 2
    fi
    awk -v n="$(vvu_now)" -v d="$deadline" 'BEGIN{exit !(n>=d)}' && return 1
    sleep 0.1
  done
}

# Waits for the guest's result line. Usage: vvu_guest_result LOG SECONDS [PID]
# Prints e.g. "VVU-GUEST-RESULT ping ok sent=5 received=5 first_reply_s=0.31"; returns 0 only for
# "ping ok", "responder done", "stream ok" or "stream-send ok".
vvu_guest_result() {
  local line
  line=$(vvu_guest_wait "$1" VVU-GUEST-RESULT "$2" "${3:-}") || return 1
  echo "$line"
  case "$line" in
    *"VVU-GUEST-RESULT ping ok "*|*"VVU-GUEST-RESULT responder done"*) return 0 ;;
    *"VVU-GUEST-RESULT stream ok "*|*"VVU-GUEST-RESULT stream-send ok "*) return 0 ;;
    *) return 1 ;;
  esac
}

# Ends a process we started: SIGTERM, a bounded wait, then SIGKILL. Usage: vvu_stop PID [SECONDS]
# Ends a process this script started (SIGTERM, SIGKILL after SECS); always returns 0 and
# leaves the process's exit status in vvu_status (137: it needed SIGKILL; 124: its `timeout`
# ran out), for the callers that require a clean exit.
vvu_stop() {
  local pid=$1 i=0 n=$(( ${2:-5} * 10 ))
  vvu_status=0
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ $i -lt $n ]; do sleep 0.1; i=$((i+1)); done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null && vvu_status=0 || vvu_status=$?
  return 0
}
# Ends a vvu process (vvu-forward, vvu-device) and requires it to exit 0: a crash or a hang at
# the end fails the check even when the traffic went through.
vvu_stop_clean() {
  local name=$1 pid=$2
  vvu_stop "$pid" "${3:-20}"
  [ "$vvu_status" -eq 0 ] || { echo "FAIL: $name exited with status $vvu_status after SIGTERM"; return 1; }
}
vvu_guest_stop() { vvu_stop "$@"; }
