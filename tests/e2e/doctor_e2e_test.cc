// `outbox-relay doctor` (issue 18): one line per check with the fix when it fails; exit 0
// only when every check passes. Run as the documented relay login against a migrated
// database and a Kafka cluster, and against each broken setup an operator meets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "kafka_cluster.h"
#include "pg_cluster.h"
#include "process.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::RelayBinary;
using test::RunProcess;

// Every check doctor makes, in its order.
const std::vector<std::string> kChecks = {"database",    "server version", "schema version", "privileges for run",
                                          "privileges for notify", "lanes", "capture", "kafka", "idempotence",
                                          "topics", "egress policy", "environment"};

test::RunResult Doctor(const std::string& db, const std::string& brokers, std::vector<std::string> extra = {},
                       std::map<std::string, std::string> env = {}) {
  std::vector<std::string> argv = {RelayBinary(), "doctor", "--db", db, "--brokers", brokers};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::move(env));
}

// The output line of check `name` ("ok   name: ...", "FAIL name: ...", "skip name: ...").
std::string Line(const std::string& out, const std::string& name) {
  std::istringstream in{out};
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 5 && line.compare(5, name.size() + 1, name + ":") == 0) return line;
  }
  return "(no line for " + name + ")";
}

std::string Migrated() {
  auto db = test::FreshDatabase();
  auto m = RunProcess({RelayBinary(), "migrate", "--db", db});
  EXPECT_EQ(m.code, 0) << m.err;
  return db;
}

void Publish(const std::string& db, const std::string& topic) {
  pqxx::connection c{test::As(test::Login::kProducer, db)};
  pqxx::work tx{c};
  tx.exec_params("SELECT outbox.publish($1, 'k', 'v'::bytea)", topic);
  tx.commit();
}

TEST(Doctor, EveryCheckPassesForTheRelayLoginOnAMigratedDatabase) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  auto topic = test::UniqueTopic("doctor");
  kafka.CreateTopic(topic, 1);
  Publish(db, topic);
  auto r = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap());
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  for (const auto& name : kChecks) EXPECT_THAT(Line(r.out, name), ::testing::StartsWith("ok   " + name + ": ")) << r.out;
  EXPECT_THAT(Line(r.out, "database"), HasSubstr("connected as " + test::LoginName(test::Login::kRelay)));
  EXPECT_THAT(Line(r.out, "server version"), HasSubstr("PostgreSQL 15"));
  EXPECT_THAT(Line(r.out, "schema version"), HasSubstr("0007_wal_capture.sql"));
  EXPECT_THAT(Line(r.out, "lanes"), HasSubstr("0 relay(s) running"));
  EXPECT_THAT(Line(r.out, "capture"), HasSubstr("ok   capture: capture=table"));
  auto status = RunProcess({RelayBinary(), "status", "--db", test::As(test::Login::kRelay, db), "--json"});
  EXPECT_EQ(nlohmann::json::parse(status.out)["capture"], "table") << status.out << status.err;
  EXPECT_FALSE(nlohmann::json::parse(status.out).contains("wal")) << status.out;
  EXPECT_THAT(Line(r.out, "topics"), HasSubstr("all 1 topic(s) of pending messages exist"));
  EXPECT_THAT(r.out, HasSubstr("doctor: all 12 checks passed"));

  auto j = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap(), {"--json"});
  EXPECT_EQ(j.code, 0) << j.out << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  EXPECT_TRUE(parsed["ok"].get<bool>());
  ASSERT_EQ(parsed["checks"].size(), kChecks.size());
  for (size_t i = 0; i < kChecks.size(); ++i) {
    EXPECT_EQ(parsed["checks"][i]["check"], kChecks[i]);
    EXPECT_EQ(parsed["checks"][i]["result"], "ok") << parsed["checks"][i].dump();
  }
}

