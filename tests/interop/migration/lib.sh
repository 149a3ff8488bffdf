# shellcheck shell=bash
# Shared by the migration tests (tests/interop/migration/*.sh; sourced, not run): QEMU 7.2 test
# guests (tests/guest/) on a vhost-user back-end — vvu-forward, or DPDK testpmd's net_vhost as
# the reference — migrated live to a second QEMU, or saved to a file and restored, while they
# ping or stream, driven over QMP by qmp.py (bounded in time).
#
#   mig_init NAME ARGS...        the common arguments (below), tools present (else skip/fail), work
#                                dir, cleanup on exit (frontend/lib.sh), the guest built
#   backend_start SOCK...        the back-end with these unix: ports (vvu-forward --mode learn
#                                --poll event, or testpmd io-forwarding 2 ports), sockets waited for
#   guest_start NAME SOCK MAC ARGS [QEMU-OPTION...]  a guest (guest-lib.sh) with a QMP socket
#                                NAME.qmp, registered as a peer: console NAME.log, QEMU's stderr
#                                NAME.out (printed by fail)
#   qmp NAME ACTION...           qmp.py on NAME's QMP socket (see qmp.py); fails the test on error
#   migrate NAME URI             migrate NAME's guest to URI and wait (bounded) for completion;
#                                prints and sets mig_total_ms, mig_downtime_ms, mig_mb, mig_wall
#   qemu_quit NAME               QMP quit, then the QEMU must end within 20 s with status 0
#   replies NAME                 seq=K of every ping reply on NAME's console, sorted, once each
#   wait_reply NAME K SECS       bounded poll until NAME's console has the reply to ping K or later
#   check_qemu_stderr NAME...    QEMU printed nothing but the expected lines (below) on its stderr
#   forward_counters             ends vvu-forward (status 0 required), prints its JSON lines and
#                                sets rx[P], tx[P], drop[P] per port P
#   ram_dump NAME, ram_diff A B  a stopped QEMU's guest RAM into a file (pmemsave); two such
#                                dumps compared page for page (ramdiff.py), sets ram_differ
#
# Common arguments: --guest-dir DIR (build-guest.sh's output, built or refreshed there),
# --forward VVU_FORWARD or --testpmd (the reference back-end: dpdk-testpmd net_vhost);
# --device VVU_DEVICE (with --forward): every port but the last is served through a vvu-device
# of its own, vvu-forward driving its PCI function (--port vvu:PCI): virtio-vhost-user.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest_src=$(cd "$here/../../guest" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=../../guest/guest-lib.sh
source "$guest_src/guest-lib.sh"

forward="" guest_dir="" backend="" py=python3
declare -A rx=() tx=() drop=()

# fail's dump of every peer's log (peers.sh's print_logs), with vvu-forward's log cut down to
# its own lines and the last of its --stats lines (one per port each second would fill the tail).
print_logs() {
  local name f
  for name in "${peer_names[@]}"; do
    for f in "$work/$name.log" "$work/$name.out"; do
      [[ -f $f ]] || continue
      echo "======== $name: ${f##*/} (last 150 lines) ========"
      if [[ $name == forward && $f == *.log ]]; then
        grep -a -v '^{"port":' "$f" | tail -n 150
        echo "(its last --stats lines:)"
        grep -a '^{"port":' "$f" | tail -n 3
      else
        tail -n 150 "$f" | tr -d '\033' | sed 's/\[2J\[1;1H//g'
      fi
    done
  done
}

