// Capture mode wal end to end (issue 15, docs/wal-capture.md): outbox.publish emits into
// the WAL, the relay streams the slot. A real PostgreSQL 15 with wal_level=logical, the
// Kafka protocol (mock cluster or OUTBOX_TEST_BROKERS), the relay as a process the tests
// kill, and what it wrote read back with python's confluent_kafka. The same guarantees as
// table mode: exactly once without faults, never after rollback, no loss and first
// occurrences in key order across kill -9, restarts, outages and fail-over; poison parked.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <thread>

#include "http_server.h"
#include "kafka_cluster.h"
#include "pg_cluster.h"
#include "process.h"
#include "topic_reader.h"
#include "wait.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class WalCaptureE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    auto m = test::RunProcess({test::RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(m.code, 0) << m.err;
    relay_db_ = test::As(test::Login::kRelay, db_);
    producer_db_ = test::As(test::Login::kProducer, db_);
    // Capture mode wal needs REPLICATION on the relay's login (docs/relay.md).
    Exec("ALTER ROLE " + test::LoginName(test::Login::kRelay) + " REPLICATION");
    topic_ = test::UniqueTopic("wal");
    kafka_.CreateTopic(topic_, 8);
    SetCapture("wal");
  }

  void TearDown() override {
    // A database with a slot cannot be dropped, and slots are few: drop ours once the
    // relays' walsenders are gone.
    test::WaitUntil([&] {
      try {
        Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
             "WHERE database = current_database()");
        return Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == 0;
      } catch (const std::exception&) {
        return false;
      }
    }, 20s);
  }

  void SetCapture(const std::string& mode) { Exec("SELECT outbox.set_capture('" + mode + "')"); }

  std::unique_ptr<test::Process> StartRelay(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {test::RelayBinary(), "run", "--db", relay_db_, "--brokers", kafka_.bootstrap(),
                                     "--poll-interval", "50ms", "--rebalance-interval", "200ms",
                                     "--stats-interval", "200ms"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<test::Process>(argv);
  }

  long long Scalar(const std::string& sql) { return test::ScalarOf(db_, sql); }
  long long TableRows() { return Scalar("SELECT count(*) FROM outbox.messages"); }
  void Exec(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec(sql);
  }
  // The server's end of WAL now, as a number.
  long long WalNow() { return Scalar("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"); }
  // Bytes of WAL between the slot's confirmed position and `lsn` (<= 0: confirmed past it).
  long long ConfirmedBehind(long long lsn) {
    return Scalar("SELECT coalesce(" + std::to_string(lsn) +
                  " - (confirmed_flush_lsn - '0/0'::pg_lsn), 1) FROM pg_replication_slots "
                  "WHERE database = current_database() UNION ALL SELECT 1 LIMIT 1");
  }
  // Waits until the relay confirmed everything committed so far (Kafka acknowledged it).
  bool WaitPublished(std::chrono::milliseconds deadline = 120s) {
    auto lsn = WalNow();
    return test::WaitUntil([&] { return ConfirmedBehind(lsn) <= 0; }, deadline);
  }
  bool SlotActive() {
    return Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active") == 1;
  }

  // One transaction of n messages over `keys` keys; key k's messages carry key_seq 0, 1, ...
  void Prefill(int n, int keys, const std::string& payload_sql = "convert_to('v' || i, 'UTF8')") {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k' || (i % " + std::to_string(keys) + "), " +
            payload_sql + ", jsonb_build_object('key_seq', (i / " + std::to_string(keys) +
            ")::text)) FROM generate_series(0, " + std::to_string(n - 1) + ") AS i");
    tx.commit();
  }

  // Writers, each with its own keys, one message per transaction; key_seq per key.
  void Write(int writers, int per_writer, int keys_per_writer, std::atomic<int>* written = nullptr,
             const std::string& tag = "w") {
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        try {
          pqxx::connection c{producer_db_};
          c.prepare("pub", "SELECT outbox.publish($1, $2, $3::bytea, $4::jsonb)");
          for (int m = 0; m < per_writer; ++m) {
            pqxx::work tx{c};
            std::string key = tag + std::to_string(w) + "-k" + std::to_string(m % keys_per_writer);
            tx.exec_prepared("pub", topic_, key, pqxx::binarystring("payload " + std::to_string(m)),
                             "{\"key_seq\": \"" + std::to_string(m / keys_per_writer) + "\"}");
            tx.commit();
            if (written) ++*written;
          }
        } catch (const std::exception& e) {
          ++failures;
          ADD_FAILURE() << e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(failures.load(), 0);
  }

  std::string db_, relay_db_, producer_db_;
  test::KafkaCluster kafka_;
  std::string topic_;
};

