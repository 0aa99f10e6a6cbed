// `outbox-relay run` end to end: a real PostgreSQL 15, the Kafka protocol (librdkafka's
// mock cluster, or OUTBOX_TEST_BROKERS), the relay as a separate process that the tests
// kill, and what it wrote read back with python's confluent_kafka.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <regex>
#include <pqxx/pqxx>
#include <random>
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



class RelayE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    auto m = test::RunProcess({test::RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(m.code, 0) << m.err;
    relay_db_ = test::As(test::Login::kRelay, db_);
    producer_db_ = test::As(test::Login::kProducer, db_);
    topic_ = test::UniqueTopic("relay");
    kafka_.CreateTopic(topic_, 8);
  }

  std::unique_ptr<test::Process> StartRelay(std::vector<std::string> extra = {}) {
    // The relay runs as the documented relay login, never as the owner (issue 13).
    std::vector<std::string> argv = {test::RelayBinary(), "run", "--db", RelayDb(), "--brokers", kafka_.bootstrap(),
                                     "--poll-interval", "50ms", "--rebalance-interval", "200ms",
                                     "--stats-interval", "200ms"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<test::Process>(argv);
  }

  const std::string& RelayDb() const { return relay_db_; }
  const std::string& ProducerDb() const { return producer_db_; }

  long long Scalar(const std::string& sql) { return test::ScalarOf(db_, sql); }
  long long Pending() { return Scalar("SELECT count(*) FROM outbox.messages"); }
  void Exec(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec(sql);
    tx.commit();
  }

  // One transaction of n messages over `keys` keys; key k's messages carry key_seq
  // 0, 1, 2, ... in id order.
  void Prefill(int n, int keys, const std::string& payload_sql = "convert_to('v' || i, 'UTF8')") {
    pqxx::connection c{ProducerDb()};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k' || (i % " + std::to_string(keys) + "), " +
            payload_sql + ", jsonb_build_object('key_seq', (i / " + std::to_string(keys) +
            ")::text)) FROM generate_series(0, " + std::to_string(n - 1) + ") AS i");
    tx.commit();
  }

  bool WaitDrained(std::chrono::milliseconds deadline = 120s) {
    return test::WaitUntil([&] { return Pending() == 0; }, deadline);
  }

  // The 16 default lanes split evenly between two relays.
  bool TwoRelaysOwnEightLanesEach() { return test::TwoHoldEightLanesEach(LaneOwners()); }

  // Lane locks held, by backend pid.
  std::map<int, int> LaneOwners() { return test::LaneLockHolders(db_); }

  std::string db_;           // the owner's: migrations and the test's own checks
  std::string relay_db_;     // what the relay and operator commands use
  std::string producer_db_;  // what producers use
  test::KafkaCluster kafka_;
  std::string topic_;
};

TEST_F(RelayE2e, EightWritersTwentyThousandMessagesArriveOnceInKeyOrder) {
  auto relay = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  constexpr int kWriters = 8, kPerWriter = 2500, kKeysPerWriter = 4;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      try {
        pqxx::connection c{ProducerDb()};
        c.prepare("pub", "SELECT outbox.publish($1, $2, $3::bytea, $4::jsonb)");
        for (int m = 0; m < kPerWriter; ++m) {
          int k = m % kKeysPerWriter, seq = m / kKeysPerWriter;
          pqxx::work tx{c};
          std::string key = "w" + std::to_string(w) + "-k" + std::to_string(k);
          tx.exec_prepared("pub", topic_, key, pqxx::binarystring("payload " + std::to_string(m)),
                           "{\"key_seq\": \"" + std::to_string(seq) + "\", \"writer\": \"w" + std::to_string(w) + "\"}");
          tx.commit();
        }
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << e.what();
      }
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();

  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, kWriters * kPerWriter, 120s, /*to_end=*/true);
  auto rep = test::Analyze(records);
  EXPECT_EQ(rep.records, kWriters * kPerWriter);
  EXPECT_EQ(rep.distinct, kWriters * kPerWriter);
  EXPECT_EQ(rep.duplicates, 0);
  EXPECT_EQ(rep.missing_message_id, 0);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  for (const auto& r : records) {
    ASSERT_TRUE(r.key.has_value());
    ASSERT_EQ(r.headers.at("writer"), r.key->substr(0, r.key->find('-'))) << "row headers must arrive";
    ASSERT_EQ(r.headers.at("message_id").size(), 36u);
  }

  auto metrics = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
  EXPECT_THAT(metrics.out, HasSubstr("outbox_relay_published_total 20000"));
  EXPECT_THAT(metrics.out, HasSubstr("outbox_relay_owned_lanes 16"));
  EXPECT_THAT(metrics.out, HasSubstr("outbox_relay_pending_messages{lane=\"0\"}"));
  EXPECT_EQ(test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/healthz"}).code, 0);
  EXPECT_EQ(test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/readyz"}).code, 0);

  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(30s), 0) << relay->Stderr();
}

