#!/usr/bin/env bash
# vvu-blk (vvu's front-end, virtio-blk driver) against a vhost-user-blk back-end on a 64 MiB raw
# image — the same checks whichever back-end serves it: qemu-storage-daemon's export, or
# vvu-blk-server on a unix: port, or vvu-blk-server behind vvu-device on a vvu: port
# (virtio-vhost-user). The capacity from GET_CONFIG matches the image, a seeded random pattern
# written over the whole disk reads back intact, the image file equals the pattern (cmp), a read
# of a few sectors returns the same bytes as the image, and the back-end exits cleanly.
# Usage: blk-verify.sh --blk PATH-TO-vvu-blk [--packed]
#          [--server qsd | --server PATH-TO-vvu-blk-server [--queues N] [--device PATH-TO-vvu-device]]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

blk="" packed=() ring=split server=qsd queues=1 VVU_DEVICE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --blk) blk=$2; shift 2 ;;
    --packed) packed=(--packed); ring=packed; shift ;;
    --server) server=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ $server == qsd ]]; then
  fe_init "frontend.blk.qsd.$ring" "$QSD" cmp truncate dd
else
  fe_init "frontend.blk.vvu${VVU_DEVICE:+-device}.$ring" cmp truncate dd
  need_exe "$server"
  [[ -z $VVU_DEVICE ]] || need_exe "$VVU_DEVICE"
fi
need_exe "$blk"
sock=$work/blk.sock
img=$work/disk.img
truncate -s 64M "$img" || fail "cannot create $img"
seed=${SEED:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}
echo "pattern seed: $seed"

if [[ $server == qsd ]]; then
  peer_run qsd "$QSD" --blockdev "driver=file,node-name=file0,filename=$img" \
    --blockdev driver=raw,node-name=disk0,file=file0 \
    --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on"
  wait_socket "$sock" qsd 30
elif [[ -n $VVU_DEVICE ]]; then
  # The front-end connects to vvu-device; vvu-blk-server is its driver, on the PCI function.
  device_start device "$sock" "$work/pci.sock"
  PEER_STDOUT=1 peer_run server "$server" --image "$img" --port "vvu:$work/pci.sock" --queues "$queues"
  wait_log device "driver ready" 20
else
  PEER_STDOUT=1 peer_run server "$server" --image "$img" --port "unix:$sock" --queues "$queues"
  wait_socket "$sock" server 30
fi

run_blk() { # NAME ARGS...: one vvu-blk run, bounded, must exit 0
  local name=$1
  shift
  PEER_STDOUT=1 peer_run "$name" "$blk" --connect "$sock" "${packed[@]}" --timeout 10000 "$@"
  peer_wait "$name" 120
  ((peer_rc == 0)) || fail "vvu-blk $* exited with status $peer_rc"
  echo "vvu-blk $1: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
}

run_blk info info
expect_eq "capacity (sectors, GET_CONFIG)" "$(json_field "$work/info.out" capacity_sectors)" 131072
expect_eq "capacity (bytes)" "$(json_field "$work/info.out" capacity_bytes)" "$(stat -c %s "$img")"

run_blk verify verify --seed "$seed" --pattern-out "$work/pattern.bin"
expect_eq "verify seed" "$(json_field "$work/verify.out" seed)" "$seed"
expect_eq "mismatched bytes" "$(json_field "$work/verify.out" mismatched_bytes)" 0
expect_eq "bytes verified" "$(json_field "$work/verify.out" bytes)" 67108864

run_blk read read --sector 12345 --count 16 --out "$work/part.bin"
dd if="$work/pattern.bin" of="$work/part.want" bs=512 skip=12345 count=16 status=none
cmp "$work/part.bin" "$work/part.want" || fail "sectors 12345..12360 read back differ from the pattern"
echo "ok: a 16-sector read at sector 12345 matches the pattern"

# The back-end ends on SIGTERM (qemu-storage-daemon drains its exports first); then the image
# must be the pattern.
if [[ $server == qsd ]]; then
  kill -TERM "${peer_pid[qsd]}"
  peer_wait qsd 20
else
  kill -TERM "${peer_pid[server]}"
  peer_wait server 20
  ((peer_rc == 0)) || fail "vvu-blk-server exited with status $peer_rc"
  echo "vvu-blk-server: $(grep -a '^{' "$work/server.out" | tail -n 1)"
  expect_eq "requests completed with IOERR" "$(json_field "$work/server.out" io_errors)" 0
  expect_eq "bytes written" "$(json_field "$work/server.out" written_bytes)" 67108864
fi
cmp "$img" "$work/pattern.bin" || fail "the disk image differs from the pattern (seed $seed)"
echo "ok: cmp disk image = pattern (64 MiB, seed $seed)"
echo "PASS: $test_name"
