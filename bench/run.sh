#!/usr/bin/env bash
# bench/run.sh [--quick] — relay throughput, latency and footprint against the ceilings
# of its own parts (PostgreSQL, Kafka), measured in one run on the same servers.
#
# Starts a throwaway PostgreSQL (fsync on, synchronous_commit on) and `outbox-relay
# dev-kafka`, or uses OUTBOX_BENCH_DB / OUTBOX_BENCH_BROKERS when set (the database must
# allow outbox.set_lane_count and VACUUM, i.e. the outbox owner). Prints a Markdown table
# and writes bench/results/latest.json. --quick: smaller volumes, under ~5 minutes.
# Method and interpretation: docs/performance.md.
#
# Environment: OUTBOX_BENCH_BUILD_DIR (default build-bench), OUTBOX_BENCH_RELAY_ARGS
# (extra `outbox-relay run` options, e.g. "--batch-size 1000"), OUTBOX_BENCH_SKIP_BUILD=1,
# OUTBOX_BENCH_RELAY_BIN (measure another outbox-relay binary, e.g. a before/after copy).
# OUTBOX_BENCH_BASELINE_BIN=/path/to/old/outbox-relay: also measure that binary in the same
# run, on the same servers (stage 5b: drain of the same rows, latency at 1,000 and 5,000
# msg/s, the rate step), reported next to the current binary's figures (JSON "baseline").
# It only runs `outbox-relay run` against the schema the current binary migrated; if it
# cannot, the stage records why and the bench goes on. OUTBOX_BENCH_BASELINE_ARGS: extra
# `run` options for it (RELAY_ARGS are not passed: it may not know them);
# OUTBOX_BENCH_BASELINE_COMMIT: its commit for the report (default: HEAD of the git
# checkout holding the binary, if any).
set -euo pipefail

QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${OUTBOX_BENCH_BUILD_DIR:-$ROOT/build-bench}
RELAY_ARGS=${OUTBOX_BENCH_RELAY_ARGS:-}
PAYLOAD=256

if [ "$QUICK" = 1 ]; then
  N_DRAIN=100000; N_KAFKA=100000; PGB_SECONDS=5; NOTIFY_ROUNDS=2; LAT_SECONDS=10; LAT_OFF_SECONDS=5
  N_SCALE=60000; N_SCALE_16K=5000; N_CONSUMER=20000; CONSUMER_E2E_SECONDS=10; NEW_TOPIC_ROUNDS=5
  STEP_PRE_S=5; STEP_POST_S=10
else
  N_DRAIN=1000000; N_KAFKA=1000000; PGB_SECONDS=10; NOTIFY_ROUNDS=3; LAT_SECONDS=30; LAT_OFF_SECONDS=10
  N_SCALE=300000; N_SCALE_16K=20000; N_CONSUMER=50000; CONSUMER_E2E_SECONDS=30; NEW_TOPIC_ROUNDS=20
  STEP_PRE_S=10; STEP_POST_S=20
fi
# Rate step (stage 5a): 1,000 msg/s for STEP_PRE_S, then 5,000 msg/s for STEP_POST_S.
STEP_FROM=1000; STEP_TO=5000
# N_CONSUMER: the mock broker keeps ~5 MiB per partition; 100,000 records on one 4-partition
# topic (~8 MiB each) cannot be read back and bench-consumer hung until its 10-minute timeout.

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