TEST_F(RelayE2e, RolledBackPublishNeverArrives) {
  auto relay = StartRelay();
  {
    pqxx::connection c{ProducerDb()};
    pqxx::work rolled{c};
    rolled.exec("SELECT outbox.publish(" + rolled.quote(topic_) + ", 'k', 'rolled back'::bytea)");
    rolled.abort();
    pqxx::work committed{c};
    committed.exec("SELECT outbox.publish(" + committed.quote(topic_) + ", 'k', 'committed'::bytea)");
    committed.commit();
  }
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 1, 60s, /*to_end=*/true);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].value, "committed");
}

TEST_F(RelayE2e, SurvivesRepeatedKillNineWithoutLossOrReordering) {
  constexpr int kMessages = 30000, kKills = 6, kBatch = 20, kInflight = 2, kLanes = 16;
  Prefill(kMessages, 64);
  std::vector<std::string> args = {"--batch-size", std::to_string(kBatch), "--max-inflight-batches",
                                   std::to_string(kInflight)};
  std::mt19937 rng{std::random_device{}()};
  int kills = 0;
  for (; kills < kKills; ++kills) {
    long long before = Pending();
    if (before == 0) break;
    auto relay = StartRelay(args);
    long long target = std::max(0LL, before - std::uniform_int_distribution<long long>(300, 3000)(rng));
    ASSERT_TRUE(test::WaitUntil([&] { return Pending() <= target || !relay->Running(); }, 60s)) << relay->Stderr();
    relay->Signal(SIGKILL);
    ASSERT_EQ(relay->Wait(10s), 128 + SIGKILL);
  }
  ASSERT_GE(kills, 5) << "the backlog drained before five kills";
  auto relay = StartRelay(args);
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();

  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, kMessages, 120s, /*to_end=*/true);
  auto rep = test::Analyze(records);
  EXPECT_EQ(rep.distinct, kMessages) << "lost messages";
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  // Only what was in flight at a kill may come twice.
  EXPECT_LE(rep.duplicates, kills * kLanes * kInflight * kBatch);
  RecordProperty("duplicates", rep.duplicates);
}

TEST_F(RelayE2e, RecoversFromPostgresRestartsWhileDraining) {
  constexpr int kMessages = 20000;
  Prefill(kMessages, 32);
  auto relay = StartRelay({"--batch-size", "100"});
  ASSERT_TRUE(test::WaitUntil([&] { return Pending() < kMessages - 2000; }, 60s)) << relay->Stderr();
  test::SharedCluster().Restart("fast");
  ASSERT_TRUE(test::WaitUntil([&] { return Pending() < kMessages - 8000; }, 60s)) << relay->Stderr();
  test::SharedCluster().Restart("immediate");
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();
  // LISTEN and lane locks were re-established: new messages still flow.
  Prefill(100, 4, "convert_to('after restart', 'UTF8')");
  ASSERT_TRUE(WaitDrained(30s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("lost the PostgreSQL session"));

  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, kMessages + 100, 120s, /*to_end=*/true);
  std::set<std::string> ids;
  for (const auto& r : records) ids.insert(r.headers.at("message_id"));
  EXPECT_EQ(ids.size(), static_cast<size_t>(kMessages + 100));
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(30s), 0);
}

