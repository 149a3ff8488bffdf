# shellcheck shell=bash
# Shared by capture-qemu.sh and capture-dpdk.sh (sourced, not run).
#
#   run_capture OUT "comment" ... -- PEER-COMMAND... (SOCK in PEER-COMMAND is the socket path)
#
# Starts capture.py on a fresh socket, waits (bounded poll) for the socket to appear, starts the
# peer under `timeout`, waits for capture.py to end (idle, peer closed or message limit), ends the
# peer by its pid and moves the capture to OUT. On failure it prints capture.py's and the peer's
# logs and returns non-zero.
#
# Environment: PYTHON (python3), PEER_TIMEOUT (seconds, 90), CAPTURE_IDLE (seconds, 3),
# CAPTURE_OPTS (extra capture.py options, word-split), CAPTURE_VERBOSE=1 (print the peer's log), STOP_PEER=1 (SIGTERM the peer at the first
# idle period and record its shutdown too).

capture_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

run_capture() {
  local out=$1
  shift
  local -a comments=()
  while [[ $# -gt 0 && $1 != -- ]]; do
    comments+=(--comment "$1")
    shift
  done
  shift # --

  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/vvu-capture.XXXXXX")
  local sock=$work/vhost-user.sock
  local -a peer=()
  local arg
  for arg in "$@"; do
    peer+=("${arg//SOCK/$sock}")
  done

  local -a opts=(--listen "$sock" --out "$work/capture.vhu" --idle "${CAPTURE_IDLE:-3}"
                 --accept-timeout 30 "${comments[@]}")
  if [[ ${STOP_PEER:-0} == 1 ]]; then
    opts+=(--stop-peer-pidfile "$work/peer.pid")
  fi
  # shellcheck disable=SC2206 # CAPTURE_OPTS is a list of options on purpose
  opts+=(${CAPTURE_OPTS:-})

  local cap_pid peer_pid="" rc=0
  # Interrupted (ctest timeout, ^C): end what we started, by pid, and remove the temporary files.
  trap 'kill ${cap_pid:-} ${peer_pid:-} 2>/dev/null; rm -rf "$work"; exit 1' INT TERM
  "${PYTHON:-python3}" "$capture_dir/capture.py" "${opts[@]}" 2>"$work/capture.log" &
  cap_pid=$!

  # Bounded poll for the socket (capture.py renames it into place once it listens).
  local i
  for ((i = 0; i < 200; i++)); do
    [[ -S $sock ]] && break
    kill -0 "$cap_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [[ ! -S $sock ]]; then
    echo "capture: capture.py did not start listening on $sock" >&2
    kill "$cap_pid" 2>/dev/null || true
    wait "$cap_pid" 2>/dev/null || true
    cat "$work/capture.log" >&2
    rm -rf "$work"
    trap - INT TERM
    return 1
  fi

  # -k: a peer that ignores SIGTERM (ours or timeout's) is killed 5 s later.
  timeout -k 5 "${PEER_TIMEOUT:-90}" "${peer[@]}" </dev/null >"$work/peer.log" 2>&1 &
  peer_pid=$!
  echo "$peer_pid" >"$work/peer.pid"

  # capture.py bounds itself (accept timeout, idle timeout). If the peer dies first (it failed, or
  # it shut down after STOP_PEER), capture.py sees the connection close at once; if it never
  # connected, capture.py is ended here after a bounded wait.
  wait -n "$cap_pid" "$peer_pid" 2>/dev/null || true
  if ! kill -0 "$peer_pid" 2>/dev/null; then
    for ((i = 0; i < 100; i++)); do
      kill -0 "$cap_pid" 2>/dev/null || break
      sleep 0.05
    done
    kill "$cap_pid" 2>/dev/null || true
  fi
  wait "$cap_pid" || rc=$?

  # A peer that ended on its own before we end it (without STOP_PEER) failed at some step: the
  # capture would hold a partial session.
  local peer_alive=1
  kill -0 "$peer_pid" 2>/dev/null || peer_alive=0
  kill "$peer_pid" 2>/dev/null || true # `timeout` passes SIGTERM on to the peer
  wait "$peer_pid" 2>/dev/null || true
  if [[ $peer_alive == 0 && ${STOP_PEER:-0} != 1 && $rc == 0 ]]; then
    echo "capture: the peer exited before the capture ended" >&2
    rc=1
  fi

  if [[ $rc -ne 0 ]] || ! grep -q '^> ' "$work/capture.vhu" 2>/dev/null; then
    echo "capture: FAILED (status $rc); capture.py log:" >&2
    cat "$work/capture.log" >&2
    echo "capture: peer log (${peer[*]}):" >&2
    cat "$work/peer.log" >&2
    rm -rf "$work"
    trap - INT TERM
    return 1
  fi
  cat "$work/capture.log" >&2
  if [[ ${CAPTURE_VERBOSE:-0} == 1 ]]; then
    echo "capture: peer log:" >&2
    cat "$work/peer.log" >&2
  fi
  mv "$work/capture.vhu" "$out"
  rm -rf "$work"
  trap - INT TERM
  echo "capture: wrote $out" >&2
}