mig_init() {
  local name=$1
  shift
  while [[ $# -gt 0 ]]; do
    case $1 in
      --forward) forward=$2 backend=vvu-forward; shift 2 ;;
      --testpmd) backend=testpmd; shift ;;
      --device) VVU_DEVICE=$2; shift 2 ;;
      --guest-dir) guest_dir=$2; shift 2 ;;
      *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
  done
  local tools=("$VVU_GUEST_QEMU" python3)
  [[ $backend == testpmd ]] && tools+=("$TESTPMD")
  fe_init "migration.$name" "${tools[@]}"
  [[ -n $backend ]] || { echo "FAIL: $test_name: --forward VVU_FORWARD or --testpmd is needed" >&2; exit 2; }
  [[ $backend == vvu-forward ]] && need_exe "$forward"
  [[ -n ${VVU_DEVICE:-} ]] && need_exe "$VVU_DEVICE"
  # The interpreter itself, once: a version manager's shim in front of it (pyenv) costs a second
  # per QMP call on a busy machine, and the switch-over is timed in QMP calls.
  py=$(python3 -c 'import sys; print(sys.executable)') || fail "python3 does not run"
  [[ -n $guest_dir ]] || { echo "FAIL: $test_name: --guest-dir DIR is needed" >&2; exit 2; }
  VVU_GUEST_TIMEOUT=$PEER_TIMEOUT # each QEMU's bound (guest-lib's `timeout`)
  # 256 MiB + 8 KiB of guest RAM, not 256 MiB: QEMU before 9.0 loses writes of a TCG guest
  # during a migration. Its dirty bitmap sync clears whole words of the bitmap at a time for a
  # RAM block whose size is a multiple of 64 pages (256 KiB), and forgets to make the TCG TLB
  # trap the next write to those pages again, so the guest's later writes to them are never
  # sent (QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap coherency with TCG
  # memory access", 9.0). Seen here with QEMU 7.2 and 256 MiB, whatever the back-end (DPDK's
  # or vvu's): 0 to 22 pages of the destination's RAM differed from the source's after a
  # migration (3 runs in 6 had some), and about one run in six crashed the guest on the
  # destination (list corruption in the page allocator, a NULL pointer in the timer code,
  # "input.0:id 997 is not a head!"). A size that is not such a multiple (QEMU rounds -m up to
  # 8 KiB) takes the page-by-page path, which does: no page differed in 15 runs.
  VVU_GUEST_MEM=${VVU_MIG_GUEST_MEM:-262152K}
  # The guest: built when missing, its initramfs rebuilt when build-guest.sh or vvu-stream.c
  # changed (0.05 s when up to date).
  timeout 900 "$guest_src/build-guest.sh" "$guest_dir" >"$work/build-guest.log" 2>&1 ||
    { cat "$work/build-guest.log" >&2; fail "tests/guest/build-guest.sh $guest_dir failed"; }
}