TEST_F(RelayE2e, WaitsOutAKafkaOutageAndCatchesUp) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to stop a broker";
  auto relay = StartRelay();
  Prefill(1000, 8);
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();
  kafka_.SetBrokerDown(1);
  Prefill(2000, 8, "convert_to('during outage ' || i, 'UTF8')");
  // Nothing can be acknowledged while the only broker is down, so nothing is deleted.
  ASSERT_TRUE(test::WaitUntil([&] { return relay->Stderr().find("kafka error") != std::string::npos; }, 30s))
      << relay->Stderr();
  EXPECT_EQ(Pending(), 2000);
  kafka_.SetBrokerUp(1);
  ASSERT_TRUE(WaitDrained()) << relay->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 3000, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 3000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

TEST_F(RelayE2e, TwoRelaysShareLanesAndTheSurvivorTakesOver) {
  auto a = StartRelay();
  auto b = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach(); }, 30s)) << a->Stderr() << b->Stderr();

  constexpr int kWriters = 4, kPerWriter = 1500;
  std::atomic<int> written{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      pqxx::connection c{ProducerDb()};
      for (int m = 0; m < kPerWriter; ++m) {
        pqxx::work tx{c};
        tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'w" + std::to_string(w) + "-k" +
                std::to_string(m % 8) + "', 'x'::bytea, jsonb_build_object('key_seq', '" + std::to_string(m / 8) + "'))");
        tx.commit();
        ++written;
      }
    });
  }
  ASSERT_TRUE(test::WaitUntil([&] { return written.load() > kWriters * kPerWriter / 3; }, 60s));
  a->Signal(SIGKILL);
  ASSERT_EQ(a->Wait(10s), 128 + SIGKILL);
  ASSERT_TRUE(test::WaitUntil([&] {
    auto o = LaneOwners();
    return o.size() == 1 && o.begin()->second == 16;
  }, 10s)) << "the survivor did not take over within 10 s\n" << b->Stderr();
  for (auto& t : writers) t.join();
  ASSERT_TRUE(WaitDrained()) << b->Stderr();

  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kWriters * kPerWriter, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kWriters * kPerWriter);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

TEST_F(RelayE2e, PoisonMessageIsParkedAndOthersKeepFlowing) {
  {
    pqxx::connection c{ProducerDb()};
    pqxx::work tx{c};
    // Larger than librdkafka's message.max.bytes (1 MB by default).
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'poison', convert_to(repeat('x', 2000000), 'UTF8'))");
    tx.commit();
  }
  Prefill(500, 10);
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return Pending() == 0 && Scalar("SELECT count(*) FROM outbox.dead_letters") == 1; },
                              60s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("message parked in outbox.dead_letters"));
  pqxx::connection c{db_};
  {
    pqxx::work tx{c};
    auto row = tx.exec1("SELECT key, error FROM outbox.dead_letters");
    EXPECT_EQ(row[0].as<std::string>(), "poison");
    EXPECT_THAT(row[1].as<std::string>(), HasSubstr("too large"));
  }
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 500, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 500);

  auto list = test::RunProcess({test::RelayBinary(), "dead-letters", "list", "--db", RelayDb()});
  EXPECT_EQ(list.code, 0);
  EXPECT_THAT(list.out, HasSubstr("key=poison"));

  // Retried while the broker still refuses it: parked again under the SAME id, so the id
  // the operator saw stays its handle (issue 14).
  const auto id = Scalar("SELECT id FROM outbox.dead_letters");
  const auto first_failure = Scalar("SELECT (extract(epoch FROM failed_at) * 1000000)::bigint FROM outbox.dead_letters");
  auto again = test::RunProcess({test::RelayBinary(), "dead-letters", "retry", std::to_string(id), "--db", RelayDb()});
  ASSERT_EQ(again.code, 0) << again.err;
  ASSERT_TRUE(test::WaitUntil([&] {
    return Scalar("SELECT count(*) FROM outbox.dead_letters WHERE id = " + std::to_string(id) +
                  " AND (extract(epoch FROM failed_at) * 1000000)::bigint > " + std::to_string(first_failure)) == 1;
  }, 60s)) << relay->Stderr();

  // The operator raises the limit and retries: the message goes out.
  relay->Signal(SIGTERM);
  ASSERT_EQ(relay->Wait(30s), 0);
  auto bigger = StartRelay({"--kafka-conf", "message.max.bytes=10000000"});
  auto retry = test::RunProcess({test::RelayBinary(), "dead-letters", "retry", "--all", "--db", RelayDb()});
  ASSERT_EQ(retry.code, 0) << retry.err;
  EXPECT_THAT(retry.out, HasSubstr("retried 1"));
  ASSERT_TRUE(WaitDrained(60s)) << bigger->Stderr();
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.dead_letters"), 0);
  auto all = test::ReadTopic(kafka_.bootstrap(), topic_, 501, 60s, /*to_end=*/true);
  EXPECT_EQ(all.size(), 501u);
  EXPECT_EQ(test::RunProcess({test::RelayBinary(), "dead-letters", "drop", "12345", "--db", RelayDb()}).code, 1);
}

