#!/usr/bin/env bash
# Build the vvu interop test guest: a Debian 12 cloud kernel plus a busybox initramfs whose /init
# loads the virtio-net driver stack, configures eth0 from the kernel command line, pings a peer
# (or only answers pings), prints one machine-readable result line and powers off. With
# vvu.job=rng or vvu.job=disk on the kernel command line it drives a virtio-rng or virtio-blk
# device instead (see the /init below and README.md). With vvu.role=stream-send / stream-recv
# two guests exchange self-checking raw Ethernet frames (vvu-stream.c, built here with
# `gcc -static` into the initramfs).
#
#   tests/guest/build-guest.sh OUTDIR
#
# Outputs (idempotent: each step is skipped when its output exists and is current):
#   OUTDIR/vmlinuz               the kernel
#   OUTDIR/initramfs.cpio.gz     busybox + the virtio modules + /init + /bin/vvu-stream
#   OUTDIR/kernel-version        e.g. 6.1.0-56-cloud-amd64
#   OUTDIR/scratch/              downloaded .deb and its extracted tree (kept as a cache)
#
# Environment: VVU_GUEST_KPKG=linux-image-... pins the kernel package instead of resolving the
# current one with apt-cache.
#
# Needs root only for `apt-get` (update, download, install of busybox-static/cpio when missing),
# and gcc with a static libc (Debian: gcc, libc6-dev) for vvu-stream.
set -euo pipefail

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { printf 'build-guest: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
STREAM_SRC=$HERE/vvu-stream.c
mkdir -p "$OUT/scratch"
OUT=$(cd "$OUT" && pwd)
SCRATCH=$OUT/scratch

# Modules /init loads, in dependency order (virtio_net needs net_failover needs failover).
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
# The virtio PCI transport alone (the first five above), and the drivers of the other jobs,
# loaded after it only by those jobs. rng-core and ext4 (which mounts ext2) are built into
# Debian's cloud kernel; a kernel where they are modules would need them listed here.
BASE_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci"
JOB_MODULES="virtio_rng virtio_blk"

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    timeout 300 apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=1
  fi
}

