#!/usr/bin/env bash
# Crash recovery of vvu-blk-server under a QEMU 7.2 guest's disk (Linux virtio-blk, TCG). QEMU's
# vhost-user-blk-pci connects with `reconnect=1`: when its back-end goes away it stops the
# device's vhost state, tries the socket again every second and, once a back-end answers, sets
# the session up again — with the inflight area it got from the first back-end's GET_INFLIGHT_FD
# (SET_INFLIGHT_FD), since vvu offers INFLIGHT_SHMFD. A ring started on that area (this guest's
# is split; packed rings are tracked the same way, ring/packed_inflight.hpp) takes
# again every request the dead back-end had taken and not completed (vhost-user.rst "Inflight
# I/O tracking"; the server logs "resuming from the inflight area ... N chains in flight taken
# again" when the area says the ring stopped elsewhere than SET_VRING_BASE).
#
#   QEMU (vhost-user-blk-pci, chardev reconnect=1) ── SOCK ── vvu-blk-server ── disk.img
#                                                              (SIGKILL, a new one on SOCK)
#
# Boot 1 makes an ext2 file system and writes --files files of --file-bytes random bytes each
# (vvu.files/vvu.bytes: the guest keeps writeback running while it writes and prints a line per
# file); after files N/(C+1), 2N/(C+1), ... (C = --crashes) the server is killed with SIGKILL —
# the child of `timeout`, by pid — and a new one started on the same socket and image at once.
# The moment: the server serves a request in microseconds and idles between them (the TCG guest
# is the slow side), so a kill at a random moment almost never finds a request in flight. After
# the file's line the test polls the server's threads (/proc/PID/task/*/syscall, no fork) for
# up to --window seconds and kills the moment one is inside fdatasync (a flush: the guest's
# `sync -d` of the next file; milliseconds on a disk-backed image) or pwritev/preadv; when none
# is seen it kills at the end of the window anyway (printed). Checks: each new server logs
# "front-end connected" (QEMU reconnected) and the guest writes on (its next file line comes);
# the guest finishes every file, reads each back (page cache dropped) as written, prints "disk
# ok" and powers off; its console has no I/O error ("I/O error", "blk_update_request", "Buffer
# I/O error", "EXT4-fs error"); no killed server had seen its session end before the kill.
# Boot 2 (a fresh server) mounts the disk read-only and reads every file with boot 1's size and
# sha256; the files dumped from the image on the host (debugfs) have them too. Prints the
# restarts, each restarted server's log (its notices: whether a ring resumed from the inflight
# area, which depends on a request being in flight at the kill — printed, not required), the
# JSON of the servers that were stopped (the last restarted one, boot 2's), and QEMU's stderr.
# Usage: guest-disk-crash.sh --server VVU_BLK_SERVER --guest-dir DIR [--crashes N] [--files N]
#                            [--file-bytes N] [--window SECS]
# Exit 0 pass, 1 fail, 77 skip (no QEMU; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

blk_server="" dir="" crashes=3 files=12 file_bytes=$((4 << 20)) window=5
while [[ $# -gt 0 ]]; do
  case $1 in
    --server) blk_server=$2; shift 2 ;;
    --guest-dir) dir=$2; shift 2 ;;
    --crashes) crashes=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --file-bytes) file_bytes=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
dev_init "devices.guest-disk-crash.vvu-blk-server" "$dir" truncate sha256sum
need_exe "$blk_server"
((crashes >= 1 && files > crashes)) || { echo "--files must exceed --crashes (>= 1)" >&2; exit 2; }

sock=$work/blk.sock img=$work/disk.img
# The files, a quarter more for ext2's blocks, and 16 MiB.
img_mib=$((files * file_bytes * 5 / 4 / (1 << 20) + 16))
truncate -s "${img_mib}M" "$img" || fail "cannot create $img"
server_args=(--image "$img" --port "unix:$sock")
device="vhost-user-blk-pci,num-queues=1,romfile=,vectors=0"
guest_args="vvu.job=disk vvu.files=$files vvu.bytes=$file_bytes"

# Seconds (2 decimals) from $1 to $2, both vvu_now values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b - a}'; }

# wait_console NAME TEXT SECS: bounded poll of guest NAME's console for TEXT (fixed string);
# fails if QEMU exits first or the guest reports an error.
wait_console() {
  local name=$1 text=$2 secs=$3 rc
  vvu_guest_wait "$work/$name.log" "$text" "$secs" "${peer_pid[$name]}" >/dev/null
  rc=$?
  ((rc == 0)) && return 0
  grep -a -q "VVU-GUEST-RESULT" "$work/$name.log" &&
    fail "$name ended before '$text': $(grep -a -m1 VVU-GUEST-RESULT "$work/$name.log" | tr -d '\r')"
  fail "$name: no '$text' on the console within ${secs}s ($([[ $rc == 2 ]] && echo "QEMU exited" || echo "timed out"))"
}