# backend_start SOCK...: vvu-forward with one unix: port per SOCK, in order (port 0, 1, ...),
# learning MAC addresses; or testpmd with net_vhost ports on the first and the last SOCK (io
# forwarding port 0 <-> 1: a wire; the reference has no switch, so a migrating guest's source
# and destination QEMU take turns on the same socket, which net_vhost accepts).
backend_start() {
  local s args=() devices=() n=0
  if [[ $backend == vvu-forward ]]; then
    for s in "$@"; do
      n=$((n + 1))
      if [[ -n ${VVU_DEVICE:-} && $n -lt $# ]]; then
        # --device: this guest's NIC is served through a vvu-device of its own (the QEMU
        # connects to the device; vvu-forward drives the device's PCI function, vvu:PCI).
        device_start "device-$n" "$s" "$s.pci"
        devices+=("device-$n")
        args+=(--port "vvu:$s.pci")
      else
        args+=(--port "unix:$s")
      fi
    done
    # --stats 1: every port's counters on stderr once a second, for the tests to follow.
    PEER_STDOUT=1 peer_run forward "$forward" "${args[@]}" --mode learn --poll event --stats 1
    for s in "$@"; do wait_socket "$s" forward 20; done
    # A front-end may connect once vvu-forward's driver is ready behind its device (BACKEND_UP).
    for s in "${devices[@]}"; do wait_log "$s" "driver ready" 20; done
  else
    local prefix=vvu-mig-$$ first=$1 last=${*: -1}
    eal_prefixes+=("$prefix")
    # --stats-period: a testpmd whose stdin is not a terminal otherwise quits at once.
    # shellcheck disable=SC2054 # the commas belong to DPDK's options
    peer_run testpmd "$TESTPMD" -l 0,1 --main-lcore 0 -n 1 --file-prefix="$prefix" --no-huge -m 512 --no-pci \
      --vdev "net_vhost0,iface=$first,queues=1" --vdev "net_vhost1,iface=$last,queues=1" \
      -- --total-num-mbufs=32768 --forward-mode=io --auto-start --nb-cores=1 --stats-period 10
    wait_socket "$first" testpmd 30
    wait_socket "$last" testpmd 30
  fi
}

# guest_start NAME SOCK MAC ARGS [QEMU-OPTION...]: the test guest with a QMP socket NAME.qmp
# and the extra QEMU options given (-incoming ...). Source and destination of a migration get
# the same device options from guest-lib.sh (memory, NIC, MAC), as QEMU requires.
guest_start() {
  local name=$1 sock=$2 mac=$3 kargs=$4
  shift 4
  VVU_GUEST_EXTRA=(-qmp "unix:$work/$name.qmp,server=on,wait=off" "$@")
  vvu_guest_start "$guest_dir" "$sock" "$work/$name.log" "$mac" "$kargs" || fail "cannot start $name"
  VVU_GUEST_EXTRA=()
  ln -s "$name.log.qemu" "$work/$name.out"
  peer_pid[$name]=$VVU_GUEST_PID
  peer_names+=("$name")
  echo "started $name (pid $VVU_GUEST_PID): QEMU on $sock${*:+ $*}, $kargs"
}

# qmp NAME ACTION...: prints qmp.py's output; a failure (an error reply, a timeout) fails the test.
qmp() {
  local name=$1 out
  shift
  out=$("$py" "$here/qmp.py" "$work/$name.qmp" "$@" 2>&1) || fail "QMP $* on $name: $out"
  echo "$out"
}

# A number of query-migrate's JSON (one line) by key, e.g. json_num "$info" downtime.
json_num() { sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" <<<"$1" | head -n 1; }

# migrate NAME URI: live migration of NAME's guest to URI (unix:SOCK, "exec:cat > FILE"), bounded
# by 90 s. QEMU's own figures: total-time and downtime (ms), bytes transferred.
migrate() {
  local name=$1 uri=$2 t0 info
  t0=$(vvu_now)
  qmp "$name" execute migrate "{\"uri\": \"$uri\"}" >/dev/null
  info=$("$py" "$here/qmp.py" "$work/$name.qmp" --timeout 90 wait-migrate 2>&1) ||
    fail "the migration of $name to $uri did not complete: $info"
  mig_wall=$(awk -v a="$t0" -v b="$(vvu_now)" 'BEGIN{printf "%.2f", b - a}')
  mig_total_ms=$(json_num "$info" total-time)
  mig_downtime_ms=$(json_num "$info" downtime)
  mig_mb=$(awk -v b="$(json_num "$info" transferred)" 'BEGIN{printf "%.1f", b / 1048576}')
  echo "migration of $name to $uri completed: total-time ${mig_total_ms} ms, downtime ${mig_downtime_ms} ms," \
    "${mig_mb} MiB transferred, dirty-sync-count $(json_num "$info" dirty-sync-count) (${mig_wall} s wall)"
}

# qemu_quit NAME: QMP quit; the QEMU must end by itself within 20 s with status 0.
qemu_quit() {
  qmp "$1" execute quit >/dev/null
  peer_wait "$1" 20 "of QMP quit"
  ((peer_rc == 0)) || fail "$1's QEMU exited with status $peer_rc after QMP quit"
}

replies() { tr -d '\r' <"$work/$1.log" | sed -n 's/^64 bytes from .* seq=\([0-9]*\) .*/\1/p' | sort -un; }

# wait_reply NAME K SECS: bounded poll until NAME's console has the reply to ping K or a later one.
wait_reply() {
  local name=$1 k=$2 secs=$3 i last
  for ((i = 0; i < secs * 10; i++)); do
    last=$(replies "$name" | tail -n 1)
    [[ -n $last ]] && ((last >= k)) && return 0
    peer_alive "$name" || fail "$name ended before its reply to ping $k"
    sleep 0.1
  done
  fail "$name had no reply to ping $k within ${secs}s (last: seq=${last:-none})"
}

# What QEMU 7.2 prints on its stderr in these tests: with vvu-forward, "warning: vhost-user
# backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not." (vvu offers CONFIG, QEMU's
# virtio-net does not use it); "terminating on signal 15 from pid N (timeout)" when the test
# ends it. Anything else (an error of the migration, of vhost, a lost back-end) fails the test.
qemu_expected='warning: vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not\.$'
qemu_expected+='|: terminating on signal 15 from pid [0-9]+ \(timeout\)$'
check_qemu_stderr() {
  local name other
  for name in "$@"; do
    other=$(grep -a -v -E -- "$qemu_expected" "$work/$name.out")
    [[ -z $other ]] || fail "$name's QEMU printed: $other"
  done
  echo "ok: QEMU printed nothing unexpected ($*)"
}

# forward_counters: vvu-forward ends on SIGTERM (status 0 required) and prints one JSON line per
# port; sets rx[P], tx[P], drop[P].
# ram_dump NAME: NAME's guest RAM (all of it) into a file, while the VM is stopped. The RAM is
# the memory-backend-memfd QEMU shares with the back-end: copied from QEMU's fd of it
# (/proc/PID/fd, a fraction of a second), into /dev/shm when it has room, else the work
# directory; QMP pmemsave (several seconds under load) when the fd cannot be read. Removed at exit.
# ram_diff A B: the dumps of A and B, page for page (ramdiff.py); prints its lines (the first
# differing pages), sets ram_differ, and removes both files.
declare -a ram_files=()
ram_how=""
# shellcheck disable=SC2034 # ram_how is for the scripts
ram_dump() {
  local name=$1 size dir=$work free pid fd f out
  size=$(qmp "$name" execute query-memory-size-summary | sed -n 's/.*"base-memory": \([0-9]*\).*/\1/p')
  [[ -n $size ]] || fail "no base-memory in query-memory-size-summary of $name"
  free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }') # KiB
  [[ -w /dev/shm && $free =~ ^[0-9]+$ ]] && ((free > 3 * size / 1024)) && dir=/dev/shm
  out=$dir/vvu-mig-$$-$name.ram
  ram_files+=("$out")
  pid=$(pgrep -P "${peer_pid[$name]}" | head -n 1) fd=""
  for f in /proc/"$pid"/fd/*; do
    # QEMU 7.2 names the memfd after the backend type ("/memfd:memory-backend-memfd (deleted)").
    [[ $(readlink "$f" 2>/dev/null) == "/memfd:memory-backend-memfd"* ]] && { fd=$f; break; }
  done
  if [[ -n $pid && -n $fd ]] && head -c "$size" "$fd" >"$out" 2>/dev/null && (($(stat -c %s "$out") == size)); then
    ram_how="copied from QEMU's memfd to ${dir%/}"
    return 0
  fi
  ram_how="QMP pmemsave to ${dir%/}"
  qmp "$name" --timeout 60 execute pmemsave "{\"val\": 0, \"size\": $size, \"filename\": \"$out\"}" >/dev/null
}
# shellcheck disable=SC2034 # ram_differ is for the scripts
ram_diff() {
  local a b out rc f
  for f in "${ram_files[@]}"; do
    [[ $f == *"-$1.ram" ]] && a=$f
    [[ $f == *"-$2.ram" ]] && b=$f
  done
  out=$("$py" "$here/ramdiff.py" "$a" "$b")
  rc=$?
  rm -f "$a" "$b"
  echo "$out"
  ((rc <= 1)) || fail "ramdiff.py could not compare the RAM images: $out"
  ram_differ=$(sed -n 's/^ramdiff: pages=[0-9]* differ=\([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
}
# The exit cleanup of frontend/lib.sh, and the RAM dumps.
cleanup() {
  ((${#ram_files[@]})) && rm -f "${ram_files[@]}"
  end_peers
  remove_work
}

# shellcheck disable=SC2034 # tx and drop are for the scripts
forward_counters() {
  local line p
  peer_stop forward TERM 20
  while IFS= read -r line; do
    p=$(sed -n 's/^{"port":\([0-9]*\),.*/\1/p' <<<"$line")
    [[ -n $p ]] || continue
    rx[$p]=$(sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p' <<<"$line")
    tx[$p]=$(sed -n 's/.*"tx_packets":\([0-9]*\).*/\1/p' <<<"$line")
    drop[$p]=$(sed -n 's/.*"tx_dropped":\([0-9]*\).*/\1/p' <<<"$line")
    echo "vvu-forward: $line"
  done <"$work/forward.out"
  [[ -n ${rx[0]:-} ]] || fail "vvu-forward printed no counters"
}