# --- host tools: busybox-static and cpio (Debian packages) -------------------------------------
need_pkgs=""
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=" busybox-static"
command -v cpio >/dev/null 2>&1 || need_pkgs+=" cpio"
if [ -n "$need_pkgs" ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages:$need_pkgs (install them, or run as root)"
  apt_update_once
  log "apt-get install$need_pkgs"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends $need_pkgs >&2 \
    || die "apt-get install$need_pkgs failed"
fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found after installing busybox-static"
CC=${CC:-gcc}
command -v "$CC" >/dev/null 2>&1 || die "no C compiler $CC for vvu-stream (apt-get install gcc libc6-dev)"
[ -f "$STREAM_SRC" ] || die "no $STREAM_SRC"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || \
  { ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' || die "$BUSYBOX is not static"; }

# --- kernel package -----------------------------------------------------------------------------
resolve_kpkg() {
  if [ -n "${VVU_GUEST_KPKG:-}" ]; then echo "$VVU_GUEST_KPKG"; return; fi
  local pkg
  # The metapackage names the current ABI (linux-image-6.1.0-N-cloud-amd64).
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' 2>/dev/null \
          | awk '{print $1}' | sort -V | tail -n1)
  fi
  echo "$pkg"
}

if [ -f "$OUT/kernel-version" ] && [ -f "$OUT/vmlinuz" ] && [ -z "${VVU_GUEST_KPKG:-}" ]; then
  KVER=$(cat "$OUT/kernel-version")
  log "kernel $KVER already built (delete $OUT/vmlinuz to refresh)"
else
  KPKG=$(resolve_kpkg)
  if [ -z "$KPKG" ]; then
    apt_update_once
    KPKG=$(resolve_kpkg)
  fi
  [ -n "$KPKG" ] || die "cannot resolve linux-image-6.1.0-*-cloud-amd64 with apt-cache"
  KVER=${KPKG#linux-image-}
  log "kernel package $KPKG"

  deb=$(find "$SCRATCH" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
  if [ -z "$deb" ]; then
    log "apt-get download $KPKG"
    if ! (cd "$SCRATCH" && timeout 600 apt-get download -q "$KPKG" >&2); then
      apt_update_once
      (cd "$SCRATCH" && timeout 600 apt-get download -q "$KPKG" >&2) || die "apt-get download $KPKG failed"
    fi
    deb=$(find "$SCRATCH" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
    [ -n "$deb" ] || die "apt-get download left no ${KPKG}_*.deb in $SCRATCH"
  fi

  if [ ! -f "$SCRATCH/root-$KVER/.extracted" ]; then
    log "dpkg-deb -x $(basename "$deb")"
    rm -rf "$SCRATCH/root-$KVER"
    mkdir -p "$SCRATCH/root-$KVER"
    dpkg-deb -x "$deb" "$SCRATCH/root-$KVER"
    touch "$SCRATCH/root-$KVER/.extracted"
  fi
  [ -f "$SCRATCH/root-$KVER/boot/vmlinuz-$KVER" ] || die "no boot/vmlinuz-$KVER in $deb"
  cp "$SCRATCH/root-$KVER/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
  mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
  echo "$KVER" > "$OUT/kernel-version"
fi
KROOT=$SCRATCH/root-$KVER
MODDIR=$KROOT/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no modules tree $MODDIR (delete $OUT/vmlinuz and $OUT/kernel-version to re-extract)"

# --- /init ---------------------------------------------------------------------------------------
# Kept as a quoted heredoc: nothing in it is expanded at build time.
read -r -d '' INIT <<'EOF' || true
#!/bin/sh
# vvu test guest /init (busybox). Kernel command line keys:
#   vvu.role=ping|responder   ping: ping the peer, print the result, power off (default)
#                             responder: only answer pings until vvu.timeout, then power off
#   vvu.ip=A.B.C.D/N          this guest's address (required)
#   vvu.peer=A.B.C.D          the address to ping (role=ping)
#   vvu.mac=xx:..:xx          pick the interface with this MAC (default: eth0)
#   vvu.count=N               pings to send after the first reply (default 5)
#   vvu.interval=S            seconds between pings (busybox -i, default 1; may be fractional)
#   vvu.wait=S                seconds to wait for the first reply (default 60)
#   vvu.linger=S              role=ping: keep answering S seconds after the result (default 0)
#   vvu.timeout=S             role=responder: power off after S seconds (default 120)
#   vvu.role=stream-send|stream-recv  raw Ethernet frames (EtherType 0x88b5, /bin/vvu-stream):
#                             stream-recv announces itself and checks every frame it receives;
#                             stream-send waits (vvu.wait) for it, then sends for vvu.seconds
#                             (default 20) at vvu.rate frames/s (default 1000); vvu.hold=S
#                             (stream-recv, default 0): check each frame S s after it came
#   vvu.job=net|rng|disk      what the guest does (default net: the keys above). rng: read
#                             vvu.bytes (default 4096) from /dev/hwrng. disk: vvu.phase=format
#                             makes an ext2 file system on /dev/vda and writes files of random
#                             bytes; vvu.phase=check mounts it and reads them back.
#   vvu.files=N               disk job: N files f1..fN of vvu.bytes each instead of the four
#                             fixed ones; phase=format then keeps the guest's writeback going
#                             while it writes (small dirty limits) and prints a line per file
# Console lines for the host (prefix VVU-GUEST-):
#   VVU-GUEST-READY role=R ip=A iface=I mac=M
#   VVU-GUEST-RUN count=N interval=S      (role=ping: the measured run starts; ping's own lines follow as they come)
#   VVU-GUEST-RESULT ping ok|fail sent=N received=M first_reply_s=T
#   VVU-GUEST-RESULT responder done uptime_s=T
#   VVU-GUEST-STREAM-PROGRESS received=N corrupt=C dup=D reordered=R last_seq=K   (stream-recv, 1/s)
#   VVU-GUEST-STREAM-GAP first=K count=N   (stream-recv, at the end: a run of frames that never came)
#   VVU-GUEST-STREAM received=N corrupt=C missing=M reordered=R dup=D last_seq=K total=T gaps=G
#   VVU-GUEST-RESULT stream ok|fail status=S  (stream-recv; ok: frames came, none corrupt,
#                             duplicated or reordered)
#   VVU-GUEST-STREAM-SENDING sent=N enobufs=E   (stream-send, 1/s)
#   VVU-GUEST-STREAM-SENT sent=N seconds=S enobufs=E
#   VVU-GUEST-RESULT stream-send ok|fail status=S
#   VVU-GUEST-RESULT error <reason>
#   VVU-GUEST-READY job=rng source=virtio_rng.0
#   VVU-GUEST-RESULT rng ok|fail bytes=N wanted=N distinct=D sha256=H
#   VVU-GUEST-READY job=disk phase=P sectors=N queues=Q cpus=C
#   VVU-GUEST-FILE phase=P name=F bytes=N sha256=H [written=H]  (format: sha256 as read back
#                             through the device, written= from the page cache before)
#   VVU-GUEST-RESULT disk ok|fail phase=P files=N runs=N[,N...]  (blk-mq runs of each hardware queue)
#   VVU-GUEST-WRITING files=N bytes=N     (phase=format with vvu.files: the writes start)
#   VVU-GUEST-WROTE k=K name=F            (phase=format with vvu.files: file K of N is on the disk)
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
exec </dev/console >/dev/console 2>&1

say() { echo "$*"; }
bye() { sync; poweroff -f; sleep 5; }
fail() { say "VVU-GUEST-RESULT error $*"; bye; }

role=ping ip= peer= mac= count=5 interval=1 wait=60 linger=0 tmo=120 rate=1000 seconds=20 hold=0
job=net bytes=4096 phase=check files=
for kv in $(cat /proc/cmdline); do
  case "$kv" in
    vvu.role=*) role=${kv#*=} ;;
    vvu.ip=*) ip=${kv#*=} ;;
    vvu.peer=*) peer=${kv#*=} ;;
    vvu.mac=*) mac=${kv#*=} ;;
    vvu.count=*) count=${kv#*=} ;;
    vvu.interval=*) interval=${kv#*=} ;;
    vvu.wait=*) wait=${kv#*=} ;;
    vvu.linger=*) linger=${kv#*=} ;;
    vvu.timeout=*) tmo=${kv#*=} ;;
    vvu.rate=*) rate=${kv#*=} ;;
    vvu.seconds=*) seconds=${kv#*=} ;;
    vvu.hold=*) hold=${kv#*=} ;;
    vvu.job=*) job=${kv#*=} ;;
    vvu.bytes=*) bytes=${kv#*=} ;;
    vvu.phase=*) phase=${kv#*=} ;;
    vvu.files=*) files=${kv#*=} ;;
  esac
done

# The virtio PCI transport, then the drivers named (modules built into the kernel are absent).
load_modules() {
  for m in $(cat /etc/vvu-modules-base) "$@"; do
    [ -f /lib/vvu-modules/$m.ko ] || continue
    insmod /lib/vvu-modules/$m.ko || fail "insmod $m"
  done
}

# rng: read from the hardware RNG once the virtio one is its current source.
job_rng() {
  load_modules virtio_rng
  i=0 src=
  while [ $i -lt 100 ]; do
    src=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    case "$src" in virtio_rng*) break ;; esac
    i=$((i+1)); sleep 0.1
  done
  case "$src" in virtio_rng*) ;; *) fail "rng: no virtio_rng source (rng_current=${src:-none})" ;; esac
  say "VVU-GUEST-READY job=rng source=$src"
  timeout 60 head -c "$bytes" /dev/hwrng > /tmp/rng.bin
  got=$(($(wc -c < /tmp/rng.bin)))
  # Distinct byte values: about 256 for a few KiB of random bytes, 1 for a device that
  # returns zeros.
  distinct=$(od -An -v -tu1 /tmp/rng.bin | tr -s ' ' '\n' | grep -v '^$' | sort -u | wc -l)
  sum=$(sha256sum /tmp/rng.bin | cut -d' ' -f1)
  if [ "$got" -eq "$bytes" ]; then res=ok; else res=fail; fi
  say "VVU-GUEST-RESULT rng $res bytes=$got wanted=$bytes distinct=$distinct sha256=$sum"
  bye
}

# disk: file name:size pairs (a tail shorter than a block, many blocks, a few MiB), each
# written and read on CPU (index mod cpus), so that with 2 CPUs both of virtio-blk's request
# queues carry I/O.
DISK_FILES="a:4097 b:65536 c:1048576 d:3145728"
# vvu.files=N: f1..fN of vvu.bytes each (a write phase as long as a test needs).
if [ -n "$files" ]; then
  DISK_FILES= k=1
  while [ $k -le "$files" ]; do DISK_FILES="$DISK_FILES f$k:$bytes"; k=$((k+1)); done
fi
sums() { # one VVU-GUEST-FILE line per file; returns 1 if one is missing or differs from written=
  k=0 rc=0
  for f in $DISK_FILES; do
    name=${f%%:*}
    cpu=$((k % cpus)); k=$((k+1))
    [ -f /mnt/$name ] || { say "VVU-GUEST-FILE phase=$phase name=$name missing"; rc=1; continue; }
    sum=$(taskset -c $cpu sha256sum /mnt/$name | cut -d' ' -f1)
    written=
    if [ -f /tmp/written.$name ]; then
      written=" written=$(cat /tmp/written.$name)"
      [ "$(cat /tmp/written.$name)" = "$sum" ] || rc=1
    fi
    say "VVU-GUEST-FILE phase=$phase name=$name bytes=$(($(wc -c < /mnt/$name))) sha256=$sum$written"
  done
  return $rc
}
job_disk() {
  load_modules virtio_blk
  i=0
  while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
  [ -b /dev/vda ] || fail "disk: no /dev/vda"
  cpus=$(nproc)
  # Through a scheduler every request is queued and its hardware queue run, which blk-mq's
  # debugfs counts (runs= below); with none, most requests are issued directly and a queue
  # that carried I/O may show no run at all.
  echo mq-deadline > /sys/block/vda/queue/scheduler || fail "disk: no mq-deadline scheduler"
  say "VVU-GUEST-READY job=disk phase=$phase sectors=$(cat /sys/block/vda/size) queues=$(ls /sys/block/vda/mq | wc -l) cpus=$cpus"
  mkdir -p /mnt
  case "$phase" in
    format)
      mke2fs -q -F /dev/vda >/tmp/mke2fs.out 2>&1 || { cat /tmp/mke2fs.out; fail "disk: mke2fs /dev/vda"; }
      mount -t ext2 /dev/vda /mnt || fail "disk: mount /dev/vda"
      if [ -n "$files" ]; then
        # Writeback from the first MiB dirty on, so the disk sees requests all along the writes
        # (not only at each file's sync).
        echo 1048576 > /proc/sys/vm/dirty_background_bytes
        echo 4194304 > /proc/sys/vm/dirty_bytes
        say "VVU-GUEST-WRITING files=$files bytes=$bytes"
      fi
      k=0
      for f in $DISK_FILES; do
        cpu=$((k % cpus)); k=$((k+1))
        taskset -c $cpu sh -c "head -c ${f#*:} /dev/urandom > /mnt/${f%%:*} && sync -d /mnt/${f%%:*}" ||
          fail "disk: writing /mnt/${f%%:*}"
        # What was written, from the page cache (compared with what reads back).
        sha256sum /mnt/${f%%:*} | cut -d' ' -f1 > /tmp/written.${f%%:*}
        [ -n "$files" ] && say "VVU-GUEST-WROTE k=$k name=${f%%:*}"
      done
      sync
      # Read back through the device, not from the page cache.
      echo 3 > /proc/sys/vm/drop_caches ;;
    check)
      mount -t ext2 -o ro /dev/vda /mnt || fail "disk: mount /dev/vda" ;;
    *) fail "unknown vvu.phase=$phase" ;;
  esac
  if sums; then res=ok; else res=fail; fi
  umount /mnt || res=fail
  # How often blk-mq ran each hardware queue this boot (its debugfs; 6.1 counts no requests
  # per queue): with mq-deadline (above) a queue that carried I/O was run.
  mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
  runs=$(cat /sys/kernel/debug/block/vda/hctx*/run 2>/dev/null | tr '\n' ',')
  say "VVU-GUEST-RESULT disk $res phase=$phase files=$(echo $DISK_FILES | wc -w) runs=${runs%,}"
  bye
}

