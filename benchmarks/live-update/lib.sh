# shellcheck shell=bash
# Shared by the live-update benchmarks (benchmarks/live-update/*.sh; sourced, not run). bash 5.
#
# The technique (first written for dpdk-client-restart.sh): the front-end is DPDK testpmd's
# virtio-user, txonly, run interactive (-i) with a FIFO as its stdin; an awk filter reads its
# output, logs every line and hands the shell one short "fact" per line it needs (TX-packets,
# link events, reconnection, the end of a reply); the shell polls `show port stats 0` back to
# back. A poll costs the shell a few syscalls and no fork.
#
#   lu_init NAME PREFIX LIFE      work dir /tmp/NAME.XXXXXX, cleanup on exit; every process lives
#                                 at most LIFE s (timeout); DPDK --file-prefix values start PREFIX$$
#   now                           t = wall clock in microseconds (no subshell)
#   lu_sleep SECONDS              a sleep without a fork
#   fail MESSAGE                  the tail of every log, exit 1
#   spawn NAME CMD...             CMD under timeout, stdout NAME.out, stderr NAME.log
#   child_of NAME                 child = pid of CMD itself (the process to kill -9)
#   alive NAME                    true while NAME runs (a zombie does not)
#   reap NAME SECONDS             wait (bounded) for NAME's end; rc = its status; 1 if it runs on
#   stop NAME SIGNAL SECONDS      signal it, reap; SIGKILL after SECONDS
#   fe_start NAME SOCK VDEV-EXTRA testpmd virtio-user txonly on SOCK (",server=1" to listen)
#   fe_use NAME                   the front-end the fe_* commands below talk to
#   fe_until KEY SECONDS [soft]   take its facts until KEY (fail, or with soft return 1, on timeout)
#   fe_cmd CMD / fe_tx / fe_dropped   one command and its whole reply / TX-packets / TX-dropped
#   fe_quit NAME                  quit, reap (bounded; killed if it hangs)
#   fe_flowing SECONDS [NAME]     bounded wait until TX-packets grows by more than RING (NAME:
#                                 a back-end that must keep running meanwhile)
#   lu_mark                       a poll just before the event: where lu_measure's window starts
#   lu_measure T0 BOUND [NAME [LOG TEXT]]   poll the front-end until it has sent more than RING
#                                 frames past its value after T0 (see below)
#   lu_baseline MS                poll steady traffic for MS ms: steady = its longest stall
#   stats_of V...                 "median min max" of the numbers V
#   fmt_s MICROSECONDS            seconds with 6 decimals
export LC_ALL=C # EPOCHREALTIME with a '.', read as integer microseconds
RING=${RING:-256}
POLL_US=${POLL_US:-0} # pause between two polls; 0: back to back
TESTPMD=${DPDK_TESTPMD:-dpdk-testpmd}
LU_EAL=(-l "0,1" -n 1 --no-huge -m 512 --no-pci)

lu_name="" lu_work="" lu_prefix="" lu_life=600 lu_tick=""
declare -A lu_pid=()  # name -> pid of the `timeout` running it (this shell's child)
declare -a lu_names=() # in start order
declare -A fe_infd=() fe_factfd=() fe_awk=()
mark_t=0 mark_tx=0 lu_label="-" fe="" fe_in="" facts="" key="" val="" tx=0 dropped=0 lsc=0 t_conn=0 t=0 child="" rc=0

now() { t=${EPOCHREALTIME/./}; }
lu_sleep() { read -r -t "$1" -u "$lu_tick" || true; } # the tick FIFO is never written

lu_init() {
  lu_name=$1 lu_prefix=$2$$ lu_life=$3
  command -v "$TESTPMD" >/dev/null ||
    { echo "$lu_name: no $TESTPMD (apt-get install dpdk-dev)" >&2; exit 1; }
  lu_work=$(mktemp -d "/tmp/$lu_name.XXXXXX")
  trap lu_cleanup EXIT
  trap 'exit 130' INT TERM # so that the EXIT trap runs
  mkfifo "$lu_work/tick.fifo"
  exec {lu_tick}<>"$lu_work/tick.fifo"
}

