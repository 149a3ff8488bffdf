#!/usr/bin/env bash
# Session churn against long-lived back-ends: one vvu-forward (--mode loopback --poll event)
# serves SESSIONS vvu-traffic --mode echo sessions in a row (vvu-traffic --sessions: each one
# connects, shares memory, sets up the rings, echoes PACKETS frames and disconnects), directly
# on a unix: port or behind one vvu-device (vvu-forward --port vvu:PCI). Checked:
#   - every frame accounted for: vvu-traffic's totals (sessions, sent = received = SESSIONS x
#     PACKETS, none lost, late, duplicated or bad) and vvu-forward's SIGTERM counters (port 0
#     rx_packets = tx_packets = the same total, tx_dropped 0); vvu-device saw SESSIONS
#     front-ends come and go;
#   - nothing kept per session: after a warm-up batch of WARMUP sessions each back-end process
#     is sampled from /proc/PID (open fds, mappings, VmRSS), then the remaining sessions run and
#     it is sampled again: fds and mappings must be equal, VmRSS may grow by at most
#     --rss-growth-kib (default 1024). Measured on the reference machine: 0 KiB in every run
#     (vvu-forward ~6 MiB, vvu-device ~4 MiB, after 4 900 or 1 900 more sessions); the slack is
#     for malloc's heap moving by some pages without a leak, while a page kept per session is
#     7.4 MiB over 1 900 sessions and 256 bytes per session 1.2 MiB over 4 900 (smaller leaks
#     are LeakSanitizer's, in the --sanitized run). vvu-traffic's own fds and mappings after
#     its first session and after its last must be equal too.
# --sanitized (an ASan build): the back-ends' RSS is not compared (ASan's quarantine keeps
# freed memory: +70 MiB in vvu-forward over 500 sessions, measured), nor vvu-traffic's mappings
# (its allocator maps a few more regions after the first session: 130 -> 134, then steady); the
# back-ends' fds and mappings still are (equal over 500 sessions, measured), and a leak at a
# peer's exit fails it through ASAN_OPTIONS=detect_leaks=1 (its exit status).
# Usage: churn.sh --topology unix|vvu-device --traffic PATH-TO-vvu-traffic
#                 --forward PATH-TO-vvu-forward [--device PATH-TO-vvu-device]
#                 [--ring split|packed] [--sessions N] [--warmup N] [--packets K]
#                 [--rss-growth-kib KIB] [--sanitized]
here=$(cd "$(dirname "$0")" && pwd)
# The peers live for the whole churn run (lib.sh's default is 120 s; the ctest TIMEOUT bounds it
# too): set before lib.sh is sourced.
PEER_TIMEOUT=${PEER_TIMEOUT:-900}
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"

topology="" traffic="" forward="" ring=split sessions=10000 warmup=100 packets=256
rss_growth_kib=1024 sanitized=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --topology) topology=$2; shift 2 ;;
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --packets) packets=$2; shift 2 ;;
    --rss-growth-kib) rss_growth_kib=$2; shift 2 ;;
    --sanitized) sanitized=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
VVU_DEVICE=${VVU_DEVICE:-}
fe_init "churn.$topology.$ring"
need_exe "$traffic"
need_exe "$forward"
((warmup >= 1 && sessions > warmup)) || fail "--sessions ($sessions) must exceed --warmup ($warmup) >= 1"
packed=()
[[ $ring == packed ]] && packed=(--packed)
sock=$work/vhost.sock
backends=(forward)

case $topology in
  unix)
    PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --poll event --port "unix:$sock"
    wait_socket "$sock" forward 20
    ;;
  vvu-device)
    need_exe "$VVU_DEVICE"
    device_start device "$sock" "$work/pci.sock"
    PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --poll event --port "vvu:$work/pci.sock"
    wait_log device "driver ready" 20
    backends+=(device)
    ;;
  *) fail "--topology is unix or vvu-device" ;;
esac

# sample NAME LABEL: NAME's open fds, mappings and VmRSS (KiB) into sample_fds/maps/rss[NAME.LABEL].
declare -A sample_fds=() sample_maps=() sample_rss=()
sample() {
  local name=$1 label=$2 pid
  pid=$(peer_process "$name")
  sample_fds[$name.$label]=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  sample_maps[$name.$label]=$(wc -l <"/proc/$pid/maps")
  sample_rss[$name.$label]=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  echo "sample $name (pid $pid) $label: fds ${sample_fds[$name.$label]}, maps ${sample_maps[$name.$label]}," \
    "VmRSS ${sample_rss[$name.$label]} KiB"
}

