#!/usr/bin/env bash
# A QEMU 7.2 guest's disk on a vhost-user-blk back-end, across two boots: boot 1 makes an ext2
# file system on /dev/vda (the virtio-blk disk on the back-end's 64 MiB raw image), writes four
# files of random bytes (4097 B to 3 MiB), drops the page cache, reads them back and prints their
# sha256; boot 2 mounts the disk read-only and prints them again. With --queues 2 the guest has
# 2 CPUs and reads and writes each file on CPU (index mod 2), so both request queues carry I/O.
#
#   QEMU (vhost-user-blk-pci,num-queues=N) ── SOCK ── back-end ── disk.img
#
# Checks: each boot prints "disk ok" and the guest sees N request queues; in boot 1 every file
# reads back as written; boot 2 finds every file with boot 1's size and sha256; the back-end
# serves both boots without a restart and exits 0 on its stop signal; and, when debugfs
# (e2fsprogs) is installed, the files dumped from the image on the host have the same sha256.
# Usage: guest-disk.sh --server qsd|vvu-blk-server:PATH --guest-dir DIR [--queues N]
# Exit 0 pass, 1 fail, 77 skip (no QEMU or qemu-storage-daemon; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

server="" dir="" queues=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --server) server=$2; shift 2 ;;
    --guest-dir) dir=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case $server in
  qsd) dev_init "devices.guest-disk.qsd.q$queues" "$dir" "$QSD" truncate sha256sum ;;
  vvu-blk-server:?*)
    blk_server=${server#vvu-blk-server:}
    dev_init "devices.guest-disk.vvu-blk-server.q$queues" "$dir" truncate sha256sum
    need_exe "$blk_server" ;;
  *) echo "--server qsd|vvu-blk-server:PATH" >&2; exit 2 ;;
esac

sock=$work/blk.sock img=$work/disk.img
truncate -s 64M "$img" || fail "cannot create $img"
if [[ $server == qsd ]]; then
  peer_run server "$QSD" --blockdev "driver=file,node-name=f,filename=$img" \
    --blockdev driver=raw,node-name=d,file=f \
    --export "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues"
  stop_signal=TERM
else
  PEER_STDOUT=1 peer_run server "$blk_server" --image "$img" --port "unix:$sock" --queues "$queues"
  stop_signal=INT
fi
wait_socket "$sock" server 30

# Both request queues see I/O only if two CPUs submit it (virtio-blk maps a queue per CPU).
VVU_GUEST_SMP=$((queues > 1 ? 2 : 1))
device="vhost-user-blk-pci,num-queues=$queues,romfile=,vectors=0"

# file_lines NAME: the guest's VVU-GUEST-FILE lines as "name bytes sha256", sorted.
file_lines() {
  grep -a 'VVU-GUEST-FILE' "$work/$1.log" | tr -d '\r' |
    sed -n 's/.*name=\([^ ]*\) bytes=\([0-9]*\) sha256=\([0-9a-f]*\).*/\1 \2 \3/p' | sort
}

check_boot() { # NAME PHASE: the result line says ok, the guest saw the queues asked for, and
  local name=$1 phase=$2 ready runs q n  # blk-mq ran each of them
  grep -a -q "VVU-GUEST-RESULT disk ok phase=$phase" "$work/$name.log" || fail "$name: the guest's disk job failed"
  ready=$(grep -a -m1 'VVU-GUEST-READY job=disk' "$work/$name.log" | tr -d '\r')
  echo "$name: $ready"
  [[ $ready == *" queues=$queues "* ]] || fail "$name: the guest does not see $queues request queues"
  runs=$(grep -a -m1 'VVU-GUEST-RESULT disk' "$work/$name.log" | tr -d '\r' | sed -n 's/.* runs=\([0-9,]*\).*/\1/p')
  IFS=, read -r -a q <<<"$runs"
  ((${#q[@]} == queues)) || fail "$name: runs per queue '$runs', expected $queues queues"
  for n in "${q[@]}"; do ((n > 0)) || fail "$name: a request queue was never run (runs per queue: $runs)"; done
  echo "ok: $name: blk-mq runs per request queue: $runs"
}

guest_boot boot1 "$sock" "$device" "vvu.job=disk vvu.phase=format"
guest_done boot1 150
check_boot boot1 format
file_lines boot1 >"$work/boot1.sums"
[[ $(wc -l <"$work/boot1.sums") == 4 ]] || fail "boot1: expected 4 files, got: $(cat "$work/boot1.sums")"
# In boot 1 each file's line carries written= (page cache) and sha256= (read from the disk).
while read -r line; do
  w=$(sed -n 's/.* sha256=\([0-9a-f]*\) written=\([0-9a-f]*\).*/\1 \2/p' <<<"$line")
  [[ -n $w && ${w% *} == "${w#* }" ]] || fail "boot1: a file read back differs from what was written: $line"
done < <(grep -a 'VVU-GUEST-FILE' "$work/boot1.log" | tr -d '\r')
echo "ok: boot 1 read every file back as written"

guest_boot boot2 "$sock" "$device" "vvu.job=disk vvu.phase=check"
guest_done boot2 150
check_boot boot2 check
file_lines boot2 >"$work/boot2.sums"
diff "$work/boot1.sums" "$work/boot2.sums" >&2 || fail "boot 2 read other files than boot 1 wrote (diff above)"
echo "ok: boot 2 read the 4 files boot 1 wrote (name, size, sha256):"
sed 's/^/  /' "$work/boot2.sums"

peer_stop server "$stop_signal" 20
[[ -f $work/server.out ]] && echo "back-end: $(grep -a '^{' "$work/server.out" | tail -n 1)"

host_check_files "$img" "$work/boot2.sums"
echo "PASS: $test_name"