case "$job" in
  net) ;;
  rng) job_rng ;;
  disk) job_disk ;;
  *) fail "unknown vvu.job=$job" ;;
esac

for m in $(cat /etc/vvu-modules); do
  [ -f /lib/vvu-modules/$m.ko ] || continue      # built into this kernel
  insmod /lib/vvu-modules/$m.ko || fail "insmod $m"
done

# The driver probes asynchronously: wait (bounded) for the interface to appear.
iface=
i=0
while [ $i -lt 100 ]; do
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    if [ -n "$mac" ]; then
      [ "$(cat $d/address)" = "$mac" ] && iface=$n
    elif [ "$n" = eth0 ]; then
      iface=$n
    fi
  done
  [ -n "$iface" ] && break
  i=$((i+1)); sleep 0.1
done
[ -n "$iface" ] || fail "no network interface (mac=${mac:-any})"
[ -n "$ip" ] || fail "no vvu.ip= on the kernel command line"

# IPv4 only: no router solicitations or DAD frames on the segment, so the only traffic is
# ARP and the pings (easier to reason about in a back-end's counters and captures).
for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > "$f"; done 2>/dev/null
ip link set lo up
ip addr add "$ip" dev "$iface" || fail "ip addr add $ip"
ip link set "$iface" up || fail "ip link set $iface up"
say "VVU-GUEST-READY role=$role ip=$ip iface=$iface mac=$(cat /sys/class/net/$iface/address)"

