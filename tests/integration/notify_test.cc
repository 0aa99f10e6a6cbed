// Best-effort notifications: inbox.notify (SQL contract) and outbox::Notifier (the
// worker library), against a real PostgreSQL 15 and a local HTTP receiver.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <outbox/notifications.h>
#include "webhooks/notifier.h"
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "http_server.h"
#include "cli/migrate.h"
#include "pg_cluster.h"
#include "wait.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono_literals::operator""ms;
using std::chrono_literals::operator""s;

// One recorded attempt, times in seconds since the epoch (database clock).
struct AttemptRow {
  int attempt = 0;
  double started = 0, finished = 0;
  std::optional<int> status;
  std::string error, outcome;
};

class NotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    relay::Migrate(db_, relay::EmbeddedMigrations(), log);
    consumer_db_ = test::As(test::Login::kConsumer, db_);
    relay_db_ = test::As(test::Login::kRelay, db_);
  }

  std::int64_t NotifyOne(const std::string& url, const std::string& body = "{\"paid\":true}",
                         const Headers& headers = {{"Content-Type", "application/json"}},
                         std::optional<std::vector<milliseconds>> schedule = std::vector<milliseconds>{200ms, 400ms}) {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    auto id = Notify(tx, url, body, headers, schedule);
    tx.commit();
    return id;
  }

  // The error of `sql` run by the consumer service ("" if none).
  std::string SqlError(const std::string& sql) {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    try {
      tx.exec(sql);
    } catch (const pqxx::sql_error& e) {
      return e.what();
    }
    return "";
  }

  std::string Scalar(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    auto f = tx.exec1(sql)[0];
    return f.is_null() ? "NULL" : f.as<std::string>();
  }

  // As the consumer that scheduled it sees it.
  NotificationStatus Status(std::int64_t id) {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    auto s = NotificationStatusOf(tx, id);
    if (!s) throw std::runtime_error("no such notification");
    return *s;
  }

  std::vector<AttemptRow> Attempts(std::int64_t id) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    std::vector<AttemptRow> out;
    for (const auto& r : tx.exec_params(
             "SELECT attempt, extract(epoch FROM started_at)::float8, "
             "coalesce(extract(epoch FROM finished_at)::float8, 0), status_code, coalesce(error, ''), "
             "coalesce(outcome, '') FROM inbox.notification_attempts WHERE notification_id = $1 ORDER BY id",
             id)) {
      AttemptRow a;
      a.attempt = r[0].as<int>();
      a.started = r[1].as<double>();
      a.finished = r[2].as<double>();
      if (!r[3].is_null()) a.status = r[3].as<int>();
      a.error = r[4].as<std::string>();
      a.outcome = r[5].as<std::string>();
      out.push_back(a);
    }
    return out;
  }

  NotifierOptions FastOptions() {
    NotifierOptions o;
    o.conninfo = relay_db_;  // the worker runs as the relay login
    o.egress_allow = "127.0.0.1";  // the test receivers listen on loopback
    o.poll_interval = 20ms;
    o.request_timeout = 3s;
    o.connect_timeout = 1s;
    o.lease = 10s;
    o.stats_interval = 100ms;
    return o;
  }

  std::string db_;           // the owner's: migrations and the test's own checks
  std::string consumer_db_;  // schedules notifications and reads their status
  std::string relay_db_;     // the worker (claims, records, purges)
};

// Runs a Notifier on its own thread for the lifetime of the object.
class Worker {
 public:
  explicit Worker(NotifierOptions o) : notifier_(std::move(o)) {
    thread_ = std::thread([this] {
      try {
        notifier_.Run();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock{mu_};
        error_ = e.what();
      }
    });
  }
  ~Worker() {
    notifier_.Stop();
    thread_.join();
  }
  std::string error() {
    std::lock_guard<std::mutex> lock{mu_};
    return error_;
  }

 private:
  Notifier notifier_;
  std::mutex mu_;
  std::string error_;
  std::thread thread_;
};

using NotifySql = NotifyTest;
using NotifierWorker = NotifyTest;

