#!/usr/bin/env bash
# The test job — what `.ci/run` runs and what a developer runs on a fresh Debian 12 machine:
#   1. g++ 12, Release, -Werror: every ctest test — the unit tests, then interop against real
#      peers and the package test.
#   2. clang 14 with ASan+UBSan, -Werror, -O0: the unit tests, the session churn tests against
#      the sanitized vvu-traffic, vvu-forward and vvu-device (label churn: a leak at a peer's
#      exit fails it; no RSS check, tests/interop/churn.cmake), then each
#      libFuzzer target for VVU_FUZZ_SECONDS (default 60) from its seed corpus in
#      tests/fuzz/corpus/, and the line coverage those runs reached per layer
#      (tests/fuzz/coverage.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${VVU_JOBS:-$(nproc)}
fuzz_seconds=${VVU_FUZZ_SECONDS:-60}
build=${VVU_BUILD_ROOT:-$root/build}

bash "$root/scripts/install-deps.sh" all

step() { printf '\n==== %s\n' "$*"; }

# The hugetlbfs unit test maps a huge page: under CI, where nothing may be skipped, reserve a
# few (16 MiB) if the machine has fewer free.
if [[ ${CI:-} == true && -w /proc/sys/vm/nr_hugepages ]]; then
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
  ((${free:-0} >= 2)) || echo $(($(cat /proc/sys/vm/nr_hugepages) + 8)) >/proc/sys/vm/nr_hugepages
fi

step "g++ Release build"
cmake -S "$root" -B "$build/gcc-release" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
      -DVVU_WERROR=ON -DVVU_BUILD_BENCHMARKS=ON
cmake --build "$build/gcc-release" -j "$jobs"

# Unit tests first, by themselves: their deadlines (a reply within a second, a thread that
# parks in time) must not race the busy-polling peers of the interop tests.
step "g++ Release: ctest unit tests"
ctest --test-dir "$build/gcc-release" --output-on-failure -j "$jobs" -L unit
step "g++ Release: ctest interop and package tests"
ctest --test-dir "$build/gcc-release" --output-on-failure -j "$jobs" -LE unit

# The sanitizer tree builds at -O0 with line tables (the fuzz targets at -O1, see
# tests/fuzz/CMakeLists.txt): about a third of -O2 -g's build time for these template-heavy
# programs, which is most of this stage; the tests then run slower but still in minutes.
step "clang ASan/UBSan build"
cmake -S "$root" -B "$build/clang-asan" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -gline-tables-only" \
      -DCMAKE_CXX_COMPILER=clang++-14 -DVVU_WERROR=ON -DVVU_SANITIZE=address,undefined -DVVU_BUILD_FUZZ=ON
cmake --build "$build/clang-asan" -j "$jobs"

step "clang ASan/UBSan: unit tests"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build/clang-asan" --output-on-failure -j "$jobs" -L unit
step "clang ASan/UBSan: session churn tests"
ctest --test-dir "$build/clang-asan" --output-on-failure -j "$jobs" -L churn

shopt -s nullglob
profiles="$build/clang-asan/fuzz-profiles"
rm -rf "$profiles"
mkdir -p "$profiles"
fuzzers=("$build"/clang-asan/tests/fuzz/vvu-fuzz-*)
for fuzzer in "${fuzzers[@]}"; do
  name=${fuzzer##*/vvu-fuzz-}
  step "fuzz $name for ${fuzz_seconds}s (ASan/UBSan)"
  scratch="$build/clang-asan/fuzz-corpus/$name"
  mkdir -p "$scratch"
  # New inputs go to the scratch corpus; the committed seeds are read only.
  LLVM_PROFILE_FILE="$profiles/$name.profraw" \
    "$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 "$scratch" "$root/tests/fuzz/corpus/$name"
done

step "fuzz coverage (lines of the instantiated code each layer has, reached by the runs above)"
bash "$root/tests/fuzz/coverage.sh" "$profiles" "${fuzzers[@]}"

step "all test stages passed"
