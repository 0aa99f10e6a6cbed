// Half messages against a real PostgreSQL 15: the SQL contract (outbox.prepare,
// commit_prepared, rollback_prepared and the relay's claim/record functions), the
// producer helpers of outbox/producer.h including QueryPrepared racing an open business
// transaction, and the check-back answer classifier.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <outbox/error.h>
#include <outbox/producer.h>
#include <pqxx/pqxx>
#include <string>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "half_messages/check_back.h"
#include "common/errors.h"
#include "cli/migrate.h"
#include "pg_cluster.h"
#include "wait.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

class HalfMessageSql : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    relay::Migrate(db_, relay::EmbeddedMigrations(), log);
    producer_db_ = test::As(test::Login::kProducer, db_);
    relay_db_ = test::As(test::Login::kRelay, db_);
  }

  // Runs f in its own transaction on a fresh connection of `conninfo` (the producer's
  // unless told otherwise) and commits.
  template <typename F>
  auto InTx(F f, const std::string& conninfo = {}) {
    pqxx::connection c{conninfo.empty() ? producer_db_ : conninfo};
    pqxx::work tx{c};
    if constexpr (std::is_void_v<decltype(f(tx))>) {
      f(tx);
      tx.commit();
    } else {
      auto r = f(tx);
      tx.commit();
      return r;
    }
  }

  void Prepare(const std::string& gid, const std::string& payload = "hello",
               const std::string& url = "http://127.0.0.1:9/check?token=s3cret") {
    InTx([&](pqxx::work& tx) { outbox::Prepare(tx, gid, "orders", gid, payload, {{"type", "t"}}, url); });
  }

  // The error text of running f in a transaction ("" if it succeeds).
  template <typename F>
  std::string ErrorOf(F f) {
    try {
      InTx(f);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }

  // `sql`'s value as the owner (the test's own checks) or as `conninfo`.
  std::string Scalar(const std::string& sql, const std::string& conninfo = {}) {
    pqxx::connection c{conninfo.empty() ? db_ : conninfo};
    pqxx::work tx{c};
    auto f = tx.exec1(sql)[0];
    auto v = f.is_null() ? std::string("NULL") : f.as<std::string>();
    tx.commit();
    return v;
  }
  std::string State(const std::string& gid) {
    return Scalar("SELECT state FROM outbox.prepared WHERE gid = '" + gid + "'");
  }
  // What the relay's check-back and the operator commands call.
  std::string AsRelay(const std::string& sql) { return Scalar(sql, relay_db_); }

  std::string db_;           // the owner's: migrations, settings and the test's own checks
  std::string producer_db_;  // prepares, commits and rolls back (the default of InTx)
  std::string relay_db_;     // checks back, resumes, drops, purges
};

TEST_F(HalfMessageSql, PreparedMessageIsNotPublishedUntilCommitted) {
  Prepare("g1");
  EXPECT_EQ(State("g1"), "prepared");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "0");
  auto mid = InTx([](pqxx::work& tx) { return outbox::CommitPrepared(tx, "g1"); });
  EXPECT_EQ(State("g1"), "committed");
  // It entered outbox.messages exactly like outbox.publish: same lane function, headers.
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages WHERE message_id = '" + mid +
                   "' AND topic = 'orders' AND key = 'g1' AND payload = 'hello'::bytea "
                   "AND headers = '{\"type\": \"t\"}' AND lane = outbox.lane_of('g1', message_id, "
                   "(SELECT lane_count FROM outbox.settings))"),
            "1");
  // The tombstone keeps neither payload nor the check URL (it may carry a token).
  EXPECT_EQ(Scalar("SELECT payload IS NULL AND check_url IS NULL FROM outbox.prepared WHERE gid = 'g1'"), "t");
}

TEST_F(HalfMessageSql, EveryCallIsIdempotent) {
  Prepare("g1");
  Prepare("g1");  // same message again: harmless
  auto first = InTx([](pqxx::work& tx) { return outbox::CommitPrepared(tx, "g1"); });
  auto again = InTx([](pqxx::work& tx) { return outbox::CommitPrepared(tx, "g1"); });
  EXPECT_EQ(first, again);
  Prepare("g1");  // after the commit too: nothing is re-opened
  EXPECT_EQ(State("g1"), "committed");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "1");

  Prepare("g2");
  InTx([](pqxx::work& tx) { outbox::RollbackPrepared(tx, "g2"); });
  InTx([](pqxx::work& tx) { outbox::RollbackPrepared(tx, "g2"); });
  EXPECT_EQ(State("g2"), "rolled_back");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "1");
}