TEST_F(NotifySql, RejectsInvalidUrlsClearly) {
  for (const char* url : {"ftp://example.com/x", "not a url", "example.com/hook", "http://", "http:///path",
                          "javascript:alert(1)", "http://exa mple.com/", "mailto:a@b.c"}) {
    EXPECT_THAT(SqlError(std::string("SELECT inbox.notify(") + pqxx::connection{db_}.quote(url) + ", 'x')"),
                HasSubstr("inbox.notify:"))
        << url;
  }
  EXPECT_THAT(SqlError("SELECT inbox.notify('ftp://example.com/x', 'x')"),
              HasSubstr("invalid url: expected http://host[:port]/path or https://host[:port]/path"));
  EXPECT_THAT(SqlError("SELECT inbox.notify('http://example.com:99999/', 'x')"),
              HasSubstr("port 99999 is out of range"));
  EXPECT_THAT(SqlError("SELECT inbox.notify('', 'x')"), HasSubstr("url must not be empty"));
  EXPECT_THAT(SqlError("SELECT inbox.notify(NULL, 'x')"), HasSubstr("url must not be empty"));
  EXPECT_THAT(SqlError("SELECT inbox.notify('http://a.example/ x', 'x')"), HasSubstr("must not contain spaces"));
  // The URL (which may carry a token) is never echoed back.
  EXPECT_THAT(SqlError("SELECT inbox.notify('ftp://user:s3cret@example.com/', 'x')"),
              ::testing::Not(HasSubstr("s3cret")));
  // Valid forms.
  EXPECT_EQ(SqlError("SELECT inbox.notify('HTTPS://Example.COM:8443/a?b=c#d', 'x')"), "");
  EXPECT_EQ(SqlError("SELECT inbox.notify('http://[::1]:8080/hook', 'x')"), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notifications"), "0");
}

TEST_F(NotifySql, RejectsEmptyUnorderedAndUnboundedSchedulesClearly) {
  auto notify = [&](const std::string& schedule) {
    return SqlError("SELECT inbox.notify('http://example.com/', 'x', '{}', " + schedule + ")");
  };
  EXPECT_THAT(notify("'{}'"), HasSubstr("schedule must list at least one interval"));
  EXPECT_THAT(notify("NULL"), HasSubstr("schedule must list at least one interval"));
  EXPECT_THAT(notify("'{1 min, 30 s}'"),
              HasSubstr("schedule must be in non-decreasing order: interval 2 (00:00:30) is shorter than "
                        "interval 1 (00:01:00)"));
  EXPECT_THAT(notify("'{0 s}'"), HasSubstr("schedule interval 1 (00:00:00) must be positive"));
  EXPECT_THAT(notify("'{1 s, -5 s}'"), HasSubstr("schedule interval 2 (-00:00:05) must be positive"));
  EXPECT_THAT(notify("'{1 s, NULL}'"), HasSubstr("schedule interval 2 (NULL) must be positive"));
  EXPECT_THAT(notify("'{8 days}'"), HasSubstr("longer than 7 days"));
  EXPECT_THAT(notify("array_fill('1 s'::interval, ARRAY[33])"), HasSubstr("schedule has 33 intervals; at most 32"));
  EXPECT_THAT(notify("'{{1 s},{2 s}}'"), HasSubstr("one-dimensional"));
  // Equal intervals (a constant backoff) are fine.
  EXPECT_EQ(notify("'{1 min, 1 min, 1 min}'"), "");
  EXPECT_EQ(notify("array_fill('1 s'::interval, ARRAY[32])"), "");
}

TEST_F(NotifySql, RejectsBadHeadersClearly) {
  auto notify = [&](const std::string& headers) {
    return SqlError("SELECT inbox.notify('http://example.com/', 'x', " + headers + ")");
  };
  EXPECT_THAT(notify("'[1]'"), HasSubstr("headers must be a JSON object of string values, got a JSON array"));
  EXPECT_THAT(notify("'\"x\"'"), HasSubstr("got a JSON string"));
  EXPECT_THAT(notify("'{\"X-N\": 1}'"), HasSubstr("header \"X-N\" must be a JSON string, got a JSON number"));
  EXPECT_THAT(notify("'{\"X-A\": {\"b\": \"c\"}}'"), HasSubstr("got a JSON object"));
  EXPECT_THAT(notify("'{\"Notification-Id\": \"7\"}'"), HasSubstr("\"Notification-Id\" is reserved"));
  EXPECT_THAT(notify("'{\"notification-attempt\": \"7\"}'"), HasSubstr("is reserved"));
  EXPECT_THAT(notify("'{\"Content-Length\": \"7\"}'"), HasSubstr("controlled by the HTTP client"));
  EXPECT_THAT(notify("'{\"bad name\": \"x\"}'"), HasSubstr("is not a valid HTTP header name"));
  EXPECT_THAT(notify("'{\"X-Inject\": \"a\\r\\nEvil: 1\"}'"), HasSubstr("without line breaks"));
  EXPECT_EQ(notify("NULL"), "");  // no headers
  EXPECT_EQ(notify("'{\"Authorization\": \"Bearer t\", \"X-Empty\": \"\"}'"), "");
}

TEST_F(NotifySql, DefaultScheduleIsNineAttemptsTheFirstAtOnce) {
  std::int64_t id;
  {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    id = Notify(tx, "https://merchant.example/hook", "{}");
    tx.commit();
  }
  pqxx::connection owner{db_};
  pqxx::work check{owner};
  auto row = check.exec_params1(
      "SELECT state, attempts, schedule::text, next_attempt_at <= now() FROM inbox.notifications WHERE id = $1", id);
  EXPECT_EQ(row[0].as<std::string>(), "pending");
  EXPECT_EQ(row[1].as<int>(), 0);
  EXPECT_EQ(row[2].as<std::string>(),
            "{00:01:00,00:05:00,00:10:00,00:30:00,01:00:00,02:00:00,05:00:00,10:00:00}");
  EXPECT_TRUE(row[3].as<bool>());
  pqxx::connection c{consumer_db_};
  pqxx::work tx{c};
  auto status = NotificationStatusOf(tx, id);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->max_attempts, 9);
  EXPECT_EQ(status->state, NotificationState::kPending);
  EXPECT_FALSE(NotificationStatusOf(tx, id + 1000).has_value());
}

