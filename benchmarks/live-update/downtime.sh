#!/usr/bin/env bash
# The data-path outage a DPDK front-end sees when its vhost-user back-end is replaced, four ways,
# measured in one run on one machine with one front-end configuration, round-robin:
#
#   bash benchmarks/live-update/downtime.sh [--rounds N] [--bound S]   (N: 5, S: 30; KEEP_LOGS=1)
#
#   1 dpdk-restart   DPDK 22.11 vhost (testpmd net_vhost, client=1, rxonly) killed with SIGKILL,
#                    reaped and started again at once, as dpdk-client-restart.sh does;
#   2 vvu-restart    `vvu-forward --mode rxonly --port unix-client:SOCK` killed with SIGKILL and
#                    started again with the same command (it resumes the ring at the used index:
#                    "resuming at" in its log);
#   3 vvu-takeover   live update: `vvu-forward ... --control CTL` replaced by `vvu-forward ...
#                    --control CTL --takeover CTL`; the old one exits 0 by itself;
#   4 vvu-driver     VVU: the front-end connects to `vvu-device --vhost-user SOCK --pci PCI`, and
#                    the driver `vvu-forward --mode rxonly --port vvu:PCI` is killed (-9) and
#                    started again; vvu-device may keep the front-end's session across it.
# Front-end: DPDK 22.11 testpmd virtio-user, txonly, 64 B frames, ring 256, forwarding on core 0;
# `server=1` for 1-3 (one testpmd serves all three, its back-end replaced between scenarios),
# none for 4 (a second testpmd, started per round while the first one is `stop`ped). Back-ends
# poll on core 1 (DPDK: its forwarding lcore; vvu-forward: --cpu 1). No hugepages. The
# vvu binaries are copied from build/me/examples (VVU_BIN) at the start: one build per run.
#
# What each number means (all from the front-end's own TX counter, ethdev opackets, read with
# `show port stats 0`; a txonly sender counts only what fits in the ring, so once the back-end
# stops, the counter can grow by at most one ring, RING = 256 frames):
#   t0        the moment the old back-end stops: for 1, 2, 4 the kill(2); for 3 the moment the
#             new process is started (the old one still serves then, and pauses later).
#   downtime  t0 -> the reply of the first poll whose TX-packets exceeds its value at t0 (read
#             by a poll just before t0) by more than RING: the new back-end serves. For 3 the
#             old process serves on after t0, so the value is that of the first poll sent after
#             the new process has logged "took 1 ports over" (it does on the old one's commit,
#             then releases its data path): downtime = start of the new process -> it has served
#             a ring; most of it is the new process starting while the old one still serves.
#             The literal figure (t0 value + RING, reached while the old one still serves) is
#             printed per round as "early".
#   stall     the longest interval between two polls of the window (the poll just before t0 to
#             the one that ended the downtime) across which TX-packets grew by less than RING:
#             the gap in the traffic as the front-end sees it, at the polls' resolution. For 3 it
#             is the outage itself (the hand-over's pause plus up to a poll on either side).
#   steady    the stall (as above) of the SETTLE_MS (500) ms of traffic polled just before the
#             event: what the machine's scheduling alone costs the traffic (on a busy 2-core
#             machine the two pollers share their cores with other work, and a ring can take
#             tens of ms); a stall near it is no outage. "before: N kpps" is that window's rate.
#   paused_us (3 only) what the old process reports: its data path held, from pause to commit.
#   resolution  per round, the send of the poll before the one that ended the window -> that
#             poll's reply (where in time the resumption lies; downtime is its upper end); and
#             "poll" the median interval between two replies (polls run back to back: POLL_US,
#             default 0, is a pause between them).
#   link events  "link state change" lines the front-end printed in the window (0: it saw no
#             disconnect).
#   no resume  the front-end's counter did not move past the ring within --bound s of t0.
# Each scenario runs --rounds times, one round of each in turn; the table gives the median and
# min-max per scenario, beside the seed paper's figures; vvu-device's counters (printed on
# SIGTERM) follow, then one JSON line per scenario.
set -euo pipefail
rounds=5 bound=30
while (($#)); do
  case $1 in
    --rounds) rounds=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    --bound) bound=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    -h | --help) sed -n '2,/^set -euo/{/^set/!p}' "$0"; exit 0 ;;
    *) echo "usage: $0 [--rounds N] [--bound SECONDS]" >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "$0: --rounds wants a positive integer" >&2; exit 2; }
