// The relay's PostgreSQL store (relay/pg/outbox_store.h) against a real server, as the
// relay login: deletes go on a second session without waiting (issue 16), finish in
// order, survive that session being terminated, and a delete the server refuses is
// reported and sent again once it can succeed. Claims name rows the caller already
// knows by id and lane only.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "cli/migrate.h"
#include "pg/outbox_store.h"
#include "pg_cluster.h"
#include "wait.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class OutboxStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    Migrate(db_, EmbeddedMigrations(), log);
    relay_db_ = test::As(test::Login::kRelay, db_);
    producer_db_ = test::As(test::Login::kProducer, db_);
  }
  // Publishes n rows of key 'k' (one lane) and returns the table's ids in order.
  std::vector<std::int64_t> Publish(int n) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    for (int i = 0; i < n; ++i) tx.exec("SELECT outbox.publish('t', 'k', 'payload'::bytea)");
    tx.commit();
    pqxx::connection owner{db_};  // the producer may not read the table
    pqxx::nontransaction read{owner};
    std::vector<std::int64_t> ids;
    for (auto row : read.exec("SELECT id FROM outbox.messages ORDER BY id")) ids.push_back(row[0].as<std::int64_t>());
    return ids;
  }
  long long Scalar(const std::string& sql) { return test::ScalarOf(db_, sql); }
  long long Left() { return Scalar("SELECT count(*) FROM outbox.messages"); }
  // Waits until the store reports `ticket` done (it pumps the delete session).
  bool Done(PgOutboxStore& store, std::uint64_t ticket) {
    return test::WaitUntil([&] { return store.DeletedUpTo() >= ticket; }, seconds(30));
  }
  int LaneOf(std::int64_t id) {
    return static_cast<int>(Scalar("SELECT lane FROM outbox.messages WHERE id = " + std::to_string(id)));
  }

  std::string db_, relay_db_, producer_db_;
};

TEST_F(OutboxStoreTest, DeletesFinishInTicketOrderOnASecondSession) {
  auto ids = Publish(30);
  PgOutboxStore store{relay_db_, "outbox-relay", seconds(30)};
  // The second session is there, named apart from the lane session.
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay-deletes' "
                   "AND datname = current_database()"),
            1);
  auto t1 = store.Delete({ids.begin(), ids.begin() + 10});
  auto t2 = store.Delete({ids.begin() + 10, ids.begin() + 20});
  auto t3 = store.Delete({ids.begin() + 20, ids.end()});
  EXPECT_LT(t1, t2);
  EXPECT_LT(t2, t3);
  ASSERT_TRUE(Done(store, t3));
  EXPECT_EQ(Left(), 0);
  // Done means committed: a statement on the lane session sees the rows gone.
  std::vector<OutboxStore::LaneClaim> claims;
  for (int lane = 0; lane < store.LaneCount(); ++lane) claims.push_back({lane, 0, 100});
  EXPECT_TRUE(store.Claim(claims).empty());
}

TEST_F(OutboxStoreTest, ATerminatedDeleteSessionIsOpenedAgainAndTheRowsDeleted) {
  auto ids = Publish(20);
  PgOutboxStore store{relay_db_, "outbox-relay", seconds(30)};
  ASSERT_TRUE(Done(store, store.Delete({ids.begin(), ids.begin() + 5})));
  ASSERT_EQ(Scalar("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'outbox-relay-deletes' AND datname = current_database()) t"),
            1);
  ASSERT_TRUE(test::WaitUntil([&] {
    return Scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay-deletes' "
                  "AND datname = current_database()") == 0;
  }, seconds(10)));
  auto t = store.Delete({ids.begin() + 5, ids.end()});
  ASSERT_TRUE(Done(store, t));
  EXPECT_EQ(Left(), 0);
  // The lane session was not touched: its locks and LISTEN stay.
  EXPECT_FALSE(store.TakeWakeups());
}

TEST_F(OutboxStoreTest, ARefusedDeleteIsReportedAndSentAgainUntilItSucceeds) {
  auto ids = Publish(10);
  PgOutboxStore store{relay_db_, "outbox-relay", seconds(30)};
  {
    pqxx::connection owner{db_};
    pqxx::nontransaction tx{owner};
    tx.exec("REVOKE DELETE ON outbox.messages FROM outbox_relay");
  }
  auto t = store.Delete(ids);
  bool refused = test::WaitUntil([&] {
    try {
      store.DeletedUpTo();
      return false;
    } catch (const StoreError& e) {
      EXPECT_FALSE(e.connection_lost()) << e.what();
      EXPECT_EQ(e.sqlstate(), "42501") << e.what();
      return true;
    }
  }, seconds(30));
  ASSERT_TRUE(refused) << "the refused DELETE was never reported";
  EXPECT_EQ(Left(), 10);
  {
    pqxx::connection owner{db_};
    pqxx::nontransaction tx{owner};
    tx.exec("GRANT DELETE ON outbox.messages TO outbox_relay");
  }
  // Sent again by the next calls (a statement sent before the GRANT may still fail once).
  ASSERT_TRUE(test::WaitUntil([&] {
    try {
      return store.DeletedUpTo() >= t;
    } catch (const StoreError& e) {
      EXPECT_FALSE(e.connection_lost()) << e.what();
      return false;
    }
  }, seconds(30)));
  EXPECT_EQ(Left(), 0);
}

TEST_F(OutboxStoreTest, TheDestructorFinishesTheDeletesAlreadyAskedFor) {
  auto ids = Publish(50);
  {
    PgOutboxStore store{relay_db_, "outbox-relay", seconds(30)};
    for (int i = 0; i < 50; i += 5) store.Delete({ids.begin() + i, ids.begin() + i + 5});
  }
  EXPECT_EQ(Left(), 0);
}

TEST_F(OutboxStoreTest, AClaimNamesRowsTheCallerKnowsByIdAndLaneOnly) {
  auto ids = Publish(6);
  int lane = LaneOf(ids[0]);
  PgOutboxStore store{relay_db_, "outbox-relay", seconds(30)};
  std::vector<OutboxStore::LaneClaim> claims{{lane, ids[2], 100}};
  auto rows = store.Claim(claims);
  ASSERT_EQ(rows.size(), 6u);
  for (const auto& r : rows) {
    EXPECT_EQ(r.lane, lane);
    if (r.id <= ids[2]) {
      EXPECT_TRUE(r.message_id.empty() && r.topic.empty() && !r.key && !r.payload) << r.id;
    } else {
      EXPECT_EQ(r.topic, "t");
      EXPECT_EQ(r.key, std::optional<std::string>("k"));
      EXPECT_EQ(r.payload, std::optional<std::string>("payload"));
      EXPECT_EQ(r.message_id.size(), 36u);
    }
  }
}

}  // namespace
}  // namespace outbox::relay