TEST_F(NotifySql, RolledBackTransactionSchedulesNothing) {
  {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    Notify(tx, "http://example.com/", "x");
    tx.abort();
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notifications"), "0");
}

TEST_F(NotifySql, ClaimLeasesEachDueAttemptOnceAndResendsAfterAnExpiredLease) {
  auto id = NotifyOne("http://a.example/hook");
  pqxx::connection c{relay_db_};  // the worker's session
  auto claim = [&] {
    pqxx::work tx{c};
    auto r = tx.exec("SELECT id, attempt, lease_token::text FROM inbox.claim_notifications(10, '10 min', 4)");
    tx.commit();
    return r;
  };
  auto finish = [&](const std::string& token, int status) {
    pqxx::work tx{c};
    auto f = tx.exec_params1("SELECT inbox.finish_notification_attempt($1, $2::uuid, $3, NULL, 1.5)", id, token,
                             status)[0];
    tx.commit();
    return f.is_null() ? std::string("NULL") : f.as<std::string>();
  };
  auto first = claim();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0][1].as<int>(), 1);
  EXPECT_EQ(claim().size(), 0u) << "a leased attempt is not handed out twice";
  EXPECT_TRUE(Status(id).in_flight);

  // The worker died: its lease expires (the owner moves the clock on).
  pqxx::connection owner{db_};
  pqxx::nontransaction(owner).exec("UPDATE inbox.notifications SET next_attempt_at = now() - interval '1 s'");
  auto again = claim();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0][1].as<int>(), 1) << "the same attempt is sent again";
  EXPECT_EQ(finish(first[0][2].as<std::string>(), 200), "NULL") << "the old worker's result is dropped";
  EXPECT_EQ(finish(again[0][2].as<std::string>(), 503), "pending");
  auto attempts = Attempts(id);
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].outcome, "abandoned");
  EXPECT_THAT(attempts[0].error, HasSubstr("lost its lease"));
  EXPECT_EQ(attempts[1].outcome, "failed");
  EXPECT_EQ(attempts[1].error, "HTTP status 503");
  auto s = Status(id);
  EXPECT_EQ(s.attempts, 1);
  EXPECT_FALSE(s.in_flight);
  EXPECT_EQ(s.last_status_code, 503);
  EXPECT_EQ(claim().size(), 0u) << "attempt 2 waits for the schedule";
}

