#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (labels unit, integration, e2e).
# Extra arguments go to ctest, e.g. `./ops/test.sh -L unit` or `-R Relay`.
# Environment: OUTBOX_BUILD_DIR (default build), OUTBOX_TEST_BROKERS (a real Kafka
# instead of the in-process mock cluster), OUTBOX_TEST_TIME_SCALE (stretch deadlines).
set -euo pipefail
cd "$(dirname "$0")/.."

./ops/install-deps.sh

BUILD=${OUTBOX_BUILD_DIR:-build}
WERROR=OFF
if [ "${CI:-}" = "true" ]; then WERROR=ON; fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DOUTBOX_WERROR="$WERROR" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
cd "$BUILD"
ctest --output-on-failure -j "$(nproc)" "$@"
