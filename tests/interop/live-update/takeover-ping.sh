#!/usr/bin/env bash
# Live update under two QEMU 7.2 guests (Linux virtio-net, TCG): guest A pings guest B through
# `vvu-forward --port unix:A --port unix:B --mode learn --poll event --control C` (the guests and
# QEMU command lines of the interop.qemu.ping tests: tests/guest/), and while the pings run new
# vvu-forward processes take both ports over (`--takeover C`, same --port list, same mode), each
# at a given ping (seq=K on guest A's console: its measured run streams ping's lines there).
#
#   guest A 10.0.0.1 ── unix:A ── vvu-forward port 0 ⇄ (learn) ⇄ port 1 ── unix:B ── guest B 10.0.0.2
#
# Checks: every hand-over ends the old process with status 0 and {"handed_over":true,...}; guest
# A's measured run got every reply (VVU-GUEST-RESULT ping ok sent=N received=N: busybox ping
# counts a reply late by up to the end of the run, so only a lost frame fails it) and its
# console has "0% packet loss"; neither QEMU printed anything about its vhost-user back-end
# (a lost connection is logged on QEMU's stderr); each front-end connected once (first process),
# every later process logged "session taken over" for both ports and no process but the last saw
# a session end; the ports' counters are carried (each old process handed over more rx_packets
# on both ports than its predecessor; the last one's are the largest). Prints each hand-over's
# pause, the ping in flight and the slowest reply.
# Usage: takeover-ping.sh --forward VVU_FORWARD --guest-dir DIR [--pings N] [--takeovers N]
#   DIR: build-guest.sh's output (built or refreshed there by this script; the build tree's
#   guest/, as for the interop.qemu.ping tests).
# Exit 0 pass, 1 fail, 77 skip (no QEMU; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
guest_src=$(cd "$here/../../guest" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=../../guest/guest-lib.sh
source "$guest_src/guest-lib.sh"

forward="" guest_dir="" pings=40 takeovers=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --forward) forward=$2; shift 2 ;;
    --guest-dir) guest_dir=$2; shift 2 ;;
    --pings) pings=$2; shift 2 ;;
    --takeovers) takeovers=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "live-update.takeover-ping" "$VVU_GUEST_QEMU"
need_exe "$forward"
[[ -n $guest_dir ]] || { echo "FAIL: $test_name: --guest-dir DIR is needed" >&2; exit 2; }
VVU_GUEST_TIMEOUT=$PEER_TIMEOUT # each QEMU's bound (guest-lib's `timeout`)

# The guest: built when missing, its initramfs rebuilt when build-guest.sh changed (0.05 s when
# up to date).
timeout 900 "$guest_src/build-guest.sh" "$guest_dir" >"$work/build-guest.log" 2>&1 ||
  { cat "$work/build-guest.log" >&2; fail "tests/guest/build-guest.sh $guest_dir failed"; }

sock_a=$work/a.sock sock_b=$work/b.sock control=$work/control.sock
ports=(--port "unix:$sock_a" --port "unix:$sock_b" --mode learn --poll event)

# guest_start NAME SOCK MAC ARGS: a guest (guest-lib.sh) registered as a peer: its console is
# NAME.log, QEMU's own output NAME.out (both printed by fail), ended by pid at exit.
guest_start() {
  local name=$1 sock=$2 mac=$3 args=$4
  vvu_guest_start "$guest_dir" "$sock" "$work/$name.log" "$mac" "$args" || fail "cannot start $name"
  ln -s "$name.log.qemu" "$work/$name.out"
  peer_pid[$name]=$VVU_GUEST_PID
  peer_names+=("$name")
  echo "started $name (pid $VVU_GUEST_PID): QEMU on $sock, $args"
}

# The highest seq=K guest A's measured run has printed (-1: none yet).
last_seq() {
  tr -d '\r' <"$work/guest-a.log" | sed -n 's/.* seq=\([0-9]*\) .*/\1/p' | sort -n | tail -n 1 | grep . || echo -1
}