[[ $bound =~ ^[1-9][0-9]*$ ]] || { echo "$0: --bound wants a positive integer (seconds)" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_src=${VVU_BIN:-$here/../../build/me/examples}
for b in vvu-forward vvu-device; do
  [[ -x $bin_src/$b ]] || {
    echo "$0: no $bin_src/$b (cmake --build build/me --target vvu-forward vvu-device)" >&2
    exit 1
  }
done
# shellcheck source=benchmarks/live-update/lib.sh
source "$here/lib.sh"
lu_init downtime dt $((300 + rounds * 4 * (bound + 60))) # every process bounded by timeout
mkdir "$lu_work/bin"
cp "$bin_src/vvu-forward" "$bin_src/vvu-device" "$lu_work/bin/"
fwd=$lu_work/bin/vvu-forward dev=$lu_work/bin/vvu-device
sock=$lu_work/fe.sock dev_sock=$lu_work/dev.sock pci=$lu_work/dev.pci
SETTLE_MS=${SETTLE_MS:-500} # steady traffic before each event, polled (the "steady" stall)
load0=$(cut -d' ' -f1-3 /proc/loadavg)

names=("" dpdk-restart vvu-restart vvu-takeover vvu-driver)
titles=("" "1 DPDK vhost client=1: kill -9, restart" "2 vvu crash-restart: kill -9, restart"
  "3 vvu take-over (live update)" "4 VVU driver restart (vvu-device)")
seed_txt=("" "vhost-user client-mode reconnect 1.085 s" "vhost-user client-mode reconnect 1.085 s" "-"
  "VVU 0.480 s")
seed_json=("" 1.085 1.085 null 0.480)
# Per scenario, space-separated per round (µs; "-" where the front-end did not resume).
declare -a r_down=() r_steady=() r_stall=() r_res=() r_period=() r_lsc=() r_paused=() r_early=() r_note=()

be_dpdk() { # NAME: DPDK's vhost back-end, connecting to the front-end
  spawn "$1" stdbuf -oL "$TESTPMD" "${LU_EAL[@]}" --main-lcore 0 --file-prefix="$lu_prefix-$1" \
    --vdev "net_vhost0,iface=$sock,queues=1,client=1" -- --total-num-mbufs=32768 \
    --forward-mode=rxonly --auto-start --stats-period 1 -a
}
be_vvu() { # NAME PORT [OPTIONS]
  local name=$1
  shift
  spawn "$name" "$fwd" --mode rxonly --cpu 1 --port "$@"
}
wait_path() { # PATH NAME SECONDS: bounded wait until PATH exists (NAME must keep running)
  local i
  for ((i = 0; i < $3 * 100; i++)); do
    [[ -e $1 ]] && return 0
    alive "$2" || fail "$2 ended before $1 appeared"
    lu_sleep 0.01
  done
  fail "no $1 within $3 s"
}

# Front-end A (server=1, scenarios 1-3): a_state none | running | stopped.
a_state=none
a_ready() { # before A's next back-end is started
  if [[ $a_state == none ]]; then
    fe_start A "$sock" ",server=1"
    fe_until listening 30 # testpmd's EAL init waits there for its first back-end
  fi
  fe_use A
}
a_go() { # NAME (the back-end just started): traffic flowing, then SETTLE_MS of it, polled
  case $a_state in
    none) printf 'zz-end\n' >&"$fe_in"; fe_until end 60 ;; # EAL init done, the command line reads
    stopped) fe_cmd start ;;
  esac
  a_state=running
  fe_flowing 30 "$1"
  lu_baseline "$SETTLE_MS"
}

