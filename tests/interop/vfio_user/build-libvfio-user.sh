#!/usr/bin/env bash
# Builds libvfio-user (the vfio-user interop peer, /work/shared/peers.md) into the build tree:
#   build-libvfio-user.sh BUILD_DIR
# untars ../shared/peers/libvfio-user-efd091b.tar.gz (relative to the project root) into
# BUILD_DIR/src, then `meson setup` + `ninja` into BUILD_DIR/build. A stamp records the tarball's
# checksum, so a rerun with the same tarball only checks that the sample is there.
# Prints the path of samples/gpio-pci-idio-16 on its last line.
# Exit 77 (skip) when the tarball, meson, ninja or json-c is missing — 1 under CI=true.
set -uo pipefail
SKIP=77
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
tarball=${LIBVFIO_USER_TARBALL:-$root/../shared/peers/libvfio-user-efd091b.tar.gz}
out=${1:?usage: build-libvfio-user.sh BUILD_DIR}

skip() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: libvfio-user: $* (CI=true: what would be a skip is an error)" >&2
    exit 1
  fi
  echo "SKIP: libvfio-user: $*"
  exit $SKIP
}

[[ -f $tarball ]] || skip "no source tarball at $tarball (see /work/shared/peers.md)"
for tool in meson ninja pkg-config sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool not found (scripts/install-deps.sh peers)"
done
pkg-config --exists json-c || skip "json-c development files not found (libjson-c-dev)"
pkg-config --exists cmocka || skip "cmocka development files not found (libcmocka-dev)"

sum=$(sha256sum "$tarball" | cut -d' ' -f1)
sample=$out/build/samples/gpio-pci-idio-16
if [[ -x $sample && -f $out/stamp && $(cat "$out/stamp") == "$sum" ]]; then
  echo "libvfio-user: cached build in $out/build"
  echo "$sample"
  exit 0
fi

set -e
rm -rf -- "$out"
mkdir -p "$out/src"
tar -xzf "$tarball" -C "$out/src"
srcdir=$out/src/libvfio-user
[[ -f $srcdir/meson.build ]] || { echo "FAIL: libvfio-user: no meson.build in $srcdir" >&2; exit 1; }
echo "libvfio-user: meson setup (log: $out/build.log)"
if ! meson setup "$out/build" "$srcdir" >"$out/build.log" 2>&1 || ! ninja -C "$out/build" >>"$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log" >&2
  echo "FAIL: libvfio-user: the build failed (log: $out/build.log)" >&2
  exit 1
fi
[[ -x $sample ]] || { echo "FAIL: libvfio-user: $sample was not built" >&2; exit 1; }
echo "$sum" >"$out/stamp"
echo "libvfio-user: built in $out/build"
echo "$sample"