case "$role" in
  responder)
    # The kernel answers ICMP echo by itself; we only bound our lifetime.
    sleep "$tmo"
    say "VVU-GUEST-RESULT responder done uptime_s=$(cut -d' ' -f1 /proc/uptime)"
    bye ;;
  stream-recv|stream-send)
    # vvu-stream prints its own lines (VVU-GUEST-STREAM...); its status makes the result.
    if [ "$role" = stream-recv ]; then
      vvu-stream recv "$iface" --wait "$wait" --idle 10 --hold "$hold"; rc=$? what=stream
    else
      vvu-stream send "$iface" --wait "$wait" --rate "$rate" --seconds "$seconds"; rc=$? what=stream-send
    fi
    if [ $rc -eq 0 ]; then res=ok; else res=fail; fi
    say "VVU-GUEST-RESULT $what $res status=$rc"
    [ "$linger" != 0 ] && sleep "$linger"
    bye ;;
  ping) ;;
  *) fail "unknown vvu.role=$role" ;;
esac
[ -n "$peer" ] || fail "no vvu.peer= on the kernel command line"

# Phase 1: one ping a second until the first reply (the link, the back-end and the peer's
# driver may all still be starting), bounded by vvu.wait.
t0=$(cut -d' ' -f1 /proc/uptime)
n=0 up=0
while [ $n -lt "$wait" ]; do
  if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then up=1; break; fi
  n=$((n+1))
