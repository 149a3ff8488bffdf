#!/usr/bin/env bash
# vvu-trace on a virtio-blk session: vvu-blk (vvu's front-end) -> vvu-trace ->
# qemu-storage-daemon's vhost-user-blk export. vvu-blk runs `info`, then `verify` (64 MiB
# written with a seeded pattern and read back), each a session of its own through the same
# tracer, which waits for the next front-end after each; the image must equal the pattern.
#   - the trace shows GET_CONFIG (the capacity), ADD_MEM_REG with the region's fd, the vring's
#     kick and call fds, SET_BACKEND_REQ_FD (the back-end channel, which the tracer proxies);
#   - vvu-decode of the --capture file prints the same lines as the live trace;
#   - SIGTERM ends the tracer with status 0.
# Usage: blk.sh --trace PATH --decode PATH --blk PATH
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/interop/frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"

TRACE="" DECODE="" blk=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --trace) TRACE=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --blk) blk=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "trace.blk" "$QSD" cmp truncate diff
need_exe "$TRACE"
need_exe "$DECODE"
need_exe "$blk"
sock=$work/blk.sock
tsock=$work/trace.sock
img=$work/disk.img
truncate -s 64M "$img" || fail "cannot create $img"
seed=${SEED:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}
echo "pattern seed: $seed"

peer_run qsd "$QSD" --blockdev "driver=file,node-name=file0,filename=$img" \
  --blockdev driver=raw,node-name=disk0,file=file0 \
  --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on"
wait_socket "$sock" qsd 30
trace_start tracer "$tsock" "$sock" --capture "$work/session.vhu"

run_blk() { # NAME ARGS...: one vvu-blk run through the tracer, bounded, must exit 0
  local name=$1
  shift
  PEER_STDOUT=1 peer_run "$name" "$blk" --connect "$tsock" --timeout 10000 "$@"
  peer_wait "$name" 120
  ((peer_rc == 0)) || fail "vvu-blk $* exited with status $peer_rc"
  echo "vvu-blk $1: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
}

run_blk info info
expect_eq "capacity (sectors, GET_CONFIG through the tracer)" "$(json_field "$work/info.out" capacity_sectors)" 131072
wait_out tracer "session 1 ended (front-end closed)" 10
run_blk verify verify --seed "$seed" --pattern-out "$work/pattern.bin"
expect_eq "mismatched bytes" "$(json_field "$work/verify.out" mismatched_bytes)" 0
expect_eq "bytes verified" "$(json_field "$work/verify.out" bytes)" 67108864
wait_out tracer "session 2 ended (front-end closed)" 10
peer_stop tracer TERM 10
grep -a -q "tracer stopped by a signal" "$work/tracer.out" || fail "the tracer did not report its stop"
kill -TERM "${peer_pid[qsd]}"
peer_wait qsd 20
cmp "$img" "$work/pattern.bin" || fail "the disk image differs from the pattern (seed $seed)"
echo "ok: cmp disk image = pattern (64 MiB, seed $seed)"

expect_in_trace tracer '^-> GET_CONFIG( need_reply)? offset=0 size=[0-9]+' "GET_CONFIG"
expect_in_trace tracer '^<- reply GET_CONFIG offset=0 size=[0-9]+' "the back-end's config space"
# qemu-storage-daemon offers CONFIGURE_MEM_SLOTS: memory comes region by region.
expect_in_trace tracer '^-> ADD_MEM_REG( need_reply)? \[gpa=0x[0-9a-f]+ size=0x[0-9a-f]+ .*\] fds=1$' "ADD_MEM_REG with the region's fd"
expect_in_trace tracer '^-> SET_BACKEND_REQ_FD( need_reply)? fds=1$' "SET_BACKEND_REQ_FD with the channel's fd"
grep -a -q "session 2: back-end channel proxied" "$work/tracer.out" || fail "the tracer did not proxy the back-end channel"
expect_in_trace tracer '^-> SET_VRING_KICK( need_reply)? index=0 fds=1$' "SET_VRING_KICK with the kick fd"
expect_in_trace tracer '^-> SET_VRING_CALL( need_reply)? index=0 fds=1$' "SET_VRING_CALL with the call fd"
# The capture, decoded, is the live trace line for line.
check_trace tracer "$work/session.vhu" 20
echo "PASS: $test_name"
