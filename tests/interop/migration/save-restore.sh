#!/usr/bin/env bash
# Save and restore of a QEMU 7.2 guest (Linux virtio-net, TCG) on vvu-forward: guest A pings
# guest B through `vvu-forward --mode learn --poll event`; mid-run A's QEMU is saved to a file
# over QMP (`migrate "exec:cat > FILE"`, a live migration into a file; the source then stays
# paused) and quit, which frees its port; a new QEMU with the same devices restores it on the
# SAME socket (`-incoming "exec:cat FILE"`), and the same vvu-forward process serves it.
#
#   guest A (saved, then restored) ── unix:A ── port 0 ┐
#                                                      ├ vvu-forward --mode learn --poll event
#   guest B                        ── unix:B ── port 1 ┘
#
# Pass: the save completes; port 0 takes the second front-end (vvu-forward logs a session end
# and a new "front-end connected" on port 0); the restored QEMU runs, and its console shows
# replies and guest A's result line with sent=PINGS; no ping after the first reply after the
# restore is unanswered; at most --max-lost (5, 1 s of pings) are lost in all (those in flight
# when the guest stopped); neither QEMU prints anything unexpected; vvu-forward exits 0 on
# SIGTERM and its counters carry every ping on both ports. Prints the losses, the save's
# figures and the restore's time.
# With --testpmd instead of --forward (the reference): testpmd io-forwards the two ports; no
# counters are checked.
# Usage: save-restore.sh --guest-dir DIR (--forward VVU_FORWARD | --testpmd) [--pings N] [--at K]
#                        [--max-lost N]
# Exit 0 pass, 1 fail, 77 skip (no QEMU, python3 or testpmd; a failure when CI=true).
pings=80 at=10 max_lost=5
declare -a common=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --pings) pings=$2; shift 2 ;;
    --at) at=$2; shift 2 ;;
    --max-lost) max_lost=$2; shift 2 ;;
    *) common+=("$1"); shift ;;
  esac
done
kind=learn
[[ " ${common[*]} " == *" --testpmd "* ]] && kind=dpdk
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
mig_init "save-restore.$kind" "${common[@]}"
t_start=$(vvu_now)

sock_a=$work/a.sock sock_b=$work/b.sock state=$work/guest-a.state
backend_start "$sock_a" "$sock_b"
mac_a=52:54:00:00:00:01 mac_b=52:54:00:00:00:02
args_a="vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=$pings vvu.interval=0.2 vvu.wait=60"
guest_start guest-b "$sock_b" $mac_b "vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=$PEER_TIMEOUT"
guest_start guest-a "$sock_a" $mac_a "$args_a"

wait_reply guest-a "$at" 90
t_trigger=$(vvu_now)
echo "guest A: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-a.log" | tr -d '\r')"
echo "guest B: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-b.log" | tr -d '\r')"
echo "saving guest A after its reply to ping $(replies guest-a | tail -n 1)" \
  "($(awk -v a="$t_start" -v b="$t_trigger" 'BEGIN{printf "%.1f", b - a}') s after the start)"

migrate guest-a "exec:cat > $state"
echo "saved: $(stat -c %s "$state") bytes in $state; source status:" \
  "$(qmp guest-a execute query-status | sed -n 's/.*"status": "\([a-z-]*\)".*/\1/p')"
grep -a -q VVU-GUEST-RESULT "$work/guest-a.log" && fail "guest A finished before it was saved"
qemu_quit guest-a
t_quit=$(vvu_now)
if [[ $backend == vvu-forward ]]; then
  wait_log forward "port 0: session ended" 20
  grep -a -m 1 "port 0: session ended" "$work/forward.log"
fi

# The same devices on the same socket; it loads the file and runs on.
guest_start guest-a-restored "$sock_a" $mac_a "$args_a" -incoming "exec:cat $state"
qmp guest-a-restored --timeout 60 wait-status running >/dev/null
t_run=$(vvu_now)
echo "guest A restored and running $(awk -v a="$t_quit" -v b="$t_run" 'BEGIN{printf "%.2f", b - a}') s after the source quit"
if [[ $backend == vvu-forward ]]; then
  n=$(grep -a -c "port 0: front-end connected" "$work/forward.log")
  ((n == 2)) || fail "vvu-forward logged $n front-end connections on port 0, want 2 (the saved QEMU's, the restored one's)"