TEST(Doctor, TheSchemaOwnerSeesTheMigrationNumber) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  auto r = Doctor(db, kafka.bootstrap());
  EXPECT_THAT(Line(r.out, "schema version"), HasSubstr("ok   schema version: migration 7 applied")) << r.out;
}

TEST(Doctor, SchemaNotMigratedFailsWithTheFix) {
  test::KafkaCluster kafka;
  auto db = test::FreshDatabase();
  auto r = Doctor(db, kafka.bootstrap());
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(Line(r.out, "schema version"),
              HasSubstr("FAIL schema version: the database has no outbox schema: run `outbox-relay migrate --db ...`"));
  EXPECT_THAT(Line(r.out, "privileges for run"), HasSubstr("skip privileges for run: needs the outbox schema"));
  EXPECT_THAT(Line(r.out, "kafka"), ::testing::StartsWith("ok   kafka:"));
  EXPECT_THAT(r.out, HasSubstr("checks did not pass"));
}

TEST(Doctor, SchemaOlderThanTheBinaryFailsWithTheFix) {
  test::KafkaCluster kafka;
  auto db = test::FreshDatabase();
  test::TempDir old_schema;  // the migrations before 0007: an older binary's schema
  for (const auto& f : std::filesystem::directory_iterator(test::SourceDir() + "/schema")) {
    if (f.path().filename().string() < "0007") {
      std::filesystem::copy_file(f.path(), old_schema.path() + "/" + f.path().filename().string());
    }
  }
  auto old = RunProcess({RelayBinary(), "migrate", "--db", db, "--schema-dir", old_schema.path()});
  ASSERT_EQ(old.code, 0) << old.err;
  auto r = Doctor(db, kafka.bootstrap());
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(Line(r.out, "schema version"),
              HasSubstr("FAIL schema version: the outbox schema is older than this outbox-relay: run `outbox-relay "
                        "migrate --db ...` as the schema owner"));
  EXPECT_THAT(Line(r.out, "schema version"), HasSubstr("(applied: 6 of 7)"));
}

TEST(Doctor, ALoginWithoutTheRelayRoleFailsWithTheGrant) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  {
    pqxx::connection c{db};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS doctor_plain_login");
    tx.exec("CREATE ROLE doctor_plain_login LOGIN");
  }
  auto plain = test::SharedCluster().ConninfoFor(pqxx::connection{db}.dbname(), "doctor_plain_login");
  auto r = Doctor(plain, kafka.bootstrap());
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(Line(r.out, "database"), ::testing::StartsWith("ok   database:"));
  EXPECT_THAT(Line(r.out, "privileges for run"),
              HasSubstr("FAIL privileges for run: the login doctor_plain_login lacks USAGE on schema outbox"));
  EXPECT_THAT(Line(r.out, "privileges for run"), HasSubstr("GRANT outbox_relay TO doctor_plain_login"));
  EXPECT_THAT(Line(r.out, "privileges for notify"), HasSubstr("FAIL privileges for notify: "));
  EXPECT_THAT(Line(r.out, "lanes"), HasSubstr("skip lanes"));
}

TEST(Doctor, AWrongPasswordFailsAndIsNeverPrinted) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  const std::string login = "outbox_test_doctor_pw";
  test::CreatePasswordLogin(db, login, "right-pw-31", "outbox_relay");
  auto base = test::SharedCluster().ConninfoFor(pqxx::connection{db}.dbname(), login);
  auto wrong = Doctor(base + " password=wrong-pw-59", kafka.bootstrap());
  EXPECT_EQ(wrong.code, 1) << wrong.out << wrong.err;
  EXPECT_THAT(Line(wrong.out, "database"),
              HasSubstr("FAIL database: PostgreSQL refused the login (authentication failed): check the user and "
                        "password"));
  EXPECT_THAT(Line(wrong.out, "schema version"), HasSubstr("skip schema version: needs the database"));
  auto right = Doctor(base + " password=right-pw-31", kafka.bootstrap());
  EXPECT_EQ(right.code, 0) << right.out << right.err;
  EXPECT_THAT(Line(right.out, "database"), HasSubstr("password=***"));
  for (const auto* r : {&wrong, &right}) {
    EXPECT_THAT(r->out + r->err, Not(HasSubstr("wrong-pw-59")));
    EXPECT_THAT(r->out + r->err, Not(HasSubstr("right-pw-31")));
  }
}

