#include "cli/doctor_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <tuple>

#include "cli/migrate.h"
#include "common/errors.h"
#include "common/redact.h"
#include "kafka/kafka_probe.h"
#include "pg/outbox_queries.h"
#include "pg/pg.h"
#include "pg/startup_check.h"
#include "webhooks/egress_policy.h"

namespace outbox::relay {
namespace {

// How long doctor waits for Kafka's metadata, and again for the producer id.
constexpr std::chrono::seconds kKafkaTimeout{5};
// The PostgreSQL major version outbox-relay is built and tested against.
constexpr int kMinServerVersion = 150000;
// Topics of pending messages looked up (a diagnostic, not a scan of a huge backlog).
constexpr int kMaxTopics = 100;

enum class Outcome { kPass, kFail, kSkip };

struct Check {
  std::string name;
  Outcome outcome = Outcome::kPass;
  std::string detail;  // what was found; for kFail the problem and its fix
};

const char* Word(Outcome o) {
  switch (o) {
    case Outcome::kPass:
      return "ok";
    case Outcome::kFail:
      return "FAIL";
    case Outcome::kSkip:
      return "skip";
  }
  return "?";
}

class Report {
 public:
  void Pass(std::string name, std::string detail) { checks_.push_back({std::move(name), Outcome::kPass, std::move(detail)}); }
  void Fail(std::string name, std::string detail) { checks_.push_back({std::move(name), Outcome::kFail, std::move(detail)}); }
  void Skip(std::string name, std::string why) { checks_.push_back({std::move(name), Outcome::kSkip, std::move(why)}); }
  bool all_passed() const {
    return std::all_of(checks_.begin(), checks_.end(), [](const Check& c) { return c.outcome == Outcome::kPass; });
  }
  void Write(std::ostream& out, bool json) const {
    if (json) {
      nlohmann::json j;
      j["ok"] = all_passed();
      j["checks"] = nlohmann::json::array();
      for (const auto& c : checks_) j["checks"].push_back({{"check", c.name}, {"result", Word(c.outcome)}, {"detail", c.detail}});
      out << j.dump(2) << "\n";
      return;
    }
    int failed = 0;
    for (const auto& c : checks_) {
      out << fmt::format("{:<4} {}: {}\n", Word(c.outcome), c.name, c.detail);
      if (c.outcome != Outcome::kPass) ++failed;
    }
    if (failed == 0) {
      out << fmt::format("doctor: all {} checks passed\n", checks_.size());
    } else {
      out << fmt::format("doctor: {} of {} checks did not pass\n", failed, checks_.size());
    }
  }

