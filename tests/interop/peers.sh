# shellcheck shell=bash
# What every peer test script needs; sourced by tests/interop/dpdk/lib.sh and
# tests/interop/frontend/lib.sh, which declare the globals (peer_pid, peer_names, eal_prefixes,
# work, test_name, SKIP, PEER_TIMEOUT).
#
#   skip MESSAGE / fail MESSAGE  exit 77 (1 under CI=true) / print every peer's log and exit 1
#   peer_run NAME CMD...         CMD in the background under `timeout`; stdout+stderr in NAME.log
#                                (PEER_STDOUT=1: stdout alone in NAME.out)
#   peer_alive NAME              still running?
#   peer_stop NAME SIGNAL [SECS] signal it; it must end within SECS (10) and exit 0
#   wait_socket SOCK NAME SECS   bounded poll until SOCK exists (fails if NAME ends first)
#   wait_log NAME TEXT SECS      bounded poll until NAME's log has a line with TEXT (same;
#                                TEXT is a fixed string, a leading ^ anchors it)
#   log_count NAME TEXT          lines of NAME's log holding TEXT (a fixed string)
#   wait_log_count NAME TEXT N SECS  bounded poll until NAME's log has N lines with TEXT (same)
#   peer_process NAME            pid of the program itself (peer_pid is its `timeout`'s)
#   device_start NAME SOCK PCI [OPTION...]  vvu-device ($VVU_DEVICE) for a front-end on SOCK,
#                                PCI function on PCI; waits for both sockets
#   end_peers, remove_work       the common part of each library's exit cleanup
#   nap SECONDS                  sleep without forking (polling loops use it)
#   ranges                       "3-5 9" for the sorted numbers on stdin ("-" for none)

skip() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: $test_name: $* (CI=true: what would be a skip is an error)" >&2
    exit 1
  fi
  echo "SKIP: $test_name: $*"
  exit $SKIP
}

print_logs() {
  local name f
  for name in "${peer_names[@]}"; do
    for f in "$work/$name.log" "$work/$name.out"; do
      [[ -f $f ]] || continue
      echo "======== $name: ${f##*/} (last 150 lines) ========"
      tail -n 150 "$f" | tr -d '\033' | sed 's/\[2J\[1;1H//g'
    done
  done
}

fail() {
  echo "FAIL: $test_name: $*" >&2
  print_logs >&2
  echo "FAIL: $test_name: $*" >&2
  exit 1
}

# peer_run NAME CMD...: CMD in the background under `timeout`; stdout+stderr into NAME.log, or
# (PEER_STDOUT=1) stdout alone into NAME.out and stderr into NAME.log.
peer_run() {
  local name=$1
  shift
  # 9<&-: nap's FIFO stays the harness's own.
  if [[ ${PEER_STDOUT:-0} == 1 ]]; then
    timeout -k 5 "$PEER_TIMEOUT" "$@" </dev/null >"$work/$name.out" 2>"$work/$name.log" 9<&- &
  else
    timeout -k 5 "$PEER_TIMEOUT" "$@" </dev/null >"$work/$name.log" 2>&1 9<&- &
  fi
  peer_pid[$name]=$!
  peer_names+=("$name")
  echo "$name (pid $!): $*" >"$work/$name.cmd"
  echo "started $name: $*"
}

peer_alive() { kill -0 "${peer_pid[$1]}" 2>/dev/null; }

# peer_stop NAME SIGNAL [SECONDS]: the peer must end within SECONDS (10) and exit 0.
peer_stop() {
  local name=$1 sig=$2 secs=${3:-10}
  kill -"$sig" "${peer_pid[$name]}" 2>/dev/null
  peer_wait "$name" "$secs" "of SIG$sig"
  ((peer_rc == 0)) || fail "$name exited with status $peer_rc after SIG$sig (124: killed by timeout)"
}

# nap SECONDS: sleep without forking. Polling loops nap rather than run `sleep`: on a 2-vCPU
# machine whose cores are taken by busy pollers, every fork and exec steals milliseconds from
# the data path the test measures (20 `sleep`s a second made echo outages of 8 ms where there
# were 3). read times out on a FIFO that no one writes, open on fd 9: a fixed number, so that
# peer_run can close it for every peer (`9<&-`) whether it is open yet or not.
nap() {
  if [[ ! -e /dev/fd/9 ]]; then
    [[ -p $work/.nap ]] || mkfifo "$work/.nap"
    exec 9<>"$work/.nap"
  fi
  read -r -t "$1" -u 9 _ || true
}

wait_socket() {
  local sock=$1 name=$2 secs=$3 i
  for ((i = 0; i < secs * 20; i++)); do
    [[ -S $sock ]] && return 0
    peer_alive "$name" || fail "$name ended before creating $sock"
    nap 0.05
  done
  fail "$name did not create $sock within ${secs}s"
}

# holds_text LINE TEXT ANCHORED: LINE holds TEXT (ANCHORED 1: starts with it).
holds_text() { if (($3)); then [[ $1 == "$2"* ]]; else [[ $1 == *"$2"* ]]; fi; }

