// Half messages end to end: a real PostgreSQL 15, the Kafka protocol (librdkafka's mock
// cluster, or OUTBOX_TEST_BROKERS), `outbox-relay run` as a process whose check-back asks
// either the example endpoint (examples/half_message, which answers with QueryPrepared
// from a business database) or a scripted HTTP server; records read back with python's
// confluent_kafka.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <outbox/producer.h>
#include <pqxx/pqxx>
#include <regex>
#include <set>
#include <sstream>

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
using ::testing::Not;

const test::Reply kCommitted{200, R"({"status":"committed"})", false};


test::Policy Answer(const test::Reply& reply) {
  return [reply](const test::RecordedRequest&) { return reply; };
}

class HalfMessageE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    auto m = test::RunProcess({test::RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(m.code, 0) << m.err;
    relay_db_ = test::As(test::Login::kRelay, db_);
    producer_db_ = test::As(test::Login::kProducer, db_);
    topic_ = test::UniqueTopic("half");
    kafka_.CreateTopic(topic_, 4);
  }

  // `outbox-relay run` with short check-back timings; `options` override the defaults.
  std::unique_ptr<test::Process> StartRelay(std::map<std::string, std::string> options = {}) {
    std::map<std::string, std::string> all = {
        {"--poll-interval", "50ms"},  {"--rebalance-interval", "200ms"}, {"--stats-interval", "200ms"},
        {"--check-after", "100ms"},   {"--check-interval", "100ms"},     {"--check-max", "3"},
        {"--check-timeout", "5s"}};
    for (auto& [k, v] : options) all[k] = v;
    std::vector<std::string> argv = {test::RelayBinary(), "run", "--db", relay_db_,
                                     "--brokers", kafka_.bootstrap(), "--egress-allow", "127.0.0.1"};
    for (auto& [k, v] : all) {
      argv.push_back(k);
      argv.push_back(v);
    }
    return std::make_unique<test::Process>(argv);
  }

  void Prepare(const std::string& gid, const std::string& check_url) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    outbox::Prepare(tx, gid, topic_, gid, "payload of " + gid, {{"kind", "half"}}, check_url);
    tx.commit();
  }

  std::string Scalar(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    auto f = tx.exec1(sql)[0];
    return f.is_null() ? "NULL" : f.as<std::string>();
  }
  std::string State(const std::string& gid) {
    return Scalar("SELECT state FROM outbox.prepared WHERE gid = '" + gid + "'");
  }
  bool WaitState(const std::string& gid, const std::string& state, std::chrono::milliseconds deadline = 60s) {
    return test::WaitUntil([&] { return State(gid) == state; }, deadline);
  }
  bool WaitDrained() {
    return test::WaitUntil([&] { return Scalar("SELECT count(*) FROM outbox.messages") == "0"; }, 60s);
  }

  // Publishes a sentinel after everything else and reads the topic up to it: whatever a
  // relay would have published before is in the result.
  std::vector<test::Record> ReadAllWithSentinel(int expected_before) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec_params("SELECT outbox.publish($1, 'sentinel', 'sentinel'::bytea)", topic_);
    tx.commit();
    EXPECT_TRUE(WaitDrained());
    return test::ReadTopic(kafka_.bootstrap(), topic_, expected_before + 1, 60s, /*to_end=*/true);
  }

  // The records of key `key`.
  static std::vector<test::Record> WithKey(const std::vector<test::Record>& records, const std::string& key) {
    std::vector<test::Record> out;
    for (const auto& r : records) {
      if (r.key == key) out.push_back(r);
    }
    return out;
  }

  std::set<std::string> RequestedGids(const test::HttpServer& server) {
    std::set<std::string> gids;
    for (const auto& r : server.Requests()) gids.insert(r.target.substr(r.target.find("gid=") + 4));
    return gids;
  }

  // Runs an operator command (status, prepared ...) as the relay login.
  test::RunResult Operator(std::vector<std::string> args) {
    args.insert(args.begin(), test::RelayBinary());
    args.insert(args.end(), {"--db", relay_db_});
    return test::RunProcess(args);
  }

  std::string db_;           // the owner's: migrations and the test's own checks
  std::string relay_db_;     // the relay and the operator commands
  std::string producer_db_;  // producers
  test::KafkaCluster kafka_;
  std::string topic_;
};

