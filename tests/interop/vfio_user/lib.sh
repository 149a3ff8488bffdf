# shellcheck shell=bash
# Shared by the vfio-user interop scripts (sourced): the peers.sh globals and a work directory.
#   vfu_init NAME      work dir (short: UNIX socket paths ≤ 107 bytes), cleanup on exit
set -uo pipefail
# shellcheck source=tests/interop/peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../peers.sh"

SKIP=77
PEER_TIMEOUT=${PEER_TIMEOUT:-120}
declare -A peer_pid=()
declare -a peer_names=()
declare -a eal_prefixes=()
work=""
test_name=""

cleanup() {
  end_peers
  remove_work
}

vfu_init() {
  test_name=$1
  local tool
  for tool in timeout pgrep; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool not found"
  done
  work=$(mktemp -d "${TMPDIR:-/tmp}/vvu-vfu.XXXXXX") || exit 1
  trap cleanup EXIT
  trap 'echo "interrupted" >&2; exit 1' INT TERM
}

need_exe() { [[ -x $1 ]] || { echo "FAIL: $test_name: $1 is not an executable" >&2; exit 1; }; }
