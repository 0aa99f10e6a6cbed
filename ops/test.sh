#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (labels unit, integration, e2e,
# sim, package: the last, fresh_install_check, runs only with CI=true or
# OUTBOX_FRESH_INSTALL=1); then builds a second tree under AddressSanitizer +
# UndefinedBehaviorSanitizer and runs the unit, integration and sim tests there.
# Extra arguments go to ctest, e.g. `./ops/test.sh -L unit` or `-R Relay` (the sanitizer
# stage then runs only with OUTBOX_SANITIZERS=1).
# Environment: OUTBOX_BUILD_DIR (default build), OUTBOX_TEST_BROKERS (a real Kafka
# instead of the in-process mock cluster), OUTBOX_TEST_TIME_SCALE (stretch deadlines),
# OUTBOX_SANITIZERS (1 = always run the sanitizer stage, 0 = never).
set -euo pipefail
cd "$(dirname "$0")/.."

./ops/install-deps.sh

BUILD=${OUTBOX_BUILD_DIR:-build}
WERROR=OFF
if [ "${CI:-}" = "true" ]; then WERROR=ON; fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DOUTBOX_WERROR="$WERROR" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" "$@")

SANITIZERS=${OUTBOX_SANITIZERS:-}
if [ -z "$SANITIZERS" ]; then
  if [ $# -eq 0 ]; then SANITIZERS=1; else SANITIZERS=0; fi
fi
if [ "$SANITIZERS" = 1 ]; then
  echo "test.sh: sanitizer stage (address,undefined) in $BUILD-asan" >&2
  # No -Werror here: GCC 12 warns falsely (maybe-uninitialized in libstdc++'s <regex>)
  # when sanitizers are on; the first build already holds our code to -Werror.
  cmake -S . -B "$BUILD-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_WERROR=OFF \
    -DOUTBOX_SANITIZE=address,undefined >/dev/null
  cmake --build "$BUILD-asan" -j "$(nproc)"
  # Leaks are reported for our code; those inside third-party libraries are suppressed by
  # name in tests/lsan.supp (each with the test that shows it).
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  (cd "$BUILD-asan" && ctest --output-on-failure -j "$(nproc)" -L 'unit|integration|sim' "$@")
fi
