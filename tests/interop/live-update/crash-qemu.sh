#!/usr/bin/env bash
# Crash recovery under two QEMU 7.2 guests (Linux virtio-net, TCG) whose vhost-user chardevs
# listen (`server=on,wait=off`): `vvu-forward --port unix-client:A --port unix-client:B --mode
# learn --poll event` connects to both (it is started first and retries until QEMU has created
# the sockets), guest A pings guest B, and mid-run vvu-forward is killed with SIGKILL and an
# identical one started, twice. QEMU's vhost-user netdev with a server chardev stops the
# device's vhost state when its back-end goes away (taking the used index in guest memory as
# where each ring resumes), sets the NIC's link down, listens again, and when the next back-end
# connects sets the session up from scratch and the link up again.
#
#   guest A 10.0.0.1 ── QEMU listens on A ── vvu-forward port 0 ⇄ (learn) ⇄ port 1 ── B ── guest B 10.0.0.2
#
# Checks: both QEMUs keep running (guest A until it has printed its result and powered off);
# each new vvu-forward logs "front-end connected" for both ports; guest A has a reply to a ping
# sent after each kill, and every ping it sent from --grace seconds after the restart on, up to
# the next crash (or the end of the run), is answered — the pings of the outage may be lost or
# late; the killed processes saw no session end before their crash; QEMU's stderr holds nothing
# but the lines it prints at start and for a back-end that disconnects (an allow-list, below:
# anything else, e.g. an assertion or "vhost_net_start failed", fails the test). Prints, per
# crash, the pings lost and answered late, the time from the kill to the first reply to a ping
# sent after it, the longest silence, and QEMU's messages.
# Seen (2 cores, TCG, 18 crashes in 9 runs): both ports reconnect 0.15-0.3 s after the kill;
# 16 crashes lost no ping, 2 lost the one in flight; the first reply to a ping sent after the
# kill came 0.12-0.28 s after it (13 crashes), or 1.08-1.14 s (5; 2.1 s with --down 1) when
# guest A tried to send during the outage:
# QEMU sets the NIC's link down and up again, the guest flushes its ARP entry on link down, its
# ARP request of the outage is lost and the kernel retries after 1 s (the pings wait in the ARP
# queue and are all answered at once); the new process carries one ARP frame each way.
# Usage: crash-qemu.sh --forward VVU_FORWARD --guest-dir DIR [--pings N] [--crashes N]
#                      [--grace SECS] [--down SECS]
#   DIR: build-guest.sh's output (built or refreshed there, as for takeover-ping.sh).
#   --down: seconds between the kill and the restart (default 0: a supervisor restarting at once).
# Exit 0 pass, 1 fail, 77 skip (no QEMU; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
guest_src=$(cd "$here/../../guest" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"
# shellcheck source=../../guest/guest-lib.sh
source "$guest_src/guest-lib.sh"

forward="" guest_dir="" pings=60 crashes=2 grace=2 down=0 interval=0.2
while [[ $# -gt 0 ]]; do
  case $1 in
    --forward) forward=$2; shift 2 ;;
    --guest-dir) guest_dir=$2; shift 2 ;;
    --pings) pings=$2; shift 2 ;;
    --crashes) crashes=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    --down) down=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
fe_init "live-update.crash-qemu" "$VVU_GUEST_QEMU"
need_exe "$forward"
[[ -n $guest_dir ]] || { echo "FAIL: $test_name: --guest-dir DIR is needed" >&2; exit 2; }
VVU_GUEST_TIMEOUT=$PEER_TIMEOUT # each QEMU's bound (guest-lib's `timeout`)

timeout 900 "$guest_src/build-guest.sh" "$guest_dir" >"$work/build-guest.log" 2>&1 ||
  { cat "$work/build-guest.log" >&2; fail "tests/guest/build-guest.sh $guest_dir failed"; }

sock_a=$work/a.sock sock_b=$work/b.sock
ports=(--port "unix-client:$sock_a" --port "unix-client:$sock_b" --mode learn --poll event)

