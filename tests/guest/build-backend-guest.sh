#!/usr/bin/env bash
# Builds the initramfs of the back-end guest ("VM B" of the seed's topology): a guest whose PCI
# bus holds VVU functions (QEMU 11's vfio-user-pci in front of vvu-device) and which serves
# them with vvu-forward over VFIO (`--port vfio:BDF`).
#
#   tests/guest/build-backend-guest.sh GUESTDIR VVU_FORWARD
#
# GUESTDIR is the test guest's directory (tests/guest/build-guest.sh GUESTDIR made it: the kernel
# and its unpacked modules are reused). Output: GUESTDIR/initramfs-backend.cpio.gz, rebuilt when
# its stamp (vvu-forward's hash, this script, the kernel) changes.
#
# vvu-forward goes in with the shared libraries it links (ldd) and the host's dynamic loader:
# Debian's libfmt-dev ships no static archive, and the guest kernel runs the host's userspace
# ABI, so the host's own libraries serve. The kernel's VFIO modules come from the kernel
# package, in modules.dep order.
#
# /init (kernel command line keys; console lines start with VVU-GUEST-):
#   vvu.mode=MODE        vvu-forward's --mode (default learn)
#   vvu.args=A,B,...     more vvu-forward arguments, commas for spaces (e.g. --stats,1)
#   vvu.timeout=S        stop vvu-forward (SIGTERM) after S seconds (default 300); it prints its
#                        JSON, then the guest powers off
#   vvu.hugepages=N      2 MiB pages to reserve for the DMA arenas (default 8)
#   vvu.garbage=N        before the driver attaches, /bin/vvu-garbage (vvu-garbage.c) plays a
#                        hostile driver on every VVU function: garbage queues, doorbells and N
#                        random register writes (default 0: none)
#   vvu.job=backend      (the only job of this image)
# Every function 1af4:106b (a VVU function) is bound to vfio-pci and becomes one --port vfio:,
# in bus order.
#   VVU-GUEST-GARBAGE bdf=B writes=W reads=R caps=C   (vvu.garbage: one per function)
#   VVU-GUEST-READY job=backend functions=BDF[,BDF...]
#   VVU-GUEST-FORWARD-EXIT status=N      vvu-forward ended
#   VVU-GUEST-RESULT backend ok|fail status=N
#   VVU-GUEST-RESULT error <reason>
set -euo pipefail

