#!/usr/bin/env bash
# bench/latency-cpu.sh RATE SECONDS [outbox-relay run options...] — starts one relay on a
# running PostgreSQL and mock Kafka, runs bench-latency at RATE msg/s for SECONDS and
# prints its p50/p99 and the COMMIT's p99 with where the CPU went meanwhile (in ticks of
# 1/CLK_TCK s): the relay process, its PostgreSQL sessions, all postgres processes, the
# whole machine (of cores × SECONDS). For telling a relay bound from a saturated machine
# (docs/performance.md, "What bounds each figure"); bench/run.sh is the full method.
#
# Environment: OUTBOX_BENCH_DB (a migrated database, as its owner), OUTBOX_BENCH_BROKERS,
# RELAY (default build2/relay/outbox-relay), BUILD (default build2: bench-latency).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/latency-cpu.sh RATE SECONDS [relay options...]" >&2; exit 2; }
: "${OUTBOX_BENCH_DB:?set OUTBOX_BENCH_DB}" "${OUTBOX_BENCH_BROKERS:?set OUTBOX_BENCH_BROKERS}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELAY=${RELAY:-$ROOT/build2/relay/outbox-relay}
BUILD=${BUILD:-$ROOT/build2}
DB=$OUTBOX_BENCH_DB
rate=$1 secs=$2; shift 2
psql "$DB" -X -q -c "VACUUM outbox.messages" >/dev/null
log=$(mktemp)
t0=$(psql "$DB" -X -q -t -A -c "SELECT now()")
"$RELAY" run --db "$DB" --brokers "$OUTBOX_BENCH_BROKERS" --log-level warn "$@" 2>"$log" &
rp=$!
trap 'kill -TERM $rp 2>/dev/null || true; wait $rp 2>/dev/null || true; rm -f "$log"' EXIT
pids=""  # the loop's session and the delete session
for _ in $(seq 1 100); do
  pids=$(psql "$DB" -X -q -t -A -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
                                     WHERE application_name LIKE 'outbox-relay%' AND backend_start >= '$t0'
                                     HAVING count(*) >= 2")
  [ -n "$pids" ] && break
  sleep 0.05
done
[ -n "$pids" ] || { echo "the relay's two sessions did not appear; its log:" >&2; cat "$log" >&2; exit 1; }
ticks() { for f in "$@"; do cat "$f" 2>/dev/null || true; done | awk '{s += $14 + $15} END {print s + 0}'; }
backends() { for p in $pids; do cat "/proc/$p/stat" 2>/dev/null || true; done | awk '{s += $14 + $15} END {print s + 0}'; }
# Backends that exited meanwhile (the publishers') count in the postmaster's children time.
postgres() { for p in $(pgrep -x postgres); do cat "/proc/$p/stat" 2>/dev/null || true; done |
             awk '{s += $14 + $15 + $16 + $17} END {print s + 0}'; }
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
r0=$(ticks /proc/$rp/stat) b0=$(backends) a0=$(postgres) m0=$(busy)
res=$("$BUILD/bench/bench-latency" --db "$DB" --brokers "$OUTBOX_BENCH_BROKERS" --topic bench --rate "$rate" --seconds "$secs")
r1=$(ticks /proc/$rp/stat) b1=$(backends) a1=$(postgres) m1=$(busy)
echo "rate=$rate p50_ms=$(jq .p50_ms <<<"$res") p99_ms=$(jq .p99_ms <<<"$res") commit_p99_ms=$(jq .commit_p99_ms <<<"$res")" \
     "relay=$((r1 - r0)) relay_sessions=$((b1 - b0)) postgres=$((a1 - a0)) machine=$((m1 - m0))" \
     "of $(( $(nproc) * $(getconf CLK_TCK) * secs ))+ ticks"