# Per round: record NUM NOTE (after lu_measure and the link-event count lsc1 - lsc0).
record() {
  local s=$1 note=$2 dv=- sv=$stall
  ((resumed)) && dv=$down
  ((resumed)) || sv=">$stall"
  r_down[s]+="$dv " r_stall[s]+="$sv " r_steady[s]+="$steady " r_res[s]+="$res " r_period[s]+="$period "
  r_lsc[s]+="$((lsc1 - lsc0)) " r_note[s]+="$note;"
  local dtxt="no resume within $bound s"
  ((resumed)) && dtxt="downtime $(fmt_s "$down") s"
  printf 'round %d  %-13s %s, stall %s s (resolution %d.%d ms, poll %d.%d ms, %d polls), link events %d;' \
    "$r" "${names[s]}" "$dtxt" "$(fmt_s "$stall")" $((res / 1000)) $((res % 1000 / 100)) \
    $((period / 1000)) $((period % 1000 / 100)) "$polls" $((lsc1 - lsc0))
  printf ' before: %d kpps, steady stall %s s%s\n' $((steady_rate / 1000)) "$(fmt_s "$steady")" "${note:+; $note}"
}
window_open() { fe_dropped; lsc0=$lsc; } # drain the facts so far
window_close() { fe_dropped; lsc1=$lsc; } # and those logged up to now

scenario1() {
  local old=d$r.0 new=d$r.1
  a_ready
  be_dpdk "$old"
  a_go "$old"
  window_open
  child_of "$old"
  lu_mark
  now
  t0=$t t_conn=$t
  kill -9 "$child"
  reap "$old" 10 || fail "$old outlived SIGKILL"
  be_dpdk "$new"
  lu_label=$new
  lu_measure "$t0" "$bound" "$new"
  ((ended == 0)) || fail "$new (DPDK back-end) ended"
  ((resumed == 1 && answered == 1)) || fail "$new: no traffic within $bound s of the kill"
  window_close
  local conn=-
  ((t_conn > t0)) && conn=+$(((t_conn - t0) / 1000))
  record 1 "reconnect logged $conn ms"
  stop "$new" TERM 10
}

scenario2() {
  local old=v$r.0 new=v$r.1
  a_ready
  be_vvu "$old" "unix-client:$sock"
  a_go "$old"
  window_open
  child_of "$old"
  lu_mark
  now
  t0=$t t_conn=$t
  kill -9 "$child"
  reap "$old" 10 || fail "$old outlived SIGKILL"
  be_vvu "$new" "unix-client:$sock"
  lu_label=$new
  lu_measure "$t0" "$bound" "$new"
  ((ended == 0)) || fail "$new (vvu-forward) ended"
  ((resumed == 1 && answered == 1)) || fail "$new: no traffic within $bound s of the kill"
  window_close
  local conn=- at
  ((t_conn > t0)) && conn=+$(((t_conn - t0) / 1000))
  at=$(grep -a -o 'resuming at [0-9]*' "$lu_work/$new.log" | head -n 1) || at="no \"resuming at\" logged"
  record 2 "reconnect logged $conn ms; $at"
  stop "$new" TERM 10
}

scenario3() {
  local old=t$r.0 new=t$r.1 ctl=$lu_work/ctl.$r paused
  a_ready
  be_vvu "$old" "unix-client:$sock" --control "$ctl"
  wait_path "$ctl" "$old" 20
  a_go "$old"
  window_open
  lu_mark
  now
  t0=$t
  be_vvu "$new" "unix-client:$sock" --control "$ctl" --takeover "$ctl"
  lu_label=$new
  lu_measure "$t0" "$bound" "$new" "$lu_work/$new.log" "ports over from"
  ((ended == 0)) || fail "$new (the taking-over vvu-forward) ended"
  ((resumed == 1 && answered == 1)) || fail "take-over $r: no traffic from $new within $bound s"
  window_close
  reap "$old" 20 || fail "$old did not end after the hand-over"
  now
  local exited=$(((t - t0) / 1000)) took
  took=$(grep -a -o 'took [0-9]* ports over from .* in [0-9]* us' "$lu_work/$new.log" | sed 's/ from .* in / in /') ||
    fail "$new did not log its take-over"
  ((rc == 0)) || fail "$old exited with status $rc after the hand-over"
  grep -a -q '"handed_over":true' "$lu_work/$old.out" || fail "$old printed no hand-over line"
  paused=$(grep -a -o '"paused_us":[0-9]*' "$lu_work/$old.out" | head -n 1 | cut -d: -f2)
  [[ $paused =~ ^[0-9]+$ ]] || fail "$old: no paused_us"
  r_paused[3]+="$paused " r_early[3]+="$early "
  record 3 "old process paused_us $paused, ended by +$exited ms; new: \"$took\" logged by +$((handed_at / 1000)) ms; early $(fmt_s "$early") s"
  stop "$new" TERM 10
}