// The example producer and its check-back endpoint (outbox::QueryPrepared).
class HalfMessageExampleE2e : public HalfMessageE2e {
 protected:
  void SetUp() override {
    HalfMessageE2e::SetUp();
    business_ = test::FreshDatabase();
    endpoint_ = std::make_unique<test::Process>(std::vector<std::string>{
        OUTBOX_HALF_MESSAGE_EXAMPLE, "serve", "--business-db", business_, "--listen", "127.0.0.1:0"});
    ASSERT_TRUE(test::WaitUntil([&] { return endpoint_->Stdout().find('\n') != std::string::npos; }, 30s))
        << endpoint_->Stderr();
    std::smatch m;
    std::string out = endpoint_->Stdout();
    ASSERT_TRUE(std::regex_search(out, m, std::regex("listening on (\\S+)"))) << out;
    check_url_ = "http://" + m[1].str() + "/check";
  }

  test::RunResult Order(const std::string& gid, const std::string& crash_flag = "") {
    std::vector<std::string> argv = {OUTBOX_HALF_MESSAGE_EXAMPLE, "order", "--outbox-db", producer_db_, "--business-db",
                                     business_, "--gid", gid, "--topic", topic_, "--check-url", check_url_};
    if (!crash_flag.empty()) argv.push_back(crash_flag);
    return test::RunProcess(argv);
  }

  std::string business_;
  std::string check_url_;
  std::unique_ptr<test::Process> endpoint_;
};

TEST_F(HalfMessageExampleE2e, LocalCommitWithoutCommitPreparedIsPublishedByCheckBack) {
  auto relay = StartRelay();
  auto order = Order("order-1", "--stop-before-commit");  // the producer "crashes" here
  ASSERT_EQ(order.code, 0) << order.err;
  ASSERT_TRUE(WaitState("order-1", "committed")) << relay->Stderr();
  EXPECT_EQ(Scalar("SELECT resolved_by FROM outbox.prepared WHERE gid = 'order-1'"), "check-back");

  auto records = ReadAllWithSentinel(1);
  EXPECT_EQ(records.size(), 2u);
  auto mine = WithKey(records, "order-1");
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].value, "order order-1 amount 100");
  EXPECT_EQ(mine[0].headers.at("type"), "order_created");
  EXPECT_EQ(mine[0].headers.at("message_id").size(), 36u);
  EXPECT_THAT(relay->Stderr(), HasSubstr("half message committed by check-back gid=order-1 host=127.0.0.1:"));
}

TEST_F(HalfMessageExampleE2e, LocalRollbackIsNeverPublished) {
  auto relay = StartRelay();
  auto order = Order("order-2", "--fail-local");  // rolled back, then "crashes"
  ASSERT_EQ(order.code, 0) << order.err;
  ASSERT_TRUE(WaitState("order-2", "rolled_back")) << relay->Stderr();
  EXPECT_EQ(Scalar("SELECT resolved_by FROM outbox.prepared WHERE gid = 'order-2'"), "check-back");
  auto records = ReadAllWithSentinel(0);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].key, "sentinel");
  // The producer, coming back late, cannot publish it any more.
  pqxx::connection c{producer_db_};
  pqxx::work tx{c};
  EXPECT_THROW(outbox::CommitPrepared(tx, "order-2"), pqxx::sql_error);
}

TEST_F(HalfMessageExampleE2e, ProducerThatCommitsItselfIsPublishedOnce) {
  auto relay = StartRelay({{"--check-after", "1m"}});
  auto order = Order("order-3");
  ASSERT_EQ(order.code, 0) << order.err;
  EXPECT_THAT(order.out, HasSubstr("published message_id="));
  EXPECT_EQ(State("order-3"), "committed");
  auto records = ReadAllWithSentinel(1);
  EXPECT_EQ(records.size(), 2u);
  EXPECT_EQ(WithKey(records, "order-3").size(), 1u);
}