# in_request PID SECS: bounded poll (no fork per round) until a thread of PID is inside a system
# call that serves a request — fdatasync (75), pwritev (296), preadv (295), pwrite64 (18),
# pread64 (17), x86-64 numbers — and sets `caught` to its name; `caught` is empty at the bound.
in_request() {
  local pid=$1 end t nr _
  caught=""
  read -r end _ </proc/uptime
  end=$(awk -v t="$end" -v d="$2" 'BEGIN{printf "%.2f", t + d}')
  for ((;;)); do
    for t in /proc/"$pid"/task/*/syscall; do
      read -r nr _ <"$t" 2>/dev/null || continue
      case $nr in
        75) caught=fdatasync ;; 296) caught=pwritev ;; 295) caught=preadv ;; 18) caught=pwrite64 ;; 17) caught=pread64 ;;
      esac
      [[ -n $caught ]] && return 0
    done
    read -r t _ </proc/uptime
    [[ ${t/./} -ge ${end/./} ]] 2>/dev/null && return 1
  done
}

# The I/O errors a Linux guest prints for a failed request (at KERN_ERR: loglevel=4 shows them).
io_errors() { grep -a -E 'I/O error|blk_update_request|Buffer I/O error|EXT4-fs error' "$work/$1.log" | tr -d '\r'; }

# file_lines NAME: the guest's VVU-GUEST-FILE lines as "name bytes sha256", sorted.
file_lines() {
  grep -a 'VVU-GUEST-FILE' "$work/$1.log" | tr -d '\r' |
    sed -n 's/.*name=\([^ ]*\) bytes=\([0-9]*\) sha256=\([0-9a-f]*\).*/\1 \2 \3/p' | sort
}

PEER_STDOUT=1 peer_run server0 "$blk_server" "${server_args[@]}"
wait_socket "$sock" server0 30

# reconnect=1: after a disconnect QEMU tries the socket again every second.
guest_boot boot1 "$sock,reconnect=1" "$device" "$guest_args vvu.phase=format"
wait_console boot1 "VVU-GUEST-WRITING" 150
echo "boot1: $(grep -a -m1 'VVU-GUEST-READY job=disk' "$work/boot1.log" | tr -d '\r')"
t_write=$(vvu_now)
echo "boot1: writing $files files of $file_bytes bytes on a ${img_mib} MiB image"

declare -a t_kill=() t_conn=() at_file=() notices=()
for ((i = 1; i <= crashes; i++)); do
  old=server$((i - 1)) new=server$i
  at_file[i]=$((i * files / (crashes + 1)))
  wait_console boot1 "VVU-GUEST-WROTE k=${at_file[i]} " 120
  grep -a -q "session ended" "$work/$old.log" && fail "$old saw its session end before it was killed"
  # The child of `timeout`: the process to kill with SIGKILL (as a crash would).
  pid=$(pgrep -P "${peer_pid[$old]}" | head -n 1)
  [[ -n $pid ]] || fail "no vvu-blk-server process under $old"
  in_request "$pid" "$window"
  read -r "t_kill[i]" _ </proc/uptime # (vvu_now's clock, without a fork)
  kill -KILL "$pid"
  moment=${caught:+"a thread inside $caught"}
  wait "${peer_pid[$old]}" 2>/dev/null
  unset "peer_pid[$old]"
  wrote=$(grep -a -c 'VVU-GUEST-WROTE' "$work/boot1.log")
  echo "crash $i: killed $old (pid $pid) with SIGKILL after the guest's file ${at_file[i]}, ${moment:-"no thread seen in a request within ${window}s"} (files on the disk: $wrote of $files)"
  # A new back-end on the same socket (it unlinks the dead one's path) and image, at once.
  PEER_STDOUT=1 peer_run "$new" "$blk_server" "${server_args[@]}"
  t_conn[i]=""
  for ((t = 0; t < 1500; t++)); do
    if grep -a -q "front-end connected" "$work/$new.log"; then
      read -r "t_conn[i]" _ </proc/uptime
      break
    fi
    peer_alive "$new" || fail "$new ended: $(paste -sd '|' "$work/$new.log")"
    peer_alive boot1 || fail "boot1's QEMU exited after crash $i"
    sleep 0.02
  done
  [[ -n ${t_conn[i]} ]] || fail "QEMU did not connect to $new within 30 s of crash $i"
  # The guest writes on: the next file reaches the disk.
  wait_console boot1 "VVU-GUEST-WROTE k=$((at_file[i] + 1)) " 120
  echo "crash $i: QEMU connected to $new +$(elapsed "${t_kill[i]}" "${t_conn[i]}") s after the kill;" \
    "the guest's next file (k=$((at_file[i] + 1))) on the disk +$(elapsed "${t_kill[i]}" "$(vvu_now)") s"
