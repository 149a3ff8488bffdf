#!/usr/bin/env bash
# Throughput of vvu-forward against DPDK's own vhost PMD, with the same front-end: DPDK's
# virtio-user in testpmd, 64 B frames, no hugepages, one queue pair, ring of $RING (256).
# With --device, vvu-forward also serves the same front-end through a vvu-device over the
# PCI-BAR transport (--port vvu:PCI), and the table gives the vvu:/unix: ratio.
#
#   benchmarks/dpdk/compare-backends.sh [--dpdk-only | --no-dpdk] [--device VVU-DEVICE]
#                                       [--rounds N] [--seconds S] [--scaling] [VVU-FORWARD]
#
#   to-backend:   testpmd txonly -> back-end (DPDK: testpmd net_vhost rxonly; vvu: --mode rxonly
#                 --rx copy: each frame is copied into the back-end's memory, as DPDK's dequeue
#                 copies it into an mbuf — equal work; --rx discard is vvu's count-only mode)
#   from-backend: back-end (DPDK: testpmd net_vhost txonly; vvu: --mode txonly) -> testpmd rxonly
#
# Rounds alternate the back-ends (DPDK, vvu, DPDK, vvu, ...) so that a change in the machine's load
# hits both. Each run measures about S seconds (5) of traffic from the front-end's own counters
# (testpmd --stats-period 1): TX-packets (to-backend) or RX-packets (from-backend) over the time
# of the stats blocks that follow the first, ramp-up one. Cores: the front-end forwards on core
# 0, the back-end on core 1 (DPDK: -l 0,1 --main-lcore 0; vvu-forward: taskset -c 1, its control
# thread included). Each round also prints both sides' cycles per frame (a front-end whose
# cycles x rate reach the clock limits the run) and the cache-line round trip between the two
# CPUs just before it (vvu-core-latency, beside VVU-FORWARD's build, or $VVU_CORE_LATENCY), and
# the hypervisor's steal time on the two CPUs during the measured window.
# Speed is reported, never asserted: this is not a test.
#
# --scaling: the front-end has two queue pairs (virtio-user queues=2, testpmd --rxq/--txq 2 on
# its one core) and the contenders are vvu-forward --queues 2 --threads 1 (on core 1) and
# --threads 2 (on cores 1 and 0, the second beside testpmd: a 2-core machine has no third); the
# table gives the 2/1 ratio.
# VVU-FORWARD (or $VVU_FORWARD): the vvu-forward binary; --dpdk-only runs the DPDK side alone.
# Environment: as tests/interop/dpdk/lib.sh (DPDK_TESTPMD, RING, KEEP_LOGS=1, ...).
# Figures and how to read them: docs/performance.md.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/interop/dpdk/lib.sh
source "$here/../../tests/interop/dpdk/lib.sh"

rounds=3 seconds=5 dpdk_only=0 no_dpdk=0 device="" scaling=0 vvu=${VVU_FORWARD:-}
usage="usage: $0 [--dpdk-only | --no-dpdk] [--device VVU-DEVICE] [--rounds N] [--seconds S] [--scaling] [VVU-FORWARD]"
while [[ $# -gt 0 ]]; do
  case $1 in
    --dpdk-only) dpdk_only=1; shift ;;
    --no-dpdk) no_dpdk=1; shift ;;
    --device) device=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --scaling) scaling=1; shift ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) vvu=$1; shift ;;
  esac
done
# Contenders: label, back-end, how vvu-forward reaches the front-end (lib.sh VIA), its threads.
contenders=()
[[ $no_dpdk == 0 && $scaling == 0 ]] && contenders+=("dpdk dpdk unix 1")
if [[ $dpdk_only == 0 ]]; then
  [[ -n $vvu ]] || { echo "$0: give the vvu-forward path (or VVU_FORWARD, or --dpdk-only)" >&2; exit 2; }
  [[ -x $vvu ]] || { echo "$0: $vvu is not an executable" >&2; exit 1; }
  if ((scaling)); then
    FE_QUEUES=2
    contenders+=("t1 $vvu unix 1" "t2 $vvu unix 2")
  else
    contenders+=("unix $vvu unix 1")
  fi
  if [[ -n $device ]]; then
    [[ -x $device ]] || { echo "$0: $device is not an executable" >&2; exit 1; }
    VVU_DEVICE=$device
    ((scaling)) || contenders+=("vvu $vvu vvu 1")
  fi
