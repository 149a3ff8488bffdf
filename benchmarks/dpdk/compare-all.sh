#!/usr/bin/env bash
# vvu-forward against DPDK's vhost PMD in every direction, in one run, with one summary table:
#   to-backend    (equal work: vvu-forward --rx copy takes every frame into its own memory, as
#                  DPDK's dequeue copies it into an mbuf)        compare-backends.sh
#   from-backend                                                  compare-backends.sh
#   forwarding    (the front-end's frames circle through the back-end's xconnect / io mode)
#                                                                 compare-forwarding.sh
#   2 queue pairs on 1 and on 2 forwarding threads                compare-backends.sh --scaling
# Each part alternates its contenders round by round and reports medians; the back-end's busy
# cycles per frame stand beside the front-end's Mpps, because on a 2-core machine the front-end
# (core 0) is often what limits the rate, and the cycles are the back-end's own cost.
#
#   benchmarks/dpdk/compare-all.sh [--rounds N] [--seconds S] VVU-FORWARD
#
# Each part's full output (every round) goes to stdout as it runs; the summary comes last.
# Speed is reported, never asserted: this is not a test.
here=$(cd "$(dirname "$0")" && pwd)

rounds=5 seconds=5 vvu=${VVU_FORWARD:-}
usage="usage: $0 [--rounds N] [--seconds S] VVU-FORWARD"
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) vvu=$1; shift ;;
  esac
done
[[ -x $vvu ]] || { echo "$0: give the vvu-forward binary" >&2; exit 2; }

logs=$(mktemp -d /tmp/vvu-compare-all.XXXXXX)
trap 'rm -rf "$logs"' EXIT

# part NAME SCRIPT ARGS...: runs one part, its output both shown and kept.
part() {
  local name=$1
  shift
  echo "=== $name: $*"
  bash "$@" --rounds "$rounds" --seconds "$seconds" "$vvu" 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || { echo "$0: $name failed (exit $rc)" >&2; exit 1; }
}
part directions "$here/compare-backends.sh"
part forwarding "$here/compare-forwarding.sh"
part scaling "$here/compare-backends.sh" --scaling

# row LOG PATTERN: the fields of the table row that starts with PATTERN (after its label).
row() { grep -a -E "^$2" "$logs/$1.log" | tail -n 1 | sed -E "s/^$2//"; }
# cycles LOG PATTERN: the cycles/frame row that follows that row.
cycles() { grep -a -E -A1 "^$2" "$logs/$1.log" | tail -n 1 | sed -E 's/^ *cycles\/frame//'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "=== summary: medians of $rounds alternating rounds, ${seconds} s each; 64 B frames, ring ${RING:-256}"
printf '%-26s %9s %9s %9s   %11s %11s %9s\n' "" "DPDK Mpps" "vvu Mpps" "vvu/DPDK" "DPDK cyc/fr" "vvu cyc/fr" "DPDK/vvu"
line() { # LABEL MPPS-FIELDS CYCLE-FIELDS (DPDK first, vvu second)
  local d v dc vc
  read -r d v _ <<<"$2"
  read -r dc vc _ <<<"$3"
  printf '%-26s %9s %9s %9s   %11s %11s %9s\n' "$1" "$d" "$v" "$(ratio "$v" "$d")" "$dc" "$vc" "$(ratio "$dc" "$vc")"
}
line "to-backend (copy)" "$(row directions 'virtio-user -> back-end \(rx\)')" "$(cycles directions 'virtio-user -> back-end \(rx\)')"
line "from-backend" "$(row directions 'back-end -> virtio-user \(tx\)')" "$(cycles directions 'back-end -> virtio-user \(tx\)')"
line "forwarding (xconnect)" "$(row forwarding 'testpmd io <-> back-end xconnect')" "$(cycles forwarding 'testpmd io <-> back-end xconnect')"
echo
printf '%-26s %9s %9s %9s   %11s %11s\n' "vvu, 2 queue pairs" "1 thread" "2 threads" "2/1" "cyc/fr 1" "cyc/fr 2"
for dir in to-backend from-backend; do
  read -r a b r _ <<<"$(row scaling "$dir")"
  read -r ca cb _ <<<"$(cycles scaling "$dir")"
  printf '%-26s %9s %9s %9s   %11s %11s\n' "$dir" "$a" "$b" "$r" "$ca" "$cb"
done
