#include "cli/dead_letters_command.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "common/errors.h"
#include "pg/pg.h"
#include "pg/startup_check.h"

namespace outbox::relay {

int RunDeadLetters(const DeadLettersConfig& config, std::ostream& out, std::ostream& err) {
  // What waiting cannot heal (schema, login, privileges) ends here, exit 2.
  auto conn = OpenCheckedSession(config.db, StartupRole::kDeadLetterOperator);
  int code = kExitOk;
  try {
    if (config.action == DeadLetterAction::kList) {
      auto r = conn->Exec(
          "SELECT id, message_id, topic, coalesce(key, ''), key IS NULL, coalesce(octet_length(payload), 0), error, "
          "to_char(failed_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF') FROM outbox.dead_letters ORDER BY id");
      nlohmann::json list = nlohmann::json::array();
      for (int i = 0; i < PQntuples(r.get()); ++i) {
        nlohmann::json d = {{"id", std::stoll(TextValue(r, i, 0))}, {"message_id", TextValue(r, i, 1)},
                            {"topic", TextValue(r, i, 2)}, {"key", nullptr},
                            {"payload_bytes", std::stoll(TextValue(r, i, 5))}, {"error", TextValue(r, i, 6)},
                            {"failed_at", TextValue(r, i, 7)}};
        if (TextValue(r, i, 4) != "t") d["key"] = TextValue(r, i, 3);
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
    std::string sql, done_word;
    switch (config.action) {
      case DeadLetterAction::kList:
        return kExitOk;  // handled above
      case DeadLetterAction::kRetry:
        sql = "SELECT outbox.retry_dead_letter($1)";
        done_word = "retried";
        break;
      case DeadLetterAction::kDrop:
        sql = "SELECT outbox.drop_dead_letter($1)";
        done_word = "dropped";
        break;
    }
    std::vector<std::int64_t> ids = config.ids;
    if (config.all) {
      auto r = conn->Exec("SELECT id FROM outbox.dead_letters ORDER BY id");
      for (int i = 0; i < PQntuples(r.get()); ++i) ids.push_back(std::stoll(TextValue(r, i, 0)));
    }
    int done = 0;
    for (auto id : ids) {
      auto r = conn->Exec(sql, {std::to_string(id)});
      if (TextValue(r, 0, 0) == "t") {
        ++done;
      } else {
        err << "outbox-relay: no dead letter with id " << id << "\n";
        code = kExitRuntime;
      }
    }
    out << done_word << " " << done << " dead letter(s)\n";
  } catch (const PgError& e) {
    throw RuntimeError(std::string("dead-letters: ") + e.what());
  }
  return code;
}

}  // namespace outbox::relay
