// Retention of inbox, attempt and barrier rows: old rows go, in small batches; recent
// rows and parked retries stay.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <outbox/retention.h>

#include "consumer_fixture.h"

namespace outbox {
namespace {

using ::testing::ElementsAre;

class ConsumerRetention : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    test::MigrateDb(db_);
    // Retention runs as the consumer login, as deployed: it trims its own groups' rows
    // and its own barrier rows (the owner writes them here, in the login's name).
    consumer_db_ = test::As(test::Login::kConsumer, db_);
    const auto login = test::LoginName(test::Login::kConsumer);
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec_params("INSERT INTO inbox.consumer_groups (group_id, member) VALUES ('g', $1)", login);
    // 5 rows 10 days old and 2 recent ones in each table, plus an old parked retry.
    tx.exec(R"sql(
      INSERT INTO inbox.messages (group_id, message_id, topic, "partition", "offset", processed_at)
        SELECT 'g', 'old-' || i, 't', 0, i, now() - interval '10 days' FROM generate_series(1, 5) i;
      INSERT INTO inbox.messages (group_id, message_id, topic, "partition", "offset", processed_at)
        SELECT 'g', 'new-' || i, 't', 0, 100 + i, now() - interval '1 hour' FROM generate_series(1, 2) i;
      INSERT INTO inbox.attempts (group_id, message_id, attempt, topic, "partition", "offset", started_at,
                                  failed_at, error, error_kind)
        SELECT 'g', 'old-' || i, 1, 't', 0, i, now() - interval '10 days', now() - interval '10 days', 'e',
               'retryable' FROM generate_series(1, 5) i
        UNION ALL
        SELECT 'g', 'new-' || i, 1, 't', 0, i, now(), now(), 'e', 'retryable' FROM generate_series(1, 2) i;
      INSERT INTO inbox.barrier (gid, branch_id, op, reason, created_at)
        SELECT 'old-' || i, '01', 'try', 'try', now() - interval '10 days' FROM generate_series(1, 5) i
        UNION ALL
        SELECT 'new-' || i, '01', 'try', 'try', now() FROM generate_series(1, 2) i;
      INSERT INTO inbox.retries (group_id, message_id, topic, "partition", "offset", attempts, last_error,
                                 last_error_kind, next_attempt_at, parked_at)
        VALUES ('g', 'parked', 't', 0, 7, 1, 'e', 'retryable', now(), now() - interval '10 days');
    )sql");
    tx.exec_params("UPDATE inbox.barrier SET owner = $1", login);
    tx.commit();
  }

  std::vector<std::string> Ids(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    std::vector<std::string> out;
    for (const auto& row : tx.exec(sql)) out.push_back(row[0].as<std::string>());
    return out;
  }

  void ExpectOnlyRecentRowsLeft() {
    EXPECT_THAT(Ids("SELECT message_id FROM inbox.messages ORDER BY 1"),
                ElementsAre("new-1", "new-2"));
    EXPECT_THAT(Ids("SELECT message_id FROM inbox.attempts ORDER BY 1"),
                ElementsAre("new-1", "new-2"));
    EXPECT_THAT(Ids("SELECT gid FROM inbox.barrier ORDER BY 1"), ElementsAre("new-1", "new-2"));
    EXPECT_THAT(Ids("SELECT message_id FROM inbox.retries"), ElementsAre("parked"));
  }

  std::string db_;           // the owner's: migrations, the rows to trim, the test's own checks
  std::string consumer_db_;  // runs retention
};

TEST_F(ConsumerRetention, LibraryCallRemovesOnlyOldRowsInSmallBatches) {
  pqxx::connection conn{consumer_db_};
  auto r = TrimInbox(conn, std::chrono::hours(24), 2);
  EXPECT_EQ(r.messages, 5);
  EXPECT_EQ(r.attempts, 5);
  EXPECT_EQ(r.barrier, 5);
  EXPECT_EQ(r.batches, 3);  // 2 + 2 + 1 rows per table
  ExpectOnlyRecentRowsLeft();
  // Nothing more to do: one batch that finds nothing.
  auto again = TrimInbox(conn, std::chrono::hours(24), 2);
  EXPECT_EQ(again.messages + again.attempts + again.barrier, 0);
  EXPECT_EQ(again.batches, 1);
}

TEST_F(ConsumerRetention, SqlProcedureDoesTheSame) {
  pqxx::connection c{consumer_db_};
  pqxx::nontransaction tx{c};
  tx.exec("CALL inbox.trim('1 day', 2)");
  ExpectOnlyRecentRowsLeft();
}

TEST_F(ConsumerRetention, OneBatchDeletesAtMostBatchSizeRowsPerTable) {
  pqxx::connection c{consumer_db_};
  pqxx::work tx{c};
  auto row = tx.exec1("SELECT messages, attempts, barrier FROM inbox.trim_batch('1 day', 3)");
  EXPECT_EQ(row[0].as<int>(), 3);
  EXPECT_EQ(row[1].as<int>(), 3);
  EXPECT_EQ(row[2].as<int>(), 3);
  EXPECT_EQ(
      tx.exec1("SELECT count(*) FROM inbox.messages WHERE message_id LIKE 'old-%'")[0].as<int>(),
      2);
}

TEST_F(ConsumerRetention, OneBatchRunsInTheCallersTransaction) {
  pqxx::connection conn{consumer_db_};
  {
    pqxx::work tx{conn};
    auto r = TrimInboxBatch(tx, std::chrono::hours(24), 3);
    EXPECT_EQ(r.messages, 3);
    EXPECT_EQ(r.batches, 1);
    // Not committed: the rows stay.
  }
  EXPECT_EQ(Ids("SELECT message_id FROM inbox.messages").size(), 7u);
  pqxx::work tx{conn};
  TrimInboxBatch(tx, std::chrono::hours(24), 3);
  TrimInboxBatch(tx, std::chrono::hours(24), 3);
  tx.commit();
  ExpectOnlyRecentRowsLeft();
}

TEST_F(ConsumerRetention, DatabaseFailuresAreLibraryErrors) {
  {
    pqxx::connection owner{db_};
    pqxx::nontransaction tx{owner};
    tx.exec("ALTER FUNCTION inbox.trim_batch RENAME TO trim_batch_gone");
  }
  pqxx::connection conn{consumer_db_};
  try {
    TrimInbox(conn, std::chrono::hours(24));
    FAIL() << "expected outbox::DatabaseError";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "42883");  // undefined_function
    EXPECT_THAT(e.what(), ::testing::HasSubstr("outbox::TrimInbox"));
  }
}

TEST_F(ConsumerRetention, RejectsBadArguments) {
  pqxx::connection conn{consumer_db_};
  EXPECT_THROW(TrimInbox(conn, std::chrono::seconds(-1)), Error);
  EXPECT_THROW(TrimInbox(conn, std::chrono::hours(1), 0), Error);
  pqxx::connection c{consumer_db_};
  pqxx::work tx{c};
  EXPECT_THROW(tx.exec("SELECT * FROM inbox.trim_batch('-1 day', 10)"), pqxx::sql_error);
}

}  // namespace
}  // namespace outbox