TEST_F(HalfMessageE2e, EndpointDownThenUpIsPublishedAfterARetry) {
  test::HttpServer endpoint{[](const test::RecordedRequest& r) {
    return r.index < 2 ? test::Reply{503, "down", false} : kCommitted;
  }};
  auto relay = StartRelay();
  Prepare("g1", endpoint.Url("/check?token=s3cret"));
  ASSERT_TRUE(WaitState("g1", "committed")) << relay->Stderr();
  EXPECT_EQ(endpoint.RequestCount(), 3);
  for (const auto& r : endpoint.Requests()) {
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(r.target, "/check?token=s3cret&gid=g1");
  }
  auto records = ReadAllWithSentinel(1);
  EXPECT_EQ(records.size(), 2u);
  auto mine = WithKey(records, "g1");
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].value, "payload of g1");
  EXPECT_EQ(mine[0].headers.at("kind"), "half");
  EXPECT_THAT(relay->Stderr(), HasSubstr("check-back inconclusive gid=g1 host=127.0.0.1:"));
  EXPECT_THAT(relay->Stderr(), HasSubstr("result=http_error error=HTTP 503"));
  EXPECT_THAT(relay->Stderr(), Not(HasSubstr("s3cret"))) << "the check URL may carry a token";
}

TEST_F(HalfMessageE2e, EndpointDownForGoodIsParkedAfterCheckMaxThenResumePublishes) {
  test::HttpServer endpoint{test::HttpServer::Always(503)};
  int closed_port;
  {
    test::HttpServer gone;
    closed_port = gone.port();
  }
  auto relay = StartRelay({{"--metrics-listen", "127.0.0.1:0"}});
  const int port = test::WaitForMetricsPort(*relay);
  ASSERT_NE(port, 0) << relay->Stderr();
  Prepare("g1", endpoint.Url("/check"));
  Prepare("g2", "http://127.0.0.1:" + std::to_string(closed_port) + "/check");  // nobody listens
  ASSERT_TRUE(WaitState("g1", "parked")) << relay->Stderr();
  ASSERT_TRUE(WaitState("g2", "parked")) << relay->Stderr();
  EXPECT_EQ(endpoint.RequestCount(), 3) << "--check-max 3";
  EXPECT_EQ(Scalar("SELECT checks || ' ' || last_error FROM outbox.prepared WHERE gid = 'g1'"), "3 HTTP 503");
  EXPECT_THAT(relay->Stderr(), HasSubstr("half message parked after 3 inconclusive check-backs"));

  auto status = Operator({"status"});
  EXPECT_THAT(status.out, HasSubstr("prepared: parked=2"));
  auto list = Operator({"prepared", "list"});
  EXPECT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("g1  parked  topic=" + topic_ + " key=g1 bytes=13 checks=3"));
  EXPECT_THAT(list.out, HasSubstr("last_error=HTTP 503"));
  auto json = Operator({"prepared", "list", "--json"});
  EXPECT_THAT(json.out, HasSubstr("\"state\": \"parked\""));
  std::string metrics_url = "http://127.0.0.1:" + std::to_string(port) + "/metrics";
  EXPECT_TRUE(test::WaitUntil(
      [&] {
        return test::RunProcess({"curl", "-sf", metrics_url}).out.find("outbox_relay_prepared{state=\"parked\"} 2") !=
               std::string::npos;
      },
      30s));
  auto metrics = test::RunProcess({"curl", "-sf", metrics_url}).out;
  EXPECT_THAT(metrics, HasSubstr("outbox_relay_checkbacks_total{result=\"http_error\"} 3"));
  EXPECT_THAT(metrics, HasSubstr("outbox_relay_checkbacks_total{result=\"unreachable\"} 3"));
  EXPECT_THAT(metrics, HasSubstr("outbox_relay_prepared_parked_total 2"));

  // The endpoint is back: resume publishes g1; drop discards g2.
  endpoint.SetPolicy(Answer(kCommitted));
  auto resume = Operator({"prepared", "resume", "g1"});
  EXPECT_EQ(resume.code, 0) << resume.err;
  EXPECT_THAT(resume.out, HasSubstr("resumed 1 half message(s)"));
  auto drop = Operator({"prepared", "drop", "--all"});
  EXPECT_EQ(drop.code, 0) << drop.err;
  EXPECT_THAT(drop.out, HasSubstr("dropped 1 half message(s)"));
  auto again = Operator({"prepared", "resume", "g2"});
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.err, HasSubstr("no prepared or parked half message with gid 'g2'"));

  ASSERT_TRUE(WaitState("g1", "committed")) << relay->Stderr();
  EXPECT_EQ(State("g2"), "rolled_back");
  auto records = ReadAllWithSentinel(1);
  EXPECT_EQ(records.size(), 2u);
  EXPECT_EQ(WithKey(records, "g1").size(), 1u);
}

