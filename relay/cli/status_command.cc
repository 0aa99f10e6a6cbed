#include "cli/status_command.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "common/errors.h"
#include "pg/outbox_store.h"
#include "pg/pg.h"

namespace outbox::relay {
namespace {

nlohmann::json StateCounts(PgConnection& c, const std::string& table, const std::string& column) {
  nlohmann::json counts = nlohmann::json::object();
  auto exists = c.Exec("SELECT to_regclass($1) IS NOT NULL", {table});
  if (TextValue(exists, 0, 0) != "t") return nullptr;
  auto r = c.Exec("SELECT " + column + ", count(*) FROM " + table + " GROUP BY 1 ORDER BY 1");
  for (int i = 0; i < PQntuples(r.get()); ++i) counts[TextValue(r, i, 0)] = std::stoll(TextValue(r, i, 1));
  return counts;
}

}  // namespace

int RunStatus(const StatusConfig& config, std::ostream& out) {
  auto conn = OpenCliConnection(config.db);
  nlohmann::json s;
  try {
    auto lanes = conn->Exec(
        "SELECT lane, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
        "FROM outbox.messages GROUP BY lane ORDER BY lane");
    auto settings = conn->Exec("SELECT lane_count, notify FROM outbox.settings");
    auto dead = conn->Exec("SELECT count(*) FROM outbox.dead_letters");
    auto relays = conn->Exec(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::int::oid "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        {std::to_string(kMemberLockClass)});
    long long pending = 0;
    double oldest = 0;
    s["lanes"] = nlohmann::json::array();
    for (int i = 0; i < PQntuples(lanes.get()); ++i) {
      long long n = std::stoll(TextValue(lanes, i, 1));
      double age = std::stod(TextValue(lanes, i, 2));
      pending += n;
      oldest = std::max(oldest, age);
      s["lanes"].push_back({{"lane", std::stoi(TextValue(lanes, i, 0))}, {"pending", n}, {"oldest_pending_age_seconds", age}});
    }
    s["pending"] = pending;
    s["oldest_pending_age_seconds"] = oldest;
    s["lane_count"] = std::stoi(TextValue(settings, 0, 0));
    s["notify"] = TextValue(settings, 0, 1) == "t";
    s["dead_letters"] = std::stoll(TextValue(dead, 0, 0));
    s["relays"] = std::stoll(TextValue(relays, 0, 0));
    s["prepared"] = StateCounts(*conn, "outbox.prepared", "state");
    s["notifications"] = StateCounts(*conn, "inbox.notifications", "state");
  } catch (const PgError& e) {
    throw RuntimeError(std::string("status: ") + e.what() +
                       (e.sqlstate() == "42P01" ? " (run outbox-relay migrate first)" : ""));
  }
  if (config.json) {
    out << s.dump(2) << "\n";
    return kExitOk;
  }
  out << fmt::format("outbox: {} pending, oldest {:.1f}s, {} lanes, {} relay(s) running, {} dead letter(s)\n",
                     s["pending"].get<long long>(), s["oldest_pending_age_seconds"].get<double>(),
                     s["lane_count"].get<int>(), s["relays"].get<long long>(), s["dead_letters"].get<long long>());
  if (!s["lanes"].empty()) {
    out << fmt::format("  {:>5}  {:>10}  {:>14}\n", "lane", "pending", "oldest age (s)");
    for (const auto& l : s["lanes"]) {
      out << fmt::format("  {:>5}  {:>10}  {:>14.1f}\n", l["lane"].get<int>(), l["pending"].get<long long>(),
                         l["oldest_pending_age_seconds"].get<double>());
    }
  }
  for (const char* section : {"prepared", "notifications"}) {
    if (s[section].is_null()) continue;
    out << section << ":";
    if (s[section].empty()) out << " none";
    for (auto it = s[section].begin(); it != s[section].end(); ++it) {
      out << " " << it.key() << "=" << it.value().get<long long>();
    }
    out << "\n";
  }
  return kExitOk;
}

}  // namespace outbox::relay
