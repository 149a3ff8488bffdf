#!/usr/bin/env bash
# Line coverage that the fuzz runs reached in vvu's header-only layers, from the profiles the
# fuzz targets wrote (they are built with -fprofile-instr-generate, tests/fuzz/CMakeLists.txt).
# Usage: coverage.sh PROFILE_DIR FUZZER...   (PROFILE_DIR holds the runs' *.profraw files)
# Prints one line per layer (include/vvu/<layer>/): lines reached of lines with code, and %.
set -euo pipefail
dir=$1
shift
profraw=("$dir"/*.profraw)
[[ -e ${profraw[0]} ]] || { echo "coverage: no profiles in $dir" >&2; exit 1; }
llvm-profdata-14 merge -sparse "${profraw[@]}" -o "$dir/fuzz.profdata"
objects=()
for f in "$@"; do objects+=(-object "$f"); done
# One row per source file: name, regions, missed, cover, functions, missed, executed, lines,
# missed lines, cover, branches...; summed per layer directory.
llvm-cov-14 report "${objects[@]:1}" -instr-profile="$dir/fuzz.profdata" |
  awk '
    /include\/vvu\/(protocol|device|ring|wire|transport|runtime)\// {
      match($1, /include\/vvu\/[a-z_]+\//)
      layer = substr($1, RSTART + 12, RLENGTH - 13)
      lines[layer] += $8; missed[layer] += $9
    }
    END {
      for (l in lines)
        printf "fuzz coverage of include/vvu/%s/: %d of %d lines (%.1f%%)\n", l, lines[l] - missed[l], lines[l],
               lines[l] ? 100 * (lines[l] - missed[l]) / lines[l] : 0
    }' | sort