fi
((${#contenders[@]} > 0)) || { echo "$usage" >&2; exit 2; }

CORE_LATENCY=${VVU_CORE_LATENCY:-$(dirname "${vvu:-.}")/../benchmarks/vvu-core-latency}
bench_init compare-backends "$rounds rounds x ${seconds}s per run, ring $RING, 64 B frames, no hugepages"

# run_one BACKEND VIA DIRECTION THREADS: the result (Mpps) in $work/result
run_one() {
  local be=$1 via=$2 dir=$3 threads=$4 fe_mode be_mode key n0 i
  BACKEND=$be VIA=$via
  BACKEND_ARGS=()
  case $dir in
    to-backend) fe_mode=txonly be_mode=rxonly key=TX-packets BACKEND_ARGS=(--rx copy) ;;
    from-backend) fe_mode=rxonly be_mode=txonly key=RX-packets ;;
  esac
  if ((scaling)); then
    local cpus=1
    ((threads > 1)) && cpus=1,0
    BACKEND_ARGS+=(--queues 2 --threads "$threads" --cpu "$cpus")
    VVU_FORWARD_CPU=$cpus
  fi
  local sock=$work/bench.sock
  rm -f "$sock"
  backend_start "$be_mode" "$sock" >/dev/null
  frontend_start frontend "$sock" "$fe_mode" 1 --record-core-cycles >/dev/null
  wait_stats frontend "$key" 30
  n0=$(($(blocks frontend) + 1)) # the next block still holds the ramp-up: skip it
  steal_mark
  sleep "$((seconds + 1))"        # the measured window (a duration, not a readiness wait)
  steal_percent >"$work/steal"
  local n1
  n1=$(blocks frontend)
  for ((i = 0; i < 50; i++)); do # and the block that closes it
    (($(blocks frontend) > n1)) && break
    peer_alive frontend || fail "the front-end ended during the run"
    sleep 0.1
  done
  (($(blocks frontend) >= n0 + 2)) || fail "testpmd printed too few stats blocks"
  window_mpps frontend "$key" "$n0" >"$work/result"
  if [[ $dir == to-backend ]]; then
    peer_stop frontend INT 20
    backend_stop 1 >/dev/null
  else
    backend_stop 1 >/dev/null
    peer_stop frontend INT 20
  fi
}

declare -A all=() cycles=() fe_cycles=()
for ((r = 1; r <= rounds; r++)); do
  for c in "${contenders[@]}"; do
    read -r label be via threads <<<"$c"
    for dir in to-backend from-backend; do
      lat=$(core_latency)
      run_one "$be" "$via" "$dir" "$threads"
      mpps=$(cat "$work/result") cpf=$(backend_cycles) fcpf=$(frontend_cycles)
      printf 'round %d  %-5s %-13s %8s Mpps  %6s cycles/frame (front-end %6s)  %6s ns core round trip  steal %s%%\n' \
        "$r" "$label" "$dir" "$mpps" "${cpf:--}" "${fcpf:--}" "$lat" "$(cat "$work/steal")"
      all[$label.$dir]+="$mpps "
      cycles[$label.$dir]+="${cpf:+$cpf }"
      fe_cycles[$label.$dir]+="${fcpf:+$fcpf }"
    done
  done
done

med() { [[ -n ${all[$1]:-} ]] && median "${all[$1]}" || echo -; }
medc() { [[ -n ${cycles[$1]:-} ]] && median "${cycles[$1]}" || echo -; }
medf() { [[ -n ${fe_cycles[$1]:-} ]] && median "${fe_cycles[$1]}" || echo -; }

echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "medians of $rounds rounds; Mpps at the front-end, the back-end's busy cycles per frame (DPDK:"
echo "testpmd --record-core-cycles; vvu: vvu-forward's data_path line) and the front-end's (testpmd)"
if ((scaling)); then
  printf '%-30s %10s %10s %10s\n' "direction, 2 queue pairs" "1 thread" "2 threads" "2/1"
  for dir in to-backend from-backend; do
    a=$(med "t1.$dir") b=$(med "t2.$dir")
    printf '%-30s %10s %10s %10s\n' "$dir" "$a" "$b" "$(ratio "$b" "$a")"
    printf '%-30s %10s %10s\n' "  cycles/frame" "$(medc "t1.$dir")" "$(medc "t2.$dir")"
    printf '%-30s %10s %10s\n' "  front-end cycles/frame" "$(medf "t1.$dir")" "$(medf "t2.$dir")"
  done
  for k in "${!all[@]}"; do echo "  runs $k: ${all[$k]}"; done | sort
  exit 0
fi
printf '%-30s %10s %10s %10s %10s %10s\n' "direction" "DPDK vhost" "vvu unix:" "vvu vvu:" "unix/DPDK" "vvu:/unix:"
for dir in to-backend from-backend; do
  d=$(med "dpdk.$dir") u=$(med "unix.$dir") v=$(med "vvu.$dir")
  case $dir in
    to-backend) what="virtio-user -> back-end (rx)" ;;
    from-backend) what="back-end -> virtio-user (tx)" ;;
  esac
  printf '%-30s %10s %10s %10s %10s %10s\n' "$what" "$d" "$u" "$v" "$(ratio "$u" "$d")" "$(ratio "$v" "$u")"
  printf '%-30s %10s %10s %10s\n' "  cycles/frame" "$(medc "dpdk.$dir")" "$(medc "unix.$dir")" "$(medc "vvu.$dir")"
  printf '%-30s %10s %10s %10s\n' "  front-end cycles/frame" "$(medf "dpdk.$dir")" "$(medf "unix.$dir")" "$(medf "vvu.$dir")"
done
for k in "${!all[@]}"; do echo "  runs $k: ${all[$k]}"; done | sort
