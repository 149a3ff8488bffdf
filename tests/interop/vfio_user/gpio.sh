#!/usr/bin/env bash
# interop.vfio_user.gpio: vvu's vfio_user::client against libvfio-user's gpio-pci-idio-16.
#   gpio.sh --probe PATH/vvu-test-vfio-gpio --libvfio-user BUILD_DIR
# Builds libvfio-user into BUILD_DIR (cached), starts the sample on a socket in a work
# directory, runs the probe (config space, BAR 2 registers, DMA map/unmap, INTx eventfd), then
# ends the sample by pid. On failure every peer's log is printed.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/interop/vfio_user/lib.sh
source "$here/lib.sh"

probe="" lvu=""
while (($#)); do
  case $1 in
    --probe) probe=$2; shift 2 ;;
    --libvfio-user) lvu=$2; shift 2 ;;
    *) echo "usage: $0 --probe EXE --libvfio-user BUILD_DIR" >&2; exit 2 ;;
  esac
done
[[ -n $probe && -n $lvu ]] || { echo "usage: $0 --probe EXE --libvfio-user BUILD_DIR" >&2; exit 2; }
vfu_init interop.vfio_user.gpio
need_exe "$probe"

build_out=$(bash "$here/build-libvfio-user.sh" "$lvu")
rc=$?
echo "$build_out"
((rc == SKIP)) && exit $SKIP
((rc == 0)) || fail "building libvfio-user failed"
gpio=$(tail -n 1 <<<"$build_out")
need_exe "$gpio"

sock=$work/gpio.sock
peer_run gpio "$gpio" -v "$sock"
wait_socket "$sock" gpio 20
if ! timeout -k 5 60 "$probe" "$sock" >"$work/probe.log" 2>&1; then
  cat "$work/probe.log"
  fail "the probe failed against gpio-pci-idio-16"
fi
cat "$work/probe.log"
peer_alive gpio || fail "gpio-pci-idio-16 ended during the probe"
# The sample ends on SIGINT (its handler makes vfu_run_ctx return EINTR) only between
# clients with -R; SIGTERM ends it at once (killed by the signal, not a clean exit 0), so
# only its being gone is checked.
kill -TERM "${peer_pid[gpio]}" 2>/dev/null
for ((i = 0; i < 100; i++)); do peer_alive gpio || break; sleep 0.05; done
peer_alive gpio && fail "gpio-pci-idio-16 did not end on SIGTERM"
wait "${peer_pid[gpio]}" 2>/dev/null
unset "peer_pid[gpio]"
echo "PASS: $test_name"
