#!/usr/bin/env bash
# 4 KiB random reads and writes through the same front-end (vvu-blk randio: split ring, DEPTH
# requests in flight) against two vhost-user-blk back-ends serving the same raw image:
# vvu-blk-server and qemu-storage-daemon (QSD, with its defaults for driver=file: aio=threads,
# cache.direct=off, i.e. buffered I/O through a pool of worker threads).
#
#   benchmarks/blk/randio.sh --blk VVU-BLK --server VVU-BLK-SERVER [--depth N] [--seconds S]
#       [--block BYTES] [--rounds N] [--poll event|busy] [--cpu-fe N] [--cpu-be N]
#       [--image-mib N] [--qsd-aio threads|io_uring|native]
#
# The image (256 MiB by default) is created once in a temporary directory and filled with
# random bytes, so that every read hits an allocated block; each run then finds it in the page
# cache. A round runs, for each back-end in turn (vvu, then QSD), `randio --rw read` and
# `randio --rw write` for S seconds (5) each, with a fresh back-end per server per round; the
# table gives the mean over the rounds of IOPS and of the latency percentiles (submission to
# completion, as the front-end sees it), and the vvu/QSD ratios per direction. Writes scribble
# over the image (it is a scratch copy).
#
# Cores: nothing is pinned unless asked; --cpu-fe N runs vvu-blk under `taskset -c N`,
# --cpu-be N runs either back-end (every thread of it) under `taskset -c N`. --poll goes to
# vvu-blk-server (event: the default, busy: its data-path thread never sleeps — it then owns a
# core, which on a 2-core machine the front-end and QSD's threads also want).
# --qsd-aio changes QSD's aio= (native needs O_DIRECT: cache.direct=on is added with it).
# Speed is reported, never asserted: this is not a test. KEEP_LOGS=1 keeps the work directory;
# QEMU_STORAGE_DAEMON names the QSD binary (default: qemu-storage-daemon from PATH).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/interop/frontend/lib.sh
source "$here/../../tests/interop/frontend/lib.sh"

blk="" server="" depth=16 seconds=5 block=4096 rounds=1 poll=event cpu_fe="" cpu_be="" image_mib=256 qsd_aio=""
usage="usage: $0 --blk VVU-BLK --server VVU-BLK-SERVER [--depth N] [--seconds S] [--block BYTES] [--rounds N]
       [--poll event|busy] [--cpu-fe N] [--cpu-be N] [--image-mib N] [--qsd-aio threads|io_uring|native]"
while [[ $# -gt 0 ]]; do
  case $1 in
    --blk) blk=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --depth) depth=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --block) block=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --poll) poll=$2; shift 2 ;;
    --cpu-fe) cpu_fe=$2; shift 2 ;;
    --cpu-be) cpu_be=$2; shift 2 ;;
    --image-mib) image_mib=$2; shift 2 ;;
    --qsd-aio) qsd_aio=$2; shift 2 ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ -n $blk && -n $server ]] || { echo "$usage" >&2; exit 2; }
for n in "$depth" "$seconds" "$block" "$rounds" "$image_mib" ${cpu_fe:+"$cpu_fe"} ${cpu_be:+"$cpu_be"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "$0: $n: a whole number is expected" >&2; exit 2; }
done
((depth >= 1 && seconds >= 1 && rounds >= 1 && block >= 512 && block % 512 == 0)) ||
  { echo "$0: depth, seconds, rounds >= 1; block a multiple of 512" >&2; exit 2; }
[[ $poll == event || $poll == busy ]] || { echo "$0: --poll is event or busy" >&2; exit 2; }
case $qsd_aio in
  "") qsd_file_opts="" qsd_aio_label="threads (default)" ;;
  threads | io_uring) qsd_file_opts=",aio=$qsd_aio" qsd_aio_label=$qsd_aio ;;
  native) qsd_file_opts=",aio=native,cache.direct=on" qsd_aio_label="native, O_DIRECT" ;;
  *) echo "$0: --qsd-aio is threads, io_uring or native" >&2; exit 2 ;;
esac
command -v "$QSD" >/dev/null 2>&1 || { echo "$0: $QSD not found (apt-get install qemu-system-x86)" >&2; exit 1; }
[[ -x $blk ]] || { echo "$0: $blk is not an executable" >&2; exit 1; }
[[ -x $server ]] || { echo "$0: $server is not an executable" >&2; exit 1; }