log() { printf 'build-backend-guest: %s\n' "$*" >&2; }
die() { printf 'build-backend-guest: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 GUESTDIR VVU_FORWARD"
GUEST=$(cd "$1" && pwd)
FORWARD=$2
[ -x "$FORWARD" ] || die "no executable $FORWARD"
[ -f "$GUEST/kernel-version" ] || die "no $GUEST/kernel-version (run tests/guest/build-guest.sh $GUEST first)"
KVER=$(cat "$GUEST/kernel-version")
MODDIR=$GUEST/scratch/root-$KVER/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no modules tree $MODDIR"
OUT=$GUEST/initramfs-backend.cpio.gz
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "no $BUSYBOX (apt-get install busybox-static)"

# The VFIO stack, dependencies first. The package has no modules.dep (depmod makes it at
# install time), so each module's own "depends" field says what it needs; a module without a
# file is built in.
module_file() {
  local name=$1
  find "$MODDIR" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit
}
modules=()
add_module() {
  local name=$1 path dep m
  path=$(module_file "$name")
  [ -n "$path" ] || return 0
  for m in "${modules[@]+"${modules[@]}"}"; do [ "$m" = "$path" ] && return 0; done
  # .modinfo holds NUL-separated key=value strings, "depends=a,b" among them.
  for dep in $(tr '\0' '\n' < "$path" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do add_module "$dep"; done
  modules+=("$path")
}
for m in vfio_pci vfio_iommu_type1; do add_module "$m"; done
[ ${#modules[@]} -gt 0 ] || die "no VFIO modules found in $MODDIR"

GARBAGE_SRC=$(cd "$(dirname "$0")" && pwd)/vvu-garbage.c
CC=${CC:-gcc}
stamp=$( { sha256sum "$FORWARD" "$0" "$BUSYBOX" "$GARBAGE_SRC"; "$CC" --version | head -n1; echo "$KVER ${modules[*]}"; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "$OUT is current"
  exit 0
fi

ROOT=$GUEST/scratch/backend-root
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,lib/vvu-modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done
: > "$ROOT/lib/vvu-modules/order"
for path in "${modules[@]}"; do
  name=${path##*/}
  case "$name" in
    *.ko) cp "$path" "$ROOT/lib/vvu-modules/$name" ;;
    *.ko.xz) xz -dc "$path" > "$ROOT/lib/vvu-modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$path" > "$ROOT/lib/vvu-modules/${name%.zst}"; name=${name%.zst} ;;
    *.ko.gz) gzip -dc "$path" > "$ROOT/lib/vvu-modules/${name%.gz}"; name=${name%.gz} ;;
  esac
  echo "$name" >> "$ROOT/lib/vvu-modules/order"
done

"$CC" -static -O2 -Wall -o "$ROOT/bin/vvu-garbage" "$GARBAGE_SRC" || die "cannot build vvu-garbage (gcc, libc6-dev)"

# vvu-forward and what it links, at the same paths.
cp "$FORWARD" "$ROOT/bin/vvu-forward"
while read -r lib; do
  [ -n "$lib" ] || continue
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done < <(ldd "$FORWARD" | awk '/=> \// { print $3 } /^[ \t]*\/.*ld-linux/ { print $1 }')

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
exec </dev/console >/dev/console 2>&1
bye() { sync; poweroff -f; sleep 5; }
fail() { echo "VVU-GUEST-RESULT error $*"; bye; }

mode=learn args= tmo=300 pages=8 garbage=0
for kv in $(cat /proc/cmdline); do
  case "$kv" in
    vvu.mode=*) mode=${kv#*=} ;;
    vvu.args=*) args=$(echo "${kv#*=}" | tr ',' ' ') ;;
    vvu.timeout=*) tmo=${kv#*=} ;;
    vvu.hugepages=*) pages=${kv#*=} ;;
    vvu.garbage=*) garbage=${kv#*=} ;;
  esac
done

# vfio_iommu_type1 refuses MSI-X on an IOMMU without interrupt remapping unless told otherwise
# (QEMU's intel-iommu runs with intremap=off here).
while read -r m; do
  opts=
  [ "$m" = vfio_iommu_type1.ko ] && opts=allow_unsafe_interrupts=1
  insmod /lib/vvu-modules/$m $opts || fail "insmod $m"
done < /lib/vvu-modules/order
echo "$pages" > /proc/sys/vm/nr_hugepages
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 1 ] || fail "no huge pages"

functions= ports=
for dev in /sys/bus/pci/devices/*; do
  [ "$(cat $dev/vendor)" = 0x1af4 ] && [ "$(cat $dev/device)" = 0x106b ] || continue
  bdf=${dev##*/}
  [ "$garbage" -gt 0 ] && /bin/vvu-garbage "$bdf" "$garbage" 0x5eed${#functions}
  [ -e "$dev/driver" ] && echo "$bdf" > "$dev/driver/unbind"
  echo vfio-pci > "$dev/driver_override"
  echo "$bdf" > /sys/bus/pci/drivers_probe
  [ -e "$dev/iommu_group" ] || fail "$bdf has no IOMMU group"
  functions=${functions:+$functions,}$bdf
  ports="$ports --port vfio:$bdf"
done
[ -n "$functions" ] || fail "no VVU function (1af4:106b) on the PCI bus"
echo "VVU-GUEST-READY job=backend functions=$functions"

# shellcheck disable=SC2086
/bin/vvu-forward --mode "$mode" $ports $args &
pid=$!
( sleep "$tmo"; kill -TERM $pid 2>/dev/null ) &
wait $pid
status=$?
echo "VVU-GUEST-FORWARD-EXIT status=$status"
if [ $status -eq 0 ]; then echo "VVU-GUEST-RESULT backend ok status=0"; else echo "VVU-GUEST-RESULT backend fail status=$status"; fi
bye
EOF
chmod +x "$ROOT/init"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible -R 0:0 2>/dev/null) \
  | gzip -n -9 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$stamp" > "$OUT.stamp"
log "built $OUT ($(du -h "$OUT" | cut -f1); modules: $(tr '\n' ' ' < "$ROOT/lib/vvu-modules/order"))"
