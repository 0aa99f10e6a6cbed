#include "pg/outbox_queries.h"

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
  auto r = conn.Exec("SELECT lane_count, notify FROM outbox.settings");
  return {std::stoi(TextValue(r, 0, 0)), TextValue(r, 0, 1) == "t"};
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