# Each back-end lives for one round's two runs.
PEER_TIMEOUT=$((2 * seconds + 120))
fe_init benchmark.blk.randio dd taskset
pin_fe=() pin_be=()
[[ -n $cpu_fe ]] && pin_fe=(taskset -c "$cpu_fe")
[[ -n $cpu_be ]] && pin_be=(taskset -c "$cpu_be")
# Three descriptors per request: the ring must hold 3 x depth (a power of two, 128 at least).
queue_size=128
while ((queue_size < 3 * depth)); do queue_size=$((queue_size * 2)); done
((queue_size <= 1024)) || { echo "$0: --depth $depth needs a ring of more than 1024 descriptors" >&2; exit 2; }

img=$work/disk.img
sock=$work/blk.sock
dd if=/dev/urandom of="$img" bs=1M count="$image_mib" status=none || fail "cannot write $img"
echo "randio: ${block} B requests, depth $depth, split ring of $queue_size, ${seconds}s per run, $rounds round(s)," \
  "${image_mib} MiB image in $work"
echo "vvu-blk-server --poll $poll; qemu-storage-daemon $("$QSD" --version | head -n 1 | awk '{ print $3 }')," \
  "aio=$qsd_aio_label; front-end cpu ${cpu_fe:-any}, back-end cpu ${cpu_be:-any}"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"

# backend_start KIND: vvu or qsd serving $img on $sock, once the socket exists (bounded).
backend_start() {
  rm -f "$sock"
  if [[ $1 == vvu ]]; then
    PEER_STDOUT=1 peer_run vvu "${pin_be[@]}" "$server" --image "$img" --port "unix:$sock" --poll "$poll"
  else
    peer_run qsd "${pin_be[@]}" "$QSD" --blockdev "driver=file,node-name=file0,filename=$img$qsd_file_opts" \
      --blockdev driver=raw,node-name=disk0,file=file0 \
      --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on"
  fi
  wait_socket "$sock" "$1" 30
}

# backend_stop KIND: SIGTERM to the pid started, a bounded wait; vvu-blk-server must exit 0
# with no request failed.
backend_stop() {
  peer_stop "$1" TERM 20
  if [[ $1 == vvu ]]; then
    expect_eq "vvu-blk-server: requests completed with IOERR" "$(json_field "$work/vvu.out" io_errors)" 0 >/dev/null
  fi
}

# randio KIND RW ROUND: one front-end run; its JSON line in $work/KIND.RW.ROUND.out.
randio() {
  local name=$1.$2.$3
  PEER_STDOUT=1 peer_run "$name" "${pin_fe[@]}" "$blk" --connect "$sock" --queue-size "$queue_size" \
    --depth "$depth" --timeout 10000 randio --rw "$2" --block "$block" --seconds "$seconds" --seed "$3" >/dev/null
  peer_wait "$name" $((seconds + 60))
  ((peer_rc == 0)) || fail "vvu-blk randio --rw $2 against $1 exited with status $peer_rc"
  printf 'round %d  %-4s %-5s %9.0f IOPS  p50 %7.1f us  p99 %8.1f us\n' "$3" "$1" "$2" \
    "$(json_field "$work/$name.out" iops)" "$(json_field "$work/$name.out" p50_us)" "$(json_field "$work/$name.out" p99_us)"
}

for ((r = 1; r <= rounds; r++)); do
  for kind in vvu qsd; do
    backend_start "$kind" >/dev/null
    randio "$kind" read "$r"
    randio "$kind" write "$r"
    backend_stop "$kind"
  done
done

# mean KIND RW KEY: the mean over the rounds.
mean() {
  local r sum=0
  for ((r = 1; r <= rounds; r++)); do
    sum=$(awk -v a="$sum" -v b="$(json_field "$work/$1.$2.$r.out" "$3")" 'BEGIN { print a + b }')
  done
  awk -v s="$sum" -v n="$rounds" 'BEGIN { printf "%.1f", s / n }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-20s %-6s %10s %10s %10s\n' "server" "rw" "IOPS" "p50 us" "p99 us"
for rw in read write; do
  for kind in vvu qsd; do
    [[ $kind == vvu ]] && label=vvu-blk-server || label=qemu-storage-daemon
    printf '%-20s %-6s %10.0f %10s %10s\n' "$label" "$rw" "$(mean "$kind" "$rw" iops)" "$(mean "$kind" "$rw" p50_us)" \
      "$(mean "$kind" "$rw" p99_us)"
  done
done
echo
printf '%-6s %14s %14s %14s\n' "rw" "IOPS vvu/QSD" "p50 vvu/QSD" "p99 vvu/QSD"
for rw in read write; do
  printf '%-6s %14s %14s %14s\n' "$rw" "$(ratio "$(mean vvu "$rw" iops)" "$(mean qsd "$rw" iops)")" \
    "$(ratio "$(mean vvu "$rw" p50_us)" "$(mean qsd "$rw" p50_us)")" \
    "$(ratio "$(mean vvu "$rw" p99_us)" "$(mean qsd "$rw" p99_us)")"
done