TEST_F(WalCaptureE2e, WritersTimesKeysArriveOnceInKeyOrderAndTheTableStaysEmpty) {
  auto relay = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  Write(8, 1500, 4);
  EXPECT_EQ(TableRows(), 0) << "capture mode wal wrote rows";
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 12000, 120s, /*to_end=*/true);
  auto rep = test::Analyze(records);
  EXPECT_EQ(rep.records, 12000);
  EXPECT_EQ(rep.distinct, 12000);
  EXPECT_EQ(rep.duplicates, 0);
  EXPECT_EQ(rep.missing_message_id, 0);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  for (const auto& r : records) {
    ASSERT_TRUE(r.key.has_value());
    ASSERT_EQ(r.headers.at("message_id").size(), 36u);
    ASSERT_TRUE(r.value && r.value->rfind("payload ", 0) == 0);
  }
  EXPECT_EQ(TableRows(), 0);
  EXPECT_EQ(Scalar("SELECT pg_relation_size('outbox.messages')"), 0) << "nothing was ever inserted";
  auto metrics = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
  EXPECT_THAT(metrics.out, HasSubstr("outbox_relay_published_total 12000"));
}

TEST_F(WalCaptureE2e, RolledBackPublishNeverArrives) {
  auto relay = StartRelay();
  {
    pqxx::connection c{producer_db_};
    pqxx::work rolled{c};
    rolled.exec("SELECT outbox.publish(" + rolled.quote(topic_) + ", 'k', 'rolled back'::bytea)");
    rolled.abort();
    pqxx::work committed{c};
    committed.exec("SELECT outbox.publish(" + committed.quote(topic_) + ", 'k', 'committed'::bytea)");
    committed.commit();
  }
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 2, 10s, /*to_end=*/true);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].value, "committed");
}