# guest_start NAME SOCK MAC ARGS: a guest (guest-lib.sh) registered as a peer: its console is
# NAME.log, QEMU's stderr NAME.out (both printed by fail), ended by pid at exit. guest-lib.sh
# writes `-chardev socket,id=c0,path=SOCK`; the options after the path make QEMU the listening
# side: server=on listens (and listens again after a back-end disconnects), wait=off lets the
# chardev be created without a client — QEMU 7.2's vhost-user netdev still waits for the first
# back-end before the guest starts ("QEMU waiting for connection on: ...").
guest_start() {
  local name=$1 sock=$2 mac=$3 args=$4
  vvu_guest_start "$guest_dir" "$sock,server=on,wait=off" "$work/$name.log" "$mac" "$args" ||
    fail "cannot start $name"
  ln -s "$name.log.qemu" "$work/$name.out"
  peer_pid[$name]=$VVU_GUEST_PID
  peer_names+=("$name")
  echo "started $name (pid $VVU_GUEST_PID): QEMU listening on $sock, $args"
}

# The seq=K of every reply on guest A's console, sorted, once each.
replies() { tr -d '\r' <"$work/guest-a.log" | sed -n 's/^64 bytes from .* seq=\([0-9]*\) .*/\1/p' | sort -un; }
# The highest seq=K guest A has had a reply to (-1: none yet).
last_seq() { replies | tail -n 1 | grep . || echo -1; }

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

# Guest A's console, each line stamped with the host's /proc/uptime (vvu_now's clock) when it
# arrived: `tail -F` wakes on inotify, the loop forks nothing. Not in peer_names (fail prints
# guest-a.log already); ended by pid with the peers.
start_stamper() {
  # shellcheck disable=SC2016 # the inner script's own variables
  timeout -k 5 "$PEER_TIMEOUT" bash -c 'tail -n +1 -F "$1" 2>/dev/null |
    while IFS= read -r l; do read -r up _ </proc/uptime; printf "%s %s\n" "$up" "$l"; done' \
    _ "$work/guest-a.log" >"$work/stamps" 2>&1 </dev/null &
  peer_pid[stamper]=$!
}
# Guest A's replies, one line each, by seq: "SEQ ARRIVED RTT_MS SENT" (ARRIVED: host time the
# line reached the console; SENT = ARRIVED - RTT, when the ping left guest A).
stamped() {
  awk '{ sub(/\r$/, "") }
       $2 == "64" && $3 == "bytes" {
         seq = ""; rtt = ""
         for (i = 4; i <= NF; i++) { if ($i ~ /^seq=/) seq = substr($i, 5); if ($i ~ /^time=/) rtt = substr($i, 6) }
         if (seq != "" && rtt != "" && !(seq in done)) { done[seq] = 1; printf "%d %.2f %.3f %.3f\n", seq, $1, rtt, $1 - rtt / 1000 }
       }' "$work/stamps" | sort -n
}
# first_sent_after T: the first reply (stamped's line) to a ping guest A sent after host time T.
first_sent_after() { stamped | awk -v t="$1" '$4 > t' | sort -k2,2n | head -n 1; }

# guests_alive WHEN: neither QEMU has exited.
guests_alive() {
  local g
  for g in guest-a guest-b; do
    peer_alive "$g" || fail "$g's QEMU exited $1: $(tail -n 5 "$work/$g.out" | paste -sd '|')"
  done
}

# Seconds (2 decimals) from $1 to $2, both vvu_now values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b - a}'; }

