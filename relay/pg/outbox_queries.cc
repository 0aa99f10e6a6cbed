#include "pg/outbox_queries.h"

#include <algorithm>
#include <string>

#include "pg/outbox_store.h"  // kMemberLockClass

namespace outbox::relay {

std::vector<LanePending> PendingPerLane(PgConnection& conn) {
  auto r = conn.Exec(
      "SELECT lane, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
      "FROM outbox.messages GROUP BY lane ORDER BY lane");
  std::vector<LanePending> lanes;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    lanes.push_back({std::stoi(TextValue(r, i, 0)), std::stoll(TextValue(r, i, 1)), std::stod(TextValue(r, i, 2))});
  }
  return lanes;
}

OutboxSettings ReadOutboxSettings(PgConnection& conn) {
  // The row as jsonb: a column a schema migrated only to 0006 lacks is NULL, not an error.
  auto r = conn.Exec(
      "SELECT lane_count, notify, coalesce(j ->> 'capture', 'table'), coalesce(j ->> 'slot_name', ''), "
      "       coalesce((j ->> 'wal_draining')::boolean, false) "
      "FROM (SELECT s.lane_count, s.notify, to_jsonb(s) AS j FROM outbox.settings s) t");
  OutboxSettings s;
  s.lane_count = std::stoi(TextValue(r, 0, 0));
  s.notify = TextValue(r, 0, 1) == "t";
  s.capture = TextValue(r, 0, 2);
  s.slot_name = TextValue(r, 0, 3);
  s.wal_draining = TextValue(r, 0, 4) == "t";
  return s;
}

SlotLag ReadSlotLag(PgConnection& conn, const std::string& slot_name) {
  // flush_lag is NULL once the streamer has caught up with an idle server (0 then), and for
  // a login without pg_read_all_stats, whose walsender it may be (state is NULL then too).
  auto r = conn.Exec(
      "SELECT s.active, coalesce(s.active_pid, 0), coalesce(s.wal_status, ''), "
      "       coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
      "                                     ELSE pg_current_wal_lsn() END, s.confirmed_flush_lsn), 0)::bigint, "
      "       coalesce((SELECT extract(epoch FROM r.flush_lag) FROM pg_stat_replication r "
      "                 WHERE r.pid = s.active_pid), 0)::float8, "
      "       coalesce((SELECT r.state IS NOT NULL FROM pg_stat_replication r WHERE r.pid = s.active_pid), true) "
      "FROM pg_replication_slots s WHERE s.slot_name = $1",
      {slot_name});
  SlotLag lag;
  if (PQntuples(r.get()) == 0) return lag;
  lag.exists = true;
  lag.active = TextValue(r, 0, 0) == "t";
  lag.active_pid = std::stoll(TextValue(r, 0, 1));
  lag.wal_status = TextValue(r, 0, 2);
  lag.lag_bytes = std::max<std::int64_t>(0, std::stoll(TextValue(r, 0, 3)));
  // flush_lag keeps its last measurement for a while after the streamer caught up: with
  // nothing unconfirmed, nothing is behind.
  lag.lag_seconds = lag.lag_bytes == 0 ? 0 : std::max(0.0, std::stod(TextValue(r, 0, 4)));
  lag.lag_seconds_visible = TextValue(r, 0, 5) == "t";
  return lag;
}

std::int64_t LiveRelays(PgConnection& conn) {
  auto r = conn.Exec(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
      "AND classid = $1::int::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      {std::to_string(kMemberLockClass)});
  return std::stoll(TextValue(r, 0, 0));
}

std::int64_t DeadLetterCount(PgConnection& conn) {
  auto r = conn.Exec("SELECT count(*) FROM outbox.dead_letters");
  return std::stoll(TextValue(r, 0, 0));
}

}  // namespace outbox::relay
