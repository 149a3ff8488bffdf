#!/usr/bin/env bash
# A QEMU 7.2 guest's hardware RNG on vvu-rng-server (device::rng): the guest's Linux virtio-rng
# driver becomes the current hw_random source and the guest reads --bytes from /dev/hwrng.
#
#   QEMU (vhost-user-rng-pci) ── SOCK ── vvu-rng-server --port unix:SOCK
#   QEMU (vhost-user-rng-pci) ── SOCK ── vvu-device ── PCI ── vvu-rng-server --port vvu:PCI   (--device)
#
# Checks: the guest names virtio_rng as its source and reads every byte it asked for, with
# (from 4096 bytes on) at least 200 distinct byte values — random bytes, not a constant;
# vvu-rng-server exits 0 on SIGINT and its JSON counts at least one request and at least the
# bytes the guest read (the kernel reads some more itself, to seed its pool).
# With --device the back-end runs behind vvu-device (virtio-vhost-user), which must also count
# the front-end's session and exit 0.
# Usage: guest-rng.sh --server PATH-TO-vvu-rng-server --guest-dir DIR [--bytes N]
#                     [--device PATH-TO-vvu-device]
# Exit 0 pass, 1 fail, 77 skip (no QEMU; a failure when CI=true).
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

server="" dir="" bytes=4096 VVU_DEVICE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --server) server=$2; shift 2 ;;
    --guest-dir) dir=$2; shift 2 ;;
    --bytes) bytes=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
dev_init "devices.guest-rng${VVU_DEVICE:+.vvu-device}" "$dir"
need_exe "$server"

sock=$work/rng.sock
if [[ -n $VVU_DEVICE ]]; then
  device_start device "$sock" "$work/dev.pci"
  PEER_STDOUT=1 peer_run server "$server" --port "vvu:$work/dev.pci"
  wait_log device "BACKEND_UP" 30
else
  PEER_STDOUT=1 peer_run server "$server" --port "unix:$sock"
  wait_socket "$sock" server 30
fi

guest_boot guest "$sock" "vhost-user-rng-pci,romfile=,vectors=0" "vvu.job=rng vvu.bytes=$bytes"
guest_done guest 150
result=$(grep -a -m1 'VVU-GUEST-RESULT rng' "$work/guest.log" | tr -d '\r')
[[ $result == *"VVU-GUEST-RESULT rng ok bytes=$bytes "* ]] || fail "the guest did not read $bytes bytes: $result"
echo "ok: $(grep -a -m1 'VVU-GUEST-READY job=rng' "$work/guest.log" | tr -d '\r')"
distinct=$(sed -n 's/.* distinct=\([0-9]*\).*/\1/p' <<<"$result")
if ((bytes >= 4096)); then
  ((distinct >= 200)) || fail "$bytes bytes from the guest's /dev/hwrng hold only $distinct distinct values"
fi
echo "ok: the guest read $bytes bytes from /dev/hwrng, $distinct distinct byte values"

peer_stop server INT 10
echo "vvu-rng-server: $(grep -a '^{' "$work/server.out" | tail -n 1)"
served=$(json_field "$work/server.out" bytes)
requests=$(json_field "$work/server.out" requests)
((requests >= 1)) || fail "vvu-rng-server counted no request"
((served >= bytes)) || fail "vvu-rng-server gave $served bytes, fewer than the $bytes the guest read"
echo "ok: vvu-rng-server gave $served bytes in $requests requests (>= the guest's $bytes)"
if [[ -n $VVU_DEVICE ]]; then
  peer_stop device INT 10
  echo "vvu-device: $(grep -a '^{' "$work/device.out" | tail -n 1)"
  [[ $(json_field "$work/device.out" frontends) -ge 1 ]] || fail "vvu-device counted no front-end"
fi
echo "PASS: $test_name"