TEST_F(HalfMessageE2e, RelayKilledDuringCheckBackIsCheckedAgainByTheNextOwner) {
  test::HttpServer endpoint{test::HttpServer::HoldAll()};
  const std::vector<std::string> gids = {"g1", "g2", "g3", "g4", "g5", "g6"};
  for (const auto& g : gids) Prepare(g, endpoint.Url("/check"));
  // Two relays race for the same due half messages: each is checked by one of them.
  auto a = StartRelay();
  auto b = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return endpoint.Held() == static_cast<int>(gids.size()); }, 30s))
      << a->Stderr() << b->Stderr();
  EXPECT_EQ(endpoint.RequestCount(), static_cast<int>(gids.size())) << "a half message was checked twice at once";
  EXPECT_EQ(RequestedGids(endpoint).size(), gids.size());

  // Both die with their checks in flight; the next owner checks again once the claims
  // expire and publishes each half message once.
  a->Signal(SIGKILL);
  b->Signal(SIGKILL);
  ASSERT_EQ(a->Wait(10s), 128 + SIGKILL);
  ASSERT_EQ(b->Wait(10s), 128 + SIGKILL);
  endpoint.SetPolicy(Answer(kCommitted));
  endpoint.ReleaseHeld();
  for (const auto& g : gids) EXPECT_EQ(State(g), "prepared");
  auto c = StartRelay();
  for (const auto& g : gids) ASSERT_TRUE(WaitState(g, "committed")) << c->Stderr();
  EXPECT_GE(endpoint.RequestCount(), static_cast<int>(2 * gids.size()));

  auto records = ReadAllWithSentinel(static_cast<int>(gids.size()));
  auto report = test::Analyze(records);
  EXPECT_EQ(report.records, static_cast<int>(gids.size()) + 1);
  EXPECT_EQ(report.duplicates, 0) << "one commit, one record";
  std::set<std::string> keys;
  for (const auto& r : records) keys.insert(r.key.value_or(""));
  EXPECT_EQ(keys, (std::set<std::string>{"g1", "g2", "g3", "g4", "g5", "g6", "sentinel"}));
}

TEST_F(HalfMessageE2e, SigtermStopsPromptlyAndHandsBackTheClaimInFlight) {
  test::HttpServer endpoint{test::HttpServer::HoldAll()};
  Prepare("g1", endpoint.Url("/check"));
  auto relay = StartRelay({{"--check-timeout", "10m"}});
  ASSERT_TRUE(test::WaitUntil([&] { return endpoint.Held() == 1; }, 30s)) << relay->Stderr();
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(30s), 0) << relay->Stderr();
  // Handed back: due again at once, not counted, although its lease would run 20 min.
  EXPECT_EQ(Scalar("SELECT state || ' ' || checks || ' ' || (lease_token IS NULL) || ' ' || "
                   "(next_check_at <= now()) FROM outbox.prepared WHERE gid = 'g1'"),
            "prepared 0 true true");
  endpoint.SetPolicy(Answer(kCommitted));
  endpoint.ReleaseHeld();
  auto next = StartRelay();
  ASSERT_TRUE(WaitState("g1", "committed")) << next->Stderr();
}