# What QEMU 7.2 prints on its stderr in this setup (seen by killing vvu-forward under a guest by
# hand): at start, while its netdev waits for the first back-end, "info: QEMU waiting for
# connection on: disconnected:unix:SOCK,server=on"; when a back-end (vvu-forward) connects,
# "warning: vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not." (vvu
# offers CONFIG, QEMU's virtio-net does not use it); when the back-end dies under a running
# device: "Unexpected end-of-file before all data were read" (the read of the socket), then
# "Failed to set msg fds." (the vring-call/kick requests of vhost_dev_stop, which cannot be sent)
# and "vhost VQ N ring restore failed: -22: Invalid argument (22)" per queue: GET_VRING_BASE
# cannot be sent, so QEMU takes the used index it sees in guest memory as the next avail index
# (virtio_queue_restore_last_avail_idx) and hands that to the next back-end — the normal path of
# a back-end crash, not a failure of the device. Any other line fails the test.
qemu_expected='info: QEMU waiting for connection on: disconnected:unix:'
qemu_expected+='|warning: vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not\.$'
qemu_expected+='|: Unexpected end-of-file before all data were read$'
qemu_expected+='|: Failed to set msg fds\.$'
qemu_expected+='|: vhost VQ [0-9]+ ring restore failed: -22: Invalid argument \(22\)$'

# The back-end first: it retries (with back-off, at most 1 s apart) until QEMU listens.
PEER_STDOUT=1 peer_run forward0 "$forward" "${ports[@]}"
guest_start guest-b "$sock_b" 52:54:00:00:00:02 "vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=$PEER_TIMEOUT"
guest_start guest-a "$sock_a" 52:54:00:00:00:01 \
  "vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=$pings vvu.interval=$interval vvu.wait=60"
start_stamper
wait_log forward0 "port 0: front-end connected" 30
wait_log forward0 "port 1: front-end connected" 30
# Boot (≈ 10 s for two TCG guests on 2 cores, 20+ s under load), then the first reply.
wait_log guest-a "VVU-GUEST-RUN" 90
echo "guest A: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-a.log" | tr -d '\r')"
echo "guest B: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-b.log" | tr -d '\r')"

# Per crash i: at_seq (guest A's last reply before the kill), the host times of the kill, the
# restart and both ports' "front-end connected", and the first reply to a ping sent after the
# kill (what the dead process could not have carried).
declare -A qemu_lines=()
declare -a at_seq=() t_kill=() t_start=() t_conn=() recovered=()
for ((i = 1; i <= crashes; i++)); do
  old=forward$((i - 1)) new=forward$i
  # Spread the crashes over the run: at pings N/(C+1), 2N/(C+1), ...
  wait_seq $((i * pings / (crashes + 1))) 30
  guests_alive "before crash $i"
  grep -a -q "session ended" "$work/$old.log" && fail "$old saw a session end before it was killed"
  for g in guest-a guest-b; do qemu_lines[$i,$g]=$(wc -l <"$work/$g.out"); done
  # The child of `timeout`: the process to kill with SIGKILL (as a crash would).
  pid=$(pgrep -P "${peer_pid[$old]}" | head -n 1)
  [[ -n $pid ]] || fail "no vvu-forward process under $old"
  at_seq[i]=$(last_seq)
  read -r "t_kill[i]" _ </proc/uptime # (vvu_now's clock, without a fork)
  kill -KILL "$pid"
  wait "${peer_pid[$old]}" 2>/dev/null
  unset "peer_pid[$old]"
  echo "crash $i: killed $old (pid $pid) with SIGKILL after guest A's reply to ping ${at_seq[i]}"
  sleep "$down"
  t_start[i]=$(vvu_now)
  PEER_STDOUT=1 peer_run "$new" "$forward" "${ports[@]}"
  # Bounded polls: both ports' "front-end connected" (a cheap, tight loop, so that its time is
  # close), then a reply to a ping sent after the kill (arrival times come from the stamps).
  t_conn[i]="" recovered[i]=""
  for ((t = 0; t < 1500; t++)); do
    if grep -a -q "port 0: front-end connected" "$work/$new.log" &&
      grep -a -q "port 1: front-end connected" "$work/$new.log"; then
      read -r "t_conn[i]" _ </proc/uptime
      break
    fi
    peer_alive "$new" || fail "$new ended: $(paste -sd '|' "$work/$new.log")"
    sleep 0.02
  done
  [[ -n ${t_conn[i]} ]] || fail "$new did not log 'front-end connected' for both ports within 30 s"
  for ((t = 0; t < 300; t++)); do
    recovered[i]=$(first_sent_after "${t_kill[i]}")
    [[ -n ${recovered[i]} ]] && break
    peer_alive "$new" || fail "$new ended: $(paste -sd '|' "$work/$new.log")"
    guests_alive "after crash $i"
    sleep 0.1
  done
  [[ -n ${recovered[i]} ]] || fail "guest A had no reply to a ping sent after crash $i within 30 s (last: seq=$(last_seq))"
  read -r rseq rarr _ <<<"${recovered[i]}"
  echo "crash $i: $new started +$(elapsed "${t_kill[i]}" "${t_start[i]}") s after the kill, both ports" \
    "connected +$(elapsed "${t_kill[i]}" "${t_conn[i]}") s, first reply to a ping sent after the kill" \
    "(seq=$rseq) +$(elapsed "${t_kill[i]}" "$rarr") s"
  sed 's/^/  '"$new"': /' "$work/$new.log"
  sleep 0.3 # (QEMU's lines of the reconnection)
  for g in guest-a guest-b; do
    echo "  $g's QEMU since the kill:"
    tail -n +$((qemu_lines[$i,$g] + 1)) "$work/$g.out" | sed 's/^/    /'
  done