// WAL capture (docs/wal-capture.md): switched by the schema owner, the relay login needs
// REPLICATION; a slot a DBA dropped and a missing publication are named with their fixes.
TEST(Doctor, WalCaptureNeedsReplicationTheSlotAndThePublication) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  std::string slot;
  {
    pqxx::connection c{db};
    pqxx::nontransaction tx{c};  // set_capture creates the slot: its own transaction
    tx.exec("SELECT outbox.set_capture('wal')");
    slot = tx.exec1("SELECT slot_name FROM outbox.settings")[0].as<std::string>();
    tx.exec("DROP ROLE IF EXISTS doctor_wal_login");
    tx.exec("CREATE ROLE doctor_wal_login LOGIN IN ROLE outbox_relay");
  }
  ASSERT_FALSE(slot.empty());
  auto login = test::SharedCluster().ConninfoFor(pqxx::connection{db}.dbname(), "doctor_wal_login");

  auto no_replication = Doctor(login, kafka.bootstrap());
  EXPECT_EQ(no_replication.code, 1) << no_replication.out << no_replication.err;
  EXPECT_THAT(Line(no_replication.out, "capture"), HasSubstr("FAIL capture: capture=wal: the login doctor_wal_login "
                                                             "lacks REPLICATION"));
  EXPECT_THAT(Line(no_replication.out, "capture"), HasSubstr("ALTER ROLE doctor_wal_login REPLICATION"));
  EXPECT_THAT(Line(no_replication.out, "capture"), Not(HasSubstr("wal_level")));
  EXPECT_THAT(Line(no_replication.out, "capture"), Not(HasSubstr("does not exist")));

  pqxx::connection owner{db};
  pqxx::nontransaction tx{owner};
  tx.exec("ALTER ROLE doctor_wal_login REPLICATION");
  auto ok = Doctor(login, kafka.bootstrap());
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_THAT(Line(ok.out, "capture"), HasSubstr("ok   capture: capture=wal: slot " + slot));
  auto j = nlohmann::json::parse(Doctor(login, kafka.bootstrap(), {"--json"}).out);
  EXPECT_TRUE(j["ok"].get<bool>()) << j.dump();
  // `status` as the same login shows the slot doctor checked (no relay streams it).
  auto status = RunProcess({RelayBinary(), "status", "--db", login, "--json"});
  ASSERT_EQ(status.code, 0) << status.err;
  auto s = nlohmann::json::parse(status.out);
  EXPECT_EQ(s["capture"], "wal") << s.dump();
  EXPECT_EQ(s["wal"]["slot"], slot) << s.dump();
  EXPECT_TRUE(s["wal"]["exists"].get<bool>()) << s.dump();
  EXPECT_FALSE(s["wal"]["active"].get<bool>()) << s.dump();
  EXPECT_EQ(s["wal"]["wal_status"], "reserved") << s.dump();
  EXPECT_FALSE(s["wal"]["draining"].get<bool>()) << s.dump();
  EXPECT_GE(s["wal"]["lag_bytes"].get<long long>(), 0) << s.dump();
  EXPECT_EQ(s["wal"]["lag_seconds"].get<double>(), 0.0) << s.dump();
  auto text = RunProcess({RelayBinary(), "status", "--db", login});
  EXPECT_THAT(text.out, HasSubstr("capture: wal\nwal slot: " + slot + "\nwal slot active: no"));

  // A DBA drops the slot (nobody streams it) and the publication.
  tx.exec("SELECT pg_drop_replication_slot(" + tx.quote(slot) + ")");
  tx.exec("DROP PUBLICATION outbox_wal");
  auto broken = Doctor(login, kafka.bootstrap());
  EXPECT_EQ(broken.code, 1) << broken.out << broken.err;
  EXPECT_THAT(Line(broken.out, "capture"),
              HasSubstr("FAIL capture: capture=wal: the replication slot " + slot + " does not exist"));
  EXPECT_THAT(Line(broken.out, "capture"), HasSubstr("SELECT outbox.set_capture('table')"));
  EXPECT_THAT(Line(broken.out, "capture"), HasSubstr("the publication outbox_wal does not exist"));
  EXPECT_THAT(Line(broken.out, "capture"), Not(HasSubstr("REPLICATION")));
  EXPECT_THAT(Line(broken.out, "lanes"), ::testing::StartsWith("ok   lanes:"));
  tx.exec("DROP ROLE doctor_wal_login");
}