 private:
  std::vector<Check> checks_;
};

const char* const kDatabaseChecks[] = {"server version", "schema version", "privileges for run",
                                       "privileges for notify", "lanes", "capture"};

// The capture mode (docs/relay.md, "Capture mode: table or WAL"). Table mode needs
// nothing more. WAL mode (and a switch back to table that has not drained the slot yet)
// needs what the relay's streamer uses: wal_level = logical, the slot (present, not
// invalidated), REPLICATION on this login (the streamer opens a replication connection
// as the same login) and the publication outbox_wal. Throws PgError.
void CheckCapture(PgConnection& conn, const OutboxSettings& settings, Report& report) {
  if (!settings.streams_wal()) {
    report.Pass("capture", "capture=table (the relay claims the rows of outbox.messages)");
    return;
  }
  const std::string mode =
      settings.capture == "wal" ? "capture=wal" : "capture=table, the WAL slot not yet drained (wal_draining)";
  auto r = conn.Exec(
      "SELECT current_setting('wal_level'), EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_wal'), "
      "       current_user");
  const std::string wal_level = TextValue(r, 0, 0);
  const std::string login = TextValue(r, 0, 2);
  std::vector<std::string> problems;
  if (wal_level != "logical") {
    problems.push_back("wal_level is " + wal_level +
                       ", not logical: set wal_level = logical (ALTER SYSTEM SET wal_level = logical as a "
                       "superuser) and restart PostgreSQL");
  }
  auto slot = ReadSlotLag(conn, settings.slot_name);
  if (!slot.exists && settings.capture == "wal") {
    problems.push_back("the replication slot " + settings.slot_name +
                       " does not exist (dropped?): publish refuses and the relay stops: as the schema owner run "
                       "SELECT outbox.set_capture('table'), then set_capture('wal') again to recreate it "
                       "(docs/relay.md)");
  } else if (!slot.exists) {
    problems.push_back("the replication slot " + settings.slot_name +
                       " the relay still drains does not exist (dropped?): the messages it held are lost and the "
                       "table lanes wait for the drain: see docs/relay.md, \"If a DBA drops the slot\"");
  } else if (slot.wal_status == "lost") {
    problems.push_back("the replication slot " + settings.slot_name +
                       " was invalidated (wal_status=lost, max_slot_wal_keep_size exceeded): messages it held are "
                       "lost and the relay stops: as the schema owner run SELECT outbox.set_capture('table'), then "
                       "investigate (docs/relay.md)");
  }
  if (auto replication = CaptureProblem(conn)) problems.push_back(*replication);  // what `run` refuses at start-up
  if (TextValue(r, 0, 1) != "t") {
    problems.push_back("the publication outbox_wal does not exist: as the schema owner run CREATE PUBLICATION "
                       "outbox_wal (or `outbox-relay migrate --db ...`)");
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    report.Fail("capture", mode + ": " + all);
    return;
  }
  report.Pass("capture", fmt::format("{}: slot {} ({}, {}), lag {} bytes, {}", mode, settings.slot_name,
                                     slot.wal_status, slot.active ? "a relay streams" : "no relay streams yet",
                                     slot.lag_bytes,
                                     slot.lag_seconds_visible
                                         ? fmt::format("{:.1f}s", slot.lag_seconds)
                                         : "seconds not visible to this login (GRANT pg_read_all_stats TO " + login +
                                               " for status and /metrics)"));
}

// The migrations applied, when the login may read outbox_meta.migrations (the owner may;
// the relay role may not, and then the newest object of the schema tells).
std::optional<int> AppliedVersion(PgConnection& conn) {
  auto readable = conn.Exec(
      "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "               WHERE n.nspname = 'outbox_meta' AND c.relname = 'migrations') "
      "   AND has_schema_privilege('outbox_meta', 'USAGE') "
      "   AND has_table_privilege('outbox_meta.migrations', 'SELECT')");
  if (TextValue(readable, 0, 0) != "t") return std::nullopt;
  auto r = conn.Exec("SELECT coalesce(max(version), 0) FROM outbox_meta.migrations");
  return std::stoi(TextValue(r, 0, 0));
}

// The database checks; returns the topics of pending messages (nothing if unknown).
std::optional<std::vector<std::string>> CheckDatabase(const std::string& conninfo, std::chrono::milliseconds session_timeout,
                                                      Report& report) {
  const std::string shown = RedactConninfo(conninfo);
  std::unique_ptr<PgConnection> conn;
  try {
    conn = std::make_unique<PgConnection>(conninfo, "outbox-relay-doctor", session_timeout);
  } catch (const PgError& e) {
    auto problem = PermanentConnectProblem(e.what());
    if (problem.empty()) {
      problem = std::string("cannot reach PostgreSQL: ") + e.what() +
                ": start the server, or fix host/port/dbname in --db (" + shown + ")";
    }
    report.Fail("database", problem);
    for (const char* name : kDatabaseChecks) report.Skip(name, "needs the database");
    return std::nullopt;
  }
  std::optional<std::vector<std::string>> topics;
  try {
    auto who = conn->Exec("SELECT current_user, current_database(), current_setting('server_version_num')::int, "
                          "current_setting('server_version')");
    report.Pass("database", fmt::format("connected as {} to database {} ({})", TextValue(who, 0, 0),
                                        TextValue(who, 0, 1), shown));
    const int version = std::stoi(TextValue(who, 0, 2));
    if (version >= kMinServerVersion) {
      report.Pass("server version", "PostgreSQL " + TextValue(who, 0, 3));
    } else {
      report.Fail("server version", "PostgreSQL " + TextValue(who, 0, 3) +
                                        " is older than 15, the version outbox-relay is built and tested for: "
                                        "upgrade the server");
    }
    const auto migrations = EmbeddedMigrations();
    const Migration& newest = migrations.back();
    auto schema_problem = SchemaProblem(*conn);
    auto applied = AppliedVersion(*conn);
    if (schema_problem) {
      report.Fail("schema version", *schema_problem +
                                        (applied ? fmt::format(" (applied: {} of {})", *applied, newest.version) : ""));
    } else if (applied && *applied < newest.version) {
      report.Fail("schema version", fmt::format("migration {} of {} applied, this outbox-relay carries up to {}: run "
                                                "`outbox-relay migrate --db ...` as the schema owner",
                                                *applied, newest.version, newest.name));
    } else if (applied) {
      report.Pass("schema version", fmt::format("migration {} applied ({}{})", *applied, newest.name,
                                                *applied > newest.version ? "; the schema is newer than this binary" : ""));
    } else {
      report.Pass("schema version", "has what this outbox-relay's newest migration " + newest.name + " created");
    }
    if (schema_problem) {
      for (const char* name : {"privileges for run", "privileges for notify", "lanes", "capture"}) {
        report.Skip(name, "needs the outbox schema");
      }
      return topics;
    }
    bool relay_ok = true;
    for (auto [name, role, what] : {std::tuple{"privileges for run", StartupRole::kRelay, "outbox-relay run"},
                                    std::tuple{"privileges for notify", StartupRole::kNotifier, "outbox-relay notify"}}) {
      if (auto problem = PrivilegeProblem(*conn, role)) {
        report.Fail(name, *problem);
        if (role == StartupRole::kRelay) relay_ok = false;
      } else {
        report.Pass(name, std::string("the login has what `") + what + "` needs");
      }
    }
    if (!relay_ok) {
      report.Skip("lanes", "needs the privileges of run");
      report.Skip("capture", "needs the privileges of run");
      return topics;
    }
    auto settings = ReadOutboxSettings(*conn);
    auto relays = LiveRelays(*conn);
    report.Pass("lanes", fmt::format("{} lanes, {} relay(s) running{}", settings.lane_count, relays,
                                     relays == 0 ? " (a started relay takes every lane)" : ""));
    CheckCapture(*conn, settings, report);
    auto r = conn->Exec("SELECT DISTINCT topic FROM outbox.messages LIMIT " + std::to_string(kMaxTopics));
    topics.emplace();
    for (int i = 0; i < PQntuples(r.get()); ++i) topics->push_back(TextValue(r, i, 0));
  } catch (const PgError& e) {
    report.Fail("database queries", std::string("a statement of the checks above failed: ") + e.what() +
                                    ": see the PostgreSQL log; run doctor again");
  }
  return topics;
}

void CheckKafka(const RunConfig& run, const std::optional<std::vector<std::string>>& topics, Report& report) {
  auto probe = ProbeKafka(run.brokers, run.kafka_conf, topics.value_or(std::vector<std::string>{}),
                          std::chrono::duration_cast<std::chrono::milliseconds>(kKafkaTimeout));
  if (probe.unreachable) {
    report.Fail("kafka", fmt::format("no metadata from {} within {}s: {}: check --brokers, that the brokers run "
                                     "and are reachable from here, and TLS/SASL settings (--kafka-conf)",
                                     run.brokers, kKafkaTimeout.count(), *probe.unreachable));
    report.Skip("idempotence", "needs Kafka");
    report.Skip("topics", "needs Kafka");
    return;
  }
  report.Pass("kafka", fmt::format("{} broker(s) answered at {}", probe.brokers, run.brokers));
  if (probe.idempotence_error) {
    report.Fail("idempotence", "the cluster refused the idempotent producer: " + *probe.idempotence_error +
                                   ": brokers must be Kafka 0.11 or newer and grant the login IdempotentWrite");
  } else if (!probe.producer_id_assigned) {
    report.Fail("idempotence", fmt::format("the cluster gave the idempotent producer no producer id within {}s: "
                                           "check the brokers' logs, their version (0.11 or newer) and the "
                                           "IdempotentWrite permission",
                                           kKafkaTimeout.count()));
  } else {
    report.Pass("idempotence", "the cluster gave the idempotent producer (enable.idempotence=true, acks=all) its id");
  }
  if (!topics) {
    report.Skip("topics", "needs the database (the topics of pending messages)");
    return;
  }
  std::vector<std::string> missing;
  for (const auto& [topic, present] : probe.topics) {
    if (!present) missing.push_back(topic);
  }
  if (missing.empty()) {
    report.Pass("topics", topics->empty() ? "no pending messages"
                                          : fmt::format("all {} topic(s) of pending messages exist", topics->size()));
  } else if (probe.auto_create.value_or(false)) {
    report.Pass("topics", fmt::format("missing {}: the brokers create them (auto.create.topics.enable=true)",
                                      fmt::join(missing, ", ")));
  } else {
    report.Fail("topics", fmt::format("pending messages name topics the cluster lacks: {}: create them (or enable "
                                      "auto.create.topics.enable on the brokers); until then those messages become "
                                      "dead letters",
                                      fmt::join(missing, ", ")));
  }
}

void CheckEgress(const std::string& list, Report& report) {
  try {
    EgressPolicy::Parse(list);
    report.Pass("egress policy", list.empty() ? "check-backs may reach public addresses only"
                                              : "check-backs may reach public addresses and " + list);
  } catch (const ConfigError& e) {
    std::string problems;
    for (const auto& p : e.problems()) problems += (problems.empty() ? "" : "; ") + p;
    report.Fail("egress policy", problems + ": fix --egress-allow (OUTBOX_EGRESS_ALLOW, egress-allow in the config)");
  }
}

}  // namespace

int RunDoctor(const DoctorConfig& config, const std::vector<std::string>& warnings, std::ostream& out) {
  Report report;
  auto topics = CheckDatabase(config.run.db, config.run.session_timeout, report);
  CheckKafka(config.run, topics, report);
  CheckEgress(config.run.egress_allow, report);
  if (warnings.empty()) {
    report.Pass("environment", "no unknown OUTBOX_* variables");
  } else {
    std::string all;
    for (const auto& w : warnings) all += (all.empty() ? "" : "; ") + w;
    report.Fail("environment", all + ": rename or unset them");
  }
  report.Write(out, config.json);
  return report.all_passed() ? kExitOk : kExitRuntime;
}

}  // namespace outbox::relay