dev_name=""
scenario4() {
  local old=w$r.0 new=w$r.1 b=B$r note=""
  if [[ $a_state == running ]]; then
    fe_use A
    fe_cmd stop # its forwarding lcore then sleeps
    a_state=stopped
  fi
  if [[ -z $dev_name ]] || ! alive "$dev_name"; then
    [[ -n $dev_name ]] && echo "vvu-device ($dev_name) had ended: started again" >&2
    dev_name=dev$r
    rm -f "$dev_sock" "$pci"
    spawn "$dev_name" "$dev" --vhost-user "$dev_sock" --pci "$pci"
    wait_path "$dev_sock" "$dev_name" 20
    wait_path "$pci" "$dev_name" 20
  fi
  be_vvu "$old" "vvu:$pci"
  fe_start "$b" "$dev_sock" ""
  printf 'zz-end\n' >&"$fe_in"
  fe_until end 60
  fe_flowing 30 "$old"
  lu_baseline "$SETTLE_MS"
  window_open
  child_of "$old"
  lu_mark
  now
  t0=$t
  kill -9 "$child"
  reap "$old" 10 || fail "$old outlived SIGKILL"
  be_vvu "$new" "vvu:$pci"
  lu_label=$new
  lu_measure "$t0" "$bound" "$new"
  ((answered)) || note+="the front-end stopped answering; "
  ((ended)) && note+="$new ended (status in $new.log); "
  if ((answered)); then window_close; else lsc1=$lsc; fi
  local at
  at=$(grep -a -o 'resuming at [0-9]*' "$lu_work/$new.log" | head -n 1) || at="no \"resuming at\" logged"
  note+=$at
  ((resumed)) || ((lsc1 == lsc0)) || note+="; the front-end logged a link-down"
  record 4 "$note"
  fe_quit "$b"
  stop "$new" TERM 10
}

echo "downtime: $rounds rounds of 4 scenarios, bound $bound s, ring $RING, vvu binaries from $bin_src" \
  "($(date -r "$bin_src/vvu-forward" +%H:%M:%S) vvu-forward, $(date -r "$bin_src/vvu-device" +%H:%M:%S) vvu-device);" \
  "load average $load0; $(nproc) CPUs"
for ((r = 1; r <= rounds; r++)); do
  for s in 1 2 3 4; do "scenario$s"; done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $a_state != none ]]; then fe_quit A; fi
dev_json=""
if [[ -n $dev_name ]]; then
  stop "$dev_name" TERM 10
  dev_json=$(grep -a '^{' "$lu_work/$dev_name.out" || true)
fi

