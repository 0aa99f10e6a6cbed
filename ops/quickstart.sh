#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine: money moves from bank A to bank B, two
# databases, no distributed transaction (docs/transfer.md).
#
# Installs what is missing, builds, starts a throwaway PostgreSQL (databases bank_a and
# bank_b) and the embedded Kafka (`outbox-relay dev-kafka`), migrates, runs the relay and
# bank B's consumer, and drives a few thousand concurrent transfers while showing
# progress (committed / published / consumed / lag). Midway it kills the relay with
# kill -9 and restarts it, to show that nothing is lost. Then it reconciles (对账):
# money conserved, every transfer credited exactly once, no credit without a debit.
# The last line starts with `reconciled:`. Stops everything it started.
#
# Exit code 0 iff reconciliation passed. Environment: OUTBOX_BUILD_DIR (default build),
# QUICKSTART_TRANSFERS (default 2000), QUICKSTART_RATE (transfers/s, default 250).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$SECONDS

TRANSFERS=${QUICKSTART_TRANSFERS:-2000}
RATE=${QUICKSTART_RATE:-250}
TTY=false
[ -t 1 ] && TTY=true

say() {
  if $TTY; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi
}

say "1/7 dependencies"
./ops/install-deps.sh

say "2/7 build"
BUILD=${OUTBOX_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target outbox-relay transfer-bank-a transfer-bank-b transfer-reconcile \
  2>&1 | tail -1
RELAY="$ROOT/$BUILD/relay/outbox-relay"
BANK_A="$ROOT/$BUILD/examples/transfer/transfer-bank-a"
BANK_B="$ROOT/$BUILD/examples/transfer/transfer-bank-b"
RECONCILE="$ROOT/$BUILD/examples/transfer/transfer-reconcile"
BUILT=$SECONDS

WORK=$(mktemp -d /tmp/outbox-quickstart.XXXXXX)
chmod 755 "$WORK"  # the PostgreSQL server runs as user postgres when we are root
RELAY_PID="" KAFKA_PID="" DRIVER_PID="" CONSUMER_PIDS=()
stop_pid() {  # stop_pid PID: SIGTERM, then wait for it
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  stop_pid "$DRIVER_PID"
  for p in "${CONSUMER_PIDS[@]}"; do stop_pid "$p"; done
  stop_pid "$RELAY_PID"
  stop_pid "$KAFKA_PID"
  "$ROOT/ops/pg-tmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "quickstart: FAILED — $*" >&2
  for f in relay relay2 consumer-1 driver kafka; do
    [ -s "$WORK/$f.log" ] && { echo "--- $f.log (last lines) ---" >&2; tail -20 "$WORK/$f.log" >&2; }
  done
  exit 1
}

say "3/7 throwaway PostgreSQL (two databases) and embedded Kafka"
PG=$("$ROOT/ops/pg-tmp.sh" start "$WORK/pg" --owner-pid $$)
psql "$PG" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE bank_a" -c "CREATE DATABASE bank_b" >/dev/null
DB_A=${PG/dbname=postgres/dbname=bank_a}
DB_B=${PG/dbname=postgres/dbname=bank_b}
echo "bank A: $DB_A"
echo "bank B: $DB_B"
"$RELAY" dev-kafka --brokers-file "$WORK/brokers" >"$WORK/kafka.out" 2>"$WORK/kafka.log" &
KAFKA_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/brokers" ] && break; sleep 0.1; done
[ -s "$WORK/brokers" ] || fail "dev-kafka did not start"
BROKERS=$(cat "$WORK/brokers")
echo "Kafka:  $BROKERS (librdkafka mock cluster, in memory)"

say "4/7 migrate and open the accounts"
"$RELAY" migrate --db "$DB_A" >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; fail "migrate bank_a"; }
"$RELAY" migrate --db "$DB_B" >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; fail "migrate bank_b"; }
echo "migrated: bank_a has the outbox (outbox.publish), bank_b the inbox (dedup for its consumers)"
# Everything runs as the documented logins, never as the owner (docs/security.md): the
# owner only migrates and creates the banks' tables with their GRANTs (setup).
psql "$PG" -q -v ON_ERROR_STOP=1 -c "CREATE ROLE quickstart_relay LOGIN IN ROLE outbox_relay" \
  -c "CREATE ROLE quickstart_bank_a LOGIN IN ROLE outbox_producer" \
  -c "CREATE ROLE quickstart_bank_b LOGIN IN ROLE outbox_consumer" >/dev/null
DB_A_RELAY=${DB_A/user=postgres/user=quickstart_relay}
DB_A_APP=${DB_A/user=postgres/user=quickstart_bank_a}
DB_B_APP=${DB_B/user=postgres/user=quickstart_bank_b}
echo "logins: quickstart_relay (outbox_relay), quickstart_bank_a (outbox_producer), quickstart_bank_b (outbox_consumer)"
"$BANK_A" setup --db "$DB_A" --accounts 50 --opening 1000000 --grant-to quickstart_bank_a
"$BANK_B" setup --db "$DB_B" --accounts 50 --opening 0 --grant-to quickstart_bank_b

start_relay() {  # start_relay LOGNAME
  "$RELAY" run --db "$DB_A_RELAY" --brokers "$BROKERS" --poll-interval 50ms --rebalance-interval 200ms \
    --metrics-listen 127.0.0.1:0 --egress-allow 127.0.0.1 >"$WORK/$1.out" 2>"$WORK/$1.log" &
  RELAY_PID=$!
}
start_consumer() {  # start_consumer N
  "$BANK_B" run --db "$DB_B_APP" --brokers "$BROKERS" --group bank-b --topic transfers \
    --kafka-consumer session.timeout.ms=6000 --kafka-consumer heartbeat.interval.ms=500 \
    --kafka-consumer fetch.wait.max.ms=10 >"$WORK/consumer-$1.out" 2>"$WORK/consumer-$1.log" &
  CONSUMER_PIDS+=($!)
}