TEST_F(NotifySql, ClaimCapsAttemptsPerHost) {
  for (int i = 0; i < 5; ++i) NotifyOne("http://slow.example/hook");
  for (int i = 0; i < 2; ++i) NotifyOne("http://fast.example:80/hook");
  pqxx::connection c{relay_db_};
  {
    pqxx::work tx{c};
    auto r = tx.exec(
        "SELECT host, count(*) FROM inbox.claim_notifications(10, '10 min', 2, '{slow.example:80}', '{1}') "
        "GROUP BY host ORDER BY host");
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0][0].as<std::string>(), "fast.example:80");
    EXPECT_EQ(r[0][1].as<int>(), 2);
    EXPECT_EQ(r[1][0].as<std::string>(), "slow.example:80");
    EXPECT_EQ(r[1][1].as<int>(), 1) << "one slot left for the busy host";
    tx.commit();
  }
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec("SELECT * FROM inbox.claim_notifications(10, '10 min', 2, '{slow.example:80}', '{2}')").size(),
            0u);
}

TEST_F(NotifySql, RolesGrantOnlyWhatEachSideNeeds) {
  auto id = NotifyOne("http://a.example/");
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS app_consumer");
    tx.exec("DROP ROLE IF EXISTS notify_worker");
    tx.exec("DROP ROLE IF EXISTS app_producer");
    tx.exec("CREATE ROLE app_consumer LOGIN IN ROLE outbox_consumer");
    tx.exec("CREATE ROLE notify_worker LOGIN IN ROLE outbox_relay");
    tx.exec("CREATE ROLE app_producer LOGIN IN ROLE outbox_producer");
  }
  std::string dbname = pqxx::connection{db_}.dbname();
  auto denied = [&](const std::string& user, const std::string& sql) {
    pqxx::connection c{test::SharedCluster().ConninfoFor(dbname, user)};
    pqxx::work tx{c};
    try {
      tx.exec(sql);
    } catch (const pqxx::insufficient_privilege&) {
      return true;
    }
    return false;
  };
  auto id_s = std::to_string(id);
  EXPECT_FALSE(denied("app_consumer", "SELECT inbox.notify('http://a.example/', 'x')"));
  EXPECT_FALSE(denied("app_consumer", "SELECT * FROM inbox.notification_status(" + id_s + ")"));
  EXPECT_TRUE(denied("app_consumer", "SELECT * FROM inbox.notifications"));
  EXPECT_TRUE(denied("app_consumer", "SELECT * FROM inbox.claim_notifications(1, '1 min', 1)"));
  EXPECT_TRUE(denied("app_consumer", "SELECT inbox.purge_notifications('1 day')"));
  EXPECT_TRUE(denied("app_producer", "SELECT inbox.notify('http://a.example/', 'x')"));
  EXPECT_FALSE(denied("notify_worker", "SELECT * FROM inbox.claim_notifications(1, '1 min', 1)"));
  EXPECT_FALSE(denied("notify_worker", "SELECT state, count(*) FROM inbox.notifications GROUP BY state"));
  EXPECT_FALSE(denied("notify_worker", "SELECT * FROM inbox.notification_backlog()"));
  EXPECT_FALSE(denied("notify_worker", "SELECT inbox.purge_notifications('1 day')"));
  EXPECT_TRUE(denied("notify_worker", "UPDATE inbox.notifications SET state = 'delivered'"));
  EXPECT_TRUE(denied("notify_worker", "DELETE FROM inbox.notification_attempts"));
  EXPECT_TRUE(denied("notify_worker", "SELECT inbox.notify('http://a.example/', 'x')"));
}