# wait_seq K SECS: bounded poll until guest A has had the reply to ping K (or a later one).
wait_seq() {
  local k=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    (($(last_seq) >= k)) && return 0
    peer_alive guest-a || fail "guest A ended before its reply to ping $k"
    sleep 0.1
  done
  fail "guest A had no reply to ping $k within ${secs}s (last: seq=$(last_seq))"
}

# port_rx FILE PORT: rx_packets of PORT in a vvu-forward's JSON lines.
port_rx() {
  local v
  v=$(grep -a "^{\"port\":$2," "$1" | sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p')
  [[ $v =~ ^[0-9]+$ ]] || fail "no rx_packets for port $2 in $1"
  echo "$v"
}

PEER_STDOUT=1 peer_run forward0 "$forward" "${ports[@]}" --control "$control"
wait_socket "$sock_a" forward0 20
wait_socket "$sock_b" forward0 20
wait_socket "$control" forward0 20
guest_start guest-b "$sock_b" 52:54:00:00:00:02 "vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=$PEER_TIMEOUT"
guest_start guest-a "$sock_a" 52:54:00:00:00:01 \
  "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=$pings vvu.interval=0.2 vvu.wait=60"
# Boot (≈ 10 s for two TCG guests on 2 cores, 20+ s under load), then the first reply.
wait_log guest-a "VVU-GUEST-RUN" 90
echo "guest A: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-a.log" | tr -d '\r')"
echo "guest B: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-b.log" | tr -d '\r')"

declare -a rx0=() rx1=() at_seq=()
for ((i = 1; i <= takeovers; i++)); do
  # Spread the hand-overs over the run: at pings N/(T+1), 2N/(T+1), ...
  wait_seq $((i * pings / (takeovers + 1))) 30
  at_seq[i]=$(last_seq)
  PEER_STDOUT=1 peer_run "forward$i" "$forward" "${ports[@]}" --control "$control" --takeover "$control"
  wait_log "forward$i" "took 2 ports over" 20
  old=forward$((i - 1))
  peer_wait "$old" 20
  ((peer_rc == 0)) || fail "the old vvu-forward ($old) exited with status $peer_rc"
  grep -a -q '"handed_over":true' "$work/$old.out" || fail "$old printed no hand-over line"
  rx0[i]=$(port_rx "$work/$old.out" 0) || exit 1
  rx1[i]=$(port_rx "$work/$old.out" 1) || exit 1
  if ((i > 1)) && ((rx0[i] <= rx0[i - 1] || rx1[i] <= rx1[i - 1])); then
    fail "no progress: forward$((i - 2)) handed over rx_packets ${rx0[i - 1]}/${rx1[i - 1]} (ports 0/1), $old ${rx0[i]}/${rx1[i]}"
  fi
  echo "take-over $i (after guest A's reply to ping ${at_seq[i]}): old ($old) rx_packets port 0 ${rx0[i]}," \
    "port 1 ${rx1[i]}, paused $(json_field "$work/$old.out" paused_us) us;" \
    "$(grep -a "took 2 ports over" "$work/forward$i.log")"
done

result=$(vvu_guest_result "$work/guest-a.log" 60 "${peer_pid[guest-a]}")
rc=$?
echo "guest A: ${result:-no result line}"
((rc == 0)) || fail "guest A's pings failed: ${result:-no VVU-GUEST-RESULT line}"
expect_eq "guest A's result" "$(sed -n 's/.*VVU-GUEST-RESULT \(ping [a-z]* sent=[0-9]* received=[0-9]*\).*/\1/p' <<<"$result")" \
  "ping ok sent=$pings received=$pings"