done

result=$(vvu_guest_result "$work/guest-a.log" 90 "${peer_pid[guest-a]}")
echo "guest A: ${result:-no result line}"
[[ $result == *"VVU-GUEST-RESULT ping "*" sent=$pings "* ]] ||
  fail "guest A's run did not end with sent=$pings: ${result:-no VVU-GUEST-RESULT line}"
peer_alive guest-b || fail "guest B's QEMU exited during the run"
echo "guest A's ping: $(tr -d '\r' <"$work/guest-a.log" | grep -a "packets transmitted");" \
  "$(tr -d '\r' <"$work/guest-a.log" | grep -a "round-trip")"
sleep 0.2 # (the stamper's last lines)

# Per crash, over the pings after its last reply up to the next crash's (or the end): the ones
# never answered, the ones answered late (RTT above 200 ms), the longest silence on guest A's
# console from the kill on (between two replies' arrivals), and whether every ping sent from the
# restart + grace on was answered — the send time of an unanswered ping is extrapolated from the
# last answered one before it (send = arrival - RTT) at $interval.
stamped >"$work/replies"
got=$(wc -l <"$work/replies")
seq 0 $((pings - 1)) | grep -v -x -F -f <(cut -d' ' -f1 "$work/replies") >"$work/missing"
echo "replies: $got of $pings; unanswered pings: $(ranges <"$work/missing")"
before=$(awk -v a="${at_seq[1]}" '$1 <= a' "$work/missing" | ranges)
[[ $before == - ]] || fail "pings before the first crash went unanswered: $before"
((got == $(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$result"))) ||
  fail "guest A's result counts other replies than its console shows ($got): $result"
for ((i = 1; i <= crashes; i++)); do
  end=$((pings - 1))
  ((i < crashes)) && end=${at_seq[i + 1]}
  lost=$(awk -v a="${at_seq[i]}" -v e="$end" '$1 > a && $1 <= e' "$work/missing")
  late=$(awk -v a="${at_seq[i]}" -v e="$end" '$1 > a && $1 <= e && $3 > 200 { printf "%s%d:%.0fms", (n++ ? " " : ""), $1, $3 }' "$work/replies")
  silence=$(awk -v tk="${t_kill[i]}" -v e="$end" '$2 >= tk && $1 <= e { print $2 }' "$work/replies" | sort -n |
    awk -v tk="${t_kill[i]}" 'BEGIN { p = tk } { if ($1 - p > m) m = $1 - p; p = $1 } END { printf "%.2f", m }')
  # The first ping sent at or after restart + grace, and the ones from it to `end` unanswered.
  verdict=$(awk -v a="${at_seq[i]}" -v e="$end" -v from="$(awk -v s="${t_start[i]}" -v g="$grace" 'BEGIN{print s + g}')" \
    -v iv="$interval" -v m="$work/missing" '
    BEGIN { while ((getline l < m) > 0) miss[l] = 1 }
    { sent[$1] = $4 }
    END {
      for (k = a; k <= e; k++) {
        if (k in sent) { js = sent[k]; j = k; t = js } else if (j != "") t = js + (k - j) * iv; else continue
        if (t >= from && first == "") first = k
        if (first != "" && (k in miss)) bad = bad (bad ? " " : "") k
      }
      print (first == "" ? "none" : first), (bad == "" ? "-" : bad)
    }' "$work/replies")
  read -r must bad <<<"$verdict"
  echo "crash $i: pings $((at_seq[i] + 1))..$end: $(grep -c . <<<"$lost") unanswered ($(ranges <<<"$lost"));" \
    "answered late (> 200 ms): ${late:--}; longest silence on guest A from the kill: $silence s;" \
    "kill -> first reply to a ping sent after it: $(elapsed "${t_kill[i]}" "$(cut -d' ' -f2 <<<"${recovered[i]}")") s"
  [[ $must != none ]] || fail "crash $i: the run ended (ping $end) before ${grace} s after the restart: more --pings"
  echo "crash $i: pings $must..$end (sent from the restart + ${grace} s on) all answered: $([[ $bad == - ]] && echo yes || echo "no, not: $bad")"
  [[ $bad == - ]] || fail "crash $i: pings sent ${grace} s or more after the restart went unanswered: $bad"
done
peer_wait guest-a 20
((peer_rc == 0)) || fail "guest A's QEMU exited with status $peer_rc after powering off"

# QEMU printed nothing but the expected lines; each crash shows as one disconnect per QEMU.
for g in guest-a guest-b; do
  other=$(grep -a -v -E "$qemu_expected" "$work/$g.out")
  [[ -z $other ]] || fail "$g's QEMU printed unexpected lines: $other"
  expect_eq "$g's QEMU: back-end disconnects (Unexpected end-of-file)" \
    "$(grep -a -c "Unexpected end-of-file" "$work/$g.out")" "$crashes"
  restores=$(grep -a -c "ring restore failed" "$work/$g.out")
  ((restores <= 2 * crashes)) || fail "$g's QEMU: $restores ring restores for $crashes crashes"
done
echo "ok: both QEMUs printed only their start-up and back-end-disconnect lines"
# Counted up to the process's first session end: once guest A has powered off, its QEMU closes
# the session on its way out, and the last process (a unix-client port reconnects) may still
# reach the listening socket before QEMU exits — one more connection, after the run (seen once
# in CI: port 0 connected, ended, connected, ended).
for ((i = 1; i <= crashes; i++)); do
  expect_eq "forward$i: front-ends connected before a session ended" \
    "$(awk '/session ended/ { exit } /front-end connected$/ { n++ } END { print n + 0 }' "$work/forward$i.log")" 2
done

# Guest B goes (its session ends with the front-end's disconnect), then the last back-end.
peer_stop guest-b TERM 20
peer_stop "forward$crashes" TERM 20
echo "vvu-forward (last, forward$crashes): $(grep -a '^{"port":' "$work/forward$crashes.out" | paste -sd ' ')"
# What the last process carried, by size: an echo request or reply is 98 bytes, an ARP frame 42
# (the guests re-resolve each other after each crash: their link went down).
for p in 0 1; do
  line=$(grep -a "^{\"port\":$p," "$work/forward$crashes.out")
  n=$(sed -n 's/.*"rx_packets":\([0-9]*\).*/\1/p' <<<"$line") b=$(sed -n 's/.*"rx_bytes":\([0-9]*\).*/\1/p' <<<"$line")
  [[ -n $n && -n $b ]] || fail "no rx counters for port $p in forward$crashes.out"
  ((arp = (98 * n - b) / 56, (98 * n - b) % 56 == 0 && arp >= 0)) &&
    echo "forward$crashes port $p: rx_packets $n, rx_bytes $b = $((n - arp)) ICMP echo frames of 98 B + $arp ARP frames of 42 B"
done
echo "PASS: $test_name ($crashes crashes)"
