#!/usr/bin/env bash
# Live migration of a QEMU 7.2 guest (Linux virtio-net, TCG) on vvu-forward: guest A runs on a
# source QEMU connected to port 0, a destination QEMU with the same devices waits with `-incoming
# unix:MIG` on port 1, and while guest A talks to guest B the source is migrated over QMP
# (`migrate`, then query-migrate until completed), the destination runs on, the source is quit.
#
#   guest A (source QEMU)      ── unix:A  ── port 0 ┐
#   guest A (destination QEMU) ── unix:A2 ── port 1 ┼ vvu-forward --mode learn --poll event
#   guest B                    ── unix:B  ── port 2 ┘
#
# --check ping: A pings B (--pings 80 at 0.2 s; B answers); A is migrated after its reply to ping
#   --at (10). Pass: the migration completes; the destination's console (its own serial file)
#   shows replies and A's result line with sent=PINGS; no ping after the first reply on the
#   destination is unanswered (the ones lost are those of the switch-over); at most --max-lost
#   (5, 1 s of pings) are lost in all; vvu-forward's counters show A's traffic on port 0 before
#   and on port 1 after (rx and tx of port 1 at least the replies the destination printed).
# --check stream (memory consistency): B streams numbered, self-checking raw frames to A
#   (vvu-stream.c: 60..128 and 1232..1500 bytes, --rate 200 frames/s for --seconds 25); A checks
#   every byte of every frame. A is migrated once B has sent 2 s of frames. The frames vvu-forward
#   writes into A's receive buffers during the migration are in pages QEMU may already have sent;
#   only the dirty log makes QEMU send such a page again, so a write the back-end did not log
#   reaches the destination stale. Two checks see it:
#   - the destination is started with -S: once loaded, and before it runs, its guest RAM is
#     dumped (QMP pmemsave) and it runs on; the stopped source's is dumped too, and the two are
#     compared page for page (ramdiff.py): they must be equal;
#   - A checks each frame --hold 8 s after it came (a delay line: the frames of the last 8 s wait
#     in its socket queue, in the receive buffers as page fragments), so it checks on the
#     destination the frames written during the migration, and finds a stale one corrupt (or an
#     old frame again: a duplicate, a reordering). For those pages to be clean when written, the
#     buffers are posted long before they are filled: A's receive queue has --rx-queue 1024
#     entries, 2.5-5 s of frames at 200/s, so the pages the back-end fills during the migration
#     were allocated (and zeroed, a write of the guest's own that would mark them dirty) before
#     it began; and the frame sizes avoid the ones Linux's virtio-net builds in place (see
#     frame_len() in vvu-stream.c), which would write into the page too.
#   With log-blind-proxy.py in front of DPDK's back-end (below) the RAM differs in tens of pages
#   and A finds hundreds of corrupt frames, in every run; through DPDK's back-end as it is, none.
#   A sends nothing once the stream runs, so B's frames reach A's new port only once vvu-forward
#   has learnt it from the RARP QEMU asks for (SEND_RARP) or floods: port 1 must be given frames
#   (vvu-forward's --stats) while the source QEMU is still connected.
#   Pass: the migration completes while B still sends; the RAM is equal; A's final line (on the
#   destination's console) has corrupt=0 dup=0 reordered=0, and frames B sent after the
#   migration completed arrived (sequence numbers above what B had reported by then plus 2 s of
#   frames, the gaps A reports taken off); B sent for the whole run; port 1 gave A at least those
#   frames. Frames missing (those of the switch-over and of the dump) are reported, not failed.
# Both: neither QEMU prints anything unexpected (lib.sh), vvu-forward exits 0 on SIGTERM.
# With --testpmd instead of --forward (the reference: DPDK's vhost back-end, which logs dirty
# pages and supports migration), testpmd io-forwards two ports and A's destination QEMU connects
# to A's socket (net_vhost serves one front-end after the other there); no counters are checked.
# Guest RAM is 256 MiB + 8 KiB (lib.sh says why: QEMU before 9.0 loses writes of TCG guests).
# --blind-log (the negative control of --check stream): the source QEMU reaches its port through
# log-blind-proxy.py, which answers SET_LOG_BASE itself, so the back-end never gets the dirty
# log; the test then passes only if the RAM differed and A found corrupt frames (the other
# stream checks are skipped).
# With --device VVU_DEVICE (virtio-vhost-user): guest A's two ports are vvu: ports, each behind
# a vvu-device of its own that the source or the destination QEMU connects to; the dirty log then
# reaches vvu-forward as an area of the device's BAR window (docs/migration.md), and the same
# checks hold.
# Usage: live.sh --check ping|stream --guest-dir DIR (--forward VVU_FORWARD [--device VVU_DEVICE] | --testpmd)
#                [--pings N] [--at K] [--max-lost N] [--rate FPS] [--seconds S] [--hold S]
#                [--rx-queue N] [--blind-log]
# Exit 0 pass, 1 fail, 77 skip (no QEMU, python3 or testpmd; a failure when CI=true).
check="" pings=80 at=10 max_lost=5 rate=200 seconds=25 hold=8 rxq=1024 blind=0
declare -a common=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --check) check=$2; shift 2 ;;
    --pings) pings=$2; shift 2 ;;
    --at) at=$2; shift 2 ;;
    --max-lost) max_lost=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --rx-queue) rxq=$2; shift 2 ;;
    --blind-log) blind=1; shift ;;
    *) common+=("$1"); shift ;;
  esac
