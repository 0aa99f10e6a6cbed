// Least privilege and hostile input at the SQL boundary (schema 0006, docs/security.md):
// every statement runs as one of the documented logins, never as the owner.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <functional>
#include <outbox/barrier.h>
#include <outbox/notifications.h>
#include <outbox/producer.h>
#include <pqxx/pqxx>

#include "cli/migrate.h"
#include "pg_cluster.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using test::Login;

class LeastPrivilege : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    relay::Migrate(db_, relay::EmbeddedMigrations(), log);
  }
  // Runs `body` in a committed transaction as `login`; returns the error text, or "".
  std::string As(Login login, const std::function<void(pqxx::work&)>& body) {
    pqxx::connection c{test::As(login, db_)};
    pqxx::work tx{c};
    try {
      body(tx);
      tx.commit();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
  std::string Sql(Login login, const std::string& sql) {
    return As(login, [&](pqxx::work& tx) { tx.exec(sql); });
  }
  std::string Scalar(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    auto r = tx.exec1(sql);
    return r[0].is_null() ? "NULL" : r[0].as<std::string>();
  }
  std::string db_;
};

// Why: one poison row stopped every lane because dead-lettering needed a privilege the
// relay role lacks. Now the relay parks through a function and cannot forge a row.
TEST_F(LeastPrivilege, RelayParksADeadLetterThroughTheFunctionButCannotForgeOne) {
  ASSERT_EQ(Sql(Login::kProducer, "SELECT outbox.publish('orders', 'k', 'x')"), "");
  auto id = Scalar("SELECT id FROM outbox.messages");
  std::string parked;
  EXPECT_EQ(As(Login::kRelay,
               [&](pqxx::work& tx) {
                 parked = tx.exec_params1("SELECT outbox.dead_letter($1, 'too large')", id)[0].as<std::string>();
               }),
            "");
  EXPECT_EQ(parked, "t");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "0");
  EXPECT_EQ(Scalar("SELECT error FROM outbox.dead_letters"), "too large");
  EXPECT_THAT(Sql(Login::kRelay,
                  "INSERT INTO outbox.dead_letters (id, message_id, lane, topic, headers, created_at, error) "
                  "VALUES (99, gen_random_uuid(), 5000, 'bad topic', '{}', now(), 'x')"),
              HasSubstr("permission denied"));
  EXPECT_THAT(Sql(Login::kRelay, "UPDATE outbox.dead_letters SET topic = 'bad topic'"),
              HasSubstr("permission denied"));
  EXPECT_THAT(Sql(Login::kRelay, "DELETE FROM outbox.dead_letters"), HasSubstr("permission denied"));
  EXPECT_EQ(Sql(Login::kRelay, "SELECT outbox.drop_dead_letter(" + id + ")"), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.dead_letters"), "0");
}

// Why: any producer could decide (or squat) another producer's half message.
TEST_F(LeastPrivilege, AProducerDecidesOnlyItsOwnHalfMessages) {
  ASSERT_EQ(As(Login::kProducer,
               [](pqxx::work& tx) { Prepare(tx, "g1", "orders", std::nullopt, "mine", {}, "http://h/check"); }),
            "");
  // The other producer sees the same answer as for an unknown gid.
  EXPECT_THAT(As(Login::kProducer2, [](pqxx::work& tx) { CommitPrepared(tx, "g1"); }), HasSubstr("unknown gid 'g1'"));
  // Its rollback (or prepare) of that gid is its own and does not touch the first one.
  EXPECT_EQ(As(Login::kProducer2, [](pqxx::work& tx) { RollbackPrepared(tx, "g1"); }), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages"), "0");
  std::string id;
  EXPECT_EQ(As(Login::kProducer, [&](pqxx::work& tx) { id = CommitPrepared(tx, "g1"); }), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages WHERE convert_from(payload, 'UTF8') = 'mine'"), "1");
  // Squatting: a tombstone the second producer writes first does not block the first.
  EXPECT_EQ(As(Login::kProducer2, [](pqxx::work& tx) { RollbackPrepared(tx, "g2"); }), "");
  EXPECT_EQ(As(Login::kProducer,
               [](pqxx::work& tx) { Prepare(tx, "g2", "orders", std::nullopt, "x", {}, "http://h/check"); }),
            "");
  EXPECT_EQ(Scalar("SELECT string_agg(owner || ':' || state, ',' ORDER BY owner) FROM outbox.prepared WHERE gid = 'g2'"),
            test::LoginName(Login::kProducer) + ":prepared," + test::LoginName(Login::kProducer2) + ":rolled_back");
}

// Why: a consumer could read any notification's status and the receiver's reply.
TEST_F(LeastPrivilege, NotificationStatusShowsOnlyTheCallersOwn) {
  std::int64_t id = 0;
  ASSERT_EQ(As(Login::kConsumer, [&](pqxx::work& tx) { id = Notify(tx, "https://merchant.example/hook", "{}"); }),
            "");
  std::optional<NotificationStatus> mine, theirs;
  EXPECT_EQ(As(Login::kConsumer, [&](pqxx::work& tx) { mine = NotificationStatusOf(tx, id); }), "");
  EXPECT_EQ(As(Login::kConsumer2, [&](pqxx::work& tx) { theirs = NotificationStatusOf(tx, id); }), "");
  ASSERT_TRUE(mine.has_value());
  EXPECT_EQ(mine->id, id);
  EXPECT_FALSE(theirs.has_value());
  EXPECT_THAT(Sql(Login::kConsumer2, "SELECT * FROM inbox.notifications"), HasSubstr("permission denied"));
}

// Why: a consumer could delete every group's inbox history and insert rows for another
// group so that group skips messages.
TEST_F(LeastPrivilege, ConsumerGroupsCannotTouchEachOthersInbox) {
  ASSERT_EQ(Sql(Login::kConsumer, "SELECT inbox.join_group('billing')"), "");
  ASSERT_EQ(Sql(Login::kConsumer,
                "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\", processed_at) "
                "VALUES ('billing', 'm1', 't', 0, 1, now() - interval '2 days')"),
            "");
  EXPECT_THAT(Sql(Login::kConsumer2, "SELECT inbox.join_group('billing')"),
              HasSubstr("consumer group 'billing' belongs to login(s) " + test::LoginName(Login::kConsumer)));
  EXPECT_THAT(Sql(Login::kConsumer2,
                  "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\") "
                  "VALUES ('billing', 'm2', 't', 0, 2)"),
              HasSubstr("row-level security"));
  std::string seen;
  EXPECT_EQ(As(Login::kConsumer2,
               [&](pqxx::work& tx) { seen = tx.exec1("SELECT count(*) FROM inbox.messages")[0].as<std::string>(); }),
            "");
  EXPECT_EQ(seen, "0");
  // Trimming: never below the owner's minimum retention, never another group's rows.
  EXPECT_THAT(Sql(Login::kConsumer2, "SELECT * FROM inbox.trim_batch('0 s', 1000)"),
              HasSubstr("below the minimum retention"));
  EXPECT_EQ(Sql(Login::kConsumer2, "SELECT * FROM inbox.trim_batch('1 day', 1000)"), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.messages"), "1");
  EXPECT_EQ(Sql(Login::kConsumer, "SELECT * FROM inbox.trim_batch('1 day', 1000)"), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM inbox.messages"), "0");
}

// Barrier rows of one login neither block nor answer for another's.
TEST_F(LeastPrivilege, BarrierRowsBelongToTheirLogin) {
  BranchCall call{"saga", "g1", "b1", BranchOp::kAction};
  BarrierResult first{}, second{};
  EXPECT_EQ(As(Login::kConsumer, [&](pqxx::work& tx) { first = CallBarrier(tx, call, [](auto&) {}); }), "");
  EXPECT_EQ(As(Login::kConsumer2, [&](pqxx::work& tx) { second = CallBarrier(tx, call, [](auto&) {}); }), "");
  EXPECT_EQ(first, BarrierResult::kRan);
  EXPECT_EQ(second, BarrierResult::kRan);
  EXPECT_EQ(Scalar("SELECT count(DISTINCT owner) FROM inbox.barrier"), "2");
}

// Why: publish accepted a 20 MiB payload, a 5 MiB key and 5,000 headers, and the
// prepared-payload limit was a session setting any producer could raise.
TEST_F(LeastPrivilege, LimitsLiveInTheSchemaNotInASessionSetting) {
  EXPECT_THAT(Sql(Login::kProducer, "SELECT outbox.publish('t', 'k', convert_to(repeat('x', 20 * 1024 * 1024), 'UTF8'))"),
              HasSubstr("at most 8388608 bytes"));
  EXPECT_THAT(Sql(Login::kProducer, "SELECT outbox.publish('t', repeat('k', 5 * 1024 * 1024), 'x')"),
              HasSubstr("max_key_bytes"));
  EXPECT_THAT(Sql(Login::kProducer,
                  "SELECT outbox.publish('t', 'k', 'x', (SELECT jsonb_object_agg('h' || i, 'v') "
                  "FROM generate_series(1, 5000) i))"),
              HasSubstr("max_headers"));
  EXPECT_THAT(Sql(Login::kProducer, "SELECT outbox.publish('__consumer_offsets', 'k', 'x')"), HasSubstr("reserved"));
  // A 2 MB row is still accepted (the relay parks it if the broker refuses it).
  EXPECT_EQ(Sql(Login::kProducer, "SELECT outbox.publish('t', 'k', convert_to(repeat('x', 2000000), 'UTF8'))"), "");
  EXPECT_THAT(As(Login::kProducer,
                 [](pqxx::work& tx) {
                   tx.exec("SET outbox.max_prepared_payload = 100000000");
                   Prepare(tx, "big", "t", std::nullopt, std::string(2000000, 'x'), {}, "http://h/");
                 }),
              HasSubstr("at most 1048576 bytes"));
  EXPECT_THAT(Sql(Login::kProducer, "UPDATE outbox.settings SET max_payload_bytes = 0"), HasSubstr("permission denied"));
}

}  // namespace
}  // namespace outbox