done

guest_done boot1 240
grep -a -q "VVU-GUEST-RESULT disk ok phase=format files=$files " "$work/boot1.log" ||
  fail "boot1: the guest's disk job failed: $(grep -a -m1 VVU-GUEST-RESULT "$work/boot1.log" | tr -d '\r')"
echo "boot1: the write phase took $(elapsed "$t_write" "$(vvu_now)") s including its $crashes crashes"
errs=$(io_errors boot1)
[[ -z $errs ]] || fail "boot1: the guest saw I/O errors: $errs"
echo "ok: boot1's console has no I/O error line"
[[ $(grep -a -c 'VVU-GUEST-WROTE' "$work/boot1.log") == "$files" ]] || fail "boot1: not every file was written"
file_lines boot1 >"$work/boot1.sums"
[[ $(wc -l <"$work/boot1.sums") == "$files" ]] || fail "boot1: expected $files files, got: $(cat "$work/boot1.sums")"
# In boot 1 each file's line carries written= (page cache) and sha256= (read from the disk).
while read -r line; do
  w=$(sed -n 's/.* sha256=\([0-9a-f]*\) written=\([0-9a-f]*\).*/\1 \2/p' <<<"$line")
  [[ -n $w && ${w% *} == "${w#* }" ]] || fail "boot1: a file read back differs from what was written: $line"
done < <(grep -a 'VVU-GUEST-FILE' "$work/boot1.log" | tr -d '\r')
echo "ok: boot 1 wrote $files files across $crashes crashes and read every one back as written"

# The last restarted server lives on (QEMU is gone): its counters.
last=server$crashes
peer_stop "$last" INT 20
echo "$last (restarted, served the end of boot 1): $(grep -a '^{' "$work/$last.out" | tail -n 1)"

# What each restarted server logged: the connection and its notices (a ring that resumed from
# the inflight area names the chains it takes again).
resumed=0
for ((i = 1; i <= crashes; i++)); do
  echo "server$i's log:"
  sed 's/^/  /' "$work/server$i.log"
  n=$(grep -a -c "resuming from the inflight area" "$work/server$i.log")
  notices[i]=$n
  ((n > 0)) && resumed=$((resumed + 1))
done
for ((i = 1; i <= crashes; i++)); do
  echo "restart $i: 'resuming from the inflight area' notices: ${notices[i]}" \
    "$(grep -a -o 'resuming from the inflight area.*' "$work/server$i.log" | paste -sd '|')"
done
echo "restarts: $crashes; restarts whose server resumed a ring from the inflight area: $resumed" \
  "(a request must have been in flight at the kill)"
echo "boot1's QEMU (stderr):"
sed 's/^/  /' "$work/boot1.out"

# Boot 2 on a fresh server: the files as boot 1 wrote them.
PEER_STDOUT=1 peer_run server-check "$blk_server" "${server_args[@]}"
wait_socket "$sock" server-check 30
guest_boot boot2 "$sock" "$device" "$guest_args vvu.phase=check"
guest_done boot2 150
grep -a -q "VVU-GUEST-RESULT disk ok phase=check files=$files " "$work/boot2.log" ||
  fail "boot2: the guest's disk job failed: $(grep -a -m1 VVU-GUEST-RESULT "$work/boot2.log" | tr -d '\r')"
errs=$(io_errors boot2)
[[ -z $errs ]] || fail "boot2: the guest saw I/O errors: $errs"
file_lines boot2 >"$work/boot2.sums"
diff "$work/boot1.sums" "$work/boot2.sums" >&2 || fail "boot 2 read other files than boot 1 wrote (diff above)"
echo "ok: boot 2 read the $files files boot 1 wrote (name, size, sha256):"
sed 's/^/  /' "$work/boot2.sums"
peer_stop server-check INT 20
echo "server-check (boot 2): $(grep -a '^{' "$work/server-check.out" | tail -n 1)"

host_check_files "$img" "$work/boot2.sums"
echo "PASS: $test_name ($crashes restarts, $resumed resumed from the inflight area)"
