#!/usr/bin/env bash
# Throughput of vvu's front-end (vvu-traffic) against DPDK's virtio-user (testpmd), both driving
# the same back-end, DPDK's vhost PMD (testpmd net_vhost), 64 B frames, no hugepages, one queue
# pair, ring of $RING (256). The other direction of benchmarks/dpdk/compare-backends.sh.
#
#   benchmarks/dpdk/compare-frontends.sh [--rounds N] [--seconds S] VVU-TRAFFIC
#
#   to-backend:   front-end sends (testpmd txonly | vvu-traffic --mode tx) -> net_vhost rxonly
#   from-backend: net_vhost txonly -> front-end receives (testpmd rxonly | vvu-traffic --mode rx)
#
# Both front-ends are measured with the same meter: the back-end's own counters (RX-packets, or
# TX-packets for from-backend), over its stats blocks after the first one of traffic. Rounds
# alternate the front-ends so that a change in load hits both. Cores: the back-end forwards on
# core 1 (--main-lcore 0), the front-end runs on core 0 (testpmd: --main-lcore 1; vvu-traffic:
# taskset -c 0). Speed is reported, never asserted: this is not a test.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/interop/dpdk/lib.sh
source "$here/../../tests/interop/dpdk/lib.sh"

rounds=3 seconds=5 traffic=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "usage: $0 [--rounds N] [--seconds S] VVU-TRAFFIC" >&2; exit 2 ;;
    *) traffic=$1; shift ;;
  esac
done
[[ -x $traffic ]] || { echo "$0: give the vvu-traffic binary" >&2; exit 2; }

BACKEND=dpdk
dpdk_init compare-frontends
echo "compare-frontends: $rounds rounds x ${seconds}s per run, ring $RING, 64 B frames, no hugepages"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# run FRONTEND DIRECTION: leaves the Mpps in $work/result
run_one() {
  local fe=$1 dir=$2 be_mode key fe_mode n0 n1 i
  case $dir in
    to-backend) be_mode=rxonly key=RX-packets fe_mode=tx ;;
    from-backend) be_mode=txonly key=TX-packets fe_mode=rx ;;
  esac
  local sock=$work/bench.sock
  rm -f "$sock"
  backend_start "$be_mode" "$sock" >/dev/null
  if [[ $fe == dpdk ]]; then
    [[ $fe_mode == tx ]] && fe_mode=txonly || fe_mode=rxonly
    frontend_start frontend "$sock" "$fe_mode" 1 >/dev/null
  else
    # Far more frames than the window takes: the run is ended by signal, not by count.
    # testpmd's frames carry no sequence numbers: rx only checks their size.
    local -a seq=()
    [[ $fe_mode == rx ]] && seq=(--seq ignore)
    PEER_STDOUT=1 peer_run frontend taskset -c 0 "$traffic" --connect "$sock" --mode "$fe_mode" \
      --packets 2000000000 --size 64 --idle 60000 "${seq[@]}" >/dev/null
  fi
  wait_stats backend "$key" 30
  n0=$(($(blocks backend) + 1))
  sleep "$((seconds + 1))" # the measured window (a duration, not a readiness wait)
  n1=$(blocks backend)
  for ((i = 0; i < 50; i++)); do
    (($(blocks backend) > n1)) && break
    peer_alive backend || fail "the back-end ended during the run"
    sleep 0.1
  done
  (($(blocks backend) >= n0 + 2)) || fail "testpmd printed too few stats blocks"
  window_mpps backend "$key" "$n0" >"$work/result"
  peer_stop frontend INT 20 || true
  peer_stop backend INT 20 || true
}

declare -A sum=() cnt=() all=()
for ((r = 1; r <= rounds; r++)); do
  for fe in dpdk vvu; do
    for dir in to-backend from-backend; do
      run_one "$fe" "$dir"
      mpps=$(cat "$work/result")
      printf 'round %d  %-5s %-13s %8s Mpps\n' "$r" "$fe" "$dir" "$mpps"
      sum[$fe.$dir]=$(awk -v a="${sum[$fe.$dir]:-0}" -v b="$mpps" 'BEGIN { print a + b }')
      cnt[$fe.$dir]=$((${cnt[$fe.$dir]:-0} + 1))
      all[$fe.$dir]+="$mpps "
    done
  done
done

echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-36s %12s %12s %10s\n' "direction (Mpps, mean of $rounds)" "virtio-user" "vvu-traffic" "vvu/DPDK"
for dir in to-backend from-backend; do
  d=$(awk -v s="${sum[dpdk.$dir]}" -v n="${cnt[dpdk.$dir]}" 'BEGIN { printf "%.2f", s / n }')
  v=$(awk -v s="${sum[vvu.$dir]}" -v n="${cnt[vvu.$dir]}" 'BEGIN { printf "%.2f", s / n }')
  ratio=$(awk -v a="$v" -v b="$d" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  case $dir in
    to-backend) what="front-end -> DPDK vhost (tx)" ;;
    from-backend) what="DPDK vhost -> front-end (rx)" ;;
  esac
  printf '%-36s %12s %12s %10s\n' "$what" "$d" "$v" "$ratio"
done
for k in "${!all[@]}"; do echo "  runs $k: ${all[$k]}"; done | sort