TEST_F(RelayE2e, SigtermDuringLoadExitsZeroAndRestartPublishesNoDuplicates) {
  constexpr int kMessages = 20000;
  Prefill(kMessages, 32);
  auto relay = StartRelay({"--batch-size", "100"});
  ASSERT_TRUE(test::WaitUntil([&] { return Pending() < kMessages - 3000; }, 60s)) << relay->Stderr();
  relay->Signal(SIGTERM);
  ASSERT_EQ(relay->Wait(60s), 0) << relay->Stderr();
  EXPECT_GT(Pending(), 0) << "the test wanted to stop mid-drain";
  auto again = StartRelay({"--batch-size", "100"});
  ASSERT_TRUE(WaitDrained()) << again->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kMessages, 120s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kMessages);
  EXPECT_EQ(rep.duplicates, 0);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

// A transaction that took its id early but commits late must still be published before
// the next message of its key, even though younger rows of its lane were claimed first.
TEST_F(RelayE2e, LateCommitBelowRowsInFlightKeepsKeyOrder) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to hold records in flight";
  pqxx::connection late{ProducerDb()};
  std::string other;  // a key in the same lane as "K"
  {
    pqxx::connection owner{db_};  // lane_of is not the producer's to call
    pqxx::work tx{owner};
    other = tx.exec1("SELECT k FROM generate_series(1, 10000) i, LATERAL (SELECT 'L' || i AS k) x "
                     "WHERE outbox.lane_of(k, NULL, 16) = outbox.lane_of('K', NULL, 16) LIMIT 1")[0].as<std::string>();
  }
  auto relay = StartRelay({"--batch-size", "2", "--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  auto inflight = [&] {
    auto m = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
    return m.out.find("outbox_relay_inflight_messages 8\n") != std::string::npos;
  };
  kafka_.SetBrokerRtt(1, 60000);  // acknowledgements wait: records stay in flight
  pqxx::work first{late};
  first.exec("SELECT outbox.publish(" + first.quote(topic_) + ", 'K', 'first'::bytea, '{\"key_seq\": \"0\"}')");
  {
    pqxx::connection c{ProducerDb()};
    pqxx::work tx{c};
    for (int i = 0; i < 20; ++i) {  // more than fit in flight: the lane has a backlog
      tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", " + tx.quote(other) + ", 'other'::bytea, " +
              "jsonb_build_object('key_seq', '" + std::to_string(i) + "'))");
    }
    tx.commit();
  }
  // 4 batches of 2 younger rows are in flight (--max-inflight-batches 4).
  ASSERT_TRUE(test::WaitUntil(inflight, 30s)) << relay->Stderr();
  first.commit();
  {
    pqxx::connection c{ProducerDb()};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'K', 'second'::bytea, '{\"key_seq\": \"1\"}')");
    tx.commit();
  }
  kafka_.SetBrokerRtt(1, 0);
  ASSERT_TRUE(WaitDrained(60s)) << relay->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 22, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 22);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