TEST_F(NotifySql, PurgeRemovesOnlyOldFinishedNotifications) {
  auto old_delivered = NotifyOne("http://a.example/");
  auto recent_delivered = NotifyOne("http://a.example/");
  auto pending = NotifyOne("http://a.example/");
  {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec_params("UPDATE inbox.notifications SET state = 'delivered', next_attempt_at = NULL, "
                   "finished_at = now() - interval '2 days' WHERE id = $1",
                   old_delivered);
    tx.exec_params("UPDATE inbox.notifications SET state = 'exhausted', next_attempt_at = NULL, "
                   "finished_at = now() - interval '1 hour' WHERE id = $1",
                   recent_delivered);
    tx.exec_params("INSERT INTO inbox.notification_attempts (notification_id, attempt, lease_token, started_at, "
                   "finished_at, outcome) VALUES ($1, 1, gen_random_uuid(), now(), now(), 'delivered')",
                   old_delivered);
    tx.commit();
  }
  pqxx::connection conn{relay_db_};  // retention is the worker's
  EXPECT_EQ(PurgeNotifications(conn, std::chrono::hours(24), 1), 1);
  EXPECT_EQ(Scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM inbox.notifications"),
            std::to_string(recent_delivered) + "," + std::to_string(pending));
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notification_attempts"), "0");
  EXPECT_EQ(PurgeNotifications(conn, std::chrono::seconds(0)), 1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notifications"), "1") << "pending is never purged";
}

TEST_F(NotifierWorker, RejectsBadOptionsListingEveryProblem) {
  NotifierOptions o;
  o.conninfo = relay_db_;
  o.request_timeout = 10s;
  o.lease = 5s;
  o.max_per_host = 0;
  try {
    Notifier n{o};
    FAIL() << "accepted bad options";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("lease (5000 ms) must exceed request_timeout"));
    EXPECT_THAT(e.what(), HasSubstr("max_per_host must be 1..max_in_flight"));
  }
}

TEST_F(NotifierWorker, DeliversOnTheAttemptAfterNFailuresFollowingTheSchedule) {
  test::HttpServer receiver{test::HttpServer::FailFirst(2, 500)};
  auto id = NotifyOne(receiver.Url("/hooks/paid?merchant=7"), std::string("{\"order\":42}\0\xff", 14),
                      {{"Content-Type", "application/json"}, {"X-Signature", "abc123"}},
                      std::vector<milliseconds>{200ms, 400ms, 400ms});
  std::atomic<int> attempts_seen{0};
  auto opt = FastOptions();
  opt.on_attempt = [&](const NotificationAttempt&) { ++attempts_seen; };
  Worker worker{opt};
  ASSERT_TRUE(test::WaitUntil([&] { return Status(id).state == NotificationState::kDelivered; }, 20s))
      << worker.error();

  auto status = Status(id);
  EXPECT_EQ(status.attempts, 3);
  EXPECT_EQ(status.last_status_code, 200);
  EXPECT_EQ(status.last_response, "") << "replies are read and dropped unless store_replies";
  auto attempts = Attempts(id);
  ASSERT_EQ(attempts.size(), 3u);
  EXPECT_EQ(attempts[0].outcome, "failed");
  EXPECT_EQ(attempts[0].status, 500);
  EXPECT_EQ(attempts[0].error, "HTTP status 500");
  EXPECT_EQ(attempts[1].outcome, "failed");
  EXPECT_EQ(attempts[2].outcome, "delivered");
  EXPECT_EQ(attempts[2].status, 200);
  // Attempt k+1 starts no earlier than interval k after attempt k finished.
  EXPECT_GE(attempts[1].started - attempts[0].finished, 0.200);
  EXPECT_GE(attempts[2].started - attempts[1].finished, 0.400);
  EXPECT_GE(attempts[2].started - attempts[0].started, 0.600);

  auto requests = receiver.Requests();
  ASSERT_EQ(requests.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const auto& r = requests[i];
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/hooks/paid?merchant=7");
    EXPECT_EQ(r.Header("Notification-Id"), std::to_string(id));
    EXPECT_EQ(r.Header("Notification-Attempt"), std::to_string(i + 1));
    // The same uuid on every attempt, and it is the row's (unique across databases).
    EXPECT_EQ(r.Header("Notification-Uuid"),
              Scalar("SELECT uid::text FROM inbox.notifications WHERE id = " + std::to_string(id)));
    EXPECT_THAT(r.Header("Notification-Uuid"), ::testing::MatchesRegex("[0-9a-f-]{36}"));
    EXPECT_EQ(r.Header("Content-Type"), "application/json");
    EXPECT_EQ(r.Header("X-Signature"), "abc123");
    EXPECT_EQ(r.body, std::string("{\"order\":42}\0\xff", 14));
  }
  EXPECT_EQ(attempts_seen.load(), 3);
}