TEST_F(HalfMessageE2e, CheckBackSurvivesAPostgresRestart) {
  test::HttpServer endpoint{Answer(kCommitted)};
  auto relay = StartRelay();
  Prepare("g1", endpoint.Url("/check"));
  ASSERT_TRUE(WaitState("g1", "committed")) << relay->Stderr();
  test::SharedCluster().Restart("immediate");
  Prepare("g2", endpoint.Url("/check"));
  ASSERT_TRUE(WaitState("g2", "committed")) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("check-back lost its PostgreSQL session"));
  // g1, g2 and the sentinel, each once — except that g1's row may be published again: an
  // immediate restart can undo the relay's DELETE of it (the relay's session does not wait
  // for its WAL flush, docs/relay.md), and a row that comes back is published again.
  auto report = test::Analyze(ReadAllWithSentinel(2));
  EXPECT_EQ(report.distinct, 3);
  EXPECT_LE(report.duplicates, 1);
}

// The times of the relay's log lines that contain `text` ("2026-11-30 12:00:00.123 ...").
std::vector<std::chrono::system_clock::time_point> LogTimes(const std::string& log, const std::string& text) {
  std::vector<std::chrono::system_clock::time_point> times;
  std::istringstream lines{log};
  for (std::string line; std::getline(lines, line);) {
    if (line.find(text) == std::string::npos) continue;
    std::tm tm{};
    const char* rest = strptime(line.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
    if (!rest || *rest != '.') continue;
    auto t = std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::milliseconds(std::atoi(rest + 1));
    times.push_back(t);
  }
  return times;
}

// Issue 14: a check-back statement that keeps failing (here a privilege taken back while
// the relay runs) is retried after growing pauses — capped exponential backoff with
// jitter — not every second; once it works again, check-back goes on.
TEST_F(HalfMessageE2e, CheckBackBacksOffWhileAStatementKeepsFailing) {
  test::HttpServer endpoint{Answer(kCommitted)};
  auto relay = StartRelay();
  ASSERT_TRUE(test::WaitUntil([&] { return relay->Stderr().find("check-back started") != std::string::npos; }, 30s))
      << relay->Stderr();
  const std::string claim = "FUNCTION outbox.claim_prepared_checks(integer, interval, interval)";
  {
    pqxx::connection c{db_};
    pqxx::nontransaction(c).exec("REVOKE EXECUTE ON " + claim + " FROM outbox_relay");
  }
  const std::string failed = "check-back statement failed";
  ASSERT_TRUE(test::WaitUntil([&] { return LogTimes(relay->Stderr(), failed).size() >= 4; }, 60s))
      << relay->Stderr();
  auto times = LogTimes(relay->Stderr(), failed);
  auto gap = [&](size_t i) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(times[i + 1] - times[i]);
  };
  // Pauses of 0.5, 1 and 2 s less up to a fifth of jitter; a fixed one-second pause
  // would give three gaps of about 1 s.
  EXPECT_GE(gap(0), 350ms);
  EXPECT_GE(gap(2), 1500ms) << relay->Stderr();
  EXPECT_GT(gap(2), gap(0)) << relay->Stderr();
  EXPECT_THAT(relay->Stderr(), HasSubstr("permission denied for function claim_prepared_checks"));
  EXPECT_THAT(relay->Stderr(), HasSubstr("retrying in"));

  {
    pqxx::connection c{db_};
    pqxx::nontransaction(c).exec("GRANT EXECUTE ON " + claim + " TO outbox_relay");
  }
  Prepare("g1", endpoint.Url("/check"));
  ASSERT_TRUE(WaitState("g1", "committed")) << relay->Stderr();
}

}  // namespace
}  // namespace outbox