TEST_F(RelayE2e, StatusReportsPendingAndDeadLetters) {
  Prefill(30, 3);
  auto text = test::RunProcess({test::RelayBinary(), "status", "--db", RelayDb()});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("outbox: 30 pending"));
  auto json = test::RunProcess({test::RelayBinary(), "status", "--db", RelayDb(), "--json"});
  EXPECT_EQ(json.code, 0);
  EXPECT_THAT(json.out, HasSubstr("\"pending\": 30"));
  EXPECT_THAT(json.out, HasSubstr("\"dead_letters\": 0"));
}

TEST_F(RelayE2e, OutboxStaysBoundedUnderSustainedLoad) {
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("ALTER SYSTEM SET autovacuum_naptime = '1s'");
    tx.exec("SELECT pg_reload_conf()");
  }
  auto relay = StartRelay();
  auto size = [&] { return Scalar("SELECT pg_total_relation_size('outbox.messages')"); };
  auto round = [&](int n) {
    for (int i = 0; i < n / 2000; ++i) Prefill(2000, 50);
    ASSERT_TRUE(WaitDrained()) << relay->Stderr();
  };
  round(20000);
  long long first = size();
  for (int i = 0; i < 5; ++i) round(20000);
  // Let autovacuum catch up with the last round before measuring.
  ASSERT_TRUE(test::WaitUntil([&] {
    return Scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'outbox.messages'::regclass") < 5000;
  }, 60s));
  long long after = size();
  std::cout << "outbox.messages total size after 20k: " << first << " bytes; after 120k: " << after << " bytes\n";
  RecordProperty("size_after_20k", first);
  RecordProperty("size_after_120k", after);
  EXPECT_LE(after, 2 * first + 1024 * 1024) << "the outbox grows with the number of messages ever published";
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("ALTER SYSTEM RESET autovacuum_naptime");
    tx.exec("SELECT pg_reload_conf()");
  }
}

// Issue 12, bug 1. A lane being released (its records still in flight) that the relay
// wants again is kept; locking it again would stack the advisory lock, and the next
// release would leave it locked but unowned.
TEST_F(RelayE2e, ReleasingLaneWantedAgainIsKeptNotLockedTwice) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to hold records in flight";
  auto a = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*a);
  ASSERT_TRUE(test::WaitUntil([&] {
    auto o = LaneOwners();
    return o.size() == 1 && o.begin()->second == 16;
  }, 30s)) << a->Stderr();
  kafka_.SetBrokerRtt(1, 60000);  // acknowledgements wait: records stay in flight
  Prefill(400, 64);
  ASSERT_TRUE(test::WaitUntil([&] {
    auto m = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
    return m.out.find("outbox_relay_inflight_messages 400\n") != std::string::npos;
  }, 30s)) << a->Stderr();
  auto count = [&](const std::string& text) {
    auto err = a->Stderr();
    int n = 0;
    for (auto pos = err.find(text); pos != std::string::npos; pos = err.find(text, pos + 1)) ++n;
    return n;
  };
  auto b = StartRelay();
  // A's share drops to 8: it releases 8 lanes, which stay locked while in flight.
  ASSERT_TRUE(test::WaitUntil([&] { return count("lane releasing") >= 8; }, 30s)) << a->Stderr();
  b->Signal(SIGKILL);
  ASSERT_EQ(b->Wait(10s), 128 + SIGKILL);
  // A's share is 16 again: the releasing lanes are wanted again.
  ASSERT_TRUE(test::WaitUntil([&] { return count("release cancelled") >= 8 || count("lanes acquired") >= 2; }, 30s))
      << a->Stderr();
  kafka_.SetBrokerRtt(1, 0);
  ASSERT_TRUE(WaitDrained()) << a->Stderr();
  // A third relay: fair shares again. A lane locked twice would stay A's after one unlock.
  auto c = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach(); }, 30s)) << "lanes did not move to the new relay\n" << a->Stderr() << c->Stderr();
}