TEST_F(NotifierWorker, AlwaysFailingReceiverGetsExactlyTheScheduledAttemptsThenExhausted) {
  test::HttpServer receiver{test::HttpServer::Always(503)};
  auto id = NotifyOne(receiver.Url("/hook"), "x", {}, std::vector<milliseconds>{100ms, 200ms, 200ms});
  std::mutex mu;
  std::vector<NotificationAttempt> exhausted;
  auto opt = FastOptions();
  opt.on_exhausted = [&](const NotificationAttempt& a) {
    std::lock_guard<std::mutex> lock{mu};
    exhausted.push_back(a);
  };
  Worker worker{opt};
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        std::lock_guard<std::mutex> lock{mu};
        return !exhausted.empty();
      },
      20s))
      << worker.error();
  {
    std::lock_guard<std::mutex> lock{mu};
    ASSERT_EQ(exhausted.size(), 1u);
    EXPECT_EQ(exhausted[0].id, id);
    EXPECT_EQ(exhausted[0].attempt, 4);
    EXPECT_EQ(exhausted[0].max_attempts, 4);
    EXPECT_EQ(exhausted[0].status_code, 503);
    EXPECT_EQ(exhausted[0].state, NotificationState::kExhausted);
  }
  auto s = Status(id);
  EXPECT_EQ(s.state, NotificationState::kExhausted);
  EXPECT_EQ(s.attempts, 4);
  EXPECT_EQ(receiver.RequestCount(), 4);
  auto attempts = Attempts(id);
  ASSERT_EQ(attempts.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(attempts[i].attempt, i + 1);
    EXPECT_EQ(attempts[i].outcome, "failed");
  }
  EXPECT_GE(attempts[1].started - attempts[0].finished, 0.100);
  EXPECT_GE(attempts[2].started - attempts[1].finished, 0.200);
  EXPECT_GE(attempts[3].started - attempts[2].finished, 0.200);
  EXPECT_EQ(Scalar("SELECT next_attempt_at IS NULL AND finished_at IS NOT NULL FROM inbox.notifications"), "t");
}

TEST_F(NotifierWorker, UnreachableReceiverAndTimeoutsAreFailedAttemptsWithTheirCause) {
  int closed_port;
  {
    test::HttpServer gone;
    closed_port = gone.port();
  }
  auto refused = NotifyOne("http://127.0.0.1:" + std::to_string(closed_port) + "/hook", "x", {},
                           std::vector<milliseconds>{100ms});
  test::HttpServer slow{test::HttpServer::HoldAll()};
  auto timed_out = NotifyOne(slow.Url("/hook"), "x", {}, std::vector<milliseconds>{100ms});
  auto opt = FastOptions();
  opt.request_timeout = 300ms;
  opt.connect_timeout = 300ms;
  opt.lease = 1300ms;
  Worker worker{opt};
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        return Status(refused).state == NotificationState::kExhausted &&
               Status(timed_out).state == NotificationState::kExhausted;
      },
      20s))
      << worker.error();
  auto a = Attempts(refused);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_FALSE(a[0].status.has_value());
  EXPECT_THAT(a[0].error, HasSubstr("onnect"));
  auto t = Attempts(timed_out);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_THAT(t[0].error, HasSubstr("timeout after 300 ms"));
  EXPECT_FALSE(t[0].status.has_value());
}

