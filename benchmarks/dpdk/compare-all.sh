#!/usr/bin/env bash
# vvu-forward against DPDK's vhost PMD in every direction, in one run, with one summary table:
#   to-backend    (equal work: vvu-forward --rx copy takes every frame into its own memory, as
#                  DPDK's dequeue copies it into an mbuf)        compare-backends.sh
#   from-backend                                                  compare-backends.sh
#   forwarding    (the front-end's frames circle through the back-end's xconnect / io mode;
#                  vvu copies each frame once, and with --rx copy twice, as DPDK does)
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
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
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
# cycles LOG PATTERN: the back-end's cycles/frame row that follows that row; fe_cycles: the
# front-end's, after it.
cycles() { grep -a -E -A1 "^$2" "$logs/$1.log" | tail -n 1 | sed -E 's/^ *cycles\/frame//'; }
fe_cycles() { grep -a -E -A2 "^$2" "$logs/$1.log" | tail -n 1 | sed -E 's/^ *front-end cycles\/frame//'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "=== summary: medians of $rounds alternating rounds, ${seconds} s each; 64 B frames, ring ${RING:-256}"
echo "Mpps at the front-end; busy cycles per frame of the back-end and, beside each, of the front-end"
echo "(testpmd): a front-end whose cycles/frame x Mpps nears the clock is what limits the rate"
fmt='%-22s %9s %9s %8s   %9s %9s %8s   %9s %9s\n'
printf "$fmt" "" "DPDK Mpps" "vvu Mpps" "vvu/DPDK" "DPDK cyc" "vvu cyc" "DPDK/vvu" "FE w/DPDK" "FE w/vvu"
line() { # LABEL LOG PATTERN (DPDK first, vvu second in each row)
  local d v dc vc df vf
  read -r d v _ <<<"$(row "$2" "$3")"
  read -r dc vc _ <<<"$(cycles "$2" "$3")"
  read -r df vf _ <<<"$(fe_cycles "$2" "$3")"
  printf "$fmt" "$1" "$d" "$v" "$(ratio "$v" "$d")" "$dc" "$vc" "$(ratio "$dc" "$vc")" "$df" "$vf"
}
line "to-backend (copy)" directions 'virtio-user -> back-end \(rx\)'
line "from-backend" directions 'back-end -> virtio-user \(tx\)'
line "forwarding (xconnect)" forwarding 'testpmd io <-> back-end xconnect'
# vvu --rx copy: the row's 4th field; cycles 3rd (after an empty column)
read -r d _ _ c _ <<<"$(row forwarding 'testpmd io <-> back-end xconnect')"
read -r dc _ cc _ <<<"$(cycles forwarding 'testpmd io <-> back-end xconnect')"
read -r df _ cf _ <<<"$(fe_cycles forwarding 'testpmd io <-> back-end xconnect')"
printf "$fmt" "  vvu --rx copy" "$d" "$c" "$(ratio "$c" "$d")" "$dc" "$cc" "$(ratio "$dc" "$cc")" "$df" "$cf"
echo
printf "$fmt" "vvu, 2 queue pairs" "1 thread" "2 threads" "2/1" "cyc 1" "cyc 2" "" "FE w/1" "FE w/2"
for dir in to-backend from-backend; do
  read -r a b r _ <<<"$(row scaling "$dir")"
  read -r ca cb _ <<<"$(cycles scaling "$dir")"
  read -r fa fb _ <<<"$(fe_cycles scaling "$dir")"
  printf "$fmt" "$dir" "$a" "$b" "$r" "$ca" "$cb" "" "$fa" "$fb"
done