done
t1=$(cut -d' ' -f1 /proc/uptime)
first=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
if [ $up -eq 0 ]; then
  say "VVU-GUEST-RESULT ping fail sent=0 received=0 first_reply_s=none"
  bye
fi

# Phase 2: the measured run. Its output reaches the console line by line as the replies come
# (a host can follow the run, e.g. act at a given seq=), and is kept for the result line.
say "VVU-GUEST-RUN count=$count interval=$interval"
ping -c "$count" -i "$interval" -W 1 "$peer" 2>&1 | tee /tmp/ping.out
out=$(cat /tmp/ping.out)
sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
recv=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
sent=${sent:-0} recv=${recv:-0}
if [ "$sent" -gt 0 ] && [ "$recv" -eq "$sent" ]; then res=ok; else res=fail; fi
say "VVU-GUEST-RESULT ping $res sent=$sent received=$recv first_reply_s=$first"
[ "$linger" != 0 ] && sleep "$linger"
bye
EOF

# --- initramfs -----------------------------------------------------------------------------------
# Rebuild when anything that goes into the archive changes, this script included.
stamp=$( { echo "$KVER"; echo "$MODULES $JOB_MODULES"; sha256sum "$0" "$BUSYBOX" "$STREAM_SRC" | cut -d" " -f1; "$CC" --version | head -n1; } \
        | sha256sum | cut -d" " -f1)