TEST_F(NotifierWorker, SeveralWorkersNeverSendOneAttemptTwice) {
  // Attempt 1 of every notification fails, attempt 2 succeeds.
  test::HttpServer receiver{[](const test::RecordedRequest& r) {
    return r.Header("Notification-Attempt") == "1" ? test::Reply{500, "no", false} : test::Reply{200, "ok", false};
  }};
  constexpr int kCount = 60;
  std::vector<std::int64_t> ids;
  {
    pqxx::connection c{consumer_db_};
    pqxx::work tx{c};
    for (int i = 0; i < kCount; ++i) {
      ids.push_back(Notify(tx, receiver.Url("/n"), "x", {}, std::vector<milliseconds>{50ms}));
    }
    tx.commit();
  }
  auto opt = FastOptions();
  opt.poll_interval = 5ms;
  opt.max_per_host = 8;
  opt.max_in_flight = 8;
  {
    Worker a{opt}, b{opt}, c{opt};
    ASSERT_TRUE(test::WaitUntil(
        [&] { return Scalar("SELECT count(*) FROM inbox.notifications WHERE state = 'delivered'") ==
                     std::to_string(kCount); },
        30s));
  }
  std::set<std::pair<std::string, std::string>> slots;
  for (const auto& r : receiver.Requests()) {
    auto slot = std::make_pair(r.Header("Notification-Id"), r.Header("Notification-Attempt"));
    EXPECT_TRUE(slots.insert(slot).second) << "sent twice: id " << slot.first << " attempt " << slot.second;
  }
  EXPECT_EQ(receiver.RequestCount(), 2 * kCount);
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notification_attempts"), std::to_string(2 * kCount));
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.notification_attempts WHERE outcome = 'abandoned'"), "0");
}

TEST_F(NotifierWorker, SlowReceiverCannotStarveOthers) {
  test::HttpServer slow{test::HttpServer::HoldAll()};
  test::HttpServer fast{test::HttpServer::Always(204)};
  std::vector<std::int64_t> slow_ids, fast_ids;
  for (int i = 0; i < 10; ++i) slow_ids.push_back(NotifyOne(slow.Url("/s")));
  for (int i = 0; i < 10; ++i) fast_ids.push_back(NotifyOne(fast.Url("/f")));
  auto opt = FastOptions();
  opt.max_in_flight = 6;
  opt.max_per_host = 2;
  opt.request_timeout = 20s;
  opt.lease = 30s;
  Worker worker{opt};
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        return Scalar("SELECT count(*) FROM inbox.notifications WHERE state = 'delivered'") == "10";
      },
      20s))
      << worker.error();
  for (auto id : fast_ids) EXPECT_EQ(Status(id).state, NotificationState::kDelivered);
  EXPECT_EQ(slow.Held(), 2);
  EXPECT_EQ(slow.MaxConcurrent(), 2);
  EXPECT_EQ(fast.RequestCount(), 10);
  // Once the slow receiver answers, its notifications go through too.
  slow.SetPolicy(test::HttpServer::Always(200));
  slow.ReleaseHeld();
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        return Scalar("SELECT count(*) FROM inbox.notifications WHERE state = 'delivered'") == "20";
      },
      20s));
  EXPECT_LE(slow.MaxConcurrent(), 2);
  EXPECT_EQ(slow.RequestCount(), 10);
}

TEST_F(NotifierWorker, ReportsTheBacklogAndPurgesOldRows) {
  test::HttpServer receiver{test::HttpServer::Always(200)};
  auto delivered = NotifyOne(receiver.Url("/"));
  std::atomic<std::int64_t> last_pending{-1};
  auto opt = FastOptions();
  opt.on_stats = [&](const NotifierStats& s) { last_pending = s.pending; };
  opt.retention = 1ms;
  opt.retention_interval = 50ms;
  Worker worker{opt};
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        return Scalar("SELECT count(*) FROM inbox.notifications WHERE id = " + std::to_string(delivered)) == "0";
      },
      20s))
      << "a delivered notification older than the retention is purged";
  EXPECT_EQ(receiver.RequestCount(), 1);
  ASSERT_TRUE(test::WaitUntil([&] { return last_pending.load() == 0; }, 10s));
}

}  // namespace
}  // namespace outbox