say "5/7 $TRANSFERS transfers from 8 threads; kill -9 of the relay on the way"
start_relay relay
start_consumer 1   # one group member: several would rebalance while the demo runs
"$BANK_A" run --db "$DB_A_APP" --transfers "$TRANSFERS" --concurrency 8 --rate "$RATE" --to-accounts 50 \
  >"$WORK/driver.out" 2>"$WORK/driver.log" &
DRIVER_PID=$!

progress() {  # sets COMMITTED PUBLISHED CONSUMED LAG
  local line
  line=$("$RECONCILE" progress --bank-a "$DB_A_APP" --bank-b "$DB_B_APP" --outbox-db "$DB_A_RELAY" 2>/dev/null) ||
    return 0
  eval "$(echo "$line" | sed -E 's/([a-z]+)=([0-9]+)/\U\1\E=\2;/g')"
}
COMMITTED=0 PUBLISHED=0 CONSUMED=0 LAG=0
RELAY_STATE=up KILLED_AT="" LAST_LINE=0 KILL_AT=$((TRANSFERS * 35 / 100)) DOWN_SINCE=0
show() {
  local text
  text=$(printf 'committed %5d   published %5d   consumed %5d   lag %5d   relay %s' \
    "$COMMITTED" "$PUBLISHED" "$CONSUMED" "$LAG" "$RELAY_STATE")
  if $TTY; then
    printf '\r\033[K%s' "$text"
  elif [ $((SECONDS - LAST_LINE)) -ge 1 ] || [ "${1:-}" = force ]; then
    echo "$text"
    LAST_LINE=$SECONDS
  fi
}
event() {  # an event line that stays on screen
  if $TTY; then printf '\r\033[K'; fi
  echo ">>> $*"
}

DEADLINE=$((SECONDS + 90))
while :; do
  progress
  if [ -z "$KILLED_AT" ] && [ "$PUBLISHED" -ge "$KILL_AT" ]; then
    kill -9 "$RELAY_PID"
    wait "$RELAY_PID" 2>/dev/null || true
    KILLED_AT=$PUBLISHED RELAY_STATE=KILLED DOWN_SINCE=$COMMITTED
    event "kill -9 relay (pid $RELAY_PID) at $PUBLISHED published: bank A keeps committing, the outbox fills up"
  fi
  if [ "$RELAY_STATE" = KILLED ] && { [ "$COMMITTED" -ge $((DOWN_SINCE + RATE)) ] ||
       ! kill -0 "$DRIVER_PID" 2>/dev/null; }; then
    start_relay relay2
    RELAY_STATE=up
    event "relay restarted (pid $RELAY_PID): it resumes from the outbox table, $((COMMITTED - PUBLISHED)) waiting"
  fi
  show
  if [ -n "$DRIVER_PID" ] && ! kill -0 "$DRIVER_PID" 2>/dev/null; then
    wait "$DRIVER_PID" || fail "the bank A driver failed"
    DRIVER_PID=""
  fi
  if [ -z "$DRIVER_PID" ] && [ "$RELAY_STATE" = up ] && [ "$LAG" -eq 0 ] && [ "$PUBLISHED" -eq "$COMMITTED" ]; then
    break
  fi
  [ "$SECONDS" -lt "$DEADLINE" ] || { show force; echo; fail "not drained after 90 s"; }
  if [ "$RELAY_STATE" = up ] && ! kill -0 "$RELAY_PID" 2>/dev/null; then fail "the relay stopped"; fi
  sleep 0.2
done
show force
$TTY && echo

say "6/7 stop the relay and the consumer (SIGTERM: they finish what is in hand)"
stop_pid "$RELAY_PID"; RELAY_PID=""
for p in "${CONSUMER_PIDS[@]}"; do stop_pid "$p"; done
CONSUMER_PIDS=()
credited=0 duplicates=0
for f in "$WORK"/consumer-*.out; do
  c=$(grep -o 'credited=[0-9]*' "$f" | tail -1 | cut -d= -f2)
  d=$(grep -o 'duplicates=[0-9]*' "$f" | tail -1 | cut -d= -f2)
  credited=$((credited + ${c:-0})) duplicates=$((duplicates + ${d:-0}))
done
echo "stopped."

say "7/7 reconcile (对账)"
set +e
"$RECONCILE" check --bank-a "$DB_A_APP" --bank-b "$DB_B_APP" --outbox-db "$DB_A_RELAY" --wait 10s \
  >"$WORK/reconcile.out" 2>&1
RC=$?
set -e
field() { grep -o "$1=[0-9]*" "$WORK/driver.out" | cut -d= -f2; }
echo "transfers:  $(field committed) committed; $(field aborted) rolled back on purpose after outbox.publish" \
  "(never published); $(field rejected) rejected (insufficient funds)"
echo "relay:      killed with kill -9 at $KILLED_AT published and restarted; nothing lost"
echo "bank B:     the consumer credited $credited; its inbox skipped $duplicates redelivered duplicates"
echo "time:       demo $((SECONDS - BUILT)) s, dependencies and build $((BUILT - START)) s"
if [ "$RC" -ne 0 ]; then
  cat "$WORK/reconcile.out"
  fail "reconciliation found discrepancies (exit $RC)"
fi
cat "$WORK/reconcile.out"