# wait_lines NAME FILE TEXT N SECS: N lines holding TEXT (a fixed string; a leading ^ anchors it
# at the start of the line) appear in FILE (one of peer NAME's) within SECS, while the peer
# lives. Reads the file as it grows, with shell builtins only (see nap).
wait_lines() {
  local name=$1 file=$2 text=$3 want=$4 secs=$5 i fd="" line="" part found=0 anchored=0 alive
  [[ $text == ^* ]] && anchored=1 text=${text#^}
  for ((i = 0; i < secs * 20; i++)); do
    alive=1
    peer_alive "$name" || alive=0 # before reading: a peer that wrote and then ended still counts
    [[ -z $fd && -e $file ]] && exec {fd}<"$file"
    while [[ -n $fd ]]; do
      part=""
      if ! IFS= read -r part <&"$fd" 2>/dev/null; then
        line+=$part # a line not yet finished: the rest comes with the next read
        break
      fi
      line+=$part
      holds_text "$line" "$text" "$anchored" && ((++found >= want)) && break 2
      line=""
    done
    # The unfinished last line counts as it stands (as grep counts it), without being counted
    # again once finished.
    [[ -n $line ]] && holds_text "$line" "$text" "$anchored" && ((found + 1 >= want)) && { found=$want; break; }
    ((alive)) || break
    nap 0.05
  done
  [[ -n $fd ]] && exec {fd}<&-
  ((found >= want)) && return 0
  ((alive)) || return 1
  return 2
}

# wait_file NAME FILE TEXT SECS: TEXT (as wait_lines) appears in FILE within SECS, while the
# peer lives. wait_log: in its log (NAME.log); wait_out: in its stdout (NAME.out).
wait_file() {
  wait_lines "$1" "$2" "$3" 1 "$4" && return 0
  (($? == 1)) && fail "$1 ended before writing '$3' to ${2##*/}"
  fail "$1 did not write '$3' to ${2##*/} within ${4}s"
}
wait_log() { wait_file "$1" "$work/$1.log" "$2" "$3"; }
wait_out() { wait_file "$1" "$work/$1.out" "$2" "$3"; }

log_count() { grep -a -c -F -- "$2" "$work/$1.log" 2>/dev/null || true; }

wait_log_count() {
  local name=$1 text=$2 n=$3 secs=$4
  wait_lines "$name" "$work/$name.log" "$text" "$n" "$secs" && return 0
  (($? == 1)) && fail "$name ended before logging '$text' $n times"
  fail "$name logged '$text' $(log_count "$name" "$text") times within ${secs}s, want $n"
}

# The program peer_run started under `timeout` (its only child).
peer_process() {
  local pid
  pid=$(pgrep -P "${peer_pid[$1]}" 2>/dev/null | head -n 1)
  [[ -n $pid ]] || fail "$1 has no process under timeout (pid ${peer_pid[$1]})"
  echo "$pid"
}

# peer_wait NAME SECS [WHY]: a peer that ends by itself (a vvu tool), or was told to (peer_stop:
# WHY names the signal), must do so within SECS; its exit status is left in peer_rc.
peer_wait() {
  local name=$1 secs=$2 why=${3:-} pid=${peer_pid[$1]} i
  for ((i = 0; i < secs * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    nap 0.05
  done
  kill -0 "$pid" 2>/dev/null && fail "$name did not end within ${secs}s${why:+ $why}"
  wait "$pid"
  peer_rc=$?
  unset "peer_pid[$name]"
}

# vvu-device's counters (one JSON line on stdout) land in NAME.out, its event log in NAME.log.
device_start() {
  local name=$1 sock=$2 pci=$3
  shift 3
  [[ -x ${VVU_DEVICE:-} ]] || fail "VVU_DEVICE (the vvu-device binary) is not set to an executable"
  PEER_STDOUT=1 peer_run "$name" "$VVU_DEVICE" --vhost-user "$sock" --pci "$pci" "$@"
  wait_socket "$pci" "$name" 20
  wait_socket "$sock" "$name" 20
}

# Peers still running at exit (failure, ctest timeout) are ended by pid: SIGTERM to `timeout`
# (it forwards it), SIGKILL to it and its child after 5 s; DPDK's runtime directories of our
# --file-prefix go too.
end_peers() {
  local name pid child i
  for name in "${!peer_pid[@]}"; do
    pid=${peer_pid[$name]}
    kill -0 "$pid" 2>/dev/null || continue
    child=$(pgrep -P "$pid" 2>/dev/null | head -n 1)
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" ${child:+"$child"} 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  local p d
  for p in "${eal_prefixes[@]}"; do
    for d in /var/run/dpdk "${XDG_RUNTIME_DIR:-/tmp}/dpdk"; do
      if [[ -d $d/$p ]]; then rm -rf -- "${d:?}/${p:?}"; fi
    done
  done
}

# The work directory goes, unless KEEP_LOGS=1.
remove_work() {
  if [[ -n $work && -d $work ]]; then
    if [[ ${KEEP_LOGS:-0} == 1 ]]; then echo "logs kept in $work"; else rm -rf -- "$work"; fi
  fi
}

# The ranges of the numbers on stdin (sorted): "3-5 9" ("-" for none).
ranges() {
  awk 'NF == 0 { next }
       n++ == 0 { s = p = $1; next }
       $1 == p + 1 { p = $1; next }
       { o = o (o != "" ? " " : "") (s == p ? s : s "-" p); s = p = $1 }
       END { if (n) o = o (o != "" ? " " : "") (s == p ? s : s "-" p); print (o != "" ? o : "-") }'
}
