#!/usr/bin/env bash
# The relay end to end on a fresh Debian 12 machine, on the embedded defaults:
# installs what is missing, builds, starts a throwaway PostgreSQL and the embedded Kafka
# (`outbox-relay dev-kafka`), migrates, runs the relay, publishes a handful of messages
# in transactions (one rolled back), shows them arriving with kcat, and stops everything
# it started. Exit code 0 iff every committed message arrived and the rolled-back one did not.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1/6 dependencies"
./ops/install-deps.sh

say "2/6 build"
BUILD=${OUTBOX_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target outbox-relay 2>&1 | tail -1
RELAY="$ROOT/$BUILD/relay/outbox-relay"

WORK=$(mktemp -d /tmp/outbox-quickstart.XXXXXX)
chmod 755 "$WORK"  # the PostgreSQL server runs as user postgres when we are root
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/ops/pg-tmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "3/6 throwaway PostgreSQL and embedded Kafka"
DB=$("$ROOT/ops/pg-tmp.sh" start "$WORK/pg" --owner-pid $$)
echo "PostgreSQL: $DB"
"$RELAY" dev-kafka --brokers-file "$WORK/brokers" >"$WORK/kafka.out" 2>"$WORK/kafka.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/brokers" ] && break; sleep 0.1; done
BROKERS=$(cat "$WORK/brokers")
echo "Kafka:      $BROKERS (librdkafka mock cluster, in memory)"

say "4/6 migrate"
"$RELAY" migrate --db "$DB"

say "5/6 run the relay and publish"
"$RELAY" run --db "$DB" --brokers "$BROKERS" --metrics-listen 127.0.0.1:0 >"$WORK/relay.out" 2>"$WORK/relay.log" &
PIDS+=($!)
psql "$DB" -q -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
-- Each message is written in the same transaction as the business change it announces.
CREATE TABLE orders (id int PRIMARY KEY, status text);
BEGIN;
  INSERT INTO orders VALUES (1, 'created');
  SELECT outbox.publish('orders', 'order-1', 'order 1 created', '{"type": "OrderCreated"}');
COMMIT;
BEGIN;
  UPDATE orders SET status = 'paid' WHERE id = 1;
  SELECT outbox.publish('orders', 'order-1', 'order 1 paid', '{"type": "OrderPaid"}');
COMMIT;
BEGIN;
  INSERT INTO orders VALUES (2, 'created');
  SELECT outbox.publish('orders', 'order-2', 'order 2 created', '{"type": "OrderCreated"}');
ROLLBACK;  -- never published
BEGIN;
  INSERT INTO orders VALUES (3, 'created');
  SELECT outbox.publish('orders', 'order-3', 'order 3 created', '{"type": "OrderCreated"}');
  SELECT outbox.publish('orders', 'order-3', 'order 3 shipped', '{"type": "OrderShipped"}');
COMMIT;
SQL
for _ in $(seq 1 100); do
  [ "$(psql "$DB" -Atc 'SELECT count(*) FROM outbox.messages')" = "0" ] && break
  kill -0 "${PIDS[1]}" 2>/dev/null || { echo "the relay stopped:" >&2; cat "$WORK/relay.log" >&2; exit 1; }
  sleep 0.1
done

say "6/6 what arrived in Kafka (read with kcat)"
kcat -C -b "$BROKERS" -t orders -o beginning -e -q \
  -f 'partition=%p offset=%o key=%k value="%s" headers=%h\n' | tee "$WORK/arrived.txt"
"$RELAY" status --db "$DB"

arrived=$(wc -l <"$WORK/arrived.txt")
if [ "$arrived" -eq 4 ] && ! grep -q "order 2" "$WORK/arrived.txt"; then
  echo
  echo "quickstart: ok — 4 committed messages arrived in order per key, the rolled-back one did not."
else
  echo "quickstart: FAILED — expected 4 messages without 'order 2', got $arrived" >&2
  echo "--- relay log ---" >&2
  cat "$WORK/relay.log" >&2
  exit 1
fi
