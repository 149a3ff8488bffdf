# shellcheck shell=bash
# Shared by the vvu-trace interop tests (tests/interop/trace/*.sh; sourced, not run, after the
# library of the peers they start: tests/interop/frontend/lib.sh for vvu's front-end tools,
# tests/interop/dpdk/lib.sh for testpmd on both sides): the tracer's own helpers.
#
#   trace_start NAME LISTEN CONNECT [ARGS...]  vvu-trace ($TRACE) in the background, its trace
#                                              in NAME.out; waits for LISTEN
#   trace_lines NAME                           the trace's message lines without their time
#   decode_lines FILE                          vvu-decode's lines for a capture, indent removed
#   expect_in_trace NAME PATTERN WHAT          a trace line matches PATTERN (grep -E), else fail
#   check_trace NAME CAPTURE MIN               no message the codec refused, at least MIN message
#                                              lines, and vvu-decode of CAPTURE = the live trace
#   trace_wait_end NAME SECS                   a tracer run with --once ends by itself within
#                                              SECS, with status 0
#   (wait_out NAME TEXT SECS, peer_wait: tests/interop/peers.sh)
#
# Environment: TRACE (vvu-trace), DECODE (vvu-decode), and lib.sh's.

trace_start() {
  local name=$1 listen=$2 connect=$3
  shift 3
  PEER_STDOUT=1 peer_run "$name" "$TRACE" --listen "$listen" --connect "$connect" "$@"
  wait_socket "$listen" "$name" 20
}

# A message line is "<seconds> <arrow> <text>"; the arrows are ->, <-, <= and =>.
trace_lines() { grep -a -E '^ *[0-9]+\.[0-9]+ (->|<-|<=|=>) ' "$work/$1.out" | sed -E 's/^ *[0-9]+\.[0-9]+ //'; }

decode_lines() { "$DECODE" "$1" | grep -a -E '^  (->|<-|<=|=>) ' | sed 's/^  //'; }

expect_in_trace() {
  local name=$1 pattern=$2 what=$3 line
  line=$(trace_lines "$name" | grep -a -m 1 -E -- "$pattern") || fail "the trace has no $what ($pattern)"
  echo "ok: trace shows $what: $line"
}

trace_wait_end() {
  peer_wait "$1" "$2"
  ((peer_rc == 0)) || fail "$1 exited with status $peer_rc"
}

check_trace() {
  local name=$1 capture=$2 min=$3 n
  if trace_lines "$name" | grep -a -q -E ' (UNKNOWN|MALFORMED) '; then fail "the trace has messages the codec refused"; fi
  "$DECODE" "$capture" >"$work/decoded.txt" || fail "vvu-decode failed on the capture"
  trace_lines "$name" >"$work/live.txt"
  decode_lines "$capture" >"$work/captured.txt"
  n=$(wc -l <"$work/live.txt")
  ((n >= min)) || fail "only $n message lines in the trace"
  diff "$work/live.txt" "$work/captured.txt" >"$work/capture.diff" ||
    fail "vvu-decode of the capture differs: $(head -n 20 "$work/capture.diff")"
  echo "ok: vvu-decode of the capture = the live trace ($n messages)"
}