fi
for ((i = 0; i < 300; i++)); do
  first_new=$(replies guest-a-restored | head -n 1)
  [[ -n $first_new ]] && break
  peer_alive guest-a-restored || fail "the restored QEMU ended"
  sleep 0.05
done
[[ -n $first_new ]] || fail "no ping reply on the restored guest's console within 15 s"
echo "first reply after the restore: seq=$first_new, +$(awk -v a="$t_run" -v b="$(vvu_now)" 'BEGIN{printf "%.2f", b - a}') s after it ran"

result=$(vvu_guest_wait "$work/guest-a-restored.log" VVU-GUEST-RESULT 90 "${peer_pid[guest-a-restored]}") ||
  fail "no result line from guest A after the restore"
echo "guest A: $result"
sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$result")
received=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$result")
[[ $result == *"VVU-GUEST-RESULT ping "* && $sent == "$pings" ]] || fail "guest A's run did not end with sent=$pings: $result"
before=$(replies guest-a | wc -l) after=$(replies guest-a-restored | wc -l)
sort -un <(replies guest-a) <(replies guest-a-restored) >"$work/replied"
seq 0 $((pings - 1)) | grep -v -x -F -f "$work/replied" >"$work/missing"
lost=$((sent - received))
echo "pings: sent=$sent received=$received lost=$lost (unanswered: $(ranges <"$work/missing")); $before replies" \
  "before the save (last seq=$(replies guest-a | tail -n 1)), $after after the restore (first seq=$first_new)"
echo "guest A's ping: $(tr -d '\r' <"$work/guest-a-restored.log" | grep -a "packets transmitted");" \
  "$(tr -d '\r' <"$work/guest-a-restored.log" | grep -a "round-trip")"
rtt() { tr -d '\r' <"$work/$1.log" | sed -n "s/^64 bytes from .* seq=$2 .* time=\([0-9.]*\) ms.*/\1 ms/p"; }
last_old=$(replies guest-a | tail -n 1)
echo "round trips around the save and restore: seq=$last_old $(rtt guest-a "$last_old") (saved guest)," \
  "seq=$first_new $(rtt guest-a-restored "$first_new"), seq=$((first_new + 1)) $(rtt guest-a-restored $((first_new + 1))) (restored)"
((before + after == received)) || fail "the consoles show $((before + after)) replies, guest A counted $received"
late=$(awk -v f="$first_new" '$1 > f' "$work/missing" | ranges)
[[ $late == - ]] || fail "pings after the first reply after the restore (seq=$first_new) went unanswered: $late"
((lost <= max_lost)) || fail "$lost pings lost across the save and restore (at most $max_lost allowed)"
echo "ok: every ping from the first reply after the restore on was answered; $lost lost (at most $max_lost)"
peer_wait guest-a-restored 20
((peer_rc == 0)) || fail "the restored QEMU exited with status $peer_rc after guest A powered off"
peer_stop guest-b TERM 20
check_qemu_stderr guest-a guest-a-restored guest-b

if [[ $backend == vvu-forward ]]; then
  forward_counters
  # Every echo request crossed port 0's rx and port 1's tx, every reply the other way, in both
  # of port 0's sessions.
  ((rx[0] >= received && tx[0] >= received && rx[1] >= received && tx[1] >= received)) ||
    fail "vvu-forward's counters miss some of the $received pings answered"
  echo "ok: vvu-forward's counters carry the $received pings on both ports, before and after the restore"
fi
echo "timings: save at +$(awk -v a="$t_start" -v b="$t_trigger" 'BEGIN{printf "%.1f", b - a}') s," \
  "save ${mig_wall} s (QEMU: total ${mig_total_ms} ms), quit to running $(awk -v a="$t_quit" -v b="$t_run" 'BEGIN{printf "%.2f", b - a}') s," \
  "test $(awk -v a="$t_start" -v b="$(vvu_now)" 'BEGIN{printf "%.1f", b - a}') s"
echo "PASS: $test_name"