# --- build -------------------------------------------------------------------------
if [ "${OUTBOX_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g >/dev/null
  cmake --build "$BUILD" -j2 --target outbox-relay bench-kafka bench-pg-delete bench-latency bench-consumer \
    bench-new-topic >/dev/null
fi
RELAY=${OUTBOX_BENCH_RELAY_BIN:-$BUILD/relay/outbox-relay}
BK=$BUILD/bench/bench-kafka
BD=$BUILD/bench/bench-pg-delete
BL=$BUILD/bench/bench-latency
BC=$BUILD/bench/bench-consumer
BNT=$BUILD/bench/bench-new-topic

# --- servers -----------------------------------------------------------------------
WORK=$(mktemp -d /tmp/outbox-bench.XXXXXX)
chmod o+x "$WORK"
KAFKA_PID=""
RELAY_PID=""
cleanup() {
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
  [ -n "$KAFKA_PID" ] && kill "$KAFKA_PID" 2>/dev/null || true
  [ -z "${OUTBOX_BENCH_DB:-}" ] && "$ROOT/ops/pg-tmp.sh" stop "$WORK/pg" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PG_SETTINGS="-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=15min -c wal_compression=off"
if [ -n "${OUTBOX_BENCH_DB:-}" ]; then
  DB=$OUTBOX_BENCH_DB
  PG_DESC="given (OUTBOX_BENCH_DB)"
else
  DB=$(PG_TMP_OPTS="$PG_SETTINGS" "$ROOT/ops/pg-tmp.sh" start "$WORK/pg" --owner-pid $$)
  PG_DESC="throwaway PostgreSQL 15: $PG_SETTINGS"
fi
if [ -n "${OUTBOX_BENCH_BROKERS:-}" ]; then
  BROKERS=$OUTBOX_BENCH_BROKERS
  KAFKA_DESC="given (OUTBOX_BENCH_BROKERS)"
else
  "$RELAY" dev-kafka --brokers-file "$WORK/brokers" --log-level warn >/dev/null 2>"$WORK/dev-kafka.log" &
  KAFKA_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/brokers" ] && break; sleep 0.1; done
  BROKERS=$(cat "$WORK/brokers")
  KAFKA_DESC="outbox-relay dev-kafka (librdkafka mock cluster, 1 broker)"
fi
"$RELAY" migrate --db "$DB" --log-level warn >/dev/null

psqlq() { psql "$DB" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Fills the outbox with N rows of SIZE-byte payloads, 10,000 keys, in transactions of
# 50,000 rows (NOTIFY off while filling: no relay runs), then VACUUM ANALYZE.
fill() {
  local n=$1 size=$2 done=0 chunk
  psqlq "UPDATE outbox.settings SET notify = false" >/dev/null
  while [ "$done" -lt "$n" ]; do
    chunk=$(( n - done < 50000 ? n - done : 50000 ))
    psqlq "SELECT count(outbox.publish('bench', 'key-' || (i % 10000), decode(repeat('ab', $size), 'hex')))
           FROM generate_series($done + 1, $done + $chunk) AS i" >/dev/null
    done=$(( done + chunk ))
  done
  psqlq "UPDATE outbox.settings SET notify = true" >/dev/null
  psqlq "VACUUM ANALYZE outbox.messages" >/dev/null
}

# The binary start_relay runs and its extra options: the current relay unless stage 5b
# (the baseline) sets them for its own runs.
RUN_BIN=$RELAY
RUN_ARGS=$RELAY_ARGS
# Starts RUN_BIN in the background (RELAY_PID, METRICS_PORT); returns 1 (relay stopped,
# RELAY_PID empty) if it does not serve /metrics within 10 s.
try_start_relay() {
  : >"$WORK/relay.log"
  # shellcheck disable=SC2086
  "$RUN_BIN" run --db "$DB" --brokers "$BROKERS" --metrics-listen 127.0.0.1:0 --log-level info \
    $RUN_ARGS "$@" 2>"$WORK/relay.log" &
  RELAY_PID=$!
  METRICS_PORT=""
  for _ in $(seq 1 200); do
    METRICS_PORT=$(grep -o 'serving /metrics.*port=[0-9]*' "$WORK/relay.log" | grep -o '[0-9]*$' || true)
    [ -n "$METRICS_PORT" ] && break
    kill -0 "$RELAY_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$METRICS_PORT" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
    return 1
  fi
}
start_relay() {
  try_start_relay "$@" || { cat "$WORK/relay.log" >&2; echo "relay did not start" >&2; exit 1; }
}
published() {
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^outbox_relay_published_total/ {printf "%d", $2}'
}
# Stops the relay; sets RELAY_CPU_S (user + sys until now) and RELAY_RSS_MB (peak RSS).
stop_relay() {
  local ticks hwm rc=0
  if ! kill -0 "$RELAY_PID" 2>/dev/null; then
    wait "$RELAY_PID" || rc=$?
    tail -20 "$WORK/relay.log" >&2
    echo "the relay (pid $RELAY_PID, $RUN_BIN) exited before it was stopped, status $rc" >&2
    RELAY_PID=""
    exit 1
  fi
  ticks=$(awk '{print $14 + $15}' "/proc/$RELAY_PID/stat")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$RELAY_PID/status")
  kill -TERM "$RELAY_PID"
  wait "$RELAY_PID" || true
  RELAY_PID=""
  RELAY_CPU_S=$(echo "$ticks / $(getconf CLK_TCK)" | bc -l)
  RELAY_RSS_MB=$(echo "scale=1; $hwm / 1024" | bc -l)
}
# Drains what fill() left: starts a relay, waits until everything is published and the
# table is empty; sets DRAIN_S, DRAIN_RATE, RELAY_CPU_S, RELAY_RSS_MB.
drain() {
  local n=$1; shift
  local before after t0 t1
  before=$("$BK" offsets --brokers "$BROKERS" --topic bench 2>/dev/null || echo 0)
  t0=$(date +%s.%N)
  start_relay "$@"
  local p
  while p=$(published); [ -z "$p" ] || [ "$p" -lt "$n" ]; do sleep 0.05; done
  until [ "$(psqlq "SELECT NOT EXISTS (SELECT 1 FROM outbox.messages)")" = t ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  stop_relay
  after=$("$BK" offsets --brokers "$BROKERS" --topic bench)
  DRAIN_S=$(echo "$t1 - $t0" | bc -l)
  DRAIN_RATE=$(echo "$n / $DRAIN_S" | bc -l | cut -d. -f1)
  if [ $(( after - before )) -lt "$n" ]; then
    echo "drain: Kafka end offsets grew by $(( after - before )), expected $n" >&2; exit 1
  fi
}
jget() { jq -r "$2" <<<"$1"; }
# settle_ms STEP_JSON STEADY_P99: the end of the last 100 ms post-step window whose p99 is
# above the steady STEP_TO stage's p99 (or that received nothing), from the step; 0 if none.
# How long the relay took to reach the tail it keeps at the new rate (docs/performance.md).
settle_ms() {
  jq -r --argjson steady "${2:-null}" '
    if $steady == null or (.step_window_p99_ms | type) != "array" then "null" else
      [.step_window_p99_ms | to_entries[] | select(.value < 0 or .value > $steady) | .key] |
      if length == 0 then 0 else (max + 1) * 100 end end' <<<"$1" 2>/dev/null || echo null
}
f() { printf '%.*f' "$2" "$1"; }
# jnum JSON PATH: the number at PATH, or null (absent, not JSON, or negative = no samples).
jnum() {
  local v
  v=$(jq -r "($2) as \$v | if (\$v | type) == \"number\" and \$v >= 0 then \$v else null end" <<<"$1" 2>/dev/null || true)
  echo "${v:-null}"
}
# jval JSON PATH: the value at PATH as compact JSON, or null.
jval() {
  local v
  v=$(jq -c "($2) // null" <<<"$1" 2>/dev/null || true)
  echo "${v:-null}"
}
# The rate-step latency run (stage 5a) against the running relay; prints bench-latency's JSON.
# VACUUM first: the 5,000 msg/s stage before it leaves ~5000 x LAT_SECONDS dead rows, and the
# 1,000 msg/s part sets the threshold of the catch-up time.
step_stage() {
  psqlq "VACUUM outbox.messages" >/dev/null
  "$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate "$STEP_FROM" --step-rate "$STEP_TO" \
    --step-after-s "$STEP_PRE_S" --seconds $(( STEP_PRE_S + STEP_POST_S ))
}
relay_ticks() { awk '{print $14 + $15}' "/proc/$RELAY_PID/stat"; }
# cpu_us_per_msg ticks_before messages: the running relay's user + sys CPU since then, per message.
cpu_us_per_msg() { echo "scale=2; ($(relay_ticks) - $1) * 1000000 / $(getconf CLK_TCK) / $2" | bc -l; }

# --- 1. PostgreSQL ceilings + NOTIFY ------------------------------------------------
# pgbench scripts: 1 or 100 outbox.publish calls per transaction, 256-byte payloads.
HEX=$(head -c $PAYLOAD /dev/zero | tr '\0' 'a' | xxd -p | tr -d '\n')
{
  echo '\set k random(1, 10000)'
  echo "SELECT outbox.publish('bench.pg', 'key-' || :k, '\\x$HEX'::bytea);"
} >"$WORK/pub1.sql"
{
  echo 'BEGIN;'
  for _ in $(seq 1 100); do
    echo '\set k random(1, 10000)'
    echo "SELECT outbox.publish('bench.pg', 'key-' || :k, '\\x$HEX'::bytea);"
  done
  echo 'COMMIT;'
} >"$WORK/pub100.sql"
# pgb_measure script rows_per_tx: one pgbench run (4 clients, PGB_SECONDS); sets PGB_RATE
# (rows/s), PGB_ROWS (rows committed) and PGB_WAL_PER_MSG (pg_current_wal_lsn() growth
# over the run / PGB_ROWS: whatever else writes WAL meanwhile is counted too).
pgb_measure() {
  local lsn0 tps txns walb
  lsn0=$(psqlq "SELECT pg_current_wal_lsn()")
  pgbench "$DB" -n -M prepared -c 4 -j 2 -T "$PGB_SECONDS" -f "$1" >"$WORK/pgbench.out" 2>&1
  walb=$(psqlq "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
  tps=$(awk -F'= ' '/^tps/ {print $2}' "$WORK/pgbench.out" | awk '{print $1}')
  txns=$(awk -F': ' '/number of transactions actually processed/ {print $2}' "$WORK/pgbench.out" | cut -d/ -f1)
  PGB_RATE=$(echo "$tps * $2" | bc -l | cut -d. -f1)
  PGB_ROWS=$(( txns * $2 ))
  PGB_WAL_PER_MSG=$(echo "scale=1; $walb / $PGB_ROWS" | bc -l)
}
declare -A R
# NOTIFY on and off alternate, NOTIFY_ROUNDS times each; the median of each is kept
# (other load on the machine comes and goes).
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
declare -A RUNS WALB
for round in $(seq 1 "$NOTIFY_ROUNDS"); do
  for notify in true false; do
    psqlq "UPDATE outbox.settings SET notify = $notify" >/dev/null
    for per in 1 100; do
      log "publish ceiling round $round notify=$notify: $per per transaction, 4 clients, ${PGB_SECONDS}s"
      pgb_measure "$WORK/pub$per.sql" "$per"
      RUNS[${per}_$notify]+="$PGB_RATE "
      # WAL bytes per message, publish only (no relay runs here, so no DELETE counted).
      if [ "$notify" = true ]; then WALB[$per]+="$PGB_WAL_PER_MSG "; fi
    done
  done
done
for key in "${!RUNS[@]}"; do
  R[pub${key%_*}_notify_${key#*_}]=$(tr ' ' '\n' <<<"${RUNS[$key]}" | grep . | median)
  R[pub${key%_*}_notify_${key#*_}_runs]=${RUNS[$key]% }
done
psqlq "UPDATE outbox.settings SET notify = true" >/dev/null
R[ceiling_pg_insert]=${R[pub100_notify_true]}
for per in 1 100; do R[walb_table_$per]=$(tr ' ' '\n' <<<"${WALB[$per]}" | grep . | median); done

log "delete ceiling on the $(psqlq "SELECT count(*) FROM outbox.messages") rows just published"
psqlq "VACUUM ANALYZE outbox.messages" >/dev/null
DEL=$("$BD" --db "$DB" --batch 500)
R[ceiling_pg_delete]=$(jget "$DEL" .delete_rows_per_s)
R[pg_claim_delete]=$(jget "$DEL" .claim_delete_rows_per_s)
R[delete_rows]=$(jget "$DEL" .rows)
psqlq "VACUUM outbox.messages" >/dev/null
# The claim query before and after issue 8, each on a freshly filled table of the same size.
log "claim + DELETE, current claim query, $N_SCALE rows"
fill "$N_SCALE" $PAYLOAD
R[pg_claim_delete_new]=$(jget "$("$BD" --db "$DB" --batch 500)" .claim_delete_rows_per_s)
log "claim + DELETE, pre-issue-8 claim query (primary-key plan), $N_SCALE rows"
fill "$N_SCALE" $PAYLOAD
R[pg_claim_delete_old]=$(jget "$("$BD" --db "$DB" --batch 500 --old-claim 1)" .claim_delete_rows_per_s)
psqlq "VACUUM outbox.messages" >/dev/null

# --- 2. Kafka ceiling ---------------------------------------------------------------
log "Kafka ceiling: $N_KAFKA records"
KC=$("$BK" ceiling --brokers "$BROKERS" --topic bench.ceiling --count "$N_KAFKA" --payload $PAYLOAD)
R[ceiling_kafka]=$(jget "$KC" .msgs_per_s)

# --- 3. relay drain -----------------------------------------------------------------
log "filling $N_DRAIN rows"
fill "$N_DRAIN" $PAYLOAD
log "draining $N_DRAIN rows with the relay"
drain "$N_DRAIN"
R[drain]=$DRAIN_RATE
R[drain_s]=$DRAIN_S
R[drain_cpu_us_per_msg]=$(echo "$RELAY_CPU_S * 1000000 / $N_DRAIN" | bc -l)
R[drain_rss_mb]=$RELAY_RSS_MB
MIN_CEIL=$(printf '%s\n' "${R[ceiling_pg_insert]}" "${R[ceiling_pg_delete]}" "${R[ceiling_kafka]}" | sort -n | head -1)
R[drain_ratio]=$(echo "${R[drain]} / $MIN_CEIL" | bc -l)
# The relay itself needs claim + DELETE on one session and the Kafka producer.
MIN_PARTS=$(printf '%s\n' "${R[pg_claim_delete]}" "${R[ceiling_kafka]}" | sort -n | head -1)
R[drain_ratio_parts]=$(echo "${R[drain]} / $MIN_PARTS" | bc -l)

# --- 4./5. latency under steady load, footprint ---------------------------------------
psqlq "VACUUM outbox.messages" >/dev/null
R[size_before]=$(psqlq "SELECT pg_total_relation_size('outbox.messages')")
start_relay
log "latency at 100 msg/s for ${LAT_SECONDS}s"
L100=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 100 --seconds "$LAT_SECONDS" || true)
log "first record to a new topic, $NEW_TOPIC_ROUNDS topics"
NT=$("$BNT" --db "$DB" --rounds "$NEW_TOPIC_ROUNDS" || true)
log "latency at 1000 msg/s for ${LAT_SECONDS}s"
L1=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 1000 --seconds "$LAT_SECONDS" || true)
log "latency at 5000 msg/s for ${LAT_SECONDS}s"
TICKS0=$(relay_ticks)
L5=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 5000 --seconds "$LAT_SECONDS" || true)
R[cpu_sustained_table]=$(cpu_us_per_msg "$TICKS0" $(( 5000 * LAT_SECONDS )))
R[size_after]=$(psqlq "SELECT pg_total_relation_size('outbox.messages')")
# 5a. Rate step: STEP_FROM msg/s, then STEP_TO msg/s; latency after the step and the
# catch-up time (bench-latency --step-rate; definition in docs/performance.md).
log "rate step: $STEP_FROM msg/s for ${STEP_PRE_S}s, then $STEP_TO msg/s for ${STEP_POST_S}s"
LS=$(step_stage || true)
log "latency at 1000 msg/s with NOTIFY off (relay polls every 200ms) for ${LAT_OFF_SECONDS}s"
psqlq "UPDATE outbox.settings SET notify = false" >/dev/null
L0=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 1000 --seconds "$LAT_OFF_SECONDS" || true)
psqlq "UPDATE outbox.settings SET notify = true" >/dev/null
stop_relay
R[lat_rss_mb]=$RELAY_RSS_MB
R[e2e_p50_ms_at_100]=$(jget "$L100" .p50_ms); R[e2e_p99_ms_at_100]=$(jget "$L100" .p99_ms)
R[e2e_max_ms_at_100]=$(jget "$L100" .max_ms)
R[first_record_new_topic_ms]=$(jget "$NT" .new_topic_p50_ms); R[first_record_new_topic_max_ms]=$(jget "$NT" .new_topic_max_ms)
R[first_record_known_topic_ms]=$(jget "$NT" .known_topic_p50_ms)
R[e2e_p50_ms_at_1000]=$(jget "$L1" .p50_ms); R[e2e_p99_ms_at_1000]=$(jget "$L1" .p99_ms)
R[e2e_max_ms_at_1000]=$(jget "$L1" .max_ms)
R[commit_p50_1000]=$(jget "$L1" .commit_p50_ms); R[commit_p99_1000]=$(jget "$L1" .commit_p99_ms)
R[commit_p50_5000]=$(jget "$L5" .commit_p50_ms); R[commit_p99_5000]=$(jget "$L5" .commit_p99_ms)
R[e2e_p50_ms_at_5000]=$(jget "$L5" .p50_ms); R[e2e_p99_ms_at_5000]=$(jget "$L5" .p99_ms)
R[e2e_max_ms_at_5000]=$(jget "$L5" .max_ms)
R[e2e_p50_ms_notify_off]=$(jget "$L0" .p50_ms); R[e2e_p99_ms_notify_off]=$(jget "$L0" .p99_ms)
R[relay_peak_rss_mb]=$(printf '%s\n' "${R[drain_rss_mb]}" "${R[lat_rss_mb]}" | sort -n | tail -1)
for k in p50 p99 max catch_up pre_p99 threshold; do
  R[e2e_step_$k]=$(jnum "$LS" ".step_${k}_ms")
done
R[e2e_step_missing]=$(jnum "$LS" .step_missing)
R[e2e_step_slow_windows]=$(jnum "$LS" .step_slow_windows)
R[e2e_step_settle]=$(settle_ms "$LS" "${R[e2e_p99_ms_at_5000]}")

# --- 5b. baseline binary (optional) ---------------------------------------------------
# OUTBOX_BENCH_BASELINE_BIN: the same drain and latency stages with another relay binary
# (e.g. the build before a change), on the same servers, right after the current binary's.
# The schema stays the one the current binary migrated: the baseline only runs `run`.
# Anything that keeps it from working is recorded (BASE[error]) and the bench goes on.
declare -A BASE
baseline_fail() {
  BASE[error]=$1
  log "baseline: $1"
  tail -5 "$WORK/relay.log" >&2 || true
  if [ -n "$RELAY_PID" ]; then kill "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; fi
  RELAY_PID=""
  # Rows it left would block set_lane_count in stage 6.
  psqlq "DELETE FROM outbox.messages" >/dev/null
}
# Relay log lines at warn or error (what the baseline complained about), at most 3.
relay_complaints() { grep -E '^[0-9-]+ [0-9:.]+ +(warn|error|critical)' "$WORK/relay.log" | head -3 || true; }
baseline_stage() {
  local bin=$OUTBOX_BENCH_BASELINE_BIN before after t0 t1 p deadline
  BASE[binary]=$bin
  BASE[commit]=${OUTBOX_BENCH_BASELINE_COMMIT:-$(git -C "$(dirname "$bin")" rev-parse --short HEAD 2>/dev/null || true)}
  [ -x "$bin" ] || { baseline_fail "$bin is not an executable file"; return 0; }
  RUN_BIN=$bin
  RUN_ARGS=${OUTBOX_BENCH_BASELINE_ARGS:-}
  psqlq "VACUUM outbox.messages" >/dev/null
  log "baseline: filling $N_DRAIN rows"
  fill "$N_DRAIN" $PAYLOAD
  log "baseline: draining $N_DRAIN rows with $bin"
  before=$("$BK" offsets --brokers "$BROKERS" --topic bench 2>/dev/null || echo 0)
  t0=$(date +%s.%N)
  try_start_relay || { baseline_fail "did not start: $(grep -v '^$' "$WORK/relay.log" | tail -1)"; return 0; }
  deadline=$(( $(date +%s) + 600 ))
  while p=$(published); [ -z "$p" ] || [ "$p" -lt "$N_DRAIN" ] ||
        [ "$(psqlq "SELECT NOT EXISTS (SELECT 1 FROM outbox.messages)")" != t ]; do
    kill -0 "$RELAY_PID" 2>/dev/null || { baseline_fail "exited during the drain: $(grep -v '^$' "$WORK/relay.log" | tail -1)"; return 0; }
    [ "$(date +%s)" -gt "$deadline" ] && { baseline_fail "drain did not finish in 600 s (published ${p:-?} of $N_DRAIN): $(relay_complaints | tail -1)"; return 0; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  BASE[drain_complaints]=$(relay_complaints)
  stop_relay
  after=$("$BK" offsets --brokers "$BROKERS" --topic bench)
  [ $(( after - before )) -ge "$N_DRAIN" ] ||
    { baseline_fail "drain: Kafka end offsets grew by $(( after - before )), expected $N_DRAIN"; return 0; }
  BASE[drain_s]=$(echo "$t1 - $t0" | bc -l)
  BASE[drain]=$(echo "$N_DRAIN / ${BASE[drain_s]}" | bc -l | cut -d. -f1)
  BASE[drain_cpu]=$(echo "$RELAY_CPU_S * 1000000 / $N_DRAIN" | bc -l)
  BASE[drain_rss]=$RELAY_RSS_MB
  psqlq "VACUUM outbox.messages" >/dev/null
  try_start_relay || { baseline_fail "did not start: $(grep -v '^$' "$WORK/relay.log" | tail -1)"; return 0; }
  log "baseline: latency at 1000 msg/s for ${LAT_SECONDS}s"
  BL1=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 1000 --seconds "$LAT_SECONDS" || true)
  log "baseline: latency at 5000 msg/s for ${LAT_SECONDS}s"
  BL5=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 5000 --seconds "$LAT_SECONDS" || true)
  log "baseline: rate step $STEP_FROM -> $STEP_TO msg/s (${STEP_PRE_S}s + ${STEP_POST_S}s)"
  BLS=$(step_stage || true)
  kill -0 "$RELAY_PID" 2>/dev/null || { baseline_fail "exited during the latency stages: $(grep -v '^$' "$WORK/relay.log" | tail -1)"; return 0; }
  BASE[lat_complaints]=$(relay_complaints)
  stop_relay
  # Leftovers (a latency stage that lost messages) would block stage 6.
  psqlq "DELETE FROM outbox.messages" >/dev/null
}
BASE_JSON=null
if [ -n "${OUTBOX_BENCH_BASELINE_BIN:-}" ]; then
  BL1=""; BL5=""; BLS=""
  baseline_stage
  RUN_BIN=$RELAY
  RUN_ARGS=$RELAY_ARGS
  BASE_JSON=$(jq -n --arg binary "${BASE[binary]}" --arg commit "${BASE[commit]:-}" --arg error "${BASE[error]:-}" \
    --arg complaints "$(printf '%s\n' "${BASE[drain_complaints]:-}" "${BASE[lat_complaints]:-}" | grep . || true)" \
    --argjson drain "${BASE[drain]:-null}" --argjson drain_s "$( [ -n "${BASE[drain_s]:-}" ] && f "${BASE[drain_s]}" 2 || echo null)" \
    --argjson cpu "$( [ -n "${BASE[drain_cpu]:-}" ] && f "${BASE[drain_cpu]}" 2 || echo null)" \
    --argjson rss "${BASE[drain_rss]:-null}" \
    --argjson p50_1 "$(jnum "$BL1" .p50_ms)" --argjson p99_1 "$(jnum "$BL1" .p99_ms)" --argjson max_1 "$(jnum "$BL1" .max_ms)" \
    --argjson miss_1 "$(jnum "$BL1" .missing)" \
    --argjson p50_5 "$(jnum "$BL5" .p50_ms)" --argjson p99_5 "$(jnum "$BL5" .p99_ms)" --argjson max_5 "$(jnum "$BL5" .max_ms)" \
    --argjson miss_5 "$(jnum "$BL5" .missing)" \
    --argjson s50 "$(jnum "$BLS" .step_p50_ms)" --argjson s99 "$(jnum "$BLS" .step_p99_ms)" \
    --argjson smax "$(jnum "$BLS" .step_max_ms)" --argjson scu "$(jnum "$BLS" .step_catch_up_ms)" \
    --argjson spre "$(jnum "$BLS" .step_pre_p99_ms)" --argjson sthr "$(jnum "$BLS" .step_threshold_ms)" \
    --argjson sslow "$(jnum "$BLS" .step_slow_windows)" \
    --argjson swin "$(jval "$BLS" .step_window_p99_ms)" \
    --argjson ssettle "$(settle_ms "$BLS" "$(jnum "$BL5" .p99_ms)")" \
    '{binary:$binary, commit:(if $commit == "" then null else $commit end),
      error:(if $error == "" then null else $error end),
      relay_log_warnings:($complaints | split("\n") | map(select(. != ""))),
      drain_msgs_per_s:$drain, drain_seconds:$drain_s, drain_cpu_us_per_msg:$cpu, drain_rss_mb:$rss,
      e2e_p50_ms_at_1000:$p50_1, e2e_p99_ms_at_1000:$p99_1, e2e_max_ms_at_1000:$max_1, e2e_missing_at_1000:$miss_1,
      e2e_p50_ms_at_5000:$p50_5, e2e_p99_ms_at_5000:$p99_5, e2e_max_ms_at_5000:$max_5, e2e_missing_at_5000:$miss_5,
      e2e_step_pre_p99_ms:$spre, e2e_step_p50_ms:$s50, e2e_step_p99_ms:$s99, e2e_step_max_ms:$smax,
      e2e_step_catch_up_ms:$scu, e2e_step_threshold_ms:$sthr, e2e_step_slow_windows:$sslow,
      e2e_step_settle_ms:$ssettle, e2e_step_window_p99_ms:$swin}')
fi

# --- 6. scaling ---------------------------------------------------------------------
for lanes in 1 2 4; do
  psqlq "SELECT outbox.set_lane_count($lanes)" >/dev/null
  log "scaling: $lanes lanes, $N_SCALE rows"
  fill "$N_SCALE" $PAYLOAD
  drain "$N_SCALE"
  R[drain_lanes_$lanes]=$DRAIN_RATE
done
psqlq "SELECT outbox.set_lane_count(16)" >/dev/null
for size in 64 1024 16384; do
  n=$N_SCALE; [ "$size" = 16384 ] && n=$N_SCALE_16K
  log "scaling: payload $size B, $n rows"
  fill "$n" $size
  drain "$n"
  R[drain_payload_$size]=$DRAIN_RATE
done
# --- 7. consumer library (issue 17) -------------------------------------------------
# Throughput of outbox::Consumer as the login bench_consumer (granted outbox_consumer):
# records produced first, then consumed; a handler INSERTing one row per record in
# batches of 500, the same with one record per transaction (as before batches), and a
# BatchHandler with one multi-row INSERT per batch. Then publish -> relay -> handler
# COMMIT latency at 1000 msg/s (a relay runs).
log "consumer: $N_CONSUMER records, per-record handler, batches of 500"
C500=$("$BC" --db "$DB" --brokers "$BROKERS" --mode records --count "$N_CONSUMER" --batch 500)
log "consumer: $(( N_CONSUMER / 10 )) records, per-record handler, one record per transaction"
C1=$("$BC" --db "$DB" --brokers "$BROKERS" --mode records --count $(( N_CONSUMER / 10 )) --batch 1)
log "consumer: $N_CONSUMER records, batch handler, batches of 500"
CB=$("$BC" --db "$DB" --brokers "$BROKERS" --mode batch --count "$N_CONSUMER" --batch 500)
start_relay
log "consumer e2e latency at 1000 msg/s for ${CONSUMER_E2E_SECONDS}s (batches of 500)"
CE=$("$BC" --db "$DB" --brokers "$BROKERS" --mode e2e --rate 1000 --seconds "$CONSUMER_E2E_SECONDS" --batch 500 || true)
log "consumer e2e latency at 1000 msg/s for ${CONSUMER_E2E_SECONDS}s (one record per transaction)"
CE1=$("$BC" --db "$DB" --brokers "$BROKERS" --mode e2e --rate 1000 --seconds "$CONSUMER_E2E_SECONDS" --batch 1 || true)
stop_relay
R[consumer]=$(jget "$C500" .msgs_per_s); R[consumer_batch1]=$(jget "$C1" .msgs_per_s)
R[consumer_batch_handler]=$(jget "$CB" .msgs_per_s)
R[consumer_e2e_p50]=$(jget "$CE" .p50_ms); R[consumer_e2e_p99]=$(jget "$CE" .p99_ms); R[consumer_e2e_max]=$(jget "$CE" .max_ms)
R[consumer_e2e1_p50]=$(jget "$CE1" .p50_ms); R[consumer_e2e1_p99]=$(jget "$CE1" .p99_ms)
R[consumer_e2e_missing]=$(jget "$CE" .missing); R[consumer_e2e1_missing]=$(jget "$CE1" .missing)

# --- 8. capture mode wal (issue 15) -------------------------------------------------
# outbox.set_capture('wal'): publish emits pg_logical_emit_message into the WAL, the
# relay streams the slot. The outbox table stays empty, so "published" is the relay's
# outbox_relay_published_total plus the slot's confirmed_flush_lsn reaching the end LSN
# taken after the load (and Kafka end offsets for the drain). Ends with set_capture('table').
slot_lag() {  # lsn: bytes from the slot's confirmed_flush_lsn up to lsn (<= 0: confirmed past it)
  psqlq "SELECT pg_wal_lsn_diff('$1', confirmed_flush_lsn) FROM pg_replication_slots
         WHERE database = current_database()"
}
wait_slot() {  # lsn: until the slot confirmed past lsn (the relay must be running)
  local deadline=$(( $(date +%s) + 900 )) lag
  while lag=$(slot_lag "$1"); [ -z "$lag" ] || [ "${lag%.*}" -gt 0 ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      tail -20 "$WORK/relay.log" >&2; echo "slot did not confirm $1 (lag $lag)" >&2; exit 1
    fi
    sleep 0.05
  done
}
wal_lsn() { psqlq "SELECT pg_current_wal_lsn()"; }

psqlq "VACUUM outbox.messages" >/dev/null
R[wal_size_before]=$(psqlq "SELECT pg_total_relation_size('outbox.messages')")
log "capture mode wal: outbox.set_capture('wal')"
psqlq "SELECT outbox.set_capture('wal')" >/dev/null
[ "$(psqlq "SELECT capture FROM outbox.settings")" = wal ] || { echo "set_capture('wal') did not switch" >&2; exit 1; }

# 8.1 producer ceiling, no relay running (the slot retains the WAL).
declare -A WRUNS WWALB
for round in $(seq 1 "$NOTIFY_ROUNDS"); do
  for per in 1 100; do
    log "wal mode publish ceiling round $round: $per per transaction, 4 clients, ${PGB_SECONDS}s, no relay"
    pgb_measure "$WORK/pub$per.sql" "$per"
    WRUNS[$per]+="$PGB_RATE "
    WWALB[$per]+="$PGB_WAL_PER_MSG "
  done
done
for per in 1 100; do
  R[wal_pub_$per]=$(tr ' ' '\n' <<<"${WRUNS[$per]}" | grep . | median)
  R[wal_pub_${per}_runs]=${WRUNS[$per]% }
  R[walb_wal_$per]=$(tr ' ' '\n' <<<"${WWALB[$per]}" | grep . | median)
  R[wal_pub_ratio_$per]=$(echo "${R[wal_pub_$per]} / ${R[pub${per}_notify_true]}" | bc -l)
done
# The slot now holds what pgbench published: a relay streams it off (not the timed drain).
END_LSN=$(wal_lsn)
log "wal mode: relay streams the publish-ceiling backlog off the slot"
T0=$(date +%s.%N)
start_relay
wait_slot "$END_LSN"
T1=$(date +%s.%N)
R[wal_backlog_msgs]=$(published)
stop_relay
R[wal_backlog_s]=$(echo "$T1 - $T0" | bc -l)

# 8.2 drain of a backlog from the slot: fill() with no relay, then one relay.
log "wal mode: filling $N_DRAIN messages into the slot, no relay"
fill "$N_DRAIN" $PAYLOAD
END_LSN=$(wal_lsn)
BEFORE=$("$BK" offsets --brokers "$BROKERS" --topic bench)
log "wal mode: draining $N_DRAIN messages from the slot with the relay"
T0=$(date +%s.%N)
start_relay
DEADLINE=$(( $(date +%s) + 900 ))
while p=$(published); [ -z "$p" ] || [ "$p" -lt "$N_DRAIN" ]; do
  [ "$(date +%s)" -gt "$DEADLINE" ] && { tail -20 "$WORK/relay.log" >&2; echo "wal drain: published $p of $N_DRAIN" >&2; exit 1; }
  sleep 0.05
done
TP=$(date +%s.%N)
wait_slot "$END_LSN"
T1=$(date +%s.%N)
R[wal_drain_published_s]=$(echo "$TP - $T0" | bc -l)
stop_relay
AFTER=$("$BK" offsets --brokers "$BROKERS" --topic bench)
if [ $(( AFTER - BEFORE )) -lt "$N_DRAIN" ]; then
  echo "wal drain: Kafka end offsets grew by $(( AFTER - BEFORE )), expected $N_DRAIN" >&2; exit 1
fi
R[wal_drain_s]=$(echo "$T1 - $T0" | bc -l)
R[wal_drain]=$(echo "$N_DRAIN / ${R[wal_drain_s]}" | bc -l | cut -d. -f1)
R[wal_drain_cpu]=$(echo "$RELAY_CPU_S * 1000000 / $N_DRAIN" | bc -l)
R[wal_drain_rss]=$RELAY_RSS_MB

# 8.3/8.4 latency, CPU per message in the sustained phase, table size afterwards.
start_relay
log "wal mode: latency at 1000 msg/s for ${LAT_SECONDS}s"
WL1=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 1000 --seconds "$LAT_SECONDS" || true)
log "wal mode: latency at 5000 msg/s for ${LAT_SECONDS}s"
TICKS0=$(relay_ticks)
WL5=$("$BL" --db "$DB" --brokers "$BROKERS" --topic bench --rate 5000 --seconds "$LAT_SECONDS" || true)
R[wal_cpu_sustained]=$(cpu_us_per_msg "$TICKS0" $(( 5000 * LAT_SECONDS )))
R[wal_size_after]=$(psqlq "SELECT pg_total_relation_size('outbox.messages')")
R[wal_rows_after]=$(psqlq "SELECT count(*) FROM outbox.messages")
for k in p50_ms p99_ms max_ms commit_p50_ms commit_p99_ms missing; do
  R[wal_l1_$k]=$(jget "$WL1" ".$k"); R[wal_l5_$k]=$(jget "$WL5" ".$k")
done

# 8.5 keep-up: the producers at their wal-mode ceiling (100/tx, 4 clients) with the relay
# streaming; publish and relay rates over the same window, slot lag at its end.
wait_slot "$(wal_lsn)"
log "wal mode: keep-up, publish 100/tx 4 clients ${PGB_SECONDS}s with the relay streaming"
P0=$(published); T0=$(date +%s.%N)
pgb_measure "$WORK/pub100.sql" 100
T1=$(date +%s.%N); P1=$(published)
R[keepup_lag_end]=$(slot_lag "$(wal_lsn)")
R[keepup_pub]=$PGB_RATE
R[keepup_relay]=$(echo "($P1 - $P0) / ($T1 - $T0)" | bc -l | cut -d. -f1)
wait_slot "$(wal_lsn)"
R[keepup_catchup_s]=$(echo "$(date +%s.%N) - $T1" | bc -l)
stop_relay
R[wal_lat_rss]=$RELAY_RSS_MB

# 8.6 back to table mode: a relay drains the rest of the slot, then drops it.
log "capture mode table: outbox.set_capture('table'), waiting for wal_draining = false"
psqlq "SELECT outbox.set_capture('table')" >/dev/null
T0=$(date +%s.%N)
start_relay
DEADLINE=$(( $(date +%s) + 300 ))
until [ "$(psqlq "SELECT wal_draining FROM outbox.settings")" = f ]; do
  [ "$(date +%s)" -gt "$DEADLINE" ] && { tail -20 "$WORK/relay.log" >&2; echo "wal_draining stayed true" >&2; exit 1; }
  sleep 0.1
done
R[switch_back_s]=$(echo "$(date +%s.%N) - $T0" | bc -l)
stop_relay
[ "$(psqlq "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()")" = 0 ] ||
  echo "warning: the slot is still there after wal_draining = false" >&2

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- output -------------------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
jq -n \
  --arg mode "$MODE" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg pg "$PG_DESC" --arg kafka "$KAFKA_DESC" --arg load_start "$LOAD_START" --arg load_end "$LOAD_END" \
  --arg relay_args "$RELAY_ARGS" \
  --argjson n_drain "$N_DRAIN" --argjson payload "$PAYLOAD" \
  --argjson drain "${R[drain]}" --argjson drain_s "$(f "${R[drain_s]}" 2)" \
  --argjson ci "${R[ceiling_pg_insert]}" --argjson cd "${R[ceiling_pg_delete]}" --argjson ck "${R[ceiling_kafka]}" \
  --argjson ccd "${R[pg_claim_delete]}" --argjson ratio "$(f "${R[drain_ratio]}" 3)" \
  --argjson ccd_old "${R[pg_claim_delete_old]}" --argjson ccd_new "${R[pg_claim_delete_new]}" --argjson ratio_parts "$(f "${R[drain_ratio_parts]}" 3)" \
  --argjson c50 "${R[commit_p50_1000]}" --argjson c99 "${R[commit_p99_1000]}" \
  --argjson c50_5 "${R[commit_p50_5000]}" --argjson c99_5 "${R[commit_p99_5000]}" \
  --argjson p50_100 "${R[e2e_p50_ms_at_100]}" --argjson p99_100 "${R[e2e_p99_ms_at_100]}" --argjson max100 "${R[e2e_max_ms_at_100]}" \
  --argjson nt "${R[first_record_new_topic_ms]}" --argjson nt_max "${R[first_record_new_topic_max_ms]}" \
  --argjson nt_known "${R[first_record_known_topic_ms]}" --argjson nt_rounds "$NEW_TOPIC_ROUNDS" \
  --argjson p50 "${R[e2e_p50_ms_at_1000]}" --argjson p99 "${R[e2e_p99_ms_at_1000]}" --argjson max1 "${R[e2e_max_ms_at_1000]}" \
  --argjson p50_5 "${R[e2e_p50_ms_at_5000]}" --argjson p99_5 "${R[e2e_p99_ms_at_5000]}" --argjson max5 "${R[e2e_max_ms_at_5000]}" \
  --argjson p50_off "${R[e2e_p50_ms_notify_off]}" --argjson p99_off "${R[e2e_p99_ms_notify_off]}" \
  --argjson rss "${R[relay_peak_rss_mb]}" --argjson cpu "$(f "${R[drain_cpu_us_per_msg]}" 2)" \
  --argjson sb "${R[size_before]}" --argjson sa "${R[size_after]}" \
  --argjson l1 "${R[drain_lanes_1]}" --argjson l2 "${R[drain_lanes_2]}" --argjson l4 "${R[drain_lanes_4]}" \
  --argjson s64 "${R[drain_payload_64]}" --argjson s1k "${R[drain_payload_1024]}" --argjson s16k "${R[drain_payload_16384]}" \
  --argjson p1on "${R[pub1_notify_true]}" --argjson p1off "${R[pub1_notify_false]}" \
  --argjson p100on "${R[pub100_notify_true]}" --argjson p100off "${R[pub100_notify_false]}" \
  --argjson c500 "${R[consumer]}" --argjson c1 "${R[consumer_batch1]}" --argjson cb "${R[consumer_batch_handler]}" \
  --argjson ce50 "${R[consumer_e2e_p50]}" --argjson ce99 "${R[consumer_e2e_p99]}" --argjson cemax "${R[consumer_e2e_max]}" \
  --argjson ce1_50 "${R[consumer_e2e1_p50]}" --argjson ce1_99 "${R[consumer_e2e1_p99]}" \
  --argjson n_consumer "$N_CONSUMER" \
  '{mode:$mode, date:$date, commit:$commit, postgres:$pg, kafka:$kafka, relay_args:$relay_args,
    loadavg_start:$load_start, loadavg_end:$load_end, drain_rows:$n_drain, payload_bytes:$payload,
    drain_msgs_per_s:$drain, drain_seconds:$drain_s,
    ceiling_pg_insert_msgs_per_s:$ci, ceiling_pg_delete_msgs_per_s:$cd, ceiling_kafka_msgs_per_s:$ck,
    pg_claim_plus_delete_msgs_per_s:$ccd, pg_claim_plus_delete_fresh_table_msgs_per_s:{current_claim:$ccd_new, pre_issue8_claim:$ccd_old},
    drain_ratio:$ratio, drain_ratio_vs_relay_parts:$ratio_parts, drain_vs_parts:$ratio_parts,
    e2e_p50_ms_at_100:$p50_100, e2e_p99_ms_at_100:$p99_100, e2e_max_ms_at_100:$max100,
    first_record_new_topic_ms:$nt, first_record_new_topic_max_ms:$nt_max, first_record_known_topic_ms:$nt_known,
    new_topic_rounds:$nt_rounds,
    commit_p50_ms_at_1000:$c50, commit_p99_ms_at_1000:$c99, commit_p50_ms_at_5000:$c50_5, commit_p99_ms_at_5000:$c99_5,
    e2e_p50_ms_at_1000:$p50, e2e_p99_ms_at_1000:$p99, e2e_max_ms_at_1000:$max1,
    e2e_p50_ms_at_5000:$p50_5, e2e_p99_ms_at_5000:$p99_5, e2e_max_ms_at_5000:$max5,
    e2e_p50_ms_at_1000_notify_off:$p50_off, e2e_p99_ms_at_1000_notify_off:$p99_off,
    relay_peak_rss_mb:$rss, cpu_us_per_msg:$cpu,
    outbox_total_bytes_before_load:$sb, outbox_total_bytes_after_load:$sa,
    drain_msgs_per_s_lanes:{"1":$l1, "2":$l2, "4":$l4},
    drain_msgs_per_s_payload:{"64":$s64, "1024":$s1k, "16384":$s16k},
    publish_rows_per_s:{notify_on_1_per_tx:$p1on, notify_off_1_per_tx:$p1off,
                        notify_on_100_per_tx:$p100on, notify_off_100_per_tx:$p100off},
    consumer_records:$n_consumer,
    consumer_msgs_per_s:$c500, consumer_msgs_per_s_one_per_transaction:$c1,
    consumer_batch_handler_msgs_per_s:$cb,
    e2e_handler_p50_ms_at_1000:$ce50, e2e_handler_p99_ms_at_1000:$ce99, e2e_handler_max_ms_at_1000:$cemax,
    e2e_handler_one_per_transaction_p50_ms_at_1000:$ce1_50, e2e_handler_one_per_transaction_p99_ms_at_1000:$ce1_99}' \
  >"$ROOT/bench/results/latest.json"

# Capture mode wal (stage 8) and the table-mode figures it is compared with.
jq \
  --argjson w1 "${R[wal_pub_1]}" --argjson w100 "${R[wal_pub_100]}" \
  --arg w1runs "${R[wal_pub_1_runs]}" --arg w100runs "${R[wal_pub_100_runs]}" \
  --argjson wr1 "$(f "${R[wal_pub_ratio_1]}" 3)" --argjson wr100 "$(f "${R[wal_pub_ratio_100]}" 3)" \
  --argjson wd "${R[wal_drain]}" --argjson wds "$(f "${R[wal_drain_s]}" 2)" --argjson wdps "$(f "${R[wal_drain_published_s]}" 2)" \
  --argjson wdcpu "$(f "${R[wal_drain_cpu]}" 2)" --argjson wdrss "${R[wal_drain_rss]}" \
  --argjson wl1_50 "${R[wal_l1_p50_ms]}" --argjson wl1_99 "${R[wal_l1_p99_ms]}" --argjson wl1_max "${R[wal_l1_max_ms]}" \
  --argjson wl5_50 "${R[wal_l5_p50_ms]}" --argjson wl5_99 "${R[wal_l5_p99_ms]}" --argjson wl5_max "${R[wal_l5_max_ms]}" \
  --argjson wc1_50 "${R[wal_l1_commit_p50_ms]}" --argjson wc1_99 "${R[wal_l1_commit_p99_ms]}" \
  --argjson wc5_50 "${R[wal_l5_commit_p50_ms]}" --argjson wc5_99 "${R[wal_l5_commit_p99_ms]}" \
  --argjson wl1_miss "${R[wal_l1_missing]}" --argjson wl5_miss "${R[wal_l5_missing]}" \
  --argjson cpu_t "$(f "${R[cpu_sustained_table]}" 2)" --argjson cpu_w "$(f "${R[wal_cpu_sustained]}" 2)" \
  --argjson bt1 "$(f "${R[walb_table_1]}" 1)" --argjson bt100 "$(f "${R[walb_table_100]}" 1)" \
  --argjson bw1 "$(f "${R[walb_wal_1]}" 1)" --argjson bw100 "$(f "${R[walb_wal_100]}" 1)" \
  --argjson wsb "${R[wal_size_before]}" --argjson wsa "${R[wal_size_after]}" --argjson wra "${R[wal_rows_after]}" \
  --argjson kp "${R[keepup_pub]}" --argjson kr "${R[keepup_relay]}" --argjson kl "${R[keepup_lag_end]}" \
  --argjson kc "$(f "${R[keepup_catchup_s]}" 2)" \
  --argjson bm "${R[wal_backlog_msgs]}" --argjson bs "$(f "${R[wal_backlog_s]}" 2)" \
  --argjson wrss "$(printf '%s\n' "${R[wal_drain_rss]}" "${R[wal_lat_rss]}" | sort -n | tail -1)" \
  --argjson sw "$(f "${R[switch_back_s]}" 2)" \
  '. + {
    wal_publish_rows_per_s:{"1_per_tx":$w1, "100_per_tx":$w100},
    wal_publish_rows_per_s_runs:{"1_per_tx":($w1runs | split(" ") | map(tonumber)),
                                 "100_per_tx":($w100runs | split(" ") | map(tonumber))},
    wal_vs_table_publish_ratio_1_per_tx:$wr1, wal_vs_table_publish_ratio_100_per_tx:$wr100,
    wal_drain_msgs_per_s:$wd, wal_drain_seconds:$wds, wal_drain_published_seconds:$wdps,
    wal_drain_cpu_us_per_msg:$wdcpu, wal_drain_rss_mb:$wdrss,
    wal_e2e_p50_ms_at_1000:$wl1_50, wal_e2e_p99_ms_at_1000:$wl1_99, wal_e2e_max_ms_at_1000:$wl1_max,
    wal_e2e_p50_ms_at_5000:$wl5_50, wal_e2e_p99_ms_at_5000:$wl5_99, wal_e2e_max_ms_at_5000:$wl5_max,
    wal_commit_p50_ms_at_1000:$wc1_50, wal_commit_p99_ms_at_1000:$wc1_99,
    wal_commit_p50_ms_at_5000:$wc5_50, wal_commit_p99_ms_at_5000:$wc5_99,
    wal_e2e_missing_at_1000:$wl1_miss, wal_e2e_missing_at_5000:$wl5_miss,
    cpu_us_per_msg_sustained_table:$cpu_t, wal_cpu_us_per_msg_sustained:$cpu_w,
    wal_bytes_per_msg:{table_1_per_tx:$bt1, table_100_per_tx:$bt100, wal_1_per_tx:$bw1, wal_100_per_tx:$bw100},
    wal_outbox_total_bytes_before_load:$wsb, wal_outbox_total_bytes_after_load:$wsa,
    wal_outbox_rows_after_load:$wra,
    wal_keepup:{publish_rows_per_s:$kp, relay_msgs_per_s:$kr, lag_bytes_end:([$kl, 0] | max), catchup_s:$kc},
    wal_publish_backlog_drain:{msgs:$bm, seconds:$bs},
    wal_relay_peak_rss_mb:$wrss, wal_switch_back_to_table_s:$sw}' \
  "$ROOT/bench/results/latest.json" >"$WORK/latest.json"
mv "$WORK/latest.json" "$ROOT/bench/results/latest.json"

# Rate step (stage 5a) and the baseline binary (stage 5b, only when it ran).
jq \
  --argjson s50 "${R[e2e_step_p50]}" --argjson s99 "${R[e2e_step_p99]}" --argjson smax "${R[e2e_step_max]}" \
  --argjson scu "${R[e2e_step_catch_up]}" --argjson spre "${R[e2e_step_pre_p99]}" --argjson smiss "${R[e2e_step_missing]}" \
  --argjson sthr "${R[e2e_step_threshold]}" --argjson sslow "${R[e2e_step_slow_windows]}" \
  --argjson ssettle "${R[e2e_step_settle]}" \
  --argjson from "$STEP_FROM" --argjson to "$STEP_TO" --argjson pre_s "$STEP_PRE_S" --argjson post_s "$STEP_POST_S" \
  --argjson baseline "$BASE_JSON" --argjson windows "$(jval "$LS" .step_window_p99_ms)" \
  '. + {
    e2e_step:{from_msgs_per_s:$from, to_msgs_per_s:$to, seconds_before:$pre_s, seconds_after:$post_s,
              window_p99_ms:$windows},
    e2e_step_pre_p99_ms:$spre, e2e_step_p50_ms:$s50, e2e_step_p99_ms:$s99, e2e_step_max_ms:$smax,
    e2e_step_catch_up_ms:$scu, e2e_step_missing:$smiss, e2e_step_threshold_ms:$sthr, e2e_step_slow_windows:$sslow,
    e2e_step_settle_ms:$ssettle}
   + (if $baseline == null then {} else {baseline:$baseline} end)' \
  "$ROOT/bench/results/latest.json" >"$WORK/latest.json"
mv "$WORK/latest.json" "$ROOT/bench/results/latest.json"


cat <<EOF
## outbox-relay benchmark ($MODE, $(date -u +%Y-%m-%d), load avg start $LOAD_START / end $LOAD_END, 2 cores shared)

| Figure | Value | Bound / note |
|---|---:|---|
| PG ceiling: publish, 100/tx, 4 clients | ${R[ceiling_pg_insert]} rows/s | WAL fsync + plpgsql publish |
| PG ceiling: bare DELETE of claimed batches | ${R[ceiling_pg_delete]} rows/s | delete time only (${R[delete_rows]} rows) |
| PG: claim + DELETE (relay's DB work, no Kafka) | ${R[pg_claim_delete]} rows/s | one session, on the published rows |
| PG: claim + DELETE, fresh $N_SCALE-row table: claim query now / before issue 8 | ${R[pg_claim_delete_new]} / ${R[pg_claim_delete_old]} rows/s | lane index vs primary-key plan |
| Kafka ceiling: bare idempotent producer | ${R[ceiling_kafka]} msgs/s | dev-kafka mock, $N_KAFKA records |
| **Relay drain** ($N_DRAIN rows, ${PAYLOAD} B) | **${R[drain]} msgs/s** ($(f "${R[drain_s]}" 1) s) | |
| **drain_ratio** (drain / min ceiling) | **$(f "${R[drain_ratio]}" 2)** | target ≥ 0.7 |
| drain / min(claim+DELETE, Kafka) | $(f "${R[drain_ratio_parts]}" 2) | what the relay's own parts allow |
| e2e latency @100/s p50 / p99 / max | ${R[e2e_p50_ms_at_100]} / **${R[e2e_p99_ms_at_100]}** / ${R[e2e_max_ms_at_100]} ms | targets p50 ≤ 3, p99 ≤ 10 |
| first record to a new topic p50 / max (commit → row deleted) | **${R[first_record_new_topic_ms]}** / ${R[first_record_new_topic_max_ms]} ms | target ≤ 50; a known topic: ${R[first_record_known_topic_ms]} ms; $NEW_TOPIC_ROUNDS topics |
| e2e latency @1000/s p50 / p99 / max | ${R[e2e_p50_ms_at_1000]} / **${R[e2e_p99_ms_at_1000]}** / ${R[e2e_max_ms_at_1000]} ms | target p99 ≤ 50; COMMIT itself p50/p99 ${R[commit_p50_1000]} / ${R[commit_p99_1000]} ms |
| e2e latency @5000/s p50 / p99 / max | ${R[e2e_p50_ms_at_5000]} / ${R[e2e_p99_ms_at_5000]} / ${R[e2e_max_ms_at_5000]} ms | COMMIT itself p50/p99 ${R[commit_p50_5000]} / ${R[commit_p99_5000]} ms |
| e2e after a step $STEP_FROM → $STEP_TO msg/s p50 / p99 / max | ${R[e2e_step_p50]} / ${R[e2e_step_p99]} / ${R[e2e_step_max]} ms | **catch-up ${R[e2e_step_catch_up]} ms** after the step (${R[e2e_step_slow_windows]} windows of 100 ms with p99 > ${R[e2e_step_threshold]} ms); ${STEP_PRE_S} s + ${STEP_POST_S} s; p99 before the step ${R[e2e_step_pre_p99]} ms; missing ${R[e2e_step_missing]}; **settled ${R[e2e_step_settle]} ms** (windows back at or below the steady $STEP_TO msg/s p99) |
| e2e latency @1000/s, NOTIFY off: p50 / p99 | ${R[e2e_p50_ms_notify_off]} / ${R[e2e_p99_ms_notify_off]} ms | --poll-interval 200ms |
| Relay peak RSS | ${R[relay_peak_rss_mb]} MB | target ≤ 64 |
| Relay CPU per message (drain) | $(f "${R[drain_cpu_us_per_msg]}" 2) µs | user + sys |
| outbox.messages total size before / after load | $(( ${R[size_before]} / 1024 )) / $(( ${R[size_after]} / 1024 )) KiB | heap + indexes + toast |
| Drain with 1 / 2 / 4 lanes | ${R[drain_lanes_1]} / ${R[drain_lanes_2]} / ${R[drain_lanes_4]} msgs/s | $N_SCALE rows |
| Drain with 64 B / 1 KiB / 16 KiB payloads | ${R[drain_payload_64]} / ${R[drain_payload_1024]} / ${R[drain_payload_16384]} msgs/s | 16 lanes; 16 KiB: $N_SCALE_16K rows |
| Publish 1/tx: NOTIFY on / off | ${R[pub1_notify_true]} / ${R[pub1_notify_false]} rows/s | 4 clients, median of runs [${R[pub1_notify_true_runs]}] / [${R[pub1_notify_false_runs]}] |
| Publish 100/tx: NOTIFY on / off | ${R[pub100_notify_true]} / ${R[pub100_notify_false]} rows/s | 4 clients, median of runs [${R[pub100_notify_true_runs]}] / [${R[pub100_notify_false_runs]}] |
| **Consumer**, per-record handler (1 INSERT), batches of 500 | **${R[consumer]} msgs/s** | target ≥ 20000; $N_CONSUMER records, one process |
| Consumer, per-record handler, one record per transaction | ${R[consumer_batch1]} msgs/s | batch_max_records=1 (the default; as before issue 17) |
| **Consumer, batch handler** (1 multi-row INSERT per batch) | **${R[consumer_batch_handler]} msgs/s** | batches of 500 |
| publish → handler COMMIT @1000/s p50 / p99 / max | ${R[consumer_e2e_p50]} / **${R[consumer_e2e_p99]}** / ${R[consumer_e2e_max]} ms | target p99 ≤ 30; batches of 500; missing ${R[consumer_e2e_missing]} |
| publish → handler COMMIT @1000/s, one record per transaction: p50 / p99 | ${R[consumer_e2e1_p50]} / ${R[consumer_e2e1_p99]} ms | missing ${R[consumer_e2e1_missing]} |

#### Capture modes side by side (same run; wal stage after the table-mode stages)

| Figure | table | wal | Target / note |
|---|---:|---:|---|
| Publish 1/tx, 4 clients (rows/s) | ${R[pub1_notify_true]} | **${R[wal_pub_1]}** | wal/table **$(f "${R[wal_pub_ratio_1]}" 2)×**, target ≥ 1.5; table NOTIFY on; wal runs [${R[wal_pub_1_runs]}], no relay |
| Publish 100/tx, 4 clients (rows/s) | ${R[pub100_notify_true]} | **${R[wal_pub_100]}** | wal/table **$(f "${R[wal_pub_ratio_100]}" 2)×**, target ≥ 1.5; wal runs [${R[wal_pub_100_runs]}] |
| WAL bytes per message, 1/tx | $(f "${R[walb_table_1]}" 0) | $(f "${R[walb_wal_1]}" 0) | pg_current_wal_lsn() growth over a publish run / rows; publish only (no relay, no DELETE) |
| WAL bytes per message, 100/tx | $(f "${R[walb_table_100]}" 0) | $(f "${R[walb_wal_100]}" 0) | |
| Drain of a $N_DRAIN-message backlog (msgs/s) | ${R[drain]} | **${R[wal_drain]}** | wal target ≥ 50000; wal: $(f "${R[wal_drain_s]}" 1) s to slot confirmed ($(f "${R[wal_drain_published_s]}" 1) s to published), incl. start-up |
| Relay CPU per message, drain (µs) | $(f "${R[drain_cpu_us_per_msg]}" 2) | $(f "${R[wal_drain_cpu]}" 2) | user + sys |
| Relay peak RSS, drain (MB) | ${R[drain_rss_mb]} | ${R[wal_drain_rss]} | |
| e2e @1000/s p50 / p99 / max (ms) | ${R[e2e_p50_ms_at_1000]} / ${R[e2e_p99_ms_at_1000]} / ${R[e2e_max_ms_at_1000]} | ${R[wal_l1_p50_ms]} / **${R[wal_l1_p99_ms]}** / ${R[wal_l1_max_ms]} | wal COMMIT p50/p99 ${R[wal_l1_commit_p50_ms]} / ${R[wal_l1_commit_p99_ms]} ms; missing ${R[wal_l1_missing]} |
| e2e @5000/s p50 / p99 / max (ms) | ${R[e2e_p50_ms_at_5000]} / ${R[e2e_p99_ms_at_5000]} / ${R[e2e_max_ms_at_5000]} | ${R[wal_l5_p50_ms]} / **${R[wal_l5_p99_ms]}** / ${R[wal_l5_max_ms]} | wal target p99 ≤ 20; wal COMMIT p50/p99 ${R[wal_l5_commit_p50_ms]} / ${R[wal_l5_commit_p99_ms]} ms; missing ${R[wal_l5_missing]} |
| Relay CPU per message, sustained 5000/s (µs) | $(f "${R[cpu_sustained_table]}" 2) | $(f "${R[wal_cpu_sustained]}" 2) | user + sys over the 5000 msg/s phase / messages published in it |
| outbox.messages total size before / after load (KiB) | $(( ${R[size_before]} / 1024 )) / $(( ${R[size_after]} / 1024 )) | $(( ${R[wal_size_before]} / 1024 )) / $(( ${R[wal_size_after]} / 1024 )) | wal: ${R[wal_rows_after]} rows after the load |
| Keep-up at the wal ceiling (100/tx, 4 clients, relay streaming) | | publish ${R[keepup_pub]} rows/s, relay ${R[keepup_relay]} msgs/s | slot lag at the end ${R[keepup_lag_end]} B; caught up $(f "${R[keepup_catchup_s]}" 1) s later |
| Slot backlog left by the ceiling runs | | ${R[wal_backlog_msgs]} msgs in $(f "${R[wal_backlog_s]}" 1) s | streamed off before the timed drain |
| set_capture('table') → wal_draining false | | $(f "${R[switch_back_s]}" 1) s | relay start-up included |

PostgreSQL: $PG_DESC. Kafka: $KAFKA_DESC. Relay options: ${RELAY_ARGS:-defaults}.
EOF

if [ "$BASE_JSON" != null ]; then
  b() { local v; v=$(jq -r ".$1 // \"–\"" <<<"$BASE_JSON"); [ "$v" != "–" ] && [ -n "${2:-}" ] && v=$(f "$v" "$2"); echo "$v"; }
  cat <<EOF

#### Baseline binary, same run (stage 5b, after the current binary's latency stages)

Baseline: \`$(b binary)\` (commit $(b commit)). Current: \`$RELAY\`.
EOF
  if [ -n "${BASE[error]:-}" ]; then
    echo
    echo "**Baseline not measured:** ${BASE[error]}"
  else
    cat <<EOF

| Figure | current | baseline |
|---|---:|---:|
| Drain of $N_DRAIN rows (msgs/s) | ${R[drain]} | $(b drain_msgs_per_s) |
| Relay CPU per message, drain (µs) | $(f "${R[drain_cpu_us_per_msg]}" 2) | $(b drain_cpu_us_per_msg 2) |
| e2e @1000/s p50 / p99 / max (ms) | ${R[e2e_p50_ms_at_1000]} / ${R[e2e_p99_ms_at_1000]} / ${R[e2e_max_ms_at_1000]} | $(b e2e_p50_ms_at_1000) / $(b e2e_p99_ms_at_1000) / $(b e2e_max_ms_at_1000) |
| e2e @5000/s p50 / p99 / max (ms) | ${R[e2e_p50_ms_at_5000]} / ${R[e2e_p99_ms_at_5000]} / ${R[e2e_max_ms_at_5000]} | $(b e2e_p50_ms_at_5000) / $(b e2e_p99_ms_at_5000) / $(b e2e_max_ms_at_5000) |
| Step $STEP_FROM → $STEP_TO/s: p50 / p99 / max after it (ms) | ${R[e2e_step_p50]} / ${R[e2e_step_p99]} / ${R[e2e_step_max]} | $(b e2e_step_p50_ms) / $(b e2e_step_p99_ms) / $(b e2e_step_max_ms) |
| Step: catch-up (ms); slow-window threshold (ms) | ${R[e2e_step_catch_up]}; ${R[e2e_step_threshold]} | $(b e2e_step_catch_up_ms); $(b e2e_step_threshold_ms) |
| Step: p99 before it (ms) | ${R[e2e_step_pre_p99]} | $(b e2e_step_pre_p99_ms) |
| Step: settled (ms; windows at or below the build's steady $STEP_TO msg/s p99) | ${R[e2e_step_settle]} | $(b e2e_step_settle_ms) |
EOF
    jq -r '.relay_log_warnings[] | "Baseline relay log: " + .' <<<"$BASE_JSON"
  fi
fi