done
[[ $check == ping || $check == stream ]] || { echo "usage: $0 --check ping|stream ..." >&2; exit 2; }
[[ $blind == 0 || $check == stream ]] || { echo "--blind-log goes with --check stream" >&2; exit 2; }
kind=learn
[[ " ${common[*]} " == *" --testpmd "* ]] && kind=dpdk
[[ " ${common[*]} " == *" --device "* ]] && kind=vvu-device
((blind)) && kind+=-no-log
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
mig_init "$check.$kind" "${common[@]}"
t_start=$(vvu_now)

sock_a=$work/a.sock sock_a2=$work/a2.sock sock_b=$work/b.sock mig=$work/mig.sock
if [[ $backend == testpmd ]]; then
  sock_a2=$sock_a
  backend_start "$sock_a" "$sock_b"
else
  backend_start "$sock_a" "$sock_a2" "$sock_b"
fi

mac_a=52:54:00:00:00:01 mac_b=52:54:00:00:00:02
opts_a=() opts_dst=()
if [[ $check == ping ]]; then
  args_b="vvu.role=responder vvu.ip=10.0.0.2/24 vvu.timeout=$PEER_TIMEOUT"
  args_a="vvu.role=ping vvu.ip=10.0.0.1/24 vvu.peer=10.0.0.2 vvu.count=$pings vvu.interval=0.2 vvu.wait=60"
else
  args_b="vvu.role=stream-send vvu.ip=10.0.0.2/24 vvu.rate=$rate vvu.seconds=$seconds vvu.wait=90"
  args_a="vvu.role=stream-recv vvu.ip=10.0.0.1/24 vvu.wait=90 vvu.hold=$hold"
  opts_a=(-global "virtio-net-pci.rx_queue_size=$rxq")
  # The destination stays stopped once loaded, so that its RAM can be compared with the source's.
  opts_dst=(-S)
fi
guest_start guest-b "$sock_b" $mac_b "$args_b"
sock_src=$sock_a
if ((blind)); then
  # The negative control: the source's back-end never gets the dirty log.
  sock_src=$work/a-blind.sock
  peer_run proxy "$py" "$here/log-blind-proxy.py" "$sock_src" "$sock_a" --timeout "$PEER_TIMEOUT"
  wait_socket "$sock_src" proxy 20
fi
guest_start guest-a "$sock_src" $mac_a "$args_a" "${opts_a[@]}"
# The same machine, the same NIC (MAC), the same kernel command line; it waits for the state.
guest_start guest-a-dst "$sock_a2" $mac_a "$args_a" "${opts_a[@]}" "${opts_dst[@]}" -incoming "unix:$mig"

# stream_received NAME [first|last]: "received=" of NAME's first or last progress line (empty: none).
stream_received() {
  local pick=${2:-last}
  tr -d '\r' <"$work/$1.log" | sed -n 's/^VVU-GUEST-STREAM-PROGRESS received=\([0-9]*\) .*/\1/p' |
    { if [[ $pick == first ]]; then head -n 1; else tail -n 1; fi; }
}

# b_sent: frames guest B has reported sending (its last progress line; empty: none yet).
b_sent() { tr -d '\r' <"$work/guest-b.log" | sed -n 's/^VVU-GUEST-STREAM-SENDING sent=\([0-9]*\) .*/\1/p' | tail -n 1; }
# port_tx P: tx_packets of vvu-forward's port P in its last --stats line (0: none yet).
port_tx() {
  grep -a "^{\"port\":$1," "$work/forward.log" | tail -n 1 | sed -n 's/.*"tx_packets":\([0-9]*\).*/\1/p' | grep . || echo 0
}

