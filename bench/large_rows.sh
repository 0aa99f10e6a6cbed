#!/usr/bin/env bash
# bench/large_rows.sh [ROWS] [MIB] — the relay's peak memory with large rows pending
# (issue 13): ROWS rows (100) of MIB MiB (10) each, over 16 keys, drained by one relay
# running as a relay login. Prints a Markdown table and writes
# bench/results/large_rows.json. What bounds the figure: the in-flight cap (256 MiB of
# key + payload + headers) and the claim cap (32 MiB per claim), docs/performance.md.
# Takes about 20 s.
#
# Starts a throwaway PostgreSQL and `outbox-relay dev-kafka`. The schema owner raises
# outbox.settings.max_payload_bytes to fit the rows; the producer client is told
# message.max.bytes to match (--kafka-conf).
# Environment: OUTBOX_BENCH_BUILD_DIR (default build-bench), OUTBOX_BENCH_SKIP_BUILD=1.
set -euo pipefail

ROWS=${1:-100}
MIB=${2:-10}
case "$ROWS$MIB" in *[!0-9]*|'') echo "usage: bench/large_rows.sh [ROWS] [MIB]" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${OUTBOX_BENCH_BUILD_DIR:-$ROOT/build-bench}
log() { echo "[large-rows $(date +%H:%M:%S)] $*" >&2; }

if [ "${OUTBOX_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building $BUILD (Release)"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target outbox-relay >/dev/null
fi
RELAY=$BUILD/relay/outbox-relay
[ -x "$RELAY" ] || { echo "large_rows: $RELAY missing" >&2; exit 1; }

WORK=$(mktemp -d /tmp/outbox-large-rows.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$ROOT/ops/pg-tmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PG=$("$ROOT/ops/pg-tmp.sh" start "$WORK/pg" --owner-pid $$)
"$RELAY" migrate --db "$PG" >/dev/null 2>&1
BYTES=$((MIB * 1048576))
psql "$PG" -q -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE bench_relay LOGIN IN ROLE outbox_relay" \
  -c "CREATE ROLE bench_producer LOGIN IN ROLE outbox_producer" \
  -c "UPDATE outbox.settings SET max_payload_bytes = $((BYTES + 1048576))" >/dev/null
RELAY_DB=${PG/user=postgres/user=bench_relay}
PRODUCER_DB=${PG/user=postgres/user=bench_producer}

"$RELAY" dev-kafka --brokers-file "$WORK/brokers" >/dev/null 2>"$WORK/kafka.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/brokers" ] && break; sleep 0.1; done
[ -s "$WORK/brokers" ] || { echo "large_rows: dev-kafka did not start" >&2; exit 1; }
BROKERS=$(cat "$WORK/brokers")

log "publishing $ROWS rows of $MIB MiB as bench_producer"
for i in $(seq 0 $((ROWS - 1))); do
  psql "$PRODUCER_DB" -q -v ON_ERROR_STOP=1 \
    -c "SELECT outbox.publish('large', 'k$((i % 16))', convert_to(repeat('x', $BYTES), 'UTF8'))" >/dev/null
done
PENDING_MB=$(psql "$PG" -tAq -c "SELECT round(sum(octet_length(payload)) / 1048576.0) FROM outbox.messages")

"$RELAY" run --db "$RELAY_DB" --brokers "$BROKERS" --kafka-conf "message.max.bytes=$((BYTES + 1048576))" \
  2>"$WORK/relay.log" &
RELAY_PID=$!
PIDS+=($RELAY_PID)
START=$(date +%s.%N)
log "relay pid $RELAY_PID draining"
for _ in $(seq 1 600); do
  left=$(psql "$PG" -tAq -c "SELECT count(*) FROM outbox.messages")
  [ "$left" = 0 ] && break
  kill -0 "$RELAY_PID" 2>/dev/null || { tail -20 "$WORK/relay.log" >&2; exit 1; }
  sleep 0.5
done
END=$(date +%s.%N)
[ "$left" = 0 ] || { echo "large_rows: $left rows still pending after 300 s" >&2; tail -20 "$WORK/relay.log" >&2; exit 1; }
DEAD=$(psql "$PG" -tAq -c "SELECT count(*) FROM outbox.dead_letters")
HWM_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$RELAY_PID/status")
RSS_MB=$(echo "scale=1; $HWM_KB / 1024" | bc -l)
DRAIN_S=$(echo "scale=2; ($END - $START) / 1" | bc -l)
# The relay's own bounds: 256 MiB in flight (librdkafka holds a copy of each record) plus
# one claim's result — 32 MiB and at most one row beyond — held twice while it is decoded
# (libpq's result and the rows).
BOUND_MB=$((256 + 2 * (32 + MIB)))

mkdir -p "$ROOT/bench/results"
cat >"$ROOT/bench/results/large_rows.json" <<EOF
{"rows": $ROWS, "row_mib": $MIB, "pending_mib": $PENDING_MB, "dead_letters": $DEAD,
 "drain_seconds": $DRAIN_S, "relay_peak_rss_mb": $RSS_MB, "relay_bound_mb": $BOUND_MB}
EOF
cat <<EOF

| large rows ($ROWS × $MIB MiB, one relay) | value |
|---|---|
| pending before the drain | $PENDING_MB MiB |
| drained in | $DRAIN_S s (dead letters: $DEAD) |
| relay peak RSS (VmHWM) | $RSS_MB MB |
| in-flight cap + 2 × (claim cap + one row) | $BOUND_MB MiB |

JSON: bench/results/large_rows.json
EOF
