#!/usr/bin/env bash
# ctest entry fresh_install_check (label package): runs ops/fresh-install-check.sh on the
# packages of this build tree (issue 18: install both .debs on a fresh Debian 12 root,
# doctor passes, a downstream CMake project builds) when it can; otherwise exits 77
# (ctest: skipped) naming what is missing.
# Usage: fresh_install_test.sh SOURCE_DIR BUILD_DIR
# Runs with CI=true or OUTBOX_FRESH_INSTALL=1 (OUTBOX_FRESH_INSTALL=0 skips it in CI too),
# as root, with the fresh-root tool at FRESH_ROOT, SOURCE_DIR/../shared/tools/fresh-root.sh
# or /work/shared/tools/fresh-root.sh. 1 to 3 minutes once debootstrap's root is cached (148 s
# measured on 2 loaded cores).
set -euo pipefail
src=$1 build=$2

skip() { echo "fresh_install_check SKIPPED: $*"; exit 77; }

want=${OUTBOX_FRESH_INSTALL:-}
if [ -z "$want" ] && [ "${CI:-}" = "true" ]; then want=1; fi
[ "$want" != 0 ] || skip "OUTBOX_FRESH_INSTALL=0"
[ "$want" = 1 ] || skip "runs with CI=true or OUTBOX_FRESH_INSTALL=1 (takes 1 to 3 minutes, needs root)"
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, unshare, chroot)"
if [ -z "${FRESH_ROOT:-}" ]; then
  for candidate in "$(cd "$src/.." && pwd)/shared/tools/fresh-root.sh" /work/shared/tools/fresh-root.sh; do
    if [ -x "$candidate" ]; then FRESH_ROOT=$candidate; break; fi
  done
fi
if [ -z "${FRESH_ROOT:-}" ] || [ ! -x "$FRESH_ROOT" ]; then
  skip "no fresh-root tool (../shared/tools/fresh-root.sh beside the checkout, /work/shared/tools/fresh-root.sh, or set FRESH_ROOT)"
fi
export FRESH_ROOT
export OUTBOX_BUILD_DIR=$build
exec "$src/ops/fresh-install-check.sh"