lu_cleanup() {
  trap - EXIT
  local n p i
  for n in "${!fe_infd[@]}"; do i=${fe_infd[$n]}; exec {i}>&-; done # EOF ends testpmd -i
  # timeout passes TERM on to its child, and KILLs it 5 s (-k 5) later
  for n in "${!lu_pid[@]}"; do kill "${lu_pid[$n]}" 2>/dev/null || true; done
  for n in "${!lu_pid[@]}"; do
    p=${lu_pid[$n]}
    for ((i = 0; i < 800; i++)); do alive "$n" || break; lu_sleep 0.01; done # 8 s
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for p in "${fe_awk[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/"$lu_prefix"-*
  if [[ ${KEEP_LOGS:-0} == 1 ]]; then echo "logs kept in $lu_work" >&2; else rm -rf "$lu_work"; fi
}

fail() {
  echo "$lu_name: FAIL: $*" >&2
  local f
  for f in "$lu_work"/*.log "$lu_work"/*.out; do
    [[ -f $f && -s $f ]] || continue
    echo "---- $f (last 60 lines)" >&2
    tail -n 60 "$f" >&2
  done
  exit 1
}

spawn() {
  local name=$1
  shift
  timeout -k 5 "$lu_life" "$@" </dev/null >"$lu_work/$name.out" 2>"$lu_work/$name.log" &
  lu_pid[$name]=$!
  lu_names+=("$name")
}

alive() {
  local p=${lu_pid[$1]:-} s
  [[ -n $p ]] || return 1
  read -r s 2>/dev/null <"/proc/$p/stat" || return 1
  s=${s##*) }
  [[ ${s:0:1} != Z ]]
}

child_of() { # timeout forks its child at once
  local p=${lu_pid[$1]:-} i
  child=""
  [[ -n $p ]] || fail "no process $1"
  for ((i = 0; i < 5000 && ${#child} == 0; i++)); do
    read -r child _ 2>/dev/null <"/proc/$p/task/$p/children" || lu_sleep 0.001
  done
  [[ -n $child ]] || fail "$1: no process under timeout ($p)"
}

reap() {
  local i n=$(($2 * 1000))
  rc=0
  [[ -n ${lu_pid[$1]:-} ]] || return 0
  for ((i = 0; i < n; i++)); do alive "$1" || break; lu_sleep 0.001; done
  alive "$1" && return 1
  wait "${lu_pid[$1]}" 2>/dev/null || rc=$?
  unset "lu_pid[$1]"
  return 0
}

stop() {
  [[ -n ${lu_pid[$1]:-} ]] || return 0
  kill "-$2" "${lu_pid[$1]}" 2>/dev/null || true
  reap "$1" "$3" && return 0
  echo "$lu_name: $1 did not end within $3 s of SIG$2: killed" >&2
  child_of "$1"
  kill -KILL "$child" "${lu_pid[$1]}" 2>/dev/null || true
  reap "$1" 5 || fail "$1 outlived SIGKILL"
}

# The front-end: stdin and stdout are FIFOs. stdbuf -oL: testpmd's printf would sit in a 4 KiB
# buffer. awk logs every line to NAME.log and hands this shell one short line per fact.
fe_start() {
  local name=$1 sock=$2 extra=$3 w=$lu_work
  mkfifo "$w/$name.in.fifo" "$w/$name.out.fifo" "$w/$name.facts.fifo"
  timeout -k 5 "$lu_life" stdbuf -oL "$TESTPMD" "${LU_EAL[@]}" --main-lcore 1 \
    --file-prefix="$lu_prefix-$name" --iova-mode=va --vdev "net_virtio_user0,path=$sock,queues=1$extra" \
    -- -i --total-num-mbufs=32768 --forward-mode=txonly --auto-start --nb-cores=1 -a \
    <"$w/$name.in.fifo" >"$w/$name.out.fifo" 2>&1 &
  lu_pid[$name]=$!
  lu_names+=("$name")
  awk -W interactive -v lg="$w/$name.log" '{ print > lg; fflush(lg) } # -W interactive: mawk reads by line
    /waiting for client connection/ { print "listening" }
    function num() { n = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", n); return n }
    match($0, /TX-packets: +[0-9]+ +TX-errors/) { print "tx", num() } # anywhere: prompt bytes interleave
    match($0, /TX-dropped: +[0-9]+/) { print "dropped", num() }
    /link state change/ { print "lsc" }
    /virtio-user reconnection succeeds/ { print "reconnected" }
    /Command not found/ { print "end" }
    { fflush() }' <"$w/$name.out.fifo" >"$w/$name.facts.fifo" 2>/dev/null &
  fe_awk[$name]=$!
  # Opened read-write: no open blocks, a dead peer is seen by alive.
  local i f
  exec {i}<>"$w/$name.in.fifo" {f}<>"$w/$name.facts.fifo"
  fe_infd[$name]=$i fe_factfd[$name]=$f
  fe_use "$name"
}
fe_use() { fe=$1 fe_in=${fe_infd[$1]} facts=${fe_factfd[$1]}; }

fe_until() {
  local end
  now
  end=$((t + $2 * 1000000))
  while :; do
    if read -r -t 1 key val <&"$facts"; then
      now # when the fact arrived
      case $key in
        tx) tx=$val ;; dropped) dropped=$val ;; lsc) lsc=$((lsc + 1)) ;; reconnected) t_conn=$t ;;
      esac
      [[ $key == "$1" ]] && return 0
    else
      now
      if ! alive "$fe"; then
        [[ ${3:-} == soft ]] && return 1
        fail "the front-end $fe ended (waiting for $1)"
      fi
    fi
    if ((t >= end)); then
      [[ ${3:-} == soft ]] && return 1
      fail "front-end $fe: no $1 within $2 s"
    fi
  done
}
fe_cmd() { printf '%s\nzz-end\n' "$1" >&"$fe_in"; fe_until end "${2:-5}" "${3:-}"; } # the unknown word ends the reply
fe_tx() { # with soft: return 1 when the front-end does not answer
  tx=-1
  if fe_cmd "show port stats 0" 5 "${1:-}" && ((tx >= 0)); then return 0; fi
  [[ ${1:-} == soft ]] && return 1
  fail "no TX-packets in $fe's reply"
}
fe_dropped() { fe_cmd "show fwd stats all"; } # txonly counts frames the ring had no room for
fe_quit() {
  [[ -n ${lu_pid[$1]:-} ]] || return 0
  printf 'quit\n' >&"${fe_infd[$1]}" || true
  reap "$1" 15 || { echo "$lu_name: front-end $1 did not quit: killed" >&2; stop "$1" KILL 5; }
  local i=${fe_infd[$1]} f=${fe_factfd[$1]}
  exec {i}>&- {f}<&-
  kill "${fe_awk[$1]}" 2>/dev/null || true
  wait "${fe_awk[$1]}" 2>/dev/null || true
  unset "fe_infd[$1]" "fe_factfd[$1]" "fe_awk[$1]"
}
fe_flowing() {
  local first i
  fe_tx
  first=$tx
  for ((i = 0; tx <= first + RING; i++)); do
    ((i < $1 * 100)) || fail "$fe: TX-packets did not grow within $1 s"
    [[ -z ${2:-} ]] || alive "$2" || fail "$2 ended before traffic flowed"
    lu_sleep 0.01
    fe_tx
  done
}

# lu_mark: one poll just before the event (mark_t: its reply, mark_tx: its TX-packets): where
# lu_measure's window starts. Not its base: the back-end runs on between the sample and the
# event, and at millions of frames per second a few microseconds are more than a ring.
lu_mark() { fe_tx; mark_t=$t mark_tx=$tx; }

# lu_measure T0 BOUND [NAME [LOG TEXT]]
# Polls the current front-end's TX-packets back to back (POLL_US apart) from now on; the window
# starts at lu_mark's poll (taken just before T0). The base is the value of the first poll after
# T0: the counter's value once the old back-end has stopped (it can then grow by at most the ring's
# free slots). The window ends at the first later poll whose value exceeds base + RING
# (resumed=1), or BOUND seconds after T0 (resumed=0), or when NAME (the new back-end, optional)
# ends (resumed=0, ended=1). LOG TEXT (optional), when the old back-end still serves after T0 (a
# take-over): the base is then the value of the first poll sent after the file LOG (the new
# process's stderr) holds TEXT (it says it has taken over).
# Sets (microseconds): down = T0 -> the reply of the poll that ended the window; res = the send
# of the poll before it -> that reply (where in time the resumption lies); stall = the longest
# interval between two polls of the window across which TX-packets grew by less than RING;
# early = T0 -> the first poll past the window's first value + RING (a LOG window only: the old
# process still serving), or -1; handed_at = T0 -> the reply of the first poll sent after LOG
# held TEXT, or -1; period = the median interval between two poll replies; polls;
# answered=0 if the front-end stopped answering (the window then ends there).
# Appends "LABEL µs-since-T0 TX-packets" per poll to $lu_work/polls.log (LABEL: $lu_label).
lu_measure() {
  local t0=$1 bound=$(($2 * 1000000)) watch=${3:-} log=${4:-} text=${5:-} send prev base first n=0
  local content handed=0
  local -a pt=() px=()
  local pause=""
  ((POLL_US > 0)) && printf -v pause '%d.%06d' $((POLL_US / 1000000)) $((POLL_US % 1000000))
  resumed=0 ended=0 early=-1 handed_at=-1 polls=0 down=0 res=0 stall=0 period=0 answered=1
  pt[0]=$mark_t px[0]=$mark_tx base=-1 first=-1 prev=$mark_t
  while :; do
    [[ -n $pause ]] && lu_sleep "$pause"
    # A take-over: the log is read before the poll, whose value is then one taken after the
    # new process said it had taken over.
    if ((base < 0 && n > 0)) && [[ -n $log ]]; then
      content=""
      read -r -d '' content 2>/dev/null <"$log" || true # builtins, no fork (LOG may not exist yet)
      [[ $content == *"$text"* ]] && handed=1
    fi
    now
    send=$t
    if ! fe_tx soft; then answered=0; break; fi
    now
    n=$((n + 1))
    pt[n]=$t px[n]=$tx
    printf '%s %d %d\n' "$lu_label" $((t - t0)) "$tx" >>"$lu_work/polls.log"
    if ((n == 1)); then # the first poll after T0
      first=$tx
      [[ -z $log ]] && base=$tx
    elif ((base < 0)); then
      ((early < 0 && tx > first + RING)) && early=$((t - t0))
      ((handed)) && base=$tx handed_at=$((t - t0))
    elif ((tx > base + RING)); then
      resumed=1
      break
    fi
    ((t - t0 < bound)) || break
    if [[ -n $watch ]] && ! alive "$watch"; then ended=1; break; fi
    prev=$send
  done
  down=$((t - t0)) res=$((t - prev)) polls=$((n + 1))
  lu_stall "$n"
  return 0
}

# lu_stall N: from the caller's poll arrays pt (reply times) and px (TX-packets), indices 0..N:
# stall = the longest interval between two polls across which TX-packets grew by less than RING;
# period = the median interval between two successive replies.
lu_stall() {
  local n=$1 a=0 b
  local -a d=()
  stall=0 period=0
  for ((b = 1; b <= n; b++)); do # TX-packets only grows: the earliest a for each b moves forward
    while ((px[b] - px[a] >= RING)); do a=$((a + 1)); done
    ((pt[b] - pt[a] > stall)) && stall=$((pt[b] - pt[a]))
    d+=($((pt[b] - pt[b - 1])))
  done
  ((n > 0)) && read -r period _ < <(stats_of "${d[@]}")
  return 0
}

# lu_baseline MS: polls the current front-end back to back for MS milliseconds of steady traffic;
# sets steady = the stall of that window (what the machine's scheduling alone costs the traffic),
# steady_period = its median poll interval, steady_rate = frames per second.
lu_baseline() {
  local end n=0 stall period
  local -a pt=() px=()
  now
  end=$((t + $1 * 1000))
  fe_tx
  pt[0]=$t px[0]=$tx
  while ((t < end)); do
    fe_tx
    now
    n=$((n + 1))
    pt[n]=$t px[n]=$tx
  done
  lu_stall "$n"
  steady=$stall steady_period=$period
  steady_rate=$(((px[n] - px[0]) * 1000000 / (pt[n] - pt[0] + 1)))
}

stats_of() { # "median min max" of integers ("0 0 0" of none)
  (($#)) || { echo "0 0 0"; return 0; }
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "0 0 0"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2); print m, v[1], v[NR] }'
}
fmt_s() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }
