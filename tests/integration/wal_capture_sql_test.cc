// schema/0007_wal_capture.sql on a real PostgreSQL 15 (wal_level=logical): the capture
// switch, what outbox.publish emits into the WAL (read back through the slot with the
// relay's own decoders), and the functions' privileges.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "pg_cluster.h"
#include "process.h"
#include "wal/pgoutput.h"
#include "wal/wal_record.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;

class WalCaptureSql : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    auto m = test::RunProcess({test::RelayBinary(), "migrate", "--db", db_});
    ASSERT_EQ(m.code, 0) << m.err;
    producer_db_ = test::As(test::Login::kProducer, db_);
    relay_db_ = test::As(test::Login::kRelay, db_);
  }
  void TearDown() override {
    try {
      Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()");
    } catch (const std::exception&) {
    }
  }
  std::string Exec(const std::string& sql, const std::string& conninfo = "") {
    pqxx::connection c{conninfo.empty() ? db_ : conninfo};
    pqxx::nontransaction tx{c};
    auto r = tx.exec(sql);
    return r.empty() || r[0][0].is_null() ? "" : r[0][0].c_str();
  }
  // The error of `sql` ("" if none) and its SQLSTATE.
  std::pair<std::string, std::string> Error(const std::string& sql, const std::string& conninfo) {
    pqxx::connection c{conninfo};
    pqxx::nontransaction tx{c};
    try {
      tx.exec(sql);
    } catch (const pqxx::sql_error& e) {
      return {e.what(), e.sqlstate()};
    }
    return {"", ""};
  }
  // The relay's view of what the slot holds, without consuming it.
  std::vector<relay::WalEvent> Peek() {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    auto r = tx.exec(
        "SELECT data FROM pg_logical_slot_peek_binary_changes((SELECT slot_name FROM outbox.settings), NULL, NULL, "
        "'proto_version', '1', 'publication_names', 'outbox_wal', 'messages', 'true')");
    std::vector<relay::WalEvent> events;
    for (const auto& row : r) {
      pqxx::binarystring data{row[0]};
      // pg_logical_slot_*_changes gives the pgoutput message without the XLogData header.
      std::string copy = "w" + std::string(24, '\0') + data.str();
      if (auto e = relay::DecodeCopyData(copy)) events.push_back(*e);
    }
    return events;
  }
  std::vector<relay::WalEvent> Messages() {
    std::vector<relay::WalEvent> out;
    for (auto& e : Peek()) {
      if (e.kind == relay::WalEvent::Kind::kMessage) out.push_back(e);
    }
    return out;
  }
  long long Rows() { return std::stoll(Exec("SELECT count(*) FROM outbox.messages")); }

  std::string db_, producer_db_, relay_db_;
};

TEST_F(WalCaptureSql, DefaultIsTableAndTheSwitchCreatesAPgoutputSlot) {
  EXPECT_EQ(Exec("SELECT capture FROM outbox.settings"), "table");
  EXPECT_EQ(Exec("SELECT outbox.publish('t', 'k', 'row'::bytea)::text", producer_db_).size(), 36u);
  EXPECT_EQ(Rows(), 1);
  EXPECT_THAT(Exec("SELECT outbox.set_capture('wal')"), HasSubstr("capture is wal"));
  EXPECT_EQ(Exec("SELECT capture FROM outbox.settings"), "wal");
  EXPECT_EQ(Exec("SELECT plugin FROM pg_replication_slots WHERE slot_name = (SELECT slot_name FROM outbox.settings) "
                 "AND database = current_database()"),
            "pgoutput");
  EXPECT_THAT(Exec("SELECT outbox.set_capture('wal')"), HasSubstr("already"));
}

TEST_F(WalCaptureSql, PublishEmitsTheDocumentedRecordAndWritesNoRow) {
  Exec("SELECT outbox.publish('t', 'old', 'row'::bytea)", producer_db_);
  Exec("SELECT outbox.set_capture('wal')");
  std::string id1, id2;
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    id1 = tx.exec1("SELECT outbox.publish('orders', 'k1', '\\x00ff'::bytea, '{\"trace\": \"abc\"}')")[0].c_str();
    id2 = tx.exec1("SELECT outbox.publish('orders', NULL, NULL::bytea)")[0].c_str();
    tx.commit();
  }
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('orders', 'rolled', 'back'::bytea)");
    tx.abort();
  }
  EXPECT_EQ(Rows(), 1) << "capture mode wal inserted a row";
  auto events = Peek();
  // The switch marker first, carrying the table's highest id (the row published before).
  auto sw = std::find_if(events.begin(), events.end(), [](auto& e) { return e.kind == relay::WalEvent::Kind::kSwitch; });
  ASSERT_NE(sw, events.end());
  EXPECT_EQ(sw->switch_mode, 'w');
  EXPECT_EQ(sw->max_id, std::stoll(Exec("SELECT max(id) FROM outbox.messages")));
  auto msgs = Messages();
  ASSERT_EQ(msgs.size(), 2u) << "the rolled back message must not be in the WAL stream";
  EXPECT_EQ(msgs[0].row.message_id, id1);
  EXPECT_EQ(msgs[0].row.topic, "orders");
  EXPECT_EQ(msgs[0].row.key, std::optional<std::string>("k1"));
  EXPECT_EQ(msgs[0].row.payload, std::optional<std::string>(std::string("\0\xff", 2)));
  ASSERT_EQ(msgs[0].row.headers.size(), 1u);
  EXPECT_EQ(msgs[0].row.headers[0], (std::pair<std::string, std::string>{"trace", "abc"}));
  EXPECT_GT(msgs[0].row.id, sw->max_id) << "ids come from the table's identity";
  EXPECT_GT(msgs[0].created_at_us, 0);
  EXPECT_EQ(msgs[1].row.message_id, id2);
  EXPECT_FALSE(msgs[1].row.key.has_value());
  EXPECT_FALSE(msgs[1].row.payload.has_value());
  EXPECT_EQ(msgs[1].row.id, msgs[0].row.id + 1);
}

TEST_F(WalCaptureSql, ProducersAndTheRelayCannotSwitchOrChangeSettings) {
  for (const auto& who : {producer_db_, relay_db_}) {
    EXPECT_THAT(Error("SELECT outbox.set_capture('wal')", who).first, HasSubstr("permission denied"));
    EXPECT_THAT(Error("UPDATE outbox.settings SET capture = 'wal'", who).first, HasSubstr("permission denied"));
  }
  EXPECT_THAT(Error("SELECT outbox.wal_drained('x')", producer_db_).first, HasSubstr("permission denied"));
  EXPECT_THAT(Error("SELECT outbox.dead_letter_wal(1, gen_random_uuid(), 't', 'k', NULL, '{}', now(), 'e')",
                    producer_db_).first,
              HasSubstr("permission denied"));
  EXPECT_EQ(Exec("SELECT capture FROM outbox.settings"), "table");
}

TEST_F(WalCaptureSql, SwitchingNeedsItsOwnTransactionAndAValidMode) {
  auto [what, state] = Error("SELECT outbox.set_capture('kafka')", db_);
  EXPECT_EQ(state, "22023");
  pqxx::connection c{db_};
  pqxx::work tx{c};
  tx.exec("UPDATE outbox.settings SET notify = notify");
  try {
    tx.exec("SELECT outbox.set_capture('wal')");
    ADD_FAILURE() << "switched inside a transaction that wrote";
  } catch (const pqxx::sql_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("own transaction"));
  }
}

TEST_F(WalCaptureSql, PublishRefusesWhenTheSlotIsGone) {
  Exec("SELECT outbox.set_capture('wal')");
  Exec("SELECT pg_drop_replication_slot(slot_name) FROM outbox.settings");
  auto [what, state] = Error("SELECT outbox.publish('t', 'k', 'x'::bytea)", producer_db_);
  EXPECT_EQ(state, "55000");
  EXPECT_THAT(what, HasSubstr("does not exist"));
  EXPECT_THAT(what, HasSubstr("set_capture('table')"));
  // The way out: with the slot gone, switching back is immediate (no draining).
  Exec("SELECT outbox.set_capture('table')");
  EXPECT_EQ(Exec("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table false");
  EXPECT_EQ(Error("SELECT outbox.publish('t', 'k', 'x'::bytea)", producer_db_).second, "");
}

TEST_F(WalCaptureSql, SwitchingBackDrainsThenTheRelayDropsTheSlot) {
  Exec("SELECT outbox.set_capture('wal')");
  Exec("SELECT outbox.publish('t', 'k', 'in wal'::bytea)", producer_db_);
  EXPECT_THAT(Exec("SELECT outbox.set_capture('table')"), HasSubstr("publishes the rest"));
  EXPECT_EQ(Exec("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table true");
  auto events = Peek();
  ASSERT_FALSE(events.empty());
  int table_markers = 0;
  for (auto& e : events) table_markers += e.kind == relay::WalEvent::Kind::kSwitch && e.switch_mode == 't';
  EXPECT_EQ(table_markers, 1);
  // Back to wal only once the relay drained the slot.
  EXPECT_EQ(Error("SELECT outbox.set_capture('wal')", db_).second, "55000");
  // Publishing goes to the table again at once.
  Exec("SELECT outbox.publish('t', 'k', 'row'::bytea)", producer_db_);
  EXPECT_EQ(Rows(), 1);
  // The relay ends the draining; the wrong slot name changes nothing.
  EXPECT_EQ(Exec("SELECT outbox.wal_drained('other')", relay_db_), "f");
  EXPECT_EQ(Exec("SELECT outbox.wal_drained(slot_name) FROM outbox.settings", relay_db_), "t");
  EXPECT_EQ(Exec("SELECT wal_draining FROM outbox.settings"), "f");
  EXPECT_EQ(Exec("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"), "0");
  EXPECT_THAT(Exec("SELECT outbox.set_capture('wal')"), HasSubstr("capture is wal"));
}

TEST_F(WalCaptureSql, CommitPreparedEmitsIntoTheWal) {
  Exec("SELECT outbox.set_capture('wal')");
  Exec("SELECT outbox.prepare('g1', 't', 'k', 'half'::bytea, '{}'::jsonb, 'http://127.0.0.1:9/check')", producer_db_);
  EXPECT_TRUE(Messages().empty());
  auto mid = Exec("SELECT outbox.commit_prepared('g1')::text", producer_db_);
  auto msgs = Messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].row.message_id, mid);
  EXPECT_EQ(msgs[0].row.payload, std::optional<std::string>("half"));
  EXPECT_EQ(Rows(), 0);
}

TEST_F(WalCaptureSql, ADeadLetterFromTheWalIsRetriedIntoTheTableUnderItsId) {
  Exec("SELECT outbox.dead_letter_wal(4242, 'aaaaaaaa-0000-4000-8000-000000000001', 't', 'k', 'p'::bytea, "
       "'{\"h\": \"v\"}', now(), 'too large')",
       relay_db_);
  EXPECT_EQ(Exec("SELECT error FROM outbox.dead_letters WHERE id = 4242"), "too large");
  // Parked again (a second refusal): the error is updated, no second row.
  Exec("SELECT outbox.dead_letter_wal(4242, 'aaaaaaaa-0000-4000-8000-000000000001', 't', 'k', 'p'::bytea, "
       "'{\"h\": \"v\"}', now(), 'still too large')",
       relay_db_);
  EXPECT_EQ(Exec("SELECT count(*) || ' ' || min(error) FROM outbox.dead_letters"), "1 still too large");
  EXPECT_EQ(Exec("SELECT outbox.retry_dead_letter(4242)", relay_db_), "t");
  EXPECT_EQ(Exec("SELECT message_id::text || ' ' || (headers->>'h') FROM outbox.messages WHERE id = 4242"),
            "aaaaaaaa-0000-4000-8000-000000000001 v");
}

}  // namespace
}  // namespace outbox
