#!/usr/bin/env bash
# interop.vfio_user.hostile.vvu-device: hostile vfio-user clients against vvu-device's PCI
# socket; vvu-device must answer each with an error or a close, keep serving new clients, stay
# alive, and exit 0 on SIGTERM.
#   hostile-device.sh --device PATH/vvu-device --hostile PATH/vvu-test-vfio-hostile
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/interop/vfio_user/lib.sh
source "$here/lib.sh"

device="" hostile=""
while (($#)); do
  case $1 in
    --device) device=$2; shift 2 ;;
    --hostile) hostile=$2; shift 2 ;;
    *) echo "usage: $0 --device EXE --hostile EXE" >&2; exit 2 ;;
  esac
done
[[ -n $device && -n $hostile ]] || { echo "usage: $0 --device EXE --hostile EXE" >&2; exit 2; }
vfu_init interop.vfio_user.hostile.vvu-device
need_exe "$device"
need_exe "$hostile"

peer_run vvu-device "$device" --vhost-user "$work/vhost.sock" --pci "$work/pci.sock"
wait_socket "$work/pci.sock" vvu-device 20
if ! timeout -k 5 150 "$hostile" "$work/pci.sock" >"$work/hostile.log" 2>&1; then
  cat "$work/hostile.log"
  fail "a hostile case was not refused, or vvu-device stopped serving"
fi
cat "$work/hostile.log"
peer_alive vvu-device || fail "vvu-device ended during the hostile run"
peer_stop vvu-device TERM 10
echo "PASS: $test_name"