TEST_F(WalCaptureE2e, SurvivesRepeatedKillNineWhileDrainingWithoutLossOrReordering) {
  constexpr int kMessages = 30000, kPerTxn = 500, kKills = 5, kBatch = 50, kInflight = 4;
  for (int i = 0; i < kMessages / kPerTxn; ++i) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k' || (i % 64), convert_to('v' || i, 'UTF8'), "
            "jsonb_build_object('key_seq', (i / 64)::text)) FROM generate_series(" + std::to_string(i * kPerTxn) +
            ", " + std::to_string((i + 1) * kPerTxn - 1) + ") AS i");
    tx.commit();
  }
  const auto end = WalNow();
  std::vector<std::string> args = {"--batch-size", std::to_string(kBatch), "--max-inflight-batches",
                                   std::to_string(kInflight), "--metrics-listen", "127.0.0.1:0"};
  std::mt19937 rng{std::random_device{}()};
  int kills = 0;
  for (; kills < kKills && ConfirmedBehind(end) > 0; ++kills) {
    // Kill once this relay has published a random number of records (it starts again
    // from the slot's confirmed position, so each run republishes a little).
    auto relay = StartRelay(args);
    const int port = test::WaitForMetricsPort(*relay);
    ASSERT_NE(port, 0) << relay->Stderr();
    const double target = std::uniform_int_distribution<int>(1000, 5000)(rng);
    ASSERT_TRUE(test::WaitUntil([&] {
      auto m = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
      return test::MetricSample(m.out, "outbox_relay_published_total") >= target || ConfirmedBehind(end) <= 0;
    }, 60s)) << relay->Stderr();
    relay->Signal(SIGKILL);
    ASSERT_EQ(relay->Wait(10s), 128 + SIGKILL);
  }
  ASSERT_GE(kills, 3) << "the backlog drained before three kills";
  auto relay = StartRelay(args);
  ASSERT_TRUE(test::WaitUntil([&] { return ConfirmedBehind(end) <= 0; }, 120s)) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, kMessages, 120s, /*to_end=*/true);
  auto rep = test::Analyze(records);
  EXPECT_EQ(rep.distinct, kMessages) << "lost messages";
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  // A kill repeats what was in flight plus the unconfirmed part of the transactions in
  // flight (a transaction is confirmed when all of it is acknowledged): per kill at most
  // the records in flight and two transactions.
  EXPECT_LE(rep.duplicates, kills * (kBatch * kInflight + 2 * kPerTxn));
  RecordProperty("duplicates", rep.duplicates);
}

TEST_F(WalCaptureE2e, KillNineRepublishesAtMostWhatWasInFlight) {
  // Small transactions: each is confirmed once acknowledged, so a kill repeats at most
  // the records in flight (batch-size x max-inflight-batches) and the unconfirmed tail.
  constexpr int kBatch = 20, kInflight = 2;
  std::vector<std::string> args = {"--batch-size", std::to_string(kBatch), "--max-inflight-batches",
                                   std::to_string(kInflight)};
  auto relay = StartRelay(args);
  ASSERT_TRUE(test::WaitUntil([&] { return SlotActive(); }, 30s)) << relay->Stderr();
  std::atomic<int> written{0};
  std::thread writer([&] { Write(4, 1000, 8, &written); });
  ASSERT_TRUE(test::WaitUntil([&] { return written.load() > 1500; }, 60s));
  relay->Signal(SIGKILL);
  ASSERT_EQ(relay->Wait(10s), 128 + SIGKILL);
  writer.join();
  auto again = StartRelay(args);
  ASSERT_TRUE(WaitPublished()) << again->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 4000, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 4000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  // Only what was in flight at the kill, plus what the last status update still on its way
  // to the server covered (one loop turn's acknowledgements, at most the in-flight cap):
  // measured up to 62 with a cap of 40 on a loaded machine.
  EXPECT_LE(rep.duplicates, 2 * kBatch * kInflight);
  RecordProperty("duplicates", rep.duplicates);
}

TEST_F(WalCaptureE2e, RecoversFromPostgresRestartsWhileStreaming) {
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return SlotActive(); }, 30s)) << relay->Stderr();
  Prefill(5000, 32);
  test::SharedCluster().Restart("fast");
  Prefill(5000, 32, "convert_to('after fast ' || i, 'UTF8')");
  test::SharedCluster().Restart("immediate");
  Prefill(100, 4, "convert_to('after immediate ' || i, 'UTF8')");
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 10100, 120s, /*to_end=*/true);
  std::set<std::string> ids;
  for (const auto& r : records) ids.insert(r.headers.at("message_id"));
  EXPECT_EQ(ids.size(), 10100u);
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(30s), 0) << relay->Stderr();
}