# The trigger: guest A is in the middle of its run (boot: ≈ 10-20 s for two TCG guests).
if [[ $check == ping ]]; then
  wait_reply guest-a "$at" 90
  trigger="after guest A's reply to ping $(replies guest-a | tail -n 1)"
else
  for ((i = 0; i < 900; i++)); do
    n=$(b_sent)
    [[ -n $n ]] && ((n >= 2 * rate)) && break
    peer_alive guest-b || fail "guest B ended before sending $((2 * rate)) frames"
    sleep 0.1
  done
  if [[ -z $n ]] || ((n < 2 * rate)); then fail "guest B did not send $((2 * rate)) frames within 90 s (last: ${n:-none})"; fi
  trigger="after guest B sent $n frames"
fi
t_trigger=$(vvu_now)
echo "guest A: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-a.log" | tr -d '\r')"
echo "guest B: $(grep -a -m 1 VVU-GUEST-READY "$work/guest-b.log" | tr -d '\r')"
echo "migrating guest A $trigger ($(awk -v a="$t_start" -v b="$t_trigger" 'BEGIN{printf "%.1f", b - a}') s after the start)"

migrate guest-a "unix:$mig"
t_done=$(vvu_now)
since() { awk -v a="$t_done" -v b="$1" 'BEGIN{printf "%.2f", b - a}'; }
if [[ $check == stream ]]; then
  # Frames B sends from here on were sent after the migration completed: its last progress line
  # is at most 1 s old, so all above what it says plus 2 s of frames are.
  grep -a -q VVU-GUEST-STREAM-SENT "$work/guest-b.log" && fail "guest B's stream ended before the migration completed"
  after_seq=$(($(b_sent) + 2 * rate))
  echo "guest B had reported $(b_sent) frames sent: frames from seq=$after_seq on were sent after the migration"
  # Every page of the destination's RAM must be the source's: a page the back-end wrote and
  # did not log would differ (the negative control's do). The destination is dumped as soon as
  # it is loaded and runs on; the source stays stopped, and is dumped then.
  qmp guest-a-dst --timeout 30 wait-status paused >/dev/null
  t0=$(vvu_now)
  ram_dump guest-a-dst
  qmp guest-a-dst execute cont >/dev/null
  qmp guest-a-dst --timeout 20 wait-status running >/dev/null
  echo "the destination's RAM dumped ($ram_how) in $(awk -v a="$t0" -v b="$(vvu_now)" 'BEGIN{printf "%.2f", b - a}') s;" \
    "guest A runs on the destination, $(since "$(vvu_now)") s after the migration completed"
  ram_dump guest-a
  ram_diff guest-a guest-a-dst
  if ((blind)); then
    echo "(negative control) $ram_differ pages of the destination's RAM differ from the source's"
  else
    ((ram_differ == 0)) || fail "$ram_differ pages of the destination's RAM differ from the source's (above): writes the back-end did not log"
    echo "ok: the destination's RAM was the source's, page for page"
  fi
fi
if [[ $check == ping ]]; then
  qmp guest-a-dst --timeout 20 wait-status running >/dev/null
  echo "guest A runs on the destination, $(since "$(vvu_now)") s after the migration completed"
fi
echo "source status: $(qmp guest-a execute query-status | sed -n 's/.*"status": "\([a-z-]*\)".*/\1/p')"
# The destination carries on while the source QEMU is still connected (its rings stopped):
# vvu-forward gives port 1 frames for A (for the stream, having learnt A's port from the RARP).
if [[ $backend == vvu-forward ]]; then
  want=3
  [[ $check == stream ]] && want=$rate
  for ((i = 0; i < 300; i++)); do
    (($(port_tx 1) >= want)) && break
    peer_alive guest-a-dst || fail "the destination QEMU ended"
    sleep 0.05
  done
  (($(port_tx 1) >= want)) || fail "vvu-forward gave port 1 (the destination) $(port_tx 1) frames within 15 s of the migration, want $want"
  echo "vvu-forward gave port 1 (the destination) $(port_tx 1) frames +$(since "$(vvu_now)") s after the migration completed, the source QEMU still connected"