// Issue 12, bug 2. --batch-size above the in-flight record cap (50000) used to claim
// nothing and spin.
TEST_F(RelayE2e, BatchSizeAboveTheInFlightCapStillDrains) {
  Prefill(3000, 30);
  auto relay = StartRelay({"--batch-size", "100000"});
  ASSERT_TRUE(WaitDrained(60s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("--batch-size is above the in-flight cap"));
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 3000, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 3000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

// Issue 12, bug 3. Kafka refuses a whole record batch; librdkafka fails every record in
// it with the batch's error. None of those rows is at fault: none may be parked, and
// all arrive in key order.
TEST_F(RelayE2e, RefusedRecordBatchParksNoInnocentRow) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to refuse a produce request";
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return LaneOwners().size() == 1; }, 30s)) << relay->Stderr();
  kafka_.FailNextProduceRequests(1, 87 /* INVALID_RECORD */);
  Prefill(500, 10);
  ASSERT_TRUE(WaitDrained(60s)) << relay->Stderr();
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.dead_letters"), 0) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("record in a refused record batch, will be tried alone"));
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 500, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 500);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
}

// Issue 12, bug 4. Producer settings under which a failed record can land after younger
// records of its key are refused at start-up, all at once, with the reason.
TEST_F(RelayE2e, RefusesKafkaSettingsThatCanReorderAKey) {
  auto r = test::RunProcess({test::RelayBinary(), "run", "--db", RelayDb(), "--brokers", kafka_.bootstrap(),
                             "--kafka-conf", "message.timeout.ms=30000", "--kafka-conf", "retries=3",
                             "--kafka-conf", "enable.gapless.guarantee=false", "--kafka-conf", "partitioner=random"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("message.timeout.ms=30000: must stay 0"));
  EXPECT_THAT(r.err, HasSubstr("retries=3: must stay 2147483647"));
  EXPECT_THAT(r.err, HasSubstr("enable.gapless.guarantee=false: must stay true"));
  EXPECT_THAT(r.err, HasSubstr("partitioner=random"));
}

// Issue 12, bug 5. outbox.set_lane_count between drains, while relays run: they pick up
// the new lanes (they used to read the count only when they connected).
TEST_F(RelayE2e, LaneCountChangedWhileRelaysRunIsPickedUp) {
  auto a = StartRelay();
  auto b = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach(); }, 30s)) << a->Stderr() << b->Stderr();
  Exec("SELECT outbox.set_lane_count(32)");
  Prefill(2000, 200);
  ASSERT_TRUE(WaitDrained(60s)) << a->Stderr() << b->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] {
    auto o = LaneOwners();
    return o.size() == 2 && o.begin()->second == 16 && o.rbegin()->second == 16;
  }, 30s)) << a->Stderr() << b->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 2000, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, 2000);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  // Back to fewer lanes: the relays release the lanes beyond the count.
  Exec("SELECT outbox.set_lane_count(4)");
  ASSERT_TRUE(test::WaitUntil([&] {
    auto o = LaneOwners();
    int total = 0;
    for (const auto& [pid, n] : o) total += n;
    return total == 4;
  }, 30s)) << a->Stderr() << b->Stderr();
}