TEST_F(WalCaptureE2e, WaitsOutAKafkaOutageAndCatchesUp) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to stop a broker";
  auto relay = StartRelay();
  Prefill(1000, 8);
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  kafka_.SetBrokerDown(1);
  long long commit_start = 0;  // where the outage transaction's commit record goes
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k' || (i % 8), convert_to('during outage ' || i, "
            "'UTF8'), jsonb_build_object('key_seq', (i / 8 + 125)::text)) FROM generate_series(0, 999) AS i");
    commit_start = tx.exec1("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0].as<long long>();
    tx.commit();
  }
  ASSERT_TRUE(test::WaitUntil([&] { return relay->Stderr().find("kafka error") != std::string::npos; }, 30s))
      << relay->Stderr();
  // Nothing acknowledged, so the slot is not confirmed past the outage transaction's
  // commit (keepalives may confirm up to its start: it is then streamed again). Fewer
  // records than may be in flight, so the relay reads the keepalives after them.
  EXPECT_GT(ConfirmedBehind(commit_start + 1), 0) << relay->Stderr();
  kafka_.SetBrokerUp(1);
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 2000, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 2000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

TEST_F(WalCaptureE2e, OneRelayStreamsAndAnotherTakesOverWhenItIsKilled) {
  auto a = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return SlotActive(); }, 30s)) << a->Stderr();
  auto b = StartRelay();
  std::atomic<int> written{0};
  std::thread writer([&] { Write(4, 1500, 8, &written); });
  ASSERT_TRUE(test::WaitUntil([&] { return written.load() > 2000; }, 60s));
  a->Signal(SIGKILL);
  ASSERT_EQ(a->Wait(10s), 128 + SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(test::WaitUntil([&] { return SlotActive(); }, 10s)) << "no relay took the stream over within 10 s\n"
                                                                  << b->Stderr();
  RecordProperty("takeover_ms", static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     std::chrono::steady_clock::now() - killed_at)
                                                     .count()));
  writer.join();
  ASSERT_TRUE(WaitPublished()) << b->Stderr();
  EXPECT_THAT(b->Stderr(), HasSubstr("this relay streams the WAL"));
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 6000, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 6000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

TEST_F(WalCaptureE2e, PoisonMessageIsParkedAndOthersKeepFlowing) {
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    // Larger than librdkafka's message.max.bytes (1 MB by default).
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'poison', convert_to(repeat('x', 2000000), 'UTF8'))");
    tx.commit();
  }
  Prefill(500, 10);
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return Scalar("SELECT count(*) FROM outbox.dead_letters") == 1; }, 60s))
      << relay->Stderr();
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("parked in outbox.dead_letters"));
  {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    auto row = tx.exec1("SELECT key, error, octet_length(payload), topic FROM outbox.dead_letters");
    EXPECT_EQ(row[0].as<std::string>(), "poison");
    EXPECT_THAT(row[1].as<std::string>(), HasSubstr("too large"));
    EXPECT_EQ(row[2].as<long long>(), 2000000);
    EXPECT_EQ(row[3].as<std::string>(), topic_);
  }
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 500, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 500);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  // The operator raises the limit and retries: the dead letter goes through the table
  // (the relay drains the table in both modes).
  relay->Signal(SIGTERM);
  ASSERT_EQ(relay->Wait(30s), 0) << relay->Stderr();
  auto bigger = StartRelay({"--kafka-conf", "message.max.bytes=10000000"});
  auto retry = test::RunProcess({test::RelayBinary(), "dead-letters", "retry", "--all", "--db", relay_db_});
  ASSERT_EQ(retry.code, 0) << retry.err;
  ASSERT_TRUE(test::WaitUntil([&] { return TableRows() == 0; }, 60s)) << bigger->Stderr();
  EXPECT_EQ(test::ReadTopic(kafka_.bootstrap(), topic_, 501, 60s, /*to_end=*/true).size(), 501u);
}