TEST_F(HalfMessageSql, CommitAfterRollbackAndRollbackAfterCommitAreClearErrors) {
  Prepare("g1");
  InTx([](pqxx::work& tx) { outbox::CommitPrepared(tx, "g1"); });
  EXPECT_THAT(ErrorOf([](pqxx::work& tx) { outbox::RollbackPrepared(tx, "g1"); }),
              HasSubstr("gid 'g1' was committed (by producer) and cannot be rolled back"));
  Prepare("g2");
  InTx([](pqxx::work& tx) { outbox::RollbackPrepared(tx, "g2"); });
  EXPECT_THAT(ErrorOf([](pqxx::work& tx) { outbox::CommitPrepared(tx, "g2"); }),
              HasSubstr("gid 'g2' was rolled back (by producer) and cannot be committed"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "1");
}

TEST_F(HalfMessageSql, BadInputIsAClearError) {
  auto prepare = [&](std::string gid, std::string topic, std::string payload, std::string url) {
    return ErrorOf([&](pqxx::work& tx) { outbox::Prepare(tx, gid, topic, std::nullopt, payload, {}, url); });
  };
  EXPECT_THAT(prepare("g", "orders", "x", "ftp://example.com/check"),
              HasSubstr("outbox.prepare: invalid check_url: expected http://host[:port]/path or https://"));
  EXPECT_THAT(prepare("g", "orders", "x", "not a url"), HasSubstr("check_url must not contain spaces"));
  EXPECT_THAT(prepare("g", "orders", "x", "http://example.com/check#frag"),
              HasSubstr("check_url must not contain a fragment"));
  EXPECT_THAT(prepare("g", "orders", "x", ""), HasSubstr("check_url must not be empty"));
  EXPECT_THAT(prepare("g", "orders", "x", "http://example.com:70000/"), HasSubstr("port 70000 is out of range"));
  // The error never echoes the URL (it may carry a token).
  EXPECT_THAT(prepare("g", "orders", "x", "gopher://h/?token=s3cret"), Not(HasSubstr("s3cret")));
  EXPECT_THAT(prepare("g", "orders", std::string(1048577, 'x'), "http://h/"),
              HasSubstr("outbox.prepare: payload is 1048577 bytes; at most 1048576 bytes are allowed"));
  EXPECT_THAT(prepare("g", "bad topic", "x", "http://h/"), HasSubstr("outbox.prepare: invalid Kafka topic name"));
  EXPECT_THAT(prepare("", "orders", "x", "http://h/"), HasSubstr("outbox.prepare: invalid gid"));
  EXPECT_THAT(prepare("a b", "orders", "x", "http://h/"), HasSubstr("outbox.prepare: invalid gid"));
  EXPECT_THAT(ErrorOf([](pqxx::work& tx) {
                outbox::Prepare(tx, "g", "orders", std::nullopt, "x", {{"message_id", "m"}}, "http://h/");
              }),
              HasSubstr("header \"message_id\" is reserved"));
  EXPECT_THAT(ErrorOf([](pqxx::work& tx) { outbox::CommitPrepared(tx, "never-prepared"); }),
              HasSubstr("outbox.commit_prepared: unknown gid 'never-prepared': call outbox.prepare first"));
  Prepare("g1", "one");
  EXPECT_THAT(prepare("g1", "orders", "two", "http://h/"),
              HasSubstr("outbox.prepare: gid 'g1' is already used by another message"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.prepared"), "1");
  // The limit is a column of outbox.settings (the schema owner's), not a session setting.
  InTx([&](pqxx::work& tx) { tx.exec("UPDATE outbox.settings SET max_prepared_payload_bytes = 4"); }, db_);
  EXPECT_THAT(prepare("g5", "orders", "12345", "http://h/"), HasSubstr("payload is 5 bytes; at most 4 bytes"));
  EXPECT_EQ(prepare("g5", "orders", "1234", "http://h/"), "");
}

TEST_F(HalfMessageSql, RollbackOfAnUnknownGidRefusesALatePrepare) {
  InTx([](pqxx::work& tx) { outbox::RollbackPrepared(tx, "late"); });
  EXPECT_THAT(ErrorOf([&](pqxx::work& tx) {
                outbox::Prepare(tx, "late", "orders", std::nullopt, "x", {}, "http://h/");
              }),
              HasSubstr("gid 'late' was rolled back before it was prepared"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "0");
}

TEST_F(HalfMessageSql, CommittedHalfMessagesEnterTheirLaneInCommitOrder) {
  for (int i = 0; i < 5; ++i) Prepare("g" + std::to_string(i), "v" + std::to_string(i));
  for (int i : {3, 1, 4, 0, 2}) {
    InTx([&](pqxx::work& tx) { outbox::CommitPrepared(tx, "g" + std::to_string(i)); });
  }
  pqxx::connection c{db_};
  pqxx::work tx{c};
  std::vector<std::string> order;
  for (const auto& row : tx.exec("SELECT convert_from(payload, 'UTF8') FROM outbox.messages ORDER BY id")) {
    order.push_back(row[0].as<std::string>());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"v3", "v1", "v4", "v0", "v2"}));
}

TEST_F(HalfMessageSql, ProducerRoleMayOnlyCallTheProducerFunctions) {
  InTx(
      [](pqxx::work& tx) {
        tx.exec("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'half_producer') THEN "
                "CREATE ROLE half_producer LOGIN IN ROLE outbox_producer; END IF; END $$");
      },
      db_);
  std::string dbname = pqxx::connection{db_}.dbname();
  pqxx::connection producer{test::SharedCluster().ConninfoFor(dbname, "half_producer")};
  {
    pqxx::work tx{producer};
    outbox::Prepare(tx, "g1", "orders", "k", "v", {}, "https://shop.example/check");
    tx.commit();
  }
  {
    pqxx::work tx{producer};
    outbox::CommitPrepared(tx, "g1");
    tx.commit();
  }
  for (const char* sql : {"SELECT count(*) FROM outbox.prepared",
                          "SELECT * FROM outbox.claim_prepared_checks(1, '0s', '1s')",
                          "SELECT outbox.resume_prepared('g1')"}) {
    pqxx::work tx{producer};
    EXPECT_THROW(tx.exec(sql), pqxx::insufficient_privilege) << sql;
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "1");
}

// The relay side: claims, leases, answers.
TEST_F(HalfMessageSql, ClaimsAreExclusiveUntilTheLeaseExpires) {
  Prepare("g1");
  Prepare("g2");
  auto claim = [&](const std::string& lease) {
    std::map<std::string, std::string> tokens;
    pqxx::connection c{relay_db_};
    pqxx::work tx{c};
    for (const auto& row : tx.exec("SELECT gid, lease_token FROM outbox.claim_prepared_checks(10, '0s', '" + lease + "')")) {
      tokens[row[0].as<std::string>()] = row[1].as<std::string>();
    }
    tx.commit();
    return tokens;
  };
  auto first = claim("1 hour");
  EXPECT_EQ(first.size(), 2u);
  EXPECT_TRUE(claim("1 hour").empty()) << "a leased half message is checked by one relay at a time";
  // A dead relay's lease expires and another relay checks again.
  InTx([](pqxx::work& tx) { tx.exec("UPDATE outbox.prepared SET next_check_at = now() - interval '1s' WHERE gid = 'g1'"); },
       db_);
  auto second = claim("1 hour");
  ASSERT_EQ(second.size(), 1u);
  ASSERT_EQ(second.count("g1"), 1u);
  auto record = [&](const std::string& gid, const std::string& token, const std::string& verdict) {
    pqxx::connection c{relay_db_};
    pqxx::work tx{c};
    auto f = tx.exec_params1("SELECT outbox.record_prepared_check($1, $2::uuid, $3, 'why', '1 hour', 3)", gid, token,
                             verdict)[0];
    tx.commit();
    return f.is_null() ? std::string("NULL") : f.as<std::string>();
  };
  EXPECT_EQ(record("g1", first["g1"], "committed"), "NULL") << "the expired lease's answer is ignored";
  EXPECT_EQ(record("g1", second["g1"], "committed"), "committed");
  EXPECT_EQ(record("g1", second["g1"], "committed"), "NULL");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "1");
  EXPECT_EQ(record("g2", first["g2"], "rolled_back"), "rolled_back");
  EXPECT_EQ(State("g2"), "rolled_back");
  EXPECT_EQ(Scalar("SELECT resolved_by FROM outbox.prepared WHERE gid = 'g2'"), "check-back");
}

TEST_F(HalfMessageSql, FirstCheckWaitsForCheckAfterAndInconclusiveChecksPark) {
  Prepare("g1");
  EXPECT_EQ(AsRelay("SELECT count(*) FROM outbox.claim_prepared_checks(10, '1 hour', '1 hour')"), "0");
  for (int attempt = 1; attempt <= 3; ++attempt) {
    pqxx::connection c{relay_db_};
    pqxx::work tx{c};
    auto row = tx.exec1("SELECT attempt, lease_token FROM outbox.claim_prepared_checks(10, '0s', '1 hour')");
    EXPECT_EQ(row[0].as<int>(), attempt);
    auto state = tx.exec_params1("SELECT outbox.record_prepared_check('g1', $1::uuid, 'inconclusive', 'HTTP 503', "
                                 "'0s', 3)",
                                 row[1].as<std::string>())[0]
                     .as<std::string>();
    tx.commit();
    EXPECT_EQ(state, attempt < 3 ? "prepared" : "parked");
  }
  EXPECT_EQ(AsRelay("SELECT count(*) FROM outbox.claim_prepared_checks(10, '0s', '1 hour')"), "0")
      << "a parked half message is not checked";
  EXPECT_EQ(Scalar("SELECT last_error FROM outbox.prepared WHERE gid = 'g1'"), "HTTP 503");
  // The producer may still decide; an operator resumes with a fresh count.
  EXPECT_EQ(AsRelay("SELECT outbox.resume_prepared('g1')"), "t");
  EXPECT_EQ(Scalar("SELECT checks || ' ' || state FROM outbox.prepared WHERE gid = 'g1'"), "0 prepared");
  EXPECT_EQ(AsRelay("SELECT count(*) FROM outbox.claim_prepared_checks(10, '1 hour', '1 hour')"), "1")
      << "resumed: checked at once";
  EXPECT_EQ(AsRelay("SELECT outbox.drop_prepared('g1')"), "t");
  EXPECT_EQ(Scalar("SELECT state || ' ' || resolved_by FROM outbox.prepared WHERE gid = 'g1'"),
            "rolled_back operator");
  EXPECT_EQ(AsRelay("SELECT outbox.resume_prepared('g1')"), "f");
  EXPECT_EQ(AsRelay("SELECT outbox.purge_prepared('0s')"), "1");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.prepared"), "0");
}

// The producer's barrier in its own (business) database.
class HalfMessageBarrier : public HalfMessageSql {
 protected:
  void SetUp() override {
    HalfMessageSql::SetUp();
    business_ = test::FreshDatabase();
    pqxx::connection c{business_};
    pqxx::work tx{c};
    EnsureBarrierTable(tx);
    EnsureBarrierTable(tx);  // idempotent
    tx.commit();
  }

  PreparedStatus Query(const std::string& gid) {
    pqxx::connection c{business_};
    pqxx::work tx{c};
    auto s = QueryPrepared(tx, gid);
    tx.commit();
    return s;
  }

  // True once a backend of this database waits for a lock (the racing QueryPrepared).
  bool SomeoneWaitsForALock() {
    pqxx::connection c{business_};
    pqxx::work tx{c};
    return tx.exec1("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")[0]
               .as<int>() > 0;
  }

  std::string business_;
};

TEST_F(HalfMessageBarrier, AnswersCommittedAfterTheLocalTransactionCommitted) {
  pqxx::connection c{business_};
  pqxx::work tx{c};
  WriteCommitBarrier(tx, "g1");
  tx.commit();
  EXPECT_EQ(Query("g1"), PreparedStatus::kCommitted);
  EXPECT_EQ(Query("g1"), PreparedStatus::kCommitted);
  EXPECT_EQ(CheckBackAnswer(PreparedStatus::kCommitted), R"({"status":"committed"})");
}

TEST_F(HalfMessageBarrier, AnswersRolledBackAndThenRefusesALateLocalCommit) {
  EXPECT_EQ(Query("g1"), PreparedStatus::kRolledBack);
  EXPECT_EQ(CheckBackAnswer(PreparedStatus::kRolledBack), R"({"status":"rolled_back"})");
  pqxx::connection c{business_};
  pqxx::work tx{c};
  EXPECT_THROW(WriteCommitBarrier(tx, "g1"), outbox::Error);
}

TEST_F(HalfMessageBarrier, QueryRacingAnOpenLocalTransactionWaitsForItsCommit) {
  pqxx::connection local{business_};
  pqxx::work tx{local};
  tx.exec("CREATE TABLE orders (gid text PRIMARY KEY)");
  tx.exec("INSERT INTO orders VALUES ('g1')");
  WriteCommitBarrier(tx, "g1");
  // The check-back arrives while the local transaction is still open.
  auto answer = std::async(std::launch::async, [&] { return Query("g1"); });
  ASSERT_TRUE(test::WaitUntil([&] { return SomeoneWaitsForALock(); }, 30s)) << "QueryPrepared must wait";
  EXPECT_EQ(answer.wait_for(0s), std::future_status::timeout);
  tx.commit();
  EXPECT_EQ(answer.get(), PreparedStatus::kCommitted);
}

TEST_F(HalfMessageBarrier, QueryRacingAnOpenLocalTransactionWaitsForItsRollback) {
  pqxx::connection local{business_};
  pqxx::work tx{local};
  WriteCommitBarrier(tx, "g1");
  auto answer = std::async(std::launch::async, [&] { return Query("g1"); });
  ASSERT_TRUE(test::WaitUntil([&] { return SomeoneWaitsForALock(); }, 30s)) << "QueryPrepared must wait";
  tx.abort();
  EXPECT_EQ(answer.get(), PreparedStatus::kRolledBack);
  // The local transaction, retried after the answer, can no longer commit.
  pqxx::work retry{local};
  EXPECT_THROW(WriteCommitBarrier(retry, "g1"), outbox::Error);
}

TEST_F(HalfMessageBarrier, LocalCommitRacingAnOpenQueryWaitsAndIsRefused) {
  pqxx::connection checker{business_};
  pqxx::work query{checker};
  EXPECT_EQ(QueryPrepared(query, "g1"), PreparedStatus::kRolledBack);
  pqxx::connection local{business_};
  auto late = std::async(std::launch::async, [&] {
    pqxx::work tx{local};
    try {
      WriteCommitBarrier(tx, "g1");
    } catch (const outbox::Error&) {
      return false;
    }
    tx.commit();
    return true;
  });
  ASSERT_TRUE(test::WaitUntil([&] { return SomeoneWaitsForALock(); }, 30s));
  query.commit();  // the answer "rolled_back" is now final
  EXPECT_FALSE(late.get()) << "a local commit after a rolled_back answer must fail";
}

// outbox::AnswerCheckBack: the whole check-back endpoint behind an HTTP library.
TEST_F(HalfMessageBarrier, AnswerCheckBackAnswersCommittedAndRolledBack) {
  {
    pqxx::connection c{business_};
    pqxx::work tx{c};
    WriteCommitBarrier(tx, "g1");
    tx.commit();
  }
  pqxx::connection business{business_};
  auto committed = AnswerCheckBack(business, "g1");
  EXPECT_EQ(committed.http_status, 200);
  EXPECT_EQ(committed.body, R"({"status":"committed"})");
  EXPECT_EQ(committed.error, "");
  // A gid the business never wrote: answered rolled_back, and that answer is committed
  // (a late local transaction is refused).
  auto rolled_back = AnswerCheckBack(business_, "g2");
  EXPECT_EQ(rolled_back.http_status, 200);
  EXPECT_EQ(rolled_back.body, R"({"status":"rolled_back"})");
  pqxx::connection late{business_};
  pqxx::work tx{late};
  EXPECT_THROW(WriteCommitBarrier(tx, "g2"), outbox::Error);
}

TEST_F(HalfMessageBarrier, AnswerCheckBackSaysPendingWhileALocalTransactionHoldsTheGid) {
  pqxx::connection local{business_};
  pqxx::work tx{local};
  WriteCommitBarrier(tx, "g1");
  pqxx::connection business{business_};
  auto start = std::chrono::steady_clock::now();
  auto pending = AnswerCheckBack(business, "g1", 200ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms) << "it waited for the lock first";
  EXPECT_EQ(pending.http_status, 200);
  EXPECT_EQ(pending.body, R"({"status":"pending"})");
  // The connection is still usable, and nothing was decided: the local commit wins.
  tx.commit();
  auto committed = AnswerCheckBack(business, "g1", 200ms);
  EXPECT_EQ(committed.body, R"({"status":"committed"})");
}

TEST_F(HalfMessageBarrier, AnswerCheckBackRefusesAMissingOrInvalidGidWithoutWriting) {
  pqxx::connection business{business_};
  for (const std::string& gid : {std::string(), std::string("a b"), std::string("tab\there"), std::string(129, 'g'),
                                std::string("nul\0x", 5)}) {
    auto r = AnswerCheckBack(business, gid);
    EXPECT_EQ(r.http_status, 400) << gid;
    EXPECT_THAT(r.body, HasSubstr("\"error\"")) << gid;
  }
  EXPECT_EQ(AnswerCheckBack(business, std::string(128, 'g')).http_status, 200);
  EXPECT_EQ(AnswerCheckBack(business, "gid-\xc3\xa9").http_status, 200);  // é: one character
  pqxx::work tx{business};
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM outbox_barrier")[0].as<int>(), 2) << "only the valid gids were answered";
  EXPECT_THROW(AnswerCheckBack(business_, "g1", 0ms), outbox::Error);
}

TEST_F(HalfMessageBarrier, AnswerCheckBackTurnsDatabaseFailuresInto500) {
  pqxx::connection business{business_};
  {
    pqxx::connection admin{business_};
    pqxx::work tx{admin};
    // With a timeout it returns once the backend is gone (without one it only signals it,
    // and under load the next statement could still reach it).
    tx.exec("SELECT pg_terminate_backend(" + std::to_string(business.backendpid()) + ", 30000)");
    tx.commit();
  }
  auto broken = AnswerCheckBack(business, "g1");
  EXPECT_EQ(broken.http_status, 500);
  EXPECT_EQ(broken.body, R"({"error":"database error"})");
  EXPECT_FALSE(broken.error.empty());
  auto unreachable = AnswerCheckBack("host=127.0.0.1 port=1 dbname=nothing connect_timeout=2", "g1");
  EXPECT_EQ(unreachable.http_status, 500);
  EXPECT_FALSE(unreachable.error.empty());
}

// The check-back's answer classifier and URL.
TEST(HalfMessageCheckBack, ClassifiesAnswers) {
  using relay::CheckResult;
  using relay::ClassifyCheckAnswer;
  EXPECT_EQ(ClassifyCheckAnswer(200, "", R"({"status":"committed"})").result, CheckResult::kCommitted);
  EXPECT_EQ(ClassifyCheckAnswer(204, "", R"({"status": "rolled_back", "x": 1})").result, CheckResult::kRolledBack);
  EXPECT_EQ(ClassifyCheckAnswer(200, "", R"({"status":"pending"})").result, CheckResult::kPending);
  EXPECT_EQ(ClassifyCheckAnswer(503, "", R"({"status":"committed"})").result, CheckResult::kHttpError);
  EXPECT_EQ(ClassifyCheckAnswer(302, "", "").result, CheckResult::kHttpError);
  EXPECT_EQ(ClassifyCheckAnswer(200, "", "committed").result, CheckResult::kMalformed);
  EXPECT_EQ(ClassifyCheckAnswer(200, "", R"({"status":"COMMITTED"})").result, CheckResult::kMalformed);
  EXPECT_EQ(ClassifyCheckAnswer(200, "", R"({"status":true})").result, CheckResult::kMalformed);
  EXPECT_EQ(ClassifyCheckAnswer(200, "", R"(["committed"])").result, CheckResult::kMalformed);
  auto down = ClassifyCheckAnswer(0, "Couldn't connect to server", "");
  EXPECT_EQ(down.result, CheckResult::kUnreachable);
  EXPECT_EQ(down.detail, "Couldn't connect to server");
  EXPECT_STREQ(relay::CheckResultName(CheckResult::kRolledBack), "rolled_back");
}

TEST(HalfMessageCheckBack, AppendsThePercentEncodedGid) {
  EXPECT_EQ(relay::CheckRequestUrl("http://h/check", "a b/c&d"), "http://h/check?gid=a%20b%2Fc%26d");
  EXPECT_EQ(relay::CheckRequestUrl("https://h/check?token=x", "g-1.2_3~"), "https://h/check?token=x&gid=g-1.2_3~");
  EXPECT_EQ(relay::CheckRequestUrl("http://h/check?", "g"), "http://h/check?gid=g");
}

}  // namespace
}  // namespace outbox
