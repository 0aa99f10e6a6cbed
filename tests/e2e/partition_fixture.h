#pragma once

// Two relays and a real network partition (issue 19): relay A runs inside a network
// namespace (tests/support/netns.h) and reaches PostgreSQL over TCP through the
// namespace's link, Kafka through a forwarder of the brokers' loopback ports
// (tests/support/tcp_forwarder.h); relay B runs here. Cutting the link cuts A off from
// PostgreSQL (packets dropped, both ways, nothing killed); stalling the forwarder cuts A
// off from Kafka. Both relays run as the documented relay login.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <regex>
#include <string>
#include <vector>

#include "http_server.h"
#include "kafka_cluster.h"
#include "netns.h"
#include "pg_cluster.h"
#include "process.h"
#include "tcp_forwarder.h"
#include "topic_reader.h"
#include "wait.h"

namespace outbox::test {


class PartitionFixture : public ::testing::Test {
 protected:
  using Clock = std::chrono::steady_clock;

  void SetUp() override {
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("p_") + info->name();
    for (auto& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? static_cast<char>(std::tolower(ch)) : '_';
    dbname_ = name.substr(0, 60);
    db_ = cluster_.CreateDatabase(dbname_);
    auto m = RunProcess({RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(m.code, 0) << m.err;
    relay_db_ = As(Login::kRelay, db_);  // B: the Unix socket, here
    // A: TCP to the host's end of the namespace's link (pg_hba trusts the namespace's /29).
    relay_db_inside_ = cluster_.TcpConninfoFor(dbname_, LoginName(Login::kRelay), ns_.host_address());
    producer_db_ = As(Login::kProducer, db_);
    topic_ = UniqueTopic("partition");
    kafka_.CreateTopic(topic_, 8);
    kafka_inside_ = std::make_unique<TcpForwarder>(ns_, LoopbackPorts(kafka_.AdvertisedBrokers()));
  }

  // `outbox-relay run` as the relay login, short poll/rebalance timers, metrics on
  // 127.0.0.1 (inside the namespace for A).
  std::unique_ptr<Process> StartRelay(bool inside, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {RelayBinary(),           "run",     "--db",
                                     inside ? relay_db_inside_ : relay_db_, "--brokers", kafka_.bootstrap(),
                                     "--poll-interval",       "50ms",    "--rebalance-interval",
                                     "200ms",                 "--stats-interval", "200ms",
                                     "--metrics-listen",      "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(inside ? ns_.Command(argv) : argv);
  }

  // /metrics of a relay; `inside`: one running in the namespace (its 127.0.0.1).
  std::string Metrics(bool inside, int port) {
    HttpAnswer answer;
    if (inside) {
      ns_.RunInside([&] { answer = HttpGet(port, "/metrics"); });
    } else {
      answer = HttpGet(port, "/metrics");
    }
    return answer.body;
  }
  // A gauge or counter without labels; -1 if absent.
  static double Metric(const std::string& metrics, const std::string& name) {
    return test::MetricSample(metrics, name);
  }

  long long Scalar(const std::string& sql) { return test::ScalarOf(db_, sql); }
  long long Pending() { return Scalar("SELECT count(*) FROM outbox.messages"); }
  bool WaitDrained(std::chrono::milliseconds deadline) {
    return WaitUntil([&] { return Pending() == 0; }, deadline);
  }

  // n messages over `keys` keys in one transaction, as the producer login; key k's
  // messages carry key_seq first, first + 1, ... in id order.
  void Prefill(int n, int keys, int first = 0) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish(" + tx.quote(topic_) + ", 'k' || (i % " + std::to_string(keys) +
            "), convert_to('v' || i, 'UTF8'), jsonb_build_object('key_seq', (" + std::to_string(first) + " + i / " +
            std::to_string(keys) + ")::text)) FROM generate_series(0, " + std::to_string(n - 1) + ") AS i");
    tx.commit();
  }

  // Lane locks held, by backend pid.
  std::map<int, int> LaneOwners() { return test::LaneLockHolders(db_); }
  bool OneOwnerOfAll16() {
    auto o = LaneOwners();
    return o.size() == 1 && o.begin()->second == 16;
  }
  bool TwoRelaysOwnEightLanesEach() { return test::TwoHoldEightLanesEach(LaneOwners()); }
  // The backend of relay A's lane session (application_name outbox-relay, from the
  // namespace's address); 0 if the server has none.
  int InsideLaneSession() {
    return static_cast<int>(Scalar("SELECT max(pid) FROM pg_stat_activity WHERE application_name = 'outbox-relay' "
                                   "AND client_addr = '" + ns_.address() + "'::inet AND datname = current_database()"));
  }
  // The lane locks a backend holds.
  int LanesOf(int pid) {
    auto o = LaneOwners();
    auto it = o.find(pid);
    return it == o.end() ? 0 : it->second;
  }

  static long long MillisSince(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
  }

  // Declaration order is destruction order reversed: the namespace outlives the cluster
  // listening on its link and the forwarder whose sockets live in it.
  NetNamespace ns_;
  PgCluster cluster_{PgClusterOptions{ns_.host_address(), ns_.network()}};
  KafkaCluster kafka_;
  std::unique_ptr<TcpForwarder> kafka_inside_;
  std::string dbname_, db_, relay_db_, relay_db_inside_, producer_db_, topic_;
};

}  // namespace outbox::test