TEST_F(WalCaptureE2e, SwitchingModesUnderLoadKeepsEveryKeysOrder) {
  SetCapture("table");  // start in table mode; the WAL written so far is drained first
  auto a = StartRelay();
  auto b = StartRelay();
  std::atomic<int> written{0};
  constexpr int kWriters = 4, kPerWriter = 2500;
  std::thread writer([&] { Write(kWriters, kPerWriter, 8, &written); });
  const char* modes[] = {"wal", "table", "wal", "table", "wal"};
  int step = 0;
  for (const char* mode : modes) {
    ++step;
    ASSERT_TRUE(test::WaitUntil([&] { return written.load() >= step * kWriters * kPerWriter / 6; }, 60s));
    // A switch back to wal waits until the relay drained the last WAL stream.
    ASSERT_TRUE(test::WaitUntil([&] {
      try {
        SetCapture(mode);
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }, 120s)) << "set_capture('" << mode << "') kept failing\n" << a->Stderr() << b->Stderr();
  }
  writer.join();
  ASSERT_TRUE(WaitPublished()) << a->Stderr() << b->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return TableRows() == 0; }, 60s));
  auto rep = test::Analyze(
      test::ReadTopic(kafka_.bootstrap(), topic_, kWriters * kPerWriter, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kWriters * kPerWriter) << "lost messages";
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  EXPECT_EQ(rep.duplicates, 0);
  // Back to table for good: the slot is dropped once drained, nothing pins WAL.
  SetCapture("table");
  ASSERT_TRUE(test::WaitUntil([&] {
    return Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == 0;
  }, 30s)) << a->Stderr() << b->Stderr();
  Prefill(10, 2, "convert_to('table again ' || i, 'UTF8')");
  ASSERT_TRUE(test::WaitUntil([&] { return TableRows() == 0; }, 30s));
}

TEST_F(WalCaptureE2e, HalfMessagesArePublishedFromTheWal) {
  auto relay = StartRelay();
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.prepare('g1', " + tx.quote(topic_) +
            ", 'k', 'half'::bytea, '{}'::jsonb, 'http://127.0.0.1:9/check')");
    tx.exec("SELECT outbox.prepare('g2', " + tx.quote(topic_) +
            ", 'k', 'never'::bytea, '{}'::jsonb, 'http://127.0.0.1:9/check')");
    tx.commit();
  }
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.commit_prepared('g1')");
    tx.exec("SELECT outbox.rollback_prepared('g2')");
    tx.commit();
  }
  EXPECT_EQ(TableRows(), 0);
  ASSERT_TRUE(WaitPublished()) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 2, 10s, /*to_end=*/true);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].value, "half");
}

TEST_F(WalCaptureE2e, ADroppedSlotStopsTheRelayWithTheWayToRecover) {
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return SlotActive(); }, 30s)) << relay->Stderr();
  // A DBA drops the slot: terminate its walsender, then drop it before the relay is back.
  Exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database()");
  ASSERT_TRUE(test::WaitUntil([&] {
    try {
      Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
           "WHERE database = current_database() AND NOT active");
    } catch (const std::exception&) {
    }
    return Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == 0;
  }, 20s));
  EXPECT_EQ(relay->Wait(30s), 1) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("does not exist"));
  EXPECT_THAT(relay->Stderr(), HasSubstr("set_capture('table')"));
  // And publishing refuses rather than emit what no relay would read.
  pqxx::connection c{producer_db_};
  pqxx::work tx{c};
  EXPECT_THROW(tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k', 'x'::bytea)"), pqxx::sql_error);
}

}  // namespace
}  // namespace outbox

namespace outbox {
namespace {

TEST_F(WalCaptureE2e, ALoginWithoutReplicationIsRefusedAtStartUpWithTheFix) {
  Exec("ALTER ROLE " + test::LoginName(test::Login::kRelay) + " NOREPLICATION");
  auto relay = StartRelay();
  EXPECT_EQ(relay->Wait(30s), 2) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("ALTER ROLE " + test::LoginName(test::Login::kRelay) + " REPLICATION"));
  Exec("ALTER ROLE " + test::LoginName(test::Login::kRelay) + " REPLICATION");
}

}  // namespace
}  // namespace outbox
