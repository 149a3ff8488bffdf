#!/usr/bin/env bash
# Forwarding throughput of vvu-forward against DPDK's own vhost PMD, the seed's workload: one
# testpmd with two virtio-user ports in io mode (port 0 <-> 1) as the front-end, 8 bursts of
# 32 frames (64 B) put in flight with `start tx_first 8`; the back-end forwards them back across
# (DPDK: a second testpmd with two net_vhost ports in io mode; vvu: vvu-forward --mode xconnect),
# so the same frames circle for the whole run. No hugepages, one queue pair, ring of $RING (256).
# vvu-forward runs twice each round: as it is (each frame copied once, from one front-end's
# transmit buffer straight into the other's receive buffer) and with --rx copy (each frame taken
# into its own memory on the way, two copies: the work DPDK's io forwarding does through mbufs).
#
#   benchmarks/dpdk/compare-forwarding.sh [--rounds N] [--seconds S] VVU-FORWARD
#
# Meter: the front-end's RX-packets (both ports) from `show port stats all`, read twice S seconds
# apart (testpmd runs interactive, fed through a FIFO: its --stats-period is for
# non-interactive runs only, and tx_first takes a burst count only at its prompt). Rounds
# alternate the contenders so that a change in the machine's load hits all; the table gives the
# medians and their ratios to DPDK. Cores: the front-end forwards on core 0, the back-end on core 1
# (DPDK: -l 0,1 --main-lcore 0; vvu-forward: taskset -c 1). Each round also prints the probe's
# core round trip and the hypervisor's steal time (lib.sh). Speed is reported, never asserted.
#
# Environment: as tests/interop/dpdk/lib.sh (DPDK_TESTPMD, RING, KEEP_LOGS=1, ...).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/interop/dpdk/lib.sh
source "$here/../../tests/interop/dpdk/lib.sh"

rounds=5 seconds=5 vvu=${VVU_FORWARD:-}
usage="usage: $0 [--rounds N] [--seconds S] VVU-FORWARD"
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) vvu=$1; shift ;;
  esac
done
[[ -x $vvu ]] || { echo "$0: give the vvu-forward binary" >&2; exit 2; }

CORE_LATENCY=${VVU_CORE_LATENCY:-$(dirname "$vvu")/../benchmarks/vvu-core-latency}
bench_init compare-forwarding "$rounds rounds x ${seconds}s per run, ring $RING, 64 B frames, 8 x 32 in flight"

# The front-end: testpmd at its prompt, reading commands from a FIFO this script holds open.
frontend_prompt_start() {
  local sock0=$1 sock1=$2 prefix=vvu-fwd-frontend-$$
  eal_prefixes+=("$prefix")
  fifo=$work/frontend.cmd.fifo
  rm -f "$fifo"
  mkfifo "$fifo"
  exec {fifo_fd}<>"$fifo" # read-write: opening does not wait for testpmd
  # shellcheck disable=SC2054 # the commas belong to DPDK's options
  # Unbuffered: its answers (and the prompt) reach the log as they are printed.
  # shellcheck disable=SC2016 # expanded by the inner bash
  peer_run frontend bash -c 'exec "$@" <"$0"' "$fifo" env --ignore-signal=PIPE stdbuf -o0 "$TESTPMD" -l 0,1 --main-lcore 1 \
    -n 1 --file-prefix="$prefix" --no-huge -m 512 --no-pci --iova-mode=va \
    --vdev "net_virtio_user0,path=$sock0,queues=1,queue_size=$RING" \
    --vdev "net_virtio_user1,path=$sock1,queues=1,queue_size=$RING" \
    -- -i --total-num-mbufs=32768 --forward-mode=io --nb-cores=1 --txd="$RING" --rxd="$RING" --no-flush-rx --record-core-cycles
}
frontend_command() { echo "$1" >&"$fifo_fd"; }

