#include "cli/prepared_command.h"

#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>

#include "common/errors.h"
#include "pg/pg.h"
#include "pg/startup_check.h"

namespace outbox::relay {
namespace {

nlohmann::json OrNull(const PgResult& r, int row, int col) {
  if (PQgetisnull(r.get(), row, col)) return nullptr;
  return TextValue(r, row, col);
}

void List(PgConnection& conn, bool json, std::ostream& out) {
  // check_url is never shown: it may carry a token. check_host is enough to find it.
  auto r = conn.Exec(
      "SELECT gid, state, topic, key, coalesce(octet_length(payload), 0), checks, check_host, "
      "to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), "
      "extract(epoch FROM now() - created_at)::float8, "
      "to_char(last_check_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), "
      "CASE WHEN state = 'prepared' AND lease_token IS NULL THEN "
      "to_char(next_check_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF') END, "
      "lease_token IS NOT NULL, last_error, owner "
      "FROM outbox.prepared WHERE state IN ('prepared', 'parked') ORDER BY created_at, gid");
  nlohmann::json list = nlohmann::json::array();
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    list.push_back({{"gid", TextValue(r, i, 0)},
                    {"state", TextValue(r, i, 1)},
                    {"topic", TextValue(r, i, 2)},
                    {"key", OrNull(r, i, 3)},
                    {"payload_bytes", std::stoll(TextValue(r, i, 4))},
                    {"checks", std::stoi(TextValue(r, i, 5))},
                    {"check_host", TextValue(r, i, 6)},
                    {"created_at", TextValue(r, i, 7)},
                    {"age_seconds", std::stod(TextValue(r, i, 8))},
                    {"last_check_at", OrNull(r, i, 9)},
                    {"next_check_at", OrNull(r, i, 10)},
                    {"checking", TextValue(r, i, 11) == "t"},
                    {"last_error", OrNull(r, i, 12)},
                    {"owner", TextValue(r, i, 13)}});
  }
  if (json) {
    out << list.dump(2) << "\n";
    return;
  }
  if (list.empty()) {
    out << "no prepared or parked half messages\n";
    return;
  }
  for (const auto& p : list) {
    out << fmt::format("{}  {}  topic={} key={} bytes={} checks={} host={} age={:.1f}s owner={} last_error={}\n",
                       p["gid"].get<std::string>(), p["state"].get<std::string>(), p["topic"].get<std::string>(),
                       p["key"].is_null() ? "(null)" : p["key"].get<std::string>(),
                       p["payload_bytes"].get<long long>(), p["checks"].get<int>(),
                       p["check_host"].get<std::string>(), p["age_seconds"].get<double>(),
                       p["owner"].get<std::string>(),
                       p["last_error"].is_null() ? "-" : p["last_error"].get<std::string>());
  }
}

}  // namespace

int RunPrepared(const PreparedConfig& config, std::ostream& out, std::ostream& err) {
  // What waiting cannot heal (schema, login, privileges) ends here, exit 2.
  auto conn = OpenCheckedSession(config.db, StartupRole::kPreparedOperator);
  int code = kExitOk;
  try {
    if (config.action == PreparedAction::kList) {
      List(*conn, config.json, out);
      return kExitOk;
    }
    std::string sql, done_word;
    switch (config.action) {
      case PreparedAction::kList:
        return kExitOk;  // handled above
      case PreparedAction::kResume:
        sql = "SELECT outbox.resume_prepared($1)";
        done_word = "resumed";
        break;
      case PreparedAction::kDrop:
        sql = "SELECT outbox.drop_prepared($1)";
        done_word = "dropped";
        break;
    }
    std::vector<std::string> gids = config.gids;
    if (config.all) {
      auto r = conn->Exec("SELECT gid FROM outbox.prepared WHERE state = 'parked' ORDER BY created_at, gid");
      for (int i = 0; i < PQntuples(r.get()); ++i) gids.push_back(TextValue(r, i, 0));
    }
    int done = 0;
    for (const auto& gid : gids) {
      auto r = conn->Exec(sql, {gid});
      if (TextValue(r, 0, 0) == "t") {
        ++done;
      } else {
        err << "outbox-relay: no prepared or parked half message with gid '" << gid << "'\n";
        code = kExitRuntime;
      }
    }
    out << done_word << " " << done << " half message(s)\n";
  } catch (const PgError& e) {
    throw RuntimeError(std::string("prepared: ") + e.what());
  }
  return code;
}

}  // namespace outbox::relay
