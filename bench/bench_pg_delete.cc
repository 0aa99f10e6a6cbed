// bench-pg-delete: the PostgreSQL delete ceiling for bench/run.sh.
//
//   bench-pg-delete --db CONNINFO [--batch 500]
//
// Empties outbox.messages the way the relay's database side does, without Kafka: per
// round trip it claims the next `batch` rows of every lane with the relay's claim query
// (binary results, payloads included), then removes them with one
// DELETE ... WHERE id = ANY($1) (the claim query is relay/outbox_store.cc's; with
// --old-claim, the one before issue 8, which the planner ran on the primary key).
// Prints JSON: rows, the seconds spent in DELETE alone and in claim + DELETE, and the two rates. delete_rows_per_s is the delete ceiling;
// claim_delete_rows_per_s is what PostgreSQL allows the relay at most (it must do both).
#include <endian.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.h"
#include "bench_pg.h"

using namespace outbox::bench;

namespace {

template <typename T>
std::string Array(const std::vector<T>& v) {
  std::string s = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s + "}";
}

}  // namespace

int main(int argc, char** argv) {
  auto db = Arg(argc, argv, "db");
  int batch = static_cast<int>(IntArg(argc, argv, "batch", 500));
  std::unique_ptr<PGconn, PgFinish> conn{PQconnectdb(db.c_str())};
  PGconn* c = conn.get();
  if (PQstatus(c) != CONNECTION_OK) Die(PQerrorMessage(c));
  // As the relay's session does (relay/outbox_store.cc): deletes need no WAL flush wait.
  Must(c, PQexec(c, "SET synchronous_commit = off"));
  int lanes = std::atoi(PQgetvalue(Must(c, PQexec(c, "SELECT lane_count FROM outbox.settings")).get(), 0, 0));
  const char* where = Arg(argc, argv, "old-claim").empty()
                          ? "lane = c.lane AND id > c.after_id AND (lane, id) > (c.lane, c.after_id)"
                          : "lane = c.lane AND id > c.after_id";
  std::string claim = std::string(R"sql(
    SELECT m.id, m.message_id, m.lane, m.topic, m.key, m.payload, m.headers::text
    FROM unnest($1::int[], $2::bigint[], $3::int[]) AS c(lane, after_id, lim)
    CROSS JOIN LATERAL (
      SELECT id, message_id, lane, topic, key, payload, headers FROM outbox.messages
      WHERE )sql") + where + R"sql(
      ORDER BY id LIMIT c.lim
    ) AS m)sql";
  Must(c, PQprepare(c, "claim", claim.c_str(), 0, nullptr));
  Must(c, PQprepare(c, "delete", "DELETE FROM outbox.messages WHERE id = ANY($1::bigint[])", 0, nullptr));

  std::vector<int> lane_ids, limits;
  std::vector<long long> after;
  for (int l = 0; l < lanes; ++l) {
    lane_ids.push_back(l);
    limits.push_back(batch);
    after.push_back(0);
  }
  long long rows = 0;
  double delete_s = 0, total_s = 0;
  std::vector<long long> ids;
  while (true) {
    auto t0 = Clock::now();
    std::string a1 = Array(lane_ids), a2 = Array(after), a3 = Array(limits);
    const char* params[] = {a1.c_str(), a2.c_str(), a3.c_str()};
    auto claimed = Must(c, PQexecPrepared(c, "claim", 3, params, nullptr, nullptr, 1));
    PGresult* cr = claimed.get();
    int n = PQntuples(cr);
    ids.clear();
    for (int i = 0; i < n; ++i) {
      std::uint64_t v;
      std::memcpy(&v, PQgetvalue(cr, i, 0), 8);
      std::uint32_t lane;
      std::memcpy(&lane, PQgetvalue(cr, i, 2), 4);
      long long id = static_cast<long long>(be64toh(v));
      ids.push_back(id);
      after[be32toh(lane)] = id;
    }
    claimed.reset();
    if (n == 0) break;
    auto t1 = Clock::now();
    std::string d = Array(ids);
    const char* dp[] = {d.c_str()};
    Must(c, PQexecPrepared(c, "delete", 1, dp, nullptr, nullptr, 0));
    auto t2 = Clock::now();
    delete_s += Seconds(t2 - t1);
    total_s += Seconds(t2 - t0);
    rows += n;
  }
  std::printf(
      "{\"rows\":%lld,\"delete_seconds\":%.3f,\"claim_delete_seconds\":%.3f,\"delete_rows_per_s\":%.0f,"
      "\"claim_delete_rows_per_s\":%.0f}\n",
      rows, delete_s, total_s, rows / std::max(delete_s, 1e-9), rows / std::max(total_s, 1e-9));
  return 0;
}
