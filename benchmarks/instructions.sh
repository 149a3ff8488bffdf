#!/usr/bin/env bash
# Instructions the device side of the net data path executes per 64 B frame, split against
# packed rings, counted by callgrind (valgrind) over vvu-frame-work (benchmarks/frame_work.cpp).
# A count does not move with the host: on a shared VM the same single-threaded loop runs up to
# 2x slower from one second to the next, so timed figures of two versions of the code, or of the
# two rings, compare only over many alternating rounds; this one compares exactly. It leaves out
# what instructions do not show (cache misses, the lines shared with the front-end's CPU).
#
#   benchmarks/instructions.sh FRAME-WORK [FRAME-WORK ...]
#
# FRAME-WORK: a vvu-frame-work binary (build/…/benchmarks/vvu-frame-work); given several (two
# builds of the code), each gets a column. Cases: to-frontend (net::transmit_burst) and
# from-frontend (net::receive_burst + push_burst), each without and with VIRTIO_F_IN_ORDER.
# Speed is reported, never asserted: this is not a test.
set -euo pipefail
(($# > 0)) || { sed -n '2,15p' "$0" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "$0: needs valgrind (scripts/install-deps.sh installs it)" >&2; exit 1; }
for b in "$@"; do [[ -x $b ]] || { echo "$0: $b is not an executable" >&2; exit 1; }; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bursts=10000
frames=$((bursts * 32)) # vvu-frame-work's bursts are of 32 frames
# per_frame BINARY DIRECTION RING [--in-order]: the counted function's inclusive instructions / frames
per_frame() {
  local bin=$1 direction=$2
  shift 2
  local fn=device_transmit
  [[ $direction == from-frontend ]] && fn=device_receive
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" "$direction" "$@" --bursts "$bursts" \
    >"$work/stdout" 2>"$work/log" || { cat "$work/log" >&2; echo "$0: $bin $direction $* failed" >&2; exit 1; }
  grep -q "^$frames frames" "$work/stdout" || { echo "$0: $bin did not move $frames frames" >&2; exit 1; }
  callgrind_annotate --inclusive=yes "$work/out" 2>/dev/null |
    awk -v fn="$fn" -v n="$frames" 'index($0, fn "<") && !done { gsub(",", "", $1); printf "%.1f", $1 / n; done = 1 }
                                    END { if (!done) exit 1 }' ||
    { echo "$0: no $fn in the profile of $bin" >&2; exit 1; }
}

echo "instructions per frame, device side (callgrind; $frames frames of 64 B, bursts of 32, ring 256)"
header=$(printf '%-34s' case)
for b in "$@"; do header+=$(printf ' %18s' "$(basename "$(dirname "$(dirname "$b")")")"); done
echo "$header"
for direction in to-frontend from-frontend; do
  for order in "" --in-order; do
    for ring in split packed; do
      line=$(printf '%-34s' "$direction $ring${order:+ in-order}")
      for b in "$@"; do
        # shellcheck disable=SC2086 # order is one word or none
        line+=$(printf ' %18s' "$(per_frame "$b" "$direction" "$ring" $order)")
      done
      echo "$line"
    done
  done
done