fi
if [[ $check == ping ]]; then
  for ((i = 0; i < 300; i++)); do
    first_dst=$(replies guest-a-dst | head -n 1)
    [[ -n $first_dst ]] && break
    peer_alive guest-a-dst || fail "the destination QEMU ended"
    sleep 0.05
  done
  [[ -n $first_dst ]] || fail "no ping reply on the destination's console within 15 s of the migration"
  echo "first reply on the destination: seq=$first_dst, +$(since "$(vvu_now)") s after the migration completed"
fi
qemu_quit guest-a
echo "source QEMU quit"

result=$(vvu_guest_wait "$work/guest-a-dst.log" VVU-GUEST-RESULT 90 "${peer_pid[guest-a-dst]}") ||
  fail "no result line from guest A on the destination"
echo "guest A: $result"
grep -a -q VVU-GUEST-RESULT "$work/guest-a.log" && fail "the source's console has a result line"

if [[ $check == ping ]]; then
  sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$result")
  received=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$result")
  [[ $result == *"VVU-GUEST-RESULT ping "* && $sent == "$pings" ]] ||
    fail "guest A's run did not end with sent=$pings: $result"
  src=$(replies guest-a | wc -l) dst=$(replies guest-a-dst | wc -l)
  last_src=$(replies guest-a | tail -n 1)
  sort -un <(replies guest-a) <(replies guest-a-dst) >"$work/replied"
  seq 0 $((pings - 1)) | grep -v -x -F -f "$work/replied" >"$work/missing"
  lost=$((sent - received))
  echo "pings: sent=$sent received=$received lost=$lost (unanswered: $(ranges <"$work/missing"));" \
    "$src replies on the source's console (last seq=$last_src), $dst on the destination's (first seq=$first_dst)"
  echo "guest A's ping: $(tr -d '\r' <"$work/guest-a-dst.log" | grep -a "packets transmitted");" \
    "$(tr -d '\r' <"$work/guest-a-dst.log" | grep -a "round-trip")"
  rtt() { tr -d '\r' <"$work/$1.log" | sed -n "s/^64 bytes from .* seq=$2 .* time=\([0-9.]*\) ms.*/\1 ms/p"; }
  echo "round trips around the switch-over: seq=$last_src $(rtt guest-a "$last_src") (source)," \
    "seq=$first_dst $(rtt guest-a-dst "$first_dst"), seq=$((first_dst + 1)) $(rtt guest-a-dst $((first_dst + 1))) (destination)"
  ((src + dst == received)) || fail "the consoles show $((src + dst)) replies, guest A counted $received"
  late=$(awk -v f="$first_dst" '$1 > f' "$work/missing" | ranges)
  [[ $late == - ]] || fail "pings after the first reply on the destination (seq=$first_dst) went unanswered: $late"
  ((lost <= max_lost)) || fail "$lost pings lost in the switch-over (at most $max_lost allowed)"
  echo "ok: every ping from the first reply on the destination on was answered; $lost lost (at most $max_lost)"
  peer_wait guest-a-dst 20
  ((peer_rc == 0)) || fail "the destination QEMU exited with status $peer_rc after guest A powered off"
  peer_stop guest-b TERM 20