// Issue 14: with two relays, each exports the per-lane gauges of the lanes it owns only,
// so sum() across instances counts every pending row once.
TEST_F(RelayE2e, PerLaneGaugesComeFromTheLanesOwnerOnly) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to hold records in flight";
  auto a = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port_a = test::WaitForMetricsPort(*a);
  auto b = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port_b = test::WaitForMetricsPort(*b);
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach(); }, 30s)) << a->Stderr() << b->Stderr();
  kafka_.SetBrokerRtt(1, 60000);  // nothing is acknowledged: rows stay pending
  Prefill(160, 16);
  auto lanes_of = [](int port) {
    auto m = test::RunProcess({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
    std::map<std::string, long long> lanes;
    static const std::regex kLine{R"re(outbox_relay_pending_messages\{lane="(\d+)"\} (\d+))re"};
    for (std::sregex_iterator it{m.out.begin(), m.out.end(), kLine}, end; it != end; ++it) {
      lanes[(*it)[1]] = std::stoll((*it)[2]);
    }
    return lanes;
  };
  std::map<std::string, long long> in_a, in_b;
  ASSERT_TRUE(test::WaitUntil([&] {
    in_a = lanes_of(port_a);
    in_b = lanes_of(port_b);
    long long sum = 0;
    for (const auto& [l, n] : in_a) sum += n;
    for (const auto& [l, n] : in_b) sum += n;
    return in_a.size() == 8 && in_b.size() == 8 && sum == 160;
  }, 30s)) << "a=" << in_a.size() << " b=" << in_b.size() << "\n" << a->Stderr() << b->Stderr();
  for (const auto& [lane, n] : in_a) EXPECT_EQ(in_b.count(lane), 0u) << "lane " << lane << " exported twice";
  // The database's lane count comes from every relay (the alert OutboxLanesUnowned
  // compares the owned lanes' sum with its max()).
  auto lane_count = [](int port) {
    auto m = test::HttpGet(port, "/metrics");
    return m.status == 200 ? test::MetricSample(m.body, "outbox_relay_lane_count") : -1;
  };
  EXPECT_TRUE(test::WaitUntil([&] { return lane_count(port_a) == 16 && lane_count(port_b) == 16; }, 30s))
      << lane_count(port_a) << " " << lane_count(port_b);
  kafka_.SetBrokerRtt(1, 0);
  ASSERT_TRUE(WaitDrained(60s)) << a->Stderr() << b->Stderr();
}

// A metric's value from /metrics (a sample without labels), or -1.
double MetricValue(int port, const std::string& name) {
  auto m = test::HttpGet(port, "/metrics");
  return m.status == 200 ? test::MetricSample(m.body, name) : -1;
}

// The relay's log lines containing `text`.
int LinesWith(const std::string& log, const std::string& text) {
  int n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + text.size())) ++n;
  return n;
}

// Issue 14: an outage that heals is waited out with backoff, logged once per interval
// with a count (not once per attempt), and /readyz says why the relay is not ready.
TEST_F(RelayE2e, PostgresDownIsLoggedOncePerIntervalAndReadyzSaysWhy) {
  auto relay = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return test::HttpGet(port, "/readyz").status == 200; }, 30s)) << relay->Stderr();
  const size_t before = relay->Stderr().size();
  test::SharedCluster().Down();
  // Eight failed attempts take about 16 s with the backoff (0.1 s doubling to 5 s).
  bool waited = test::WaitUntil([&] { return MetricValue(port, "outbox_relay_db_connect_failures_total") >= 8; }, 90s);
  auto readyz = test::HttpGet(port, "/readyz");
  std::string outage = relay->Stderr().substr(before);
  test::SharedCluster().Up();
  ASSERT_TRUE(waited) << outage;
  EXPECT_EQ(readyz.status, 503);
  EXPECT_THAT(readyz.body, HasSubstr("not ready: no PostgreSQL session"));
  // One line when it started and at most one summary per 10 s, for the relay loop and
  // for the check-back worker: not one per attempt. Each entry is one line.
  EXPECT_EQ(LinesWith(outage, "lost the PostgreSQL session"), 1) << outage;
  EXPECT_LE(LinesWith(outage, "warning cannot use PostgreSQL"), 2) << outage;
  EXPECT_LE(LinesWith(outage, "check-back cannot use PostgreSQL"), 2) << outage;
  EXPECT_LE(LinesWith(outage, "\n"), 8) << outage;
  EXPECT_EQ(LinesWith(outage, "\n\t"), 0) << "a log entry spread over several lines:\n" << outage;
  ASSERT_TRUE(test::WaitUntil([&] { return test::HttpGet(port, "/readyz").status == 200; }, 60s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr().substr(before), HasSubstr("failed attempts)"));
  Prefill(20, 4);
  ASSERT_TRUE(WaitDrained(60s)) << relay->Stderr();
}

