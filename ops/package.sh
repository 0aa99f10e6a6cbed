#!/usr/bin/env bash
# ops/package.sh [OUTDIR]: builds the Debian packages into OUTDIR (default: packages/):
#   outbox-relay_VERSION_ARCH.deb      the daemon, systemd units, /etc/outbox-relay/relay.conf
#                                      (conffile), man page, the outbox-relay system user
#   outbox-relay-dev_VERSION_ARCH.deb  headers, libraries, CMake config for find_package(outbox)
# (cmake/packaging.cmake). Uses the build tree OUTBOX_BUILD_DIR (default build, as
# ops/test.sh), configuring and building it first. Install with
#   apt-get install ./OUTDIR/outbox-relay_*.deb
# Prints the paths of the packages written, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=$(realpath -m "${1:-packages}")
BUILD=${OUTBOX_BUILD_DIR:-build}
missing=()
for tool in help2man dpkg-shlibdeps dpkg-deb; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "package.sh: missing ${missing[*]}: run ops/install-deps.sh" >&2
  exit 2
fi

# One package.sh at a time per build tree (the package tests and the fresh-install check
# may run side by side under ctest -j): cpack writes into the tree.
mkdir -p "$BUILD"
exec 9>"$BUILD/.package.lock"
flock 9

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$BUILD" && cpack -G DEB -B "$work" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; exit 1; }
for deb in "$work"/*.deb; do
  mv "$deb" "$OUT/"
  echo "$OUT/$(basename "$deb")"
done