else
  final=$(tr -d '\r' <"$work/guest-a-dst.log" | grep -a -m 1 '^VVU-GUEST-STREAM received=')
  echo "guest A: ${final:-no VVU-GUEST-STREAM line}"
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $final"; }
  bad=$(cat "$work/guest-a.log" "$work/guest-a-dst.log" | tr -d '\r' | grep -a '^VVU-GUEST-STREAM-CORRUPT')
  if ((blind)); then
    # The negative control passes when the test sees what a back-end without a dirty log does.
    [[ -n $final && $(field corrupt) -gt 0 ]] ||
      fail "negative control: no corrupt frame although the back-end had no dirty log: this check cannot see a missing log"
    ((ram_differ > 0)) ||
      fail "negative control: the destination's RAM equals the source's although the back-end had no dirty log"
    echo "ok (negative control): without the dirty log $ram_differ pages of the destination's RAM differed from the source's," \
      "and guest A found $(field corrupt) corrupt frames (missing $(field missing)), the first:"
    head -n 3 <<<"$bad"
    peer_wait guest-a-dst 20
    peer_wait guest-b 30
    check_qemu_stderr guest-a guest-a-dst guest-b
    echo "PASS: $test_name (negative control)"
    exit 0
  fi
  [[ -z $bad ]] || fail "guest A received corrupt frames: $bad"
  [[ -n $final && $(field corrupt) == 0 && $(field dup) == 0 && $(field reordered) == 0 ]] ||
    fail "guest A's stream: ${final:-no VVU-GUEST-STREAM line}"
  [[ $result == *"VVU-GUEST-RESULT stream ok"* ]] || fail "guest A's result: $result"
  last=$(field last_seq)
  # Frames above after_seq that arrived: the sequence numbers up to the last one, less the gaps.
  gone=$(tr -d '\r' <"$work/guest-a-dst.log" | sed -n 's/^VVU-GUEST-STREAM-GAP first=\([0-9]*\) count=\([0-9]*\).*/\1 \2/p' |
    awk -v x="$after_seq" -v l="$last" '{ a = $1; b = $1 + $2 - 1; if (a <= x) a = x + 1; if (b > l) b = l; if (b >= a) n += b - a + 1 } END { print n + 0 }')
  gaps=$(tr -d '\r' <"$work/guest-a-dst.log" | sed -n 's/^VVU-GUEST-STREAM-GAP first=\([0-9]*\) count=\([0-9]*\).*/\2 from seq=\1/p' | paste -sd ',')
  after=0
  ((last > after_seq)) && after=$((last - after_seq - gone))
  (($(field gaps) <= 20)) || fail "guest A reports $(field gaps) gaps, more than it lists: cannot count the frames after the migration"
  ((after > 0)) || fail "no frame B sent after the migration (seq > $after_seq) reached guest A (last seq=$last)"
  sent_b=$(vvu_guest_wait "$work/guest-b.log" VVU-GUEST-STREAM-SENT 30 "${peer_pid[guest-b]}") ||
    fail "guest B did not finish its stream"
  echo "guest B: $sent_b"
  rsrc=$(stream_received guest-a) rf=$(field received)
  echo "stream: received=$rf (checked on the source: ${rsrc:-0}, on the destination: $((rf - ${rsrc:-0}))) corrupt=0 dup=0" \
    "reordered=0; missing=$(field missing) of $(sed -n 's/.* total=\([0-9a-z]*\).*/\1/p' <<<"$final") (${gaps:-no gap});" \
    "$after of the frames sent after the migration (seq > $after_seq) arrived"
  result_b=$(vvu_guest_result "$work/guest-b.log" 30 "${peer_pid[guest-b]}")
  [[ $result_b == *"VVU-GUEST-RESULT stream-send ok"* ]] || fail "guest B's result: ${result_b:-none}"
  peer_wait guest-a-dst 20
  ((peer_rc == 0)) || fail "the destination QEMU exited with status $peer_rc after guest A powered off"
  peer_wait guest-b 30
  ((peer_rc == 0)) || fail "guest B's QEMU exited with status $peer_rc after powering off"
fi
check_qemu_stderr guest-a guest-a-dst guest-b

if [[ $backend == vvu-forward ]]; then
  forward_counters
  if [[ $check == ping ]]; then
    # Every echo request on a port's rx, every reply on its tx.
    ((rx[0] >= src && tx[0] >= src)) || fail "port 0 (source) carried fewer frames than the $src replies before the migration"
    ((rx[1] >= dst && tx[1] >= dst)) || fail "port 1 (destination) carried fewer frames than the $dst replies after the migration"
    ((rx[2] >= received && tx[2] >= received)) || fail "port 2 (guest B) carried fewer frames than the $received replies"
    echo "ok: guest A's pings left through port 0 (rx ${rx[0]}) before the migration and port 1 (rx ${rx[1]}) after"
  else
    ((tx[1] >= after)) || fail "port 1 (destination) gave guest A fewer frames (${tx[1]}) than the $after sent after the migration"
    n_sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$sent_b")
    ((rx[2] >= n_sent)) || fail "port 2 took fewer frames from guest B (${rx[2]}) than it sent ($n_sent)"
    echo "ok: B's stream went to guest A through port 0 (tx ${tx[0]}, dropped ${drop[0]}) and port 1 (tx ${tx[1]}) after the migration"
  fi
fi
echo "timings: trigger +$(awk -v a="$t_start" -v b="$t_trigger" 'BEGIN{printf "%.1f", b - a}') s," \
  "migration ${mig_wall} s (QEMU: total ${mig_total_ms} ms, downtime ${mig_downtime_ms} ms)," \
  "test $(awk -v a="$t_start" -v b="$(vvu_now)" 'BEGIN{printf "%.1f", b - a}') s"
echo "PASS: $test_name"