# rx_total: asks for the port stats and prints the sum of both ports' RX-packets once the
# answer is complete (bounded wait).
rx_total() {
  local before i
  before=$(grep -a -c 'NIC statistics for port 1' "$work/frontend.log")
  frontend_command "show port stats all"
  for ((i = 0; i < 100; i++)); do
    (($(grep -a -c 'NIC statistics for port 1' "$work/frontend.log") > before)) &&
      (($(grep -a -c '^ *#####*$' "$work/frontend.log") >= 2 * (before + 1))) && break
    peer_alive frontend || fail "the front-end ended"
    sleep 0.05
  done
  ((i < 100)) || fail "the front-end did not answer show port stats"
  # The last block of each port: RX-packets is its first field.
  local p0 p1
  p0=$(grep -a -A1 'NIC statistics for port 0' "$work/frontend.log" | grep -a -o 'RX-packets: *[0-9]*' | tail -n 1 | grep -o '[0-9]*$')
  p1=$(grep -a -A1 'NIC statistics for port 1' "$work/frontend.log" | grep -a -o 'RX-packets: *[0-9]*' | tail -n 1 | grep -o '[0-9]*$')
  echo $((p0 + p1))
}

# run_one BACKEND [VVU-FORWARD OPTIONS...]: the result (Mpps) in $work/result
run_one() {
  BACKEND=$1 VIA=unix
  BACKEND_ARGS=("${@:2}")
  local s0=$work/fwd0.sock s1=$work/fwd1.sock
  rm -f "$s0" "$s1"
  backend_start xconnect "$s0" "$s1" >/dev/null
  frontend_prompt_start "$s0" "$s1" >/dev/null
  wait_log frontend "testpmd>" 30
  frontend_command "start tx_first 8"
  wait_log frontend "tx_first" 10
  sleep 1 # the ramp-up (a duration, not a readiness wait)
  local t0 t1 n0 n1
  t0=$(date +%s.%N) n0=$(rx_total)
  steal_mark
  sleep "$seconds" # the measured window
  steal_percent >"$work/steal"
  t1=$(date +%s.%N) n1=$(rx_total)
  awk -v a="$n0" -v b="$n1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) / 1e6 }' >"$work/result"
  ((n1 > n0)) || fail "no frame circled (RX-packets $n0 -> $n1)"
  frontend_command "stop"
  frontend_command "quit"
  peer_wait frontend 20 "of quit"
  exec {fifo_fd}>&-
  backend_stop 2 >/dev/null
}

declare -A all=() cycles=() fe_cycles=()
for ((r = 1; r <= rounds; r++)); do
  for label in dpdk vvu copy; do
    lat=$(core_latency)
    case $label in
      dpdk) run_one dpdk ;;
      vvu) run_one "$vvu" ;;
      copy) run_one "$vvu" --rx copy ;;
    esac
    mpps=$(cat "$work/result") cpf=$(backend_cycles) fcpf=$(frontend_cycles)
    printf 'round %d  %-5s forwarding %8s Mpps  %6s cycles/frame (front-end %6s)  %6s ns core round trip  steal %s%%\n' \
      "$r" "$label" "$mpps" "${cpf:--}" "${fcpf:--}" "$lat" "$(cat "$work/steal")"
    all[$label]+="$mpps "
    cycles[$label]+="${cpf:+$cpf }"
    fe_cycles[$label]+="${fcpf:+$fcpf }"
  done
done

d=$(median "${all[dpdk]}") v=$(median "${all[vvu]}") c=$(median "${all[copy]}")
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "medians of $rounds rounds; Mpps at the front-end, the back-end's busy cycles per frame (DPDK:"
echo "testpmd --record-core-cycles; vvu: vvu-forward's data_path line) and the front-end's (testpmd)."
echo "vvu copies each frame once, buffer to buffer; vvu --rx copy twice, through its own memory, as DPDK does."
printf '%-34s %10s %10s %10s %10s %10s\n' "forwarding" "DPDK vhost" "vvu unix:" "vvu/DPDK" "--rx copy" "copy/DPDK"
printf '%-34s %10s %10s %10s %10s %10s\n' "testpmd io <-> back-end xconnect" "$d" "$v" "$(ratio "$v" "$d")" "$c" "$(ratio "$c" "$d")"
printf '%-34s %10s %10s %10s %10s\n' "  cycles/frame" "$(median "${cycles[dpdk]:-}")" "$(median "${cycles[vvu]:-}")" "" \
  "$(median "${cycles[copy]:-}")"
printf '%-34s %10s %10s %10s %10s\n' "  front-end cycles/frame" "$(median "${fe_cycles[dpdk]:-}")" \
  "$(median "${fe_cycles[vvu]:-}")" "" "$(median "${fe_cycles[copy]:-}")"
echo "  runs dpdk: ${all[dpdk]}"
echo "  runs vvu:  ${all[vvu]}"
echo "  runs copy: ${all[copy]}"
