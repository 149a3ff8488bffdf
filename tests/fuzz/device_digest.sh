#!/usr/bin/env bash
# fuzz_device gives each input one outcome (tests/fuzz/fuzz_device.cpp): its seed corpus is run
# twice, the second time in reverse order (so each input follows another one), and each
# input's digest — the replies the device sent and how it ended the session — must be the
# same in both runs and within each (libFuzzer runs an input a second time when it suspects a
# leak).
#   device_digest.sh <vvu-fuzz-device> <corpus dir>
set -euo pipefail
fuzzer=$1
corpus=$2
mapfile -t inputs < <(find "$corpus" -maxdepth 1 -type f | sort)
((${#inputs[@]} > 0)) || { echo "no inputs in $corpus"; exit 1; }
reversed=()
for ((i = ${#inputs[@]} - 1; i >= 0; i--)); do reversed+=("${inputs[i]}"); done

# Prints "<input hash> <reply bytes> <reply hash> <end>" per distinct line of a run.
digests() {
  local out
  # (Called in $(...): what goes wrong is told on stderr.)
  out=$(VVU_FUZZ_DEVICE_DIGEST=1 "$fuzzer" "$@" 2>&1) || { printf '%s\n' "$out" | tail -40 >&2; echo "the fuzzer failed" >&2; exit 1; }
  printf '%s\n' "$out" | sed -n 's/^fuzz_device digest: //p' | sort -u
}
first=$(digests "${inputs[@]}")
second=$(digests "${reversed[@]}")

status=0
for run in first second; do
  # One digest per input (the first field is the input's hash).
  split=$(printf '%s\n' "${!run}" | awk '{print $1}' | uniq -d)
  if [[ -n $split ]]; then
    echo "$run run: inputs with more than one outcome:"
    printf '%s\n' "${!run}" | grep -F "$split"
    status=1
  fi
done
count=$(printf '%s\n' "$first" | grep -c . || true)
echo "$count distinct inputs of ${#inputs[@]} files, each with one digest"
if ((count == 0)); then
  echo "no digest lines: the fuzzer printed none"
  status=1
fi
if [[ $first != "$second" ]]; then
  echo "the runs differ (< in order, > reversed):"
  diff <(printf '%s\n' "$first") <(printf '%s\n' "$second") || true
  status=1
fi
exit $status
