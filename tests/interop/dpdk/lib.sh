# shellcheck shell=bash
# Shared by the DPDK interop tests (tests/interop/dpdk/*.sh) and benchmarks/dpdk/compare-backends.sh
# (sourced, not run). DPDK's testpmd is the front-end (virtio-user PMD); the back-end under test is
# vvu-forward, or DPDK's own vhost PMD in a second testpmd standing in for it (BACKEND=dpdk), so
# every script also runs, and can be checked, without vvu.
#
#   dpdk_init NAME               tools present (else skip/fail), work dir, cleanup on exit
#   need_hugepages PAGES         private hugetlbfs mount + enough 2 MiB pages (else skip/fail)
#   frontend_start NAME SOCK FWD-MODE MAIN-LCORE [testpmd options...]    virtio-user testpmd
#   backend_start MODE SOCK...   vvu-forward --mode MODE --port unix:SOCK... (or the DPDK stand-in)
#   backend_stop                 SIGTERM (stand-in: SIGINT); its counters into $work/backend.json
#   backend_stat PORT FIELD      a counter of that JSON (rx_packets, tx_packets, tx_dropped, ...)
#   peer_stop NAME SIGNAL        signal a peer, wait (bounded) for it to end; non-zero exit fails
#   wait_socket SOCK PEER SECS   bounded poll until SOCK exists (fails if PEER ends first)
#   wait_stats NAME KEY SECS     bounded poll until testpmd's periodic stats show KEY > 0
#   wait_stats_settled NAME KEY SECS   ... until two successive stats blocks show the same KEY
#   check_progress NAME KEY SECS traffic time; then KEY must have grown by more than two rings
#   final_stat NAME PORT KEY     a counter of testpmd's final "Forward statistics for port PORT"
#                                (final_stat and backend_stat run in $(...): call them as
#                                 v=$(final_stat ...) || exit 1, their fail ends only the subshell)
#   check_within WHAT SENT GOT TOLERANCE   0 <= SENT - GOT <= TOLERANCE, else fail
#   skip MESSAGE / fail MESSAGE  exit 77 (1 under CI=true) / print every peer's log and exit 1
#
# Environment: DPDK_TESTPMD (dpdk-testpmd); BACKEND (a vvu-forward path, or "dpdk" for the
# stand-in; the scripts' --backend sets it); VIA, how vvu-forward reaches each front-end:
# unix (it listens on SOCK; the default), vvu (a vvu-device listens on SOCK and vvu-forward
# attaches to its PCI function: --port vvu:PCI) or mixed (port 0 unix, the others vvu), with
# VVU_DEVICE the vvu-device binary (the scripts' --via and --device set them); CI=true turns every skip into a failure;
# PEER_TIMEOUT (seconds each peer may live, 100); RING (virtqueue size, 256); KEEP_LOGS=1 keeps
# the work directory; VVU_FORWARD_CPU (a CPU list for taskset on vvu-forward, unset: none).
#
# Cores (2 on the reference machine): each testpmd runs `-l 0,1`; its main lcore only prints
# stats, the other busy-polls. Front-ends use --main-lcore 1 (forwarding on core 0) unless told
# otherwise, the DPDK stand-in --main-lcore 0 (forwarding on core 1).

set -uo pipefail
# shellcheck source=tests/interop/peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../peers.sh"

SKIP=77
TESTPMD=${DPDK_TESTPMD:-dpdk-testpmd}
RING=${RING:-256}
PEER_TIMEOUT=${PEER_TIMEOUT:-100}
BACKEND=${BACKEND:-}
VIA=${VIA:-unix}
VVU_DEVICE=${VVU_DEVICE:-}
BACKEND_ARGS=() # extra vvu-forward options (backend_start)
DPDK_BACKEND_ARGS=() # extra testpmd options of the DPDK stand-in (backend_start)

declare -A peer_pid=()   # name -> pid of `timeout` (it forwards INT/TERM to the peer)
declare -a peer_names=() # in start order, for the logs
declare -a eal_prefixes=()
work=""
test_name=""
huge_mount=""
huge_restore=""

# Exit: peers, the private hugetlbfs mount and the huge page count, the work directory.
cleanup() {
  end_peers
  if [[ -n $huge_mount ]]; then
    rm -f -- "$huge_mount"/* 2>/dev/null
    umount "$huge_mount" 2>/dev/null || umount -l "$huge_mount" 2>/dev/null
    rmdir "$huge_mount" 2>/dev/null
  fi
  if [[ -n $huge_restore ]]; then
    echo "$huge_restore" >/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages 2>/dev/null
  fi
  remove_work
}

dpdk_init() {
  test_name=$1
  [[ $VIA != unix ]] && test_name+=".via-$VIA"
  local tool
  for tool in "$TESTPMD" timeout taskset pgrep; do
    command -v "$tool" >/dev/null 2>&1 ||
      skip "$tool not found (DPDK: apt-get install -y dpdk dpdk-dev; see /work/shared/peers.md)"
  done
  if [[ -z $BACKEND ]]; then
    echo "FAIL: $test_name: no back-end (--backend PATH-TO-vvu-forward | dpdk)" >&2
    exit 2
  fi
  if [[ $BACKEND != dpdk && ! -x $BACKEND ]]; then
    echo "FAIL: $test_name: back-end $BACKEND is not an executable" >&2
    exit 1
  fi
  # Short paths: a UNIX socket path has at most 107 bytes, build trees can be deep.
  work=$(mktemp -d "${TMPDIR:-/tmp}/vvu-dpdk.XXXXXX") || exit 1
  trap cleanup EXIT
  trap 'echo "interrupted" >&2; exit 1' INT TERM
}

# A hugetlbfs of our own (mounted here, removed at exit), so nothing is left mounted for others,
# and at least PAGES free 2 MiB pages (nr_hugepages is raised if needed and restored at exit).
need_hugepages() {
  local pages=$1 sys=/sys/kernel/mm/hugepages/hugepages-2048kB
  [[ -d $sys ]] || skip "no 2 MiB hugepage support in this kernel"
  local free nr
  free=$(cat "$sys/free_hugepages") nr=$(cat "$sys/nr_hugepages")
  if ((free < pages)); then
    [[ $(id -u) == 0 ]] || skip "needs $pages free 2 MiB hugepages ($free free) and is not root"
    huge_restore=$nr
    echo $((nr + pages - free)) >"$sys/nr_hugepages" 2>/dev/null
    free=$(cat "$sys/free_hugepages")
    ((free >= pages)) || skip "could not reserve $pages 2 MiB hugepages (got $free free)"
  fi
  mkdir -p "$work/huge"
  mount -t hugetlbfs -o pagesize=2M nodev "$work/huge" 2>"$work/mount.err" ||
    skip "cannot mount hugetlbfs ($(cat "$work/mount.err")); needs root (peers.md)"
  huge_mount=$work/huge
}

# testpmd's periodic "NIC statistics for port N" blocks (RX-packets ... RX-missed, TX-packets ...
# TX-errors): the largest value of KEY (RX-packets or TX-packets) seen so far.
periodic_max() {
  local name=$1 key=$2
  tr -d '\033' <"$work/$name.log" | awk -v key="$key:" '
    /RX-packets:.*RX-missed:|TX-packets:.*TX-errors:/ {
      for (i = 1; i < NF; i++) if ($i == key && $(i + 1) + 0 > max) max = $(i + 1) + 0
    }
    END { print max + 0 }'
}

# wait_stats NAME KEY SECS: bounded poll (testpmd prints every --stats-period second; its main
# lcore can be slow to print on a busy machine, hence a generous bound).
wait_stats() {
  local name=$1 key=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    (($(periodic_max "$name" "$key") > 0)) && return 0
    peer_alive "$name" || fail "$name ended before its stats showed $key > 0"
    sleep 0.1
  done
  fail "$name's stats did not show $key > 0 within ${secs}s"
}

# wait_stats_settled NAME KEY SECS: bounded poll until two successive periodic stats blocks show
# the same KEY (the peer has received everything that was sent to it).
wait_stats_settled() {
  local name=$1 key=$2 secs=$3 i last="" now n last_n=""
  for ((i = 0; i < secs * 10; i++)); do
    n=$(grep -a -c 'NIC statistics for port' "$work/$name.log")
    now=$(periodic_max "$name" "$key")
    if [[ $n != "$last_n" ]]; then
      [[ $now == "$last" ]] && return 0
      last=$now last_n=$n
    fi
    peer_alive "$name" || fail "$name ended while draining"
    sleep 0.1
  done
  fail "$name's $key still moving after ${secs}s"
}

# check_progress NAME KEY SECONDS: let traffic run SECONDS (a duration, not a readiness wait),
# then wait for the next stats block; KEY must have grown by more than two rings meanwhile.
check_progress() {
  local name=$1 key=$2 secs=$3 v0 v1 n i
  v0=$(periodic_max "$name" "$key")
  sleep "$secs"
  n=$(grep -a -c 'NIC statistics for port' "$work/$name.log")
  for ((i = 0; i < 50; i++)); do
    (($(grep -a -c 'NIC statistics for port' "$work/$name.log") > n)) && break
    sleep 0.1
  done
  v1=$(periodic_max "$name" "$key")
  peer_alive backend || fail "the back-end ended during the traffic"
  peer_alive "$name" || fail "$name ended during the traffic"
  if ((v1 - v0 <= 2 * RING)); then
    fail "traffic stalled: $name's $key went from $v0 to $v1 in ${secs}s (more than $((2 * RING)) expected)"
  fi
  echo "ok: traffic flows: $name's $key went from $v0 to $v1 in about ${secs}s"
}

# final_stat NAME PORT KEY: KEY (RX-packets, RX-dropped, TX-packets, TX-dropped) of the block
# "---- Forward statistics for port PORT ----" testpmd prints when it stops forwarding.
final_stat() {
  local name=$1 port=$2 key=$3 v
  v=$(tr -d '\033' <"$work/$name.log" | awk -v hdr="Forward statistics for port $port " \
        -v key="$key:" '
    index($0, hdr) { inb = 1; next }
    inb && /^ *-----/ { inb = 0 }
    inb { for (i = 1; i < NF; i++) if ($i == key) { v = $(i + 1) } }
    END { print v }')
  [[ $v =~ ^[0-9]+$ ]] || fail "no final $key for port $port in $name's log"
  echo "$v"
}

# frontend_start NAME SOCK FWD-MODE MAIN-LCORE [testpmd app options...]: testpmd with one
# virtio-user port on SOCK (connecting), FE_QUEUES queue pairs (1; its one forwarding core
# serves them all). FE_VDEV_EXTRA (e.g. ",packed_vq=1") extends the vdev;
# FE_HUGE=1 uses the hugetlbfs of need_hugepages instead of --no-huge. --no-flush-rx: by default
# testpmd drains its RX queues (twice, up to a ring each) before it starts forwarding, uncounted,
# and whatever the back-end sent first would be missing from RX-packets.
frontend_start() {
  local name=$1 sock=$2 mode=$3 lcore=$4
  shift 4
  local prefix=vvu-$name-$$
  eal_prefixes+=("$prefix")
  local -a memargs=(--no-huge -m 512)
  if [[ ${FE_HUGE:-0} == 1 ]]; then
    memargs=(-m 256 --huge-dir "$huge_mount" --single-file-segments)
  fi
  # shellcheck disable=SC2054 # the commas belong to DPDK's options
  # SIGPIPE ignored: when the back-end has gone first, virtio-user's stop writes to a closed
  # socket, and testpmd (no MSG_NOSIGNAL) would die of it instead of ending cleanly.
  peer_run "$name" env --ignore-signal=PIPE "$TESTPMD" -l 0,1 --main-lcore "$lcore" -n 1 --file-prefix="$prefix" \
    "${memargs[@]}" --no-pci --iova-mode=va \
    --vdev "net_virtio_user0,path=$sock,queues=${FE_QUEUES:-1},queue_size=$RING${FE_VDEV_EXTRA:-}" \
    -- --total-num-mbufs=32768 --forward-mode="$mode" --auto-start --stats-period 1 \
    --nb-cores=1 --rxq="${FE_QUEUES:-1}" --txq="${FE_QUEUES:-1}" --txd="$RING" --rxd="$RING" --no-flush-rx "$@"
}

# backend_start MODE SOCK...: the back-end under test, listening on each SOCK (port 0, 1, ...).
# vvu-forward: stdout (its JSON) into backend.out; BACKEND_ARGS (an array) extends its options. The DPDK stand-in: testpmd with one net_vhost
# port per SOCK; rxonly/txonly map to the same forwarding modes, xconnect to io (testpmd pairs
# port 0 with 1).
backend_start() {
  local mode=$1
  shift
  local -a cmd=()
  local sock
  if [[ $BACKEND == dpdk ]]; then
    local fwd=$mode i=0 prefix=vvu-backend-$$
    [[ $mode == xconnect ]] && fwd=io
    [[ $fwd == rxonly || $fwd == txonly || $fwd == io ]] ||
      fail "the DPDK stand-in has no mode $mode"
    eal_prefixes+=("$prefix")
    # shellcheck disable=SC2054
    cmd=("$TESTPMD" -l 0,1 --main-lcore 0 -n 1 --file-prefix="$prefix" --no-huge -m 512 --no-pci)
    for sock in "$@"; do
      cmd+=(--vdev "net_vhost$i,iface=$sock,queues=1")
      i=$((i + 1))
    done
    cmd+=(-- --total-num-mbufs=32768 --forward-mode="$fwd" --auto-start --stats-period 1
          --nb-cores=1 --txd="$RING" --rxd="$RING" --no-flush-rx "${DPDK_BACKEND_ARGS[@]}")
    peer_run backend "${cmd[@]}"
  else
    [[ -n ${VVU_FORWARD_CPU:-} ]] && cmd=(taskset -c "$VVU_FORWARD_CPU")
    cmd+=("$BACKEND" --mode "$mode" "${BACKEND_ARGS[@]}")
    local i=0
    local -a devices=()
    for sock in "$@"; do
      if [[ $(port_via $i) == vvu ]]; then
        device_start "device$i" "$sock" "$work/pci$i.sock"
        devices+=("device$i")
        cmd+=(--port "vvu:$work/pci$i.sock")
      else
        cmd+=(--port "unix:$sock")
      fi
      i=$((i + 1))
    done
    PEER_STDOUT=1 peer_run backend "${cmd[@]}"
    # A front-end may connect once the driver is ready behind each device (BACKEND_UP).
    local d
    for d in "${devices[@]}"; do wait_log "$d" "driver ready" 20; done
  fi
  for sock in "$@"; do wait_socket "$sock" backend 20; done
}

# port_via PORT: unix or vvu, as VIA says.
port_via() {
  case $VIA in
    unix) echo unix ;;
    vvu) echo vvu ;;
    mixed) if (($1 == 0)); then echo unix; else echo vvu; fi ;;
    *) fail "VIA must be unix, vvu or mixed (got $VIA)" ;;
  esac
}

# bench_init NAME HEADLINE: a benchmark's start (benchmarks/dpdk/): dpdk_init, the DPDK stand-in
# recording its cycles per frame, vvu-forward on core 1 (the front-end forwards on core 0), and
# the headline with the load average.
bench_init() {
  BACKEND=dpdk # for dpdk_init's checks; each run sets its own
  dpdk_init "$1"
  DPDK_BACKEND_ARGS=(--record-core-cycles)
  export VVU_FORWARD_CPU=1
  echo "$1: $2"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the 2 cores skews the figures)"
}

# core_latency: nanoseconds per cache-line round trip between CPUs 0 and 1, as the probe
# CORE_LATENCY (benchmarks/core_latency.cpp) measures it now, or - without the probe. The
# benchmarks print it beside each round: on a VM it moves with the host's placement of the vCPUs.
core_latency() {
  [[ -x ${CORE_LATENCY:-} ]] && "$CORE_LATENCY" 0 1 --round-trips 100000 2>/dev/null || echo -
}

# steal_mark, then steal_percent: the share of CPUs 0 and 1 the hypervisor ran something else
# on in between (/proc/stat's steal time), in percent. On a VM a round with steal ran on vCPUs
# the host kept descheduling: its rate says more about the host than about the contender.
steal_ticks() { awk '$1 == "cpu0" || $1 == "cpu1" { s += $9 } END { print s + 0 }' /proc/stat; }
steal_mark() { steal_t0=$(date +%s.%N) steal_s0=$(steal_ticks); }
steal_percent() {
  awk -v s0="$steal_s0" -v s1="$(steal_ticks)" -v t0="$steal_t0" -v t1="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (t1 > t0) printf "%.1f\n", 100 * (s1 - s0) / hz / (2 * (t1 - t0)); else print "-" }'
}

# backend_cycles: the back-end's busy cycles per frame, after backend_stop — testpmd's
# --record-core-cycles figure (DPDK_BACKEND_ARGS must hold it) or vvu-forward's data_path line.
backend_cycles() {
  if [[ $BACKEND == dpdk ]]; then
    grep -a -o 'CPU cycles/packet=[0-9.]*' "$work/backend.log" | tail -n 1 | cut -d= -f2
  else
    grep -a -o '"cycles_per_frame":[0-9.]*' "$work/backend.out" | tail -n 1 | cut -d: -f2
  fi
}

# frontend_cycles: the testpmd front-end's cycles per frame, after it ended (it must have run
# with --record-core-cycles): a front-end near the CPU's clock divided by its rate is what
# limits a run, whatever the back-end.
frontend_cycles() {
  grep -a -o 'CPU cycles/packet=[0-9.]*' "$work/frontend.log" | tail -n 1 | cut -d= -f2
}

# backend_stop [NPORTS]: ends the back-end; backend.json gets one vvu-forward JSON line per port
# (the stand-in's final forward stats in that form: packet counts only, bytes 0).
backend_stop() {
  local nports=${1:-1} p
  if [[ $BACKEND == dpdk ]]; then
    peer_stop backend INT 20
    : >"$work/backend.json"
    local rx tx txd
    for ((p = 0; p < nports; p++)); do
      rx=$(final_stat backend "$p" RX-packets) || exit 1
      tx=$(final_stat backend "$p" TX-packets) || exit 1
      txd=$(final_stat backend "$p" TX-dropped) || exit 1
      printf '{"port":%d,"rx_packets":%s,"rx_bytes":0,"tx_packets":%s,"tx_bytes":0,"tx_dropped":%s}\n' \
        "$p" "$rx" "$tx" "$txd" >>"$work/backend.json"
    done
  else
    peer_stop backend TERM 20
    local name
    for name in "${peer_names[@]}"; do
      [[ $name == device* && -n ${peer_pid[$name]:-} ]] || continue
      peer_stop "$name" TERM 20
      echo "vvu-device $name: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
    done
    grep -a '^{"port":' "$work/backend.out" >"$work/backend.json"
    for ((p = 0; p < nports; p++)); do
      grep -q "^{\"port\":$p," "$work/backend.json" ||
        fail "vvu-forward printed no JSON line for port $p"
    done
  fi
  echo "back-end counters:"
  sed 's/^/  /' "$work/backend.json"
}

backend_stat() {
  local port=$1 field=$2 v
  v=$(sed -n "s/^{\"port\":$port,.*\"$field\":\([0-9][0-9]*\).*/\1/p" "$work/backend.json")
  [[ $v =~ ^[0-9]+$ ]] || fail "no $field for port $port in the back-end's JSON"
  echo "$v"
}

# check_within WHAT SENT GOT TOL: what one side sent and the other received. Up to TOL (one
# ring) may still sit in a ring when the receiver stops; receiving more than was sent is a bug.
check_within() {
  local what=$1 sent=$2 got=$3 tol=$4
  local d=$((sent - got))
  if ((d < 0 || d > tol)); then
    fail "$what: sent $sent, received $got (difference $d, allowed 0..$tol)"
  fi
  echo "ok: $what: sent $sent, received $got (difference $d, allowed 0..$tol)"
}

# parse_backend_arg "$@": --backend X (else $VVU_FORWARD, else error later in dpdk_init),
# --via unix|vvu|mixed, --device VVU-DEVICE; the remaining arguments are left in rest_args.
declare -a rest_args=()
parse_backend_arg() {
  BACKEND=${BACKEND:-${VVU_FORWARD:-}}
  while [[ $# -gt 0 ]]; do
    case $1 in
      --backend) BACKEND=$2; shift 2 ;;
      --backend=*) BACKEND=${1#--backend=}; shift ;;
      --via) VIA=$2; shift 2 ;;
      --device) VVU_DEVICE=$2; shift 2 ;;
      *) rest_args+=("$1"); shift ;;
    esac
  done
}

# For the benchmarks (benchmarks/dpdk/): window_mpps NAME KEY FROM prints the Mpps of testpmd
# NAME over its stats blocks after block FROM: the packets counted (KEY: TX-packets or
# RX-packets, cumulative) over the time they took, each block's time being its packet delta
# over its pps (testpmd times its blocks with clock_gettime; their period drifts under load, so
# the blocks are weighed by their real length, not counted as seconds). blocks NAME counts them.
window_mpps() {
  tr -d '\033' <"$work/$1.log" | awk -v key="$2:" -v from="$3" '
    /NIC statistics for port/ { b++ }
    ($1 == key && ($3 == "RX-missed:" || $3 == "TX-errors:")) { cur = $2 }
    toupper($1) == substr(key, 1, 2) "-PPS:" {
      if (b > from && $2 > 0) { total += cur - prev; t += (cur - prev) / $2 }
      prev = cur
    }
    END { if (t > 0) printf "%.3f", total / t / 1e6; else print "nan" }'
}
# median NUMBERS...: the median of whitespace-separated numbers.
median() {
  tr ' ' '\n' <<<"$*" | grep . | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B to two decimals, or - when either is missing (-) or B is not positive.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

blocks() { grep -a -c 'NIC statistics for port' "$work/$1.log"; }
