#include "status_command.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "errors.h"
#include "outbox_store.h"
#include "pg.h"

namespace outbox::relay {
namespace {

std::unique_ptr<PgConnection> Open(const std::string& conninfo) {
  try {
    return std::make_unique<PgConnection>(conninfo, "outbox-relay-cli");
  } catch (const PgError& e) {
    throw RuntimeError(std::string("cannot connect to PostgreSQL: ") + e.what());
  }
}

std::string Value(const PgResult& r, int row, int col) {
  return PQgetisnull(r.get(), row, col) ? std::string() : std::string(PQgetvalue(r.get(), row, col));
}

nlohmann::json StateCounts(PgConnection& c, const std::string& table, const std::string& column) {
  nlohmann::json counts = nlohmann::json::object();
  auto exists = c.Exec("SELECT to_regclass($1) IS NOT NULL", {table});
  if (Value(exists, 0, 0) != "t") return nullptr;
  auto r = c.Exec("SELECT " + column + ", count(*) FROM " + table + " GROUP BY 1 ORDER BY 1");
  for (int i = 0; i < PQntuples(r.get()); ++i) counts[Value(r, i, 0)] = std::stoll(Value(r, i, 1));
  return counts;
}

}  // namespace

int RunStatus(const StatusConfig& config, std::ostream& out) {
  auto conn = Open(config.db);
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
      long long n = std::stoll(Value(lanes, i, 1));
      double age = std::stod(Value(lanes, i, 2));
      pending += n;
      oldest = std::max(oldest, age);
      s["lanes"].push_back({{"lane", std::stoi(Value(lanes, i, 0))}, {"pending", n}, {"oldest_pending_age_seconds", age}});
    }
    s["pending"] = pending;
    s["oldest_pending_age_seconds"] = oldest;
    s["lane_count"] = std::stoi(Value(settings, 0, 0));
    s["notify"] = Value(settings, 0, 1) == "t";
    s["dead_letters"] = std::stoll(Value(dead, 0, 0));
    s["relays"] = std::stoll(Value(relays, 0, 0));
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

int RunDeadLetters(const DeadLettersConfig& config, std::ostream& out, std::ostream& err) {
  auto conn = Open(config.db);
  int code = kExitOk;
  try {
    if (config.action == "list") {
      auto r = conn->Exec(
          "SELECT id, message_id, topic, coalesce(key, ''), key IS NULL, coalesce(octet_length(payload), 0), error, "
          "to_char(failed_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF') FROM outbox.dead_letters ORDER BY id");
      nlohmann::json list = nlohmann::json::array();
      for (int i = 0; i < PQntuples(r.get()); ++i) {
        nlohmann::json d = {{"id", std::stoll(Value(r, i, 0))}, {"message_id", Value(r, i, 1)},
                            {"topic", Value(r, i, 2)}, {"key", nullptr},
                            {"payload_bytes", std::stoll(Value(r, i, 5))}, {"error", Value(r, i, 6)},
                            {"failed_at", Value(r, i, 7)}};
        if (Value(r, i, 4) != "t") d["key"] = Value(r, i, 3);
        list.push_back(d);
      }
      if (config.json) {
        out << list.dump(2) << "\n";
      } else if (list.empty()) {
        out << "no dead letters\n";
      } else {
        for (const auto& d : list) {
          out << fmt::format("{}  {}  topic={} key={} bytes={} failed_at={} error={}\n", d["id"].get<long long>(),
                             d["message_id"].get<std::string>(), d["topic"].get<std::string>(),
                             d["key"].is_null() ? "(null)" : d["key"].get<std::string>(),
                             d["payload_bytes"].get<long long>(), d["failed_at"].get<std::string>(),
                             d["error"].get<std::string>());
        }
      }
      return kExitOk;
    }
    std::vector<std::int64_t> ids = config.ids;
    if (config.all) {
      auto r = conn->Exec("SELECT id FROM outbox.dead_letters ORDER BY id");
      for (int i = 0; i < PQntuples(r.get()); ++i) ids.push_back(std::stoll(Value(r, i, 0)));
    }
    int done = 0;
    for (auto id : ids) {
      auto r = config.action == "retry"
                   ? conn->Exec("SELECT outbox.retry_dead_letter($1)", {std::to_string(id)})
                   : conn->Exec("WITH d AS (DELETE FROM outbox.dead_letters WHERE id = $1 RETURNING 1) "
                                "SELECT count(*) > 0 FROM d",
                                {std::to_string(id)});
      if (Value(r, 0, 0) == "t") {
        ++done;
      } else {
        err << "outbox-relay: no dead letter with id " << id << "\n";
        code = kExitRuntime;
      }
    }
    out << (config.action == "retry" ? "retried " : "dropped ") << done << " dead letter(s)\n";
  } catch (const PgError& e) {
    throw RuntimeError(std::string("dead-letters: ") + e.what());
  }
  return code;
}

}  // namespace outbox::relay
