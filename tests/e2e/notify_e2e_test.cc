// `outbox-relay notify` as users run it: a real process against a real PostgreSQL and a
// local HTTP receiver, killed with SIGKILL, stopped with SIGTERM, run twice at once.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>

#include "http_server.h"
#include "pg_cluster.h"
#include "process.h"
#include "wait.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using std::chrono_literals::operator""s;
using test::RelayBinary;

class NotifyCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    auto r = test::RunProcess({RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(r.code, 0) << r.err;
    relay_db_ = test::As(test::Login::kRelay, db_);
    consumer_db_ = test::As(test::Login::kConsumer, db_);
  }

  // Scheduled by a consumer service, as deployed.
  std::int64_t Notify(const std::string& url, const std::string& schedule = "{200 ms, 400 ms}") {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    auto id = tx.exec_params1("SELECT inbox.notify($1, 'hello'::bytea, '{\"X-Kind\": \"paid\"}', $2::interval[])",
                              url, schedule)[0]
                  .as<std::int64_t>();
    tx.commit();
    return id;
  }

  std::string Scalar(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    auto f = tx.exec1(sql)[0];
    return f.is_null() ? "NULL" : f.as<std::string>();
  }

  // As the consumer that scheduled it sees it.
  std::string State(std::int64_t id) {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    auto r = tx.exec("SELECT state FROM inbox.notification_status(" + std::to_string(id) + ")");
    return r.empty() ? "none" : r[0][0].as<std::string>();
  }

  // `outbox-relay notify` with short timings; `options` override the defaults, `flags`
  // (such as --store-replies) are added.
  std::unique_ptr<test::Process> StartWorker(std::map<std::string, std::string> options = {},
                                             const std::vector<std::string>& flags = {}) {
    std::map<std::string, std::string> all = {
        {"--poll-interval", "20ms"}, {"--request-timeout", "3s"}, {"--lease", "4s"}};
    for (auto& [k, v] : options) all[k] = v;
    std::vector<std::string> argv = {RelayBinary(), "notify", "--db", relay_db_, "--egress-allow", "127.0.0.1"};
    for (auto& [k, v] : all) {
      argv.push_back(k);
      argv.push_back(v);
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<test::Process>(argv);
  }

  std::string db_;           // the owner's: migrations and the test's own checks
  std::string relay_db_;     // the notify worker
  std::string consumer_db_;  // the service that schedules notifications
};


TEST_F(NotifyCommand, KilledMidDeliveryTheNotificationIsStillDelivered) {
  test::HttpServer receiver{test::HttpServer::HoldAll()};
  auto id = Notify(receiver.Url("/hook"));
  auto worker = StartWorker();
  ASSERT_TRUE(test::WaitUntil([&] { return receiver.Held() == 1; }, 20s)) << worker->Stderr();
  worker->Signal(SIGKILL);
  ASSERT_EQ(worker->Wait(10s), 128 + SIGKILL);
  EXPECT_EQ(State(id), "pending");

  receiver.SetPolicy(test::HttpServer::Always(200));
  receiver.ReleaseHeld();
  auto restarted = StartWorker();
  ASSERT_TRUE(test::WaitUntil([&] { return State(id) == "delivered"; }, 30s)) << restarted->Stderr();

  // Attempt 1 was sent again once the dead worker's lease expired: at-least-once.
  auto requests = receiver.Requests();
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& r : requests) {
    EXPECT_EQ(r.Header("Notification-Id"), std::to_string(id));
    EXPECT_EQ(r.Header("Notification-Attempt"), "1");
    EXPECT_EQ(r.Header("X-Kind"), "paid");
    EXPECT_EQ(r.body, "hello");
  }
  EXPECT_EQ(Scalar("SELECT string_agg(attempt || ':' || outcome, ',' ORDER BY id) FROM "
                   "inbox.notification_attempts"),
            "1:abandoned,1:delivered");
  EXPECT_THAT(restarted->Stderr(), HasSubstr("notification delivered id=" + std::to_string(id) + " attempt=1"));
  restarted->Signal(SIGTERM);
  EXPECT_EQ(restarted->Wait(20s), 0);
}

TEST_F(NotifyCommand, SigtermFinishesTheDeliveryInFlightThenExitsZero) {
  test::HttpServer receiver{test::HttpServer::HoldAll(200)};
  auto id = Notify(receiver.Url("/hook"));
  auto worker = StartWorker({{"--request-timeout", "20s"}, {"--lease", "30s"}});
  ASSERT_TRUE(test::WaitUntil([&] { return receiver.Held() == 1; }, 20s)) << worker->Stderr();
  worker->Signal(SIGTERM);
  EXPECT_TRUE(worker->Running());
  receiver.ReleaseHeld();
  EXPECT_EQ(worker->Wait(20s), 0) << worker->Stderr();
  EXPECT_EQ(State(id), "delivered");
  EXPECT_EQ(receiver.RequestCount(), 1);
  EXPECT_THAT(worker->Stderr(), HasSubstr("notify worker stopped"));
}

