#!/usr/bin/env bash
# bench/drain-once.sh N [outbox-relay run options...] — fills the outbox with N rows
# (256-byte payloads, 10,000 keys, as bench/run.sh's fill) on a running PostgreSQL and
# mock Kafka, drains them with one `outbox-relay run` and prints one line: seconds, rate,
# the relay's CPU seconds and
# peak RSS. For comparing relay options or binaries quickly, several runs
# alternating (docs/performance.md, "Pipelined drain"); bench/run.sh is the full method.
#
# Environment: OUTBOX_BENCH_DB (a migrated database, as its owner), OUTBOX_BENCH_BROKERS,
# RELAY (default build2/relay/outbox-relay), SAMPLE=1 (also samples pg_stat_activity of
# the relay's sessions every ~10 ms into $WORK/samples.txt), WORK (default /tmp),
# LOG_LEVEL (default info; debug logs each claim's lanes and rows in
# $WORK/drain-once-relay.log).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/drain-once.sh N [relay options...]" >&2; exit 2; }
: "${OUTBOX_BENCH_DB:?set OUTBOX_BENCH_DB}" "${OUTBOX_BENCH_BROKERS:?set OUTBOX_BENCH_BROKERS}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELAY=${RELAY:-$ROOT/build2/relay/outbox-relay}
WORK=${WORK:-/tmp}
DB=$OUTBOX_BENCH_DB
n=$1; shift
psqlq() { psql "$DB" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }

psqlq "UPDATE outbox.settings SET notify = false" >/dev/null
done=0
while [ "$done" -lt "$n" ]; do
  c=$(( n - done < 50000 ? n - done : 50000 ))
  psqlq "SELECT count(outbox.publish('bench', 'key-' || (i % 10000), decode(repeat('ab', 256), 'hex')))
         FROM generate_series($done + 1, $done + $c) AS i" >/dev/null
  done=$(( done + c ))
done
psqlq "UPDATE outbox.settings SET notify = true" >/dev/null
psqlq "VACUUM ANALYZE outbox.messages" >/dev/null

t0=$(date +%s.%N)
"$RELAY" run --db "$DB" --brokers "$OUTBOX_BENCH_BROKERS" --metrics-listen 127.0.0.1:0 --log-level "${LOG_LEVEL:-info}" "$@" \
  2>"$WORK/drain-once-relay.log" &
rp=$!
if [ -n "${SAMPLE:-}" ]; then
  for _ in $(seq 1 300); do
    psql "$DB" -X -q -t -A -c "SELECT application_name, state, coalesce(wait_event_type, 'cpu'), coalesce(wait_event, '')
      FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay%'"
    sleep 0.01
  done >"$WORK/samples.txt" &
fi
port=""
for _ in $(seq 1 200); do
  port=$(grep -o 'serving /metrics.*port=[0-9]*' "$WORK/drain-once-relay.log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { cat "$WORK/drain-once-relay.log" >&2; kill "$rp"; exit 1; }
while p=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^outbox_relay_published_total/ {printf "%d", $2}');
      [ -z "$p" ] || [ "$p" -lt "$n" ]; do
  sleep 0.05
done
until [ "$(psqlq "SELECT NOT EXISTS (SELECT 1 FROM outbox.messages)")" = t ]; do sleep 0.05; done
t1=$(date +%s.%N)
ticks=$(awk '{print $14 + $15}' "/proc/$rp/stat")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$rp/status")
kill -TERM "$rp"
wait "$rp" || true
echo "drain rows=$n seconds=$(echo "$t1 - $t0" | bc -l | cut -c1-6) msgs_per_s=$(echo "$n / ($t1 - $t0)" | bc -l | cut -d. -f1) relay_cpu_s=$(echo "$ticks / $(getconf CLK_TCK)" | bc -l | cut -c1-5) relay_peak_rss_mb=$(( hwm_kb / 1024 ))"