# ---- the table (the per-round lists are space-separated: split on purpose)
# shellcheck disable=SC2086,SC2046
sec4() { printf '%d.%04d' $(($1 / 1000000)) $(($1 % 1000000 / 100)); }
cell() { # "median (min-max)" in s of the numbers among $1 (others skipped)
  local -a v=()
  local x m lo hi
  for x in $1; do [[ $x =~ ^[0-9]+$ ]] && v+=("$x"); done
  ((${#v[@]})) || { echo "-"; return; }
  read -r m lo hi < <(stats_of "${v[@]}")
  echo "$(sec4 "$m") ($(sec4 "$lo")-$(sec4 "$hi"))"
}
json_list() { # the numbers of $1 in s (6 decimals), "-" as null; ">N" as N
  local x out=""
  for x in $1; do
    x=${x#>}
    if [[ $x =~ ^[0-9]+$ ]]; then out+="$(fmt_s "$x"),"; else out+="null,"; fi
  done
  echo "[${out%,}]"
}
all_res="" all_period=""
for s in 1 2 3 4; do all_res+="${r_res[s]} " all_period+="${r_period[s]} "; done
read -r res_m _ res_hi < <(stats_of $all_res)
read -r per_m _ per_hi < <(stats_of $all_period)
echo
echo "== live-update downtime: DPDK 22.11 testpmd virtio-user txonly 64 B, ring $RING, $rounds rounds, one run =="
echo "load average: $load0 at the start, $load1 at the end ($(nproc) CPUs); polls back to back:" \
  "median $((per_m / 1000)).$((per_m % 1000 / 100)) ms between replies (max $((per_hi / 1000)).$((per_hi % 1000 / 100)) ms);" \
  "resumption located within $((res_m / 1000)).$((res_m % 1000 / 100)) ms (median; max $((res_hi / 1000)).$((res_hi % 1000 / 100)) ms)"
printf '%-40s %-29s %-29s %-22s %-12s %s\n' scenario "downtime s: median (min-max)" \
  "stall s: median (min-max)" "steady stall s: med (min-max)" "link events" "seed paper"
for s in 1 2 3 4; do
  dcell=$(cell "${r_down[s]}")
  nr=0
  for x in ${r_down[s]}; do [[ $x == - ]] && nr=$((nr + 1)); done
  if ((nr == rounds)); then
    dcell=$([[ $s == 4 ]] && echo "no resume (vvu-device ends the session)" || echo "no resume")
  elif ((nr > 0)); then
    dcell+=", $nr/$rounds no resume"
  fi
  scell=$(cell "${r_stall[s]}")
  if ((nr == rounds)); then
    scell="> $bound (whole window)"
  elif ((nr > 0)); then
    scell+=", $nr > $bound"
  fi
  printf '%-40s %-29s %-29s %-22s %-12s %s\n' "${titles[s]}" "$dcell" "$scell" "$(cell "${r_steady[s]}")" \
    "$(tr ' ' ',' <<<"${r_lsc[s]% }")" "${seed_txt[s]}"
done
read -r pm plo phi < <(stats_of ${r_paused[3]})
read -r em elo ehi < <(stats_of ${r_early[3]})
echo "take-over: the old process's own paused_us median $pm ($plo-$phi); literal downtime (launch value + $RING," \
  "reached while the old process still served) median $(sec4 "$em") s ($(sec4 "$elo")-$(sec4 "$ehi"))"
n2=$(grep -o 'resuming at [0-9]' <<<"${r_note[2]}" | wc -l) n4=$(grep -o 'resuming at [0-9]' <<<"${r_note[4]}" | wc -l)
echo "\"resuming at\" (the ring resumed at its used index) logged by the restarted vvu-forward: $n2/$rounds crash-restarts, $n4/$rounds driver restarts"
echo "seed paper: vhost-user client-mode reconnect 1.085 s, VVU 0.480 s (seed)"
echo "vvu-device counters (SIGTERM): ${dev_json:-none printed}"
for s in 1 2 3 4; do
  IFS=';' read -r -a notes <<<"${r_note[s]}"
  extra=""
  if ((s == 3)); then
    extra=",\"paused_us\":[$(tr ' ' ',' <<<"${r_paused[3]% }")],\"early_s\":$(json_list "${r_early[3]}")"
  fi
  read -r m lo hi < <(stats_of $(for x in ${r_down[s]}; do [[ $x =~ ^[0-9]+$ ]] && echo "$x"; done))
  nr=0
  for x in ${r_down[s]}; do [[ $x == - ]] && nr=$((nr + 1)); done
  if ((nr == rounds)); then med=null mn=null mx=null; else med=$(fmt_s "$m") mn=$(fmt_s "$lo") mx=$(fmt_s "$hi"); fi
  read -r sm _ < <(stats_of $(for x in ${r_stall[s]}; do echo "${x#>}"; done))
  printf '{"scenario":"%s","rounds":%d,"downtime_s":%s,"median_s":%s,"min_s":%s,"max_s":%s,"no_resume":%d,"stall_s":%s,"stall_median_s":%s,"steady_stall_s":%s,"resolution_s":%s,"link_events":[%s],"seed_s":%s%s,"load":"%s / %s"}\n' \
    "${names[s]}" "$rounds" "$(json_list "${r_down[s]}")" "$med" "$mn" "$mx" "$nr" \
    "$(json_list "${r_stall[s]}")" "$(fmt_s "$sm")" "$(json_list "${r_steady[s]}")" "$(json_list "${r_res[s]}")" \
    "$(tr ' ' ',' <<<"${r_lsc[s]% }")" "${seed_json[s]}" "$extra" "$load0" "$load1"
done