if [ -f "$OUT/initramfs.cpio.gz" ] && [ "$(cat "$OUT/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "initramfs up to date"
else
  log "building initramfs"
  IR=$SCRATCH/initramfs
  rm -rf "$IR"
  mkdir -p "$IR"/{bin,sbin,proc,sys,dev,etc,tmp,lib/vvu-modules}
  cp "$BUSYBOX" "$IR/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$IR/bin/$applet"
  done
  # The stream tool, static like busybox (the initramfs has no libc).
  "$CC" -static -O2 -Wall -Wextra -o "$IR/bin/vvu-stream" "$STREAM_SRC" >&2 \
    || die "$CC -static $STREAM_SRC failed (a static libc is in libc6-dev)"
  strip "$IR/bin/vvu-stream" 2>/dev/null || true
  for m in $MODULES $JOB_MODULES; do
    # Module file names use '-' or '_' interchangeably in some trees.
    ko=$(find "$MODDIR/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \
          -o -name "$m.ko.gz" -o -name "${m//_/-}.ko" -o -name "${m//_/-}.ko.xz" \) | head -n1)
    if [ -z "$ko" ]; then
      if grep -qE "/(${m}|${m//_/-})\.ko$" "$MODDIR/modules.builtin" 2>/dev/null; then
        log "module $m is built into $KVER: skipped"; continue
      fi
      die "module $m not found under $MODDIR"
    fi
    case "$ko" in
      *.ko.xz)  xz -dc "$ko" > "$IR/lib/vvu-modules/$m.ko" ;;
      *.ko.zst) zstd -dcq "$ko" > "$IR/lib/vvu-modules/$m.ko" ;;
      *.ko.gz)  gzip -dc "$ko" > "$IR/lib/vvu-modules/$m.ko" ;;
      *)        cp "$ko" "$IR/lib/vvu-modules/$m.ko" ;;
    esac
  done
  echo "$MODULES" > "$IR/etc/vvu-modules"
  echo "$BASE_MODULES" > "$IR/etc/vvu-modules-base"
  printf '%s\n' "$INIT" > "$IR/init"
  chmod 755 "$IR/init"
  # No /dev/console node in the archive (that would need mknod): /init mounts devtmpfs and
  # reopens its stdio on /dev/console first thing.
  # Fixed mtimes, owners, order and no gzip timestamp: the same inputs give the same bytes.
  find "$IR" -exec touch -h -d @0 {} +
  (cd "$IR" && find . -print0 | LC_ALL=C sort -z \
     | cpio --null -o -H newc --owner=0:0 --reproducible --quiet) \
    | gzip -9n > "$OUT/initramfs.cpio.gz.tmp"
  mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
  echo "$stamp" > "$OUT/initramfs.stamp"
fi

log "done: $OUT/vmlinuz $OUT/initramfs.cpio.gz (kernel $KVER)"