// Issue 14: a statement that fails on a live session (here: a privilege taken away) is
// retried with capped exponential backoff, logged once per interval with a count,
// counted in outbox_relay_statement_failures_total and named by /readyz. Nothing is lost.
TEST_F(RelayE2e, AStatementThatKeepsFailingBacksOffAndReadyzSaysWhy) {
  auto relay = StartRelay({"--metrics-listen", "127.0.0.1:0"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return test::HttpGet(port, "/readyz").status == 200; }, 30s)) << relay->Stderr();
  Exec("REVOKE DELETE ON outbox.messages FROM outbox_relay");
  const size_t before = relay->Stderr().size();
  Prefill(50, 5);
  test::HttpAnswer readyz;
  bool waited = test::WaitUntil([&] {
    readyz = test::HttpGet(port, "/readyz");
    return MetricValue(port, "outbox_relay_statement_failures_total") >= 4 && readyz.status == 503;
  }, 60s);
  std::string failing = relay->Stderr().substr(before);
  Exec("GRANT DELETE ON outbox.messages TO outbox_relay");
  ASSERT_TRUE(waited) << failing;
  EXPECT_THAT(readyz.body, HasSubstr("database statements failing"));
  EXPECT_THAT(readyz.body, HasSubstr("permission denied"));
  // Backoff 1, 2, 4 s...: four failures take about 7 s and at most two lines.
  EXPECT_LE(LinesWith(failing, "database statement failed"), 2) << failing;
  ASSERT_TRUE(WaitDrained(90s)) << relay->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return test::HttpGet(port, "/readyz").status == 200; }, 30s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("database statements succeed again"));
  auto records = test::ReadTopic(kafka_.bootstrap(), topic_, 50, 60s, /*to_end=*/true);
  std::set<std::string> ids;
  for (const auto& r : records) ids.insert(r.headers.at("message_id"));
  EXPECT_EQ(ids.size(), 50u);
}

// Issue 19: a relay whose Kafka acknowledges nothing for --kafka-stall-timeout while
// records wait hands its lanes (and its place in the group) over, says so in /readyz
// and its metrics, asks Kafka again and again, and takes the lanes back when it answers.
// Every message arrives and each key's first copies arrive in order.
TEST_F(RelayE2e, HandsItsLanesOverWhileKafkaAcknowledgesNothing) {
  if (!kafka_.is_mock()) GTEST_SKIP() << "needs the mock cluster to stall Kafka";
  auto relay = StartRelay({"--metrics-listen", "127.0.0.1:0", "--kafka-stall-timeout", "2s"});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return MetricValue(port, "outbox_relay_owned_lanes") == 16; }, 30s))
      << relay->Stderr();
  kafka_.SetBrokerRtt(1, 120000);  // Kafka takes requests and answers nothing
  Prefill(200, 8);
  test::HttpAnswer readyz;
  bool stalled = test::WaitUntil([&] {
    readyz = test::HttpGet(port, "/readyz");
    return MetricValue(port, "outbox_relay_kafka_stalled") == 1 && LaneOwners().empty() && readyz.status == 503;
  }, 60s);
  kafka_.SetBrokerRtt(1, 0);
  ASSERT_TRUE(stalled) << relay->Stderr();
  EXPECT_THAT(readyz.body, HasSubstr("Kafka acknowledged nothing"));
  EXPECT_EQ(MetricValue(port, "outbox_relay_kafka_stalls_total"), 1);
  ASSERT_TRUE(WaitDrained(120s)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("Kafka answers again"));
  EXPECT_EQ(MetricValue(port, "outbox_relay_kafka_stalled"), 0);
  auto report = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, 200, 60s, /*to_end=*/true));
  EXPECT_EQ(report.distinct, 200);
  EXPECT_EQ(report.out_of_order_keys, 0) << report.first_problem;
}

}  // namespace
}  // namespace outbox