TEST_F(NotifyCommand, TwoWorkersSendEachAttemptOnce) {
  test::HttpServer receiver{[](const test::RecordedRequest& r) {
    return r.Header("Notification-Attempt") == "1" ? test::Reply{503, "busy", false} : test::Reply{200, "ok", false};
  }};
  constexpr int kCount = 40;
  for (int i = 0; i < kCount; ++i) Notify(receiver.Url("/n"), "{100 ms}");
  auto a = StartWorker({{"--poll-interval", "5ms"}, {"--max-per-host", "8"}, {"--max-in-flight", "8"}});
  auto b = StartWorker({{"--poll-interval", "5ms"}, {"--max-per-host", "8"}, {"--max-in-flight", "8"}});
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        return Scalar("SELECT count(*) FROM inbox.notifications WHERE state = 'delivered'") == std::to_string(kCount);
      },
      30s))
      << a->Stderr() << b->Stderr();
  a->Signal(SIGTERM);
  b->Signal(SIGTERM);
  EXPECT_EQ(a->Wait(20s), 0);
  EXPECT_EQ(b->Wait(20s), 0);
  std::set<std::pair<std::string, std::string>> slots;
  for (const auto& r : receiver.Requests()) {
    auto slot = std::make_pair(r.Header("Notification-Id"), r.Header("Notification-Attempt"));
    EXPECT_TRUE(slots.insert(slot).second) << "sent twice: id " << slot.first << " attempt " << slot.second;
  }
  EXPECT_EQ(receiver.RequestCount(), 2 * kCount);
}

TEST_F(NotifyCommand, ExhaustedNotificationsAreLoggedAndCountedInMetrics) {
  test::HttpServer receiver{test::HttpServer::Always(500)};
  auto id = Notify(receiver.Url("/hook?token=s3cret-token"), "{100 ms}");
  auto worker = StartWorker({{"--metrics-listen", "127.0.0.1:0"}, {"--stats-interval", "100ms"}});
  const int port = test::WaitForMetricsPort(*worker);
  ASSERT_NE(port, 0) << worker->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return State(id) == "exhausted"; }, 20s)) << worker->Stderr();
  std::string metrics;
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        metrics = test::HttpGet(port, "/metrics").body;
        return metrics.find("outbox_notify_exhausted_total 1") != std::string::npos &&
               metrics.find("outbox_notify_pending 0") != std::string::npos;
      },
      10s))
      << metrics;
  EXPECT_THAT(metrics, HasSubstr("outbox_notify_failed_attempts_total 2"));
  EXPECT_THAT(metrics, HasSubstr("outbox_notify_delivered_total 0"));
  EXPECT_THAT(metrics, HasSubstr("outbox_notify_attempt_duration_seconds_count 2"));
  EXPECT_THAT(metrics, HasSubstr("outbox_notify_due 0"));
  auto ready = test::HttpGet(port, "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.error;
  EXPECT_EQ(ready.body, "ready\n");
  worker->Signal(SIGTERM);
  EXPECT_EQ(worker->Wait(20s), 0);
  auto log = worker->Stderr();
  EXPECT_THAT(log, HasSubstr("notification attempt failed id=" + std::to_string(id) + " attempt=1/2"));
  EXPECT_THAT(log, HasSubstr("notification exhausted id=" + std::to_string(id) + " attempts=2"));
  EXPECT_THAT(log, Not(HasSubstr("s3cret-token"))) << "URLs may hold secrets and are never logged";
}

TEST_F(NotifyCommand, BadOptionsExitTwoListingEveryProblem) {
  auto r = test::RunProcess({RelayBinary(), "notify", "--db", relay_db_, "--request-timeout", "10s", "--lease", "5s",
                             "--max-per-host", "9", "--max-in-flight", "4", "--poll-interval", "soon"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--lease (5000ms) must be at least --request-timeout + 1s"));
  EXPECT_THAT(r.err, HasSubstr("--max-per-host (9) must not exceed --max-in-flight (4)"));
  EXPECT_THAT(r.err, HasSubstr("--poll-interval: expected a duration"));
}

// Issue 13: a receiver's reply may carry data this database should not keep (and, with a
// notification URL pointing inside the network, would make the worker a reader of it):
// it is read and dropped unless the operator turns storing on (--store-replies).
TEST_F(NotifyCommand, RepliesAreStoredOnlyWhenTheOperatorTurnsItOn) {
  test::HttpServer receiver{
      [](const test::RecordedRequest&) { return test::Reply{200, "account 4711 balance 99", false}; }};
  // What inbox.notification_status shows the consumer (last_response), and what the
  // attempts table holds (response).
  auto response_of = [&](std::int64_t id) {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    auto last = tx.exec1("SELECT coalesce(last_response, 'NULL') FROM inbox.notification_status(" +
                         std::to_string(id) + ")")[0]
                    .as<std::string>();
    return last + " / " +
           Scalar("SELECT string_agg(coalesce(response, 'NULL'), ',') FROM inbox.notification_attempts "
                  "WHERE notification_id = " + std::to_string(id));
  };
  auto by_default = Notify(receiver.Url("/hook"));
  {
    auto worker = StartWorker();
    ASSERT_TRUE(test::WaitUntil([&] { return State(by_default) == "delivered"; }, 20s)) << worker->Stderr();
    worker->Signal(SIGTERM);
    EXPECT_EQ(worker->Wait(20s), 0);
  }
  EXPECT_EQ(response_of(by_default), "NULL / NULL");

  auto stored = Notify(receiver.Url("/hook"));
  auto worker = StartWorker({}, {"--store-replies"});
  ASSERT_TRUE(test::WaitUntil([&] { return State(stored) == "delivered"; }, 20s)) << worker->Stderr();
  EXPECT_EQ(response_of(stored), "account 4711 balance 99 / account 4711 balance 99");
  EXPECT_THAT(worker->Stderr(), Not(HasSubstr("4711"))) << "replies never go to the log";
}

// What waiting cannot heal ends the command at start with the fix: exit 2 (issue 14).
TEST_F(NotifyCommand, MissingSchemaExitsTwoNamingTheFix) {
  auto empty = test::SharedCluster().CreateDatabase("notify_unmigrated");
  auto r = test::RunProcess({RelayBinary(), "notify", "--db", empty});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("run `outbox-relay migrate --db ...` as the schema owner first"));
}

}  // namespace
}  // namespace outbox
