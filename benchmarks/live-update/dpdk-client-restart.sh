#!/usr/bin/env bash
# Downtime of DPDK 22.11's own vhost back-end when it crashes (SIGKILL) and is restarted: the
# reference figure a vvu live update is compared against.
#
#   bash benchmarks/live-update/dpdk-client-restart.sh [--restarts N]      (N: 5; KEEP_LOGS=1 keeps logs)
#
# Front-end: testpmd virtio-user, listening (server=1), txonly 64 B frames, forwarding on core 0.
# Back-end: testpmd net_vhost, connecting (client=1), rxonly, forwarding on core 1. No hugepages.
# Each restart kill -9's the back-end, reaps it and at once starts a new one (fresh --file-prefix),
# as a supervisor would; the front-end accepts the new connection and negotiates again.
#
# The figure: downtime = time from kill(2) until the first poll of the front-end's own TX counter
# (ethdev opackets, `show port stats 0`) that has grown by more than RING frames past its value
# at the kill, read by a poll just before it (a dead back-end leaves at most a ring's worth of
# free slots). It holds the reap,
# the new process's start (exec, DPDK's shared objects, EAL init, mempool), the vhost-user
# negotiation and the first frames through the ring: the gap a guest sees in its traffic. Almost
# all of it is the start: the front-end logs its reconnection within a few ms of the resumption, and
# the new back-end's EAL init runs pinned to its main lcore, core 0, beside the front-end's
# busy-polling forwarding lcore (half a core), so the figure also moves with the machine's load.
# Resolution: --stats-period ticks once a second, so the front-end runs interactive (-i) on a FIFO
# and is polled back to back, POLL_MS (1) ms apart; an awk filter turns each reply into one short
# line, so a poll costs this shell a few syscalls (a poll takes 1-10 ms here). Resumption lies
# between the previous poll's send and this poll's reply: that interval, printed per restart as
# "resolution", bounds the error (the figure is its upper end). The machinery is in lib.sh.
# Ends with one JSON line: {"peer":...,"restarts":N,"downtime_s":[...],"median_s":X}.
set -euo pipefail
restarts=5 POLL_US=$((${POLL_MS:-1} * 1000))
while (($#)); do
  case $1 in
    --restarts) restarts=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    -h | --help) sed -n '2,/^set -euo/{/^set/!p}' "$0"; exit 0 ;;
    *) echo "usage: $0 [--restarts N]" >&2; exit 2 ;;
  esac
done
[[ $restarts =~ ^[1-9][0-9]*$ ]] || { echo "$0: --restarts wants a positive integer" >&2; exit 2; }
# shellcheck source=benchmarks/live-update/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lu_init dpdk-client-restart dcr $((60 + 20 * restarts)) # every process bounded by timeout
sock=$lu_work/vhost.sock

start_be() { # $1: generation
  spawn "be$1" stdbuf -oL "$TESTPMD" "${LU_EAL[@]}" --main-lcore 0 --file-prefix="$lu_prefix-be$1" \
    --vdev "net_vhost0,iface=$sock,queues=1,client=1" -- --total-num-mbufs=32768 \
    --forward-mode=rxonly --auto-start --stats-period 1 -a
}

fe_start fe "$sock" ",server=1"
fe_until listening 30 # the socket is there: the back-end can connect
start_be 0
printf 'zz-end\n' >&"$fe_in"; fe_until end 60 # EAL init done, the command line reads
fe_flowing 30 # traffic flows before the first kill
echo "traffic flowing (front-end TX-packets $tx); $restarts restarts of the back-end"

downs=()
for ((n = 1; n <= restarts; n++)); do
  fe_dropped; d0=$dropped lsc0=$lsc
  child_of "be$((n - 1))"
  lu_mark # the counter at the kill
  now; t_kill=$t t_conn=$t
  kill -9 "$child"
  reap "be$((n - 1))" 10 || fail "restart $n: the killed back-end did not end" # timeout reports its child's SIGKILL: expected
  start_be "$n"
  lu_label=$n
  lu_measure "$t_kill" 30 "be$n" # until the counter moves past what the old ring could still take
  ((ended == 0)) || fail "restart $n: the new back-end ended"
  ((resumed == 1)) || fail "restart $n: no traffic 30 s after the kill"
  fe_dropped # also takes the facts logged after the resumption
  if ((t_conn > t_kill)); then conn=$(((t_conn - t_kill) / 1000)); else conn=-; fi
  downs+=("$(fmt_s "$down")")
  printf 'restart %d: downtime %s s (resolution %d.%d ms, %d polls; reconnect logged at +%s ms), ' \
    "$n" "${downs[-1]}" $((res / 1000)) $((res % 1000 / 100)) "$polls" "$conn"
  printf 'TX-dropped +%d, link events %d\n' $((dropped - d0)) $((lsc - lsc0))
done

median=$(printf '%s\n' "${downs[@]}" | sort -g |
  awk '{ v[NR] = $1 } END { printf "%.6f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
printf '{"peer":"dpdk-22.11 vhost client=1","restarts":%d,"downtime_s":[%s],"median_s":%s}\n' \
  "$restarts" "$(IFS=,; echo "${downs[*]}")" "$median"