TEST(Doctor, KafkaUnreachableFailsWithTheFix) {
  auto db = Migrated();
  auto r = Doctor(test::As(test::Login::kRelay, db), "127.0.0.1:9");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(Line(r.out, "kafka"), HasSubstr("FAIL kafka: no metadata from 127.0.0.1:9 within 5s"));
  EXPECT_THAT(Line(r.out, "kafka"), HasSubstr("check --brokers"));
  EXPECT_THAT(Line(r.out, "idempotence"), HasSubstr("skip idempotence: needs Kafka"));
  EXPECT_THAT(Line(r.out, "privileges for run"), ::testing::StartsWith("ok   privileges for run:"));
}

TEST(Doctor, AMissingTopicOfPendingMessagesIsNamed) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  auto topic = test::UniqueTopic("doctor-missing");
  Publish(db, topic);
  auto r = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap());
  // A cluster that says it auto-creates topics passes; otherwise the topic is named.
  if (r.code == 0) {
    EXPECT_THAT(Line(r.out, "topics"), HasSubstr("auto.create.topics.enable=true")) << r.out;
  } else {
    EXPECT_THAT(Line(r.out, "topics"), HasSubstr("FAIL topics: pending messages name topics the cluster lacks: " + topic));
  }
}

TEST(Doctor, BadEgressListAndUnknownEnvironmentAreFailedChecks) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  auto r = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap(), {"--egress-allow", "10.0.0.0/99"},
                  {{"OUTBOX_BATCHSIZE", "10"}});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(Line(r.out, "egress policy"), HasSubstr("FAIL egress policy: "));
  EXPECT_THAT(Line(r.out, "egress policy"), HasSubstr("10.0.0.0/99"));
  EXPECT_THAT(Line(r.out, "environment"),
              HasSubstr("FAIL environment: unknown environment variable OUTBOX_BATCHSIZE is ignored (did you mean "
                        "OUTBOX_BATCH_SIZE?)"));
  auto good = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap(), {"--egress-allow", "localhost,10.0.0.0/8"});
  EXPECT_THAT(Line(good.out, "egress policy"),
              HasSubstr("ok   egress policy: check-backs may reach public addresses and localhost,10.0.0.0/8"));
}

TEST(Doctor, TakesRunsOptionsAndTheConfigFileAndBadUsageIsExitTwo) {
  test::KafkaCluster kafka;
  auto db = Migrated();
  auto r = Doctor(test::As(test::Login::kRelay, db), kafka.bootstrap(),
                  {"--config", test::SourceDir() + "/ops/relay.conf.example", "--lanes", "4", "--batch-size", "10"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  auto usage = RunProcess({RelayBinary(), "doctor", "--brokers", kafka.bootstrap()}, {{"OUTBOX_DB", ""}});
  EXPECT_EQ(usage.code, 2);
  EXPECT_THAT(usage.err, HasSubstr("--db is required"));
  auto bad = RunProcess({RelayBinary(), "doctor", "--db", db, "--brokers", "not a list", "--frobnicate"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--brokers"));
  EXPECT_THAT(bad.err, HasSubstr("frobnicate"));
}

}  // namespace
}  // namespace outbox