summary=$(tr -d '\r' <"$work/guest-a.log" | grep -a "packets transmitted")
echo "guest A's ping: $summary; $(tr -d '\r' <"$work/guest-a.log" | grep -a "round-trip")"
[[ $summary == *" 0% packet loss"* ]] || fail "guest A's ping lost packets: $summary"
replies=$(tr -d '\r' <"$work/guest-a.log" | sed -n 's/.* seq=\([0-9]*\) .*/\1/p' | sort -un | wc -l)
expect_eq "distinct replies on guest A's console" "$replies" "$pings"
slowest=$(tr -d '\r' <"$work/guest-a.log" | sed -n 's/.* seq=\([0-9]*\) .* time=\([0-9.]*\) ms.*/\2 \1/p' | sort -n | tail -n 1)
echo "slowest reply: seq=${slowest#* }, ${slowest%% *} ms"
for ((i = 1; i <= takeovers; i++)); do
  echo "replies right after take-over $i: $(tr -d '\r' <"$work/guest-a.log" |
    sed -n "s/.* seq=\($((at_seq[i] + 1))\|$((at_seq[i] + 2))\) .* time=\([0-9.]*\) ms.*/seq=\1 \2 ms/p" | paste -sd ' ')"
done
peer_wait guest-a 20
((peer_rc == 0)) || fail "guest A's QEMU exited with status $peer_rc after powering off"

# What QEMU 7.2 prints on its stderr when its vhost-user back-end goes away (seen by killing a
# vvu-forward under a guest by hand): "Unexpected end-of-file before all data were read",
# "Failed to set msg fds.", "vhost VQ 0 ring restore failed: ...".
qemu_gone='end-of-file|[Ff]ailed|disconnect|lost connection|ring restore'
for g in guest-a guest-b; do
  seen=$(grep -a -E "$qemu_gone" "$work/$g.out")
  [[ -z $seen ]] || fail "$g's QEMU reported trouble with its back-end: $seen"
done
echo "ok: neither QEMU logged anything about its back-end"

connects=$(cat "$work"/forward*.log | grep -a -c "front-end connected$")
expect_eq "fresh front-end sessions (all processes)" "$connects" 2
resumed=$(cat "$work"/forward*.log | grep -a -c "front-end connected (session taken over)")
expect_eq "sessions resumed by a new process" "$resumed" $((2 * takeovers))
for ((i = 0; i < takeovers; i++)); do
  grep -a -q "session ended" "$work/forward$i.log" && fail "forward$i saw a session end (a disconnect)"
done

# Guest B goes first (its session ends with the front-end's own disconnect), then the back-end.
peer_stop guest-b TERM 20
peer_stop "forward$takeovers" TERM 20
last0=$(port_rx "$work/forward$takeovers.out" 0) || exit 1
last1=$(port_rx "$work/forward$takeovers.out" 1) || exit 1
echo "vvu-forward (last, forward$takeovers): $(grep -a '^{"port":0,' "$work/forward$takeovers.out")"
echo "vvu-forward (last, forward$takeovers): $(grep -a '^{"port":1,' "$work/forward$takeovers.out")"
((last0 > rx0[takeovers] && last1 > rx1[takeovers])) ||
  fail "the port counters did not go on in forward$takeovers: ports 0/1 ${rx0[takeovers]}/${rx1[takeovers]} -> $last0/$last1"
# Every echo request crossed port 0 and every reply port 1, counted across all the processes.
((last0 >= pings && last1 >= pings)) ||
  fail "the carried port counters miss pings: rx_packets port 0 $last0, port 1 $last1 (at least $pings each)"
for ((i = 1; i <= takeovers; i++)); do
  next0=$last0 next1=$last1
  ((i < takeovers)) && next0=${rx0[i + 1]} next1=${rx1[i + 1]}
  echo "hand-over $i: old (forward$((i - 1))) rx_packets port 0 ${rx0[i]}, port 1 ${rx1[i]} ->" \
    "new (forward$i) rx_packets port 0 $next0, port 1 $next1 when it ended"
done
echo "ok: port counters carried across $takeovers take-overs: rx_packets port 0 $last0, port 1 $last1 (>= $pings pings each way)"
echo "PASS: $test_name"