# same WHAT BEFORE AFTER CHECKED: BEFORE -> AFTER must not change (CHECKED 1), or is only shown (0).
same() {
  if (($4)); then
    expect_eq "$1" "$2 -> $3" "$2 -> $2"
  else
    echo "not compared (--sanitized): $1 = $2 -> $3"
  fi
}

done_sessions=0
# batch NAME N: vvu-traffic runs N sessions; all complete, every frame back; the back-ends have
# ended them all (their logs) before the batch counts as done, so a sample sees them idle.
batch() {
  local name=$1 n=$2 started=$SECONDS
  PEER_STDOUT=1 peer_run "$name" "$traffic" --connect "$sock" --mode echo --sessions "$n" --packets "$packets" \
    --size 64 "${packed[@]}" --timeout 10000 --idle 5000
  peer_wait "$name" "$PEER_TIMEOUT"
  ((peer_rc == 0)) || fail "$name: vvu-traffic exited with status $peer_rc"
  done_sessions=$((done_sessions + n))
  echo "$name: $n sessions in $((SECONDS - started)) s: $(grep -a '^{' "$work/$name.out" | tail -n 1)"
  local out=$work/$name.out frames=$((n * packets)) key
  expect_eq "$name sessions" "$(json_field "$out" sessions)" "$n"
  expect_eq "$name sent" "$(json_field "$out" sent)" "$frames"
  expect_eq "$name received" "$(json_field "$out" received)" "$frames"
  for key in gaps lost late duplicates bad_frames rx_errors; do
    expect_eq "$name $key" "$(json_field "$out" "$key")" 0
  done
  expect_eq "$name: vvu-traffic's fds, first session -> last" \
    "$(json_field "$out" fds_after_first) -> $(json_field "$out" fds_at_end)" \
    "$(json_field "$out" fds_after_first) -> $(json_field "$out" fds_after_first)"
  same "$name: vvu-traffic's mappings, first session -> last" \
    "$(json_field "$out" maps_after_first)" "$(json_field "$out" maps_at_end)" "$((!sanitized))"
  wait_log_count forward "session ended" "$done_sessions" 20
  if [[ $topology == vvu-device ]]; then
    wait_log_count device "front-end disconnected" "$done_sessions" 20
  fi
}

batch warmup "$warmup"
for b in "${backends[@]}"; do sample "$b" after-warmup; done
batch churn $((sessions - warmup))
for b in "${backends[@]}"; do sample "$b" at-end; done

for b in "${backends[@]}"; do
  expect_eq "$b open fds, after $warmup sessions -> after $sessions" \
    "${sample_fds[$b.after-warmup]} -> ${sample_fds[$b.at-end]}" \
    "${sample_fds[$b.after-warmup]} -> ${sample_fds[$b.after-warmup]}"
  same "$b mappings, after $warmup sessions -> after $sessions" \
    "${sample_maps[$b.after-warmup]}" "${sample_maps[$b.at-end]}" 1
  growth=$((sample_rss[$b.at-end] - sample_rss[$b.after-warmup]))
  if ((sanitized)); then
    echo "not compared (--sanitized): $b VmRSS growth $growth KiB over $((sessions - warmup)) sessions"
  else
    ((growth <= rss_growth_kib)) ||
      fail "$b VmRSS grew by $growth KiB over $((sessions - warmup)) sessions (bound $rss_growth_kib KiB)"
    echo "ok: $b VmRSS growth $growth KiB over $((sessions - warmup)) sessions (<= $rss_growth_kib KiB)"
  fi
done

total=$((sessions * packets))
peer_stop forward TERM 20
line=$(grep -a '^{"port":0,' "$work/forward.out") || fail "vvu-forward printed no JSON for port 0"
echo "vvu-forward: $line"
for f in rx_packets tx_packets; do
  expect_eq "vvu-forward $f" "$(sed -n "s/.*\"$f\":\([0-9]*\).*/\1/p" <<<"$line")" "$total"
done
expect_eq "vvu-forward tx_dropped" "$(sed -n 's/.*"tx_dropped":\([0-9]*\).*/\1/p' <<<"$line")" 0
expect_eq "vvu-forward sessions ended" "$(log_count forward "session ended")" "$sessions"
if [[ $topology == vvu-device ]]; then
  peer_stop device TERM 20
  echo "vvu-device: $(grep -a '^{' "$work/device.out" | tail -n 1)"
  expect_eq "vvu-device frontends" "$(json_field "$work/device.out" frontends)" "$sessions"
  expect_eq "vvu-device disconnects" "$(json_field "$work/device.out" disconnects)" "$sessions"
  expect_eq "vvu-device drivers" "$(json_field "$work/device.out" drivers)" 1
fi
echo "PASS: $test_name"
