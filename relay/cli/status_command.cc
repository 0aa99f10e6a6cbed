#include "cli/status_command.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "common/errors.h"
#include "pg/outbox_queries.h"
#include "pg/pg.h"
#include "pg/startup_check.h"

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
  // What waiting cannot heal (schema, login, privileges) ends here, exit 2.
  auto conn = OpenCheckedSession(config.db, StartupRole::kStatusReader);
  nlohmann::json s;
  try {
    auto lanes = PendingPerLane(*conn);
    auto settings = ReadOutboxSettings(*conn);
    long long pending = 0;
    double oldest = 0;
    s["lanes"] = nlohmann::json::array();
    for (const auto& l : lanes) {
      pending += l.pending;
      oldest = std::max(oldest, l.oldest_age_seconds);
      s["lanes"].push_back({{"lane", l.lane}, {"pending", l.pending}, {"oldest_pending_age_seconds", l.oldest_age_seconds}});
    }
    s["pending"] = pending;
    s["oldest_pending_age_seconds"] = oldest;
    s["lane_count"] = settings.lane_count;
    s["notify"] = settings.notify;
    s["capture"] = settings.capture;
    if (!settings.slot_name.empty()) {
      // The slot in wal mode (or while draining it), and in table mode if one is left.
      auto slot = ReadSlotLag(*conn, settings.slot_name);
      if (settings.streams_wal() || slot.exists) {
        s["wal"] = {{"slot", settings.slot_name},
                    {"exists", slot.exists},
                    {"active", slot.active},
                    {"wal_status", slot.wal_status},
                    {"lag_bytes", slot.lag_bytes},
                    {"lag_seconds", slot.lag_seconds},
                    {"lag_seconds_visible", slot.lag_seconds_visible},
                    {"draining", settings.wal_draining}};
      }
    }
    s["dead_letters"] = DeadLetterCount(*conn);
    s["relays"] = LiveRelays(*conn);
    s["prepared"] = StateCounts(*conn, "outbox.prepared", "state");
    s["notifications"] = StateCounts(*conn, "inbox.notifications", "state");
  } catch (const PgError& e) {
    throw RuntimeError(std::string("status: ") + e.what());
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
  out << "capture: " << s["capture"].get<std::string>() << "\n";
  if (s.contains("wal")) {
    const auto& w = s["wal"];
    const bool exists = w["exists"].get<bool>();
    out << "wal slot: " << w["slot"].get<std::string>()
        << (exists ? "" : " (missing: in wal mode publish refuses and no relay can stream; see docs/relay.md)")
        << "\n";
    if (exists) {
      out << "wal slot active: " << (w["active"].get<bool>() ? "yes (a relay streams)" : "no (no relay streams)")
          << "\n";
      out << "wal status: " << w["wal_status"].get<std::string>() << "\n";
      if (w["lag_seconds_visible"].get<bool>()) {
        out << fmt::format("wal lag: {} bytes, {:.1f}s\n", w["lag_bytes"].get<long long>(),
                           w["lag_seconds"].get<double>());
      } else {
        out << fmt::format("wal lag: {} bytes, seconds not visible to this login (GRANT pg_read_all_stats TO it)\n",
                           w["lag_bytes"].get<long long>());
      }
    }
    out << "wal draining: " << (w["draining"].get<bool>() ? "yes" : "no") << "\n";
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
