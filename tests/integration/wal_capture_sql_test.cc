// WAL capture, the SQL side (issue 15, docs/wal-capture.md, schema/0007_wal_capture.sql),
// on a real PostgreSQL 15: outbox.set_capture, outbox.publish in wal mode (records read
// back from the slot through pgoutput and decoded here byte by byte), the switch markers,
// outbox.wal_drained, outbox.dead_letter_wal and the privileges around them.
//
// A database holding a logical slot cannot be dropped and the cluster has a limited
// number of slots: the fixture drops the inactive slots of its database after each test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <outbox/producer.h>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "cli/migrate.h"
#include "pg_cluster.h"
#include "wait.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- pgoutput and the outbox encoding ------------------------------------------------------

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Big-endian reader over a byte string; throws on a short read.
class Reader {
 public:
  explicit Reader(std::string bytes) : b_(std::move(bytes)) {}
  std::string Take(size_t n) {
    if (pos_ + n > b_.size()) throw std::runtime_error("short read");
    auto s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t Uint(size_t n) {
    uint64_t v = 0;
    for (unsigned char ch : Take(n)) v = (v << 8) | ch;
    return v;
  }
  int64_t I64() { return static_cast<int64_t>(Uint(8)); }
  int32_t I32() { return static_cast<int32_t>(static_cast<uint32_t>(Uint(4))); }
  uint8_t U8() { return static_cast<uint8_t>(Uint(1)); }
  std::string CString() {
    auto end = b_.find('\0', pos_);
    if (end == std::string::npos) throw std::runtime_error("unterminated string");
    auto s = b_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  std::optional<std::string> Sized() {
    auto n = I32();
    if (n == -1) return std::nullopt;
    if (n < 0) throw std::runtime_error("bad length");
    return Take(static_cast<size_t>(n));
  }
  bool AtEnd() const { return pos_ == b_.size(); }

 private:
  std::string b_;
  size_t pos_ = 0;
};

// A pgoutput logical decoding message ('M'): int8 flags (1: transactional), int64 lsn,
// prefix (cstring), int32 length, content.
struct PgMessage {
  bool transactional = false;
  std::string prefix;
  std::string content;
};

// outbox record, prefix 'outbox', version 1.
struct Record {
  int64_t id = 0;
  std::string message_id;  // canonical uuid text
  int64_t created_at_us = 0;
  std::string topic;
  std::optional<std::string> key;
  std::string headers;
  std::optional<std::string> payload;
};

// Switch marker, prefix 'outbox.switch', version 1.
struct Marker {
  char mode = 0;
  int64_t max_id = -1;
};

std::string UuidText(const std::string& bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    auto ch = static_cast<unsigned char>(bytes[i]);
    s.push_back(kHex[ch >> 4]);
    s.push_back(kHex[ch & 15]);
  }
  return s;
}

Record DecodeRecord(const std::string& content) {
  Reader r{content};
  EXPECT_EQ(r.U8(), 1) << "version";
  Record rec;
  rec.id = r.I64();
  rec.message_id = UuidText(r.Take(16));
  rec.created_at_us = r.I64();
  auto topic = r.Sized();
  if (!topic) throw std::runtime_error("NULL topic");
  rec.topic = *topic;
  rec.key = r.Sized();
  auto headers = r.Sized();
  if (!headers) throw std::runtime_error("NULL headers");
  rec.headers = *headers;
  rec.payload = r.Sized();
  EXPECT_TRUE(r.AtEnd()) << "bytes after the payload";
  return rec;
}

Marker DecodeMarker(const std::string& content) {
  Reader r{content};
  EXPECT_EQ(r.U8(), 1) << "version";
  Marker m;
  m.mode = static_cast<char>(r.U8());
  m.max_id = r.I64();
  EXPECT_TRUE(r.AtEnd());
  return m;
}

// ---- Fixture ---------------------------------------------------------------------------------

class WalCaptureSql : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    relay::Migrate(db_, relay::EmbeddedMigrations(), log);
    producer_db_ = test::As(test::Login::kProducer, db_);
    relay_db_ = test::As(test::Login::kRelay, db_);
  }
  void TearDown() override {
    // A database holding a slot cannot be dropped; slots are few.
    Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
         "WHERE database = current_database() AND NOT active");
  }

  // Runs `sql` in its own transaction as `conninfo` (the owner by default) and commits.
  void Exec(const std::string& sql, const std::string& conninfo = {}) {
    pqxx::connection c{conninfo.empty() ? db_ : conninfo};
    pqxx::work tx{c};
    tx.exec(sql);
    tx.commit();
  }
  // One value ("NULL" for NULL).
  std::string Scalar(const std::string& sql, const std::string& conninfo = {}) {
    pqxx::connection c{conninfo.empty() ? db_ : conninfo};
    pqxx::work tx{c};
    auto f = tx.exec1(sql)[0];
    auto v = f.is_null() ? std::string("NULL") : f.as<std::string>();
    tx.commit();
    return v;
  }
  struct SqlFailure {
    std::string sqlstate;  // "" if it succeeded
    std::string message;
  };
  // What running `sql` in its own transaction as `conninfo` raised.
  SqlFailure Failure(const std::string& sql, const std::string& conninfo = {}) {
    try {
      Exec(sql, conninfo);
    } catch (const pqxx::insufficient_privilege& e) {
      return {"42501", e.what()};  // libpqxx 6 leaves sqlstate() empty for this class
    } catch (const pqxx::sql_error& e) {
      return {e.sqlstate(), e.what()};
    }
    return {};
  }
  std::string Publish(const std::string& topic, std::optional<std::string> key, const std::string& payload,
                      const Headers& headers = {}) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    auto id = outbox::Publish(tx, topic, key ? std::optional<std::string_view>(*key) : std::nullopt, payload, headers);
    tx.commit();
    return id;
  }
  void SetCapture(const std::string& mode) { Exec("SELECT outbox.set_capture('" + mode + "')"); }
  std::string Slot() { return Scalar("SELECT slot_name FROM outbox.settings"); }
  int Rows() { return std::stoi(Scalar("SELECT count(*) FROM outbox.messages")); }
  bool SlotExists() { return Scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + Slot() + "'") == "1"; }

  // Every logical decoding message in the slot (peeked: the slot does not advance).
  std::vector<PgMessage> Peek() {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    std::vector<PgMessage> out;
    for (const auto& row : tx.exec_params(
             "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, "
             "'proto_version', '1', 'publication_names', 'outbox_wal', 'messages', 'true')",
             Slot())) {
      auto data = FromHex(row[0].as<std::string>());
      if (data.empty() || data[0] != 'M') continue;
      Reader r{data.substr(1)};
      PgMessage m;
      m.transactional = (r.U8() & 1) != 0;
      r.I64();  // lsn
      m.prefix = r.CString();
      auto content = r.Sized();
      m.content = content.value_or("");
      out.push_back(m);
    }
    return out;
  }
  std::vector<Record> Records() {
    std::vector<Record> out;
    for (const auto& m : Peek()) {
      if (m.prefix == "outbox") out.push_back(DecodeRecord(m.content));
    }
    return out;
  }
  std::vector<Marker> Markers() {
    std::vector<Marker> out;
    for (const auto& m : Peek()) {
      if (m.prefix == "outbox.switch") out.push_back(DecodeMarker(m.content));
    }
    return out;
  }

  std::string db_;           // the owner's (a superuser): migrations, set_capture, the test's checks
  std::string producer_db_;  // publishes, as services do
  std::string relay_db_;     // the relay's login (granted outbox_relay, no REPLICATION)
};

// ---- Table mode --------------------------------------------------------------------------------

TEST_F(WalCaptureSql, DefaultCaptureIsTableAndPublishInsertsARow) {
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
  EXPECT_EQ(Scalar("SELECT wal_draining FROM outbox.settings"), "f");
  EXPECT_EQ(Slot(), "outbox_" + Scalar("SELECT left(current_database(), 40) || '_' || left(md5(current_database()), 8)"));
  auto id = Publish("orders", std::string("k"), "p");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages WHERE message_id = '" + id + "'"), "1");
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"), "0");
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_publication WHERE pubname = 'outbox_wal' AND NOT puballtables"), "1");
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
                   "WHERE p.pubname = 'outbox_wal'"),
            "0");
}

// 'outbox_' + lowercase, [a-z0-9_] only, cut to 40, '_' + 8 hex digits of the name's MD5.
TEST_F(WalCaptureSql, DefaultSlotNameIsSanitizedShortAndUniquePerDatabase) {
  const std::string name = "WAL-Capture.\xC3\x84" + std::string(60, 'x');  // PostgreSQL cuts it to 63 bytes
  auto& cluster = test::SharedCluster();
  auto other = cluster.CreateDatabase(name);
  spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
  relay::Migrate(other, relay::EmbeddedMigrations(), log);
  auto slot = Scalar("SELECT slot_name FROM outbox.settings", other);
  const std::string md5 = Scalar("SELECT left(md5(current_database()), 8)", other);
  EXPECT_EQ(slot, "outbox_wal_capture__" + std::string(40 - 13, 'x') + "_" + md5);
  EXPECT_LE(slot.size(), 63u);
  // Another database whose name differs only after the cut gets another slot.
  EXPECT_NE(slot, Slot());
  pqxx::connection c{cluster.conninfo()};
  pqxx::nontransaction tx{c};
  tx.exec("DROP DATABASE " + tx.quote_name(Scalar("SELECT current_database()", other)));
}

// ---- Switching to wal ----------------------------------------------------------------------------

TEST_F(WalCaptureSql, SetCaptureWalCreatesAPgoutputSlotAndPublishEmitsARecordInsteadOfARow) {
  SetCapture("wal");
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "wal");
  EXPECT_EQ(Scalar("SELECT plugin || ' ' || slot_type || ' ' || database FROM pg_replication_slots "
                   "WHERE slot_name = '" + Slot() + "'"),
            "pgoutput logical " + Scalar("SELECT current_database()"));

  std::string payload = std::string("bin\0ary\xff", 8);
  pqxx::connection c{producer_db_};
  pqxx::work tx{c};
  auto id1 = outbox::Publish(tx, "orders", std::string_view("k\xC3\xA9y"), payload, {{"type", "created"}, {"b", "2"}});
  auto expected_created = tx.exec1("SELECT (extract(epoch FROM now()) * 1000000)::bigint - 946684800000000")[0].as<int64_t>();
  auto id2 = tx.exec1("SELECT outbox.publish('orders.v2', NULL, NULL::bytea, NULL)")[0].as<std::string>();
  tx.commit();

  EXPECT_EQ(Rows(), 0);
  auto records = Records();
  ASSERT_EQ(records.size(), 2u);
  const auto& r1 = records[0];
  EXPECT_EQ(r1.message_id, id1);
  EXPECT_GT(r1.id, 0);
  EXPECT_EQ(r1.created_at_us, expected_created);
  EXPECT_EQ(r1.topic, "orders");
  EXPECT_EQ(r1.key, std::optional<std::string>("k\xC3\xA9y"));
  EXPECT_EQ(r1.headers, R"({"b": "2", "type": "created"})");
  EXPECT_EQ(r1.payload, std::optional<std::string>(payload));
  const auto& r2 = records[1];
  EXPECT_EQ(r2.message_id, id2);
  EXPECT_EQ(r2.id, r1.id + 1);
  EXPECT_EQ(r2.created_at_us, expected_created);
  EXPECT_EQ(r2.topic, "orders.v2");
  EXPECT_EQ(r2.key, std::nullopt);
  EXPECT_EQ(r2.headers, "{}");
  EXPECT_EQ(r2.payload, std::nullopt);
  for (const auto& m : Peek()) EXPECT_TRUE(m.transactional) << m.prefix;
  // The ids come from the table's identity: the next row continues after them.
  EXPECT_EQ(std::stoll(Scalar("SELECT nextval(pg_get_serial_sequence('outbox.messages', 'id'))")), r2.id + 1);
}

TEST_F(WalCaptureSql, PublishInWalModeSendsNoNotify) {
  PGconn* listener = PQconnectdb(db_.c_str());
  ASSERT_EQ(PQstatus(listener), CONNECTION_OK);
  PQclear(PQexec(listener, "LISTEN outbox_relay"));
  auto notified = [&] {
    PQclear(PQexec(listener, "SELECT 1"));
    PQconsumeInput(listener);
    int n = 0;
    while (PGnotify* note = PQnotifies(listener)) {
      ++n;
      PQfreemem(note);
    }
    return n > 0;
  };
  Publish("orders", std::string("k"), "table");
  EXPECT_TRUE(notified()) << "control: table mode notifies";
  SetCapture("wal");
  notified();
  Publish("orders", std::string("k"), "wal");
  EXPECT_FALSE(notified());
  PQfinish(listener);
}

TEST_F(WalCaptureSql, ARolledBackPublishEmitsNothing) {
  SetCapture("wal");
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    outbox::Publish(tx, "orders", std::string_view("k"), "undone");
    tx.abort();
  }
  std::string undone_sub;
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    {
      pqxx::subtransaction sub{tx, "s"};
      undone_sub = outbox::Publish(sub, "orders", std::string_view("k"), "undone too");
      sub.abort();
    }
    tx.commit();
  }
  auto kept = Publish("orders", std::string("k"), "kept");
  auto records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].message_id, kept);
  EXPECT_EQ(records[0].payload, std::optional<std::string>("kept"));
}

TEST_F(WalCaptureSql, CommitPreparedInWalModeEmitsTheMessage) {
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    outbox::Prepare(tx, "g1", "orders", "k1", "half", {{"type", "t"}}, "http://127.0.0.1:9/check");
    tx.commit();
  }
  SetCapture("wal");
  std::string mid;
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    mid = outbox::CommitPrepared(tx, "g1");
    tx.commit();
  }
  EXPECT_EQ(Rows(), 0);
  auto records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].message_id, mid);
  EXPECT_EQ(records[0].topic, "orders");
  EXPECT_EQ(records[0].key, std::optional<std::string>("k1"));
  EXPECT_EQ(records[0].payload, std::optional<std::string>("half"));
  EXPECT_EQ(records[0].headers, R"({"type": "t"})");
}

// The 'w' marker carries the highest table id at the switch; it is decoded before every
// message published after it, whose ids continue the table's.
TEST_F(WalCaptureSql, WalMarkerCarriesTheHighestTableIdAndComesFirst) {
  Publish("orders", std::string("a"), "1");
  Publish("orders", std::string("b"), "2");
  Publish("orders", std::string("c"), "3");
  Exec("DELETE FROM outbox.messages WHERE id = (SELECT min(id) FROM outbox.messages)");
  auto max_id = std::stoll(Scalar("SELECT max(id) FROM outbox.messages"));
  SetCapture("wal");
  auto later = Publish("orders", std::string("d"), "4");
  auto messages = Peek();
  ASSERT_EQ(messages.size(), 2u);
  ASSERT_EQ(messages[0].prefix, "outbox.switch");
  auto marker = DecodeMarker(messages[0].content);
  EXPECT_EQ(marker.mode, 'w');
  EXPECT_EQ(marker.max_id, max_id);
  ASSERT_EQ(messages[1].prefix, "outbox");
  auto rec = DecodeRecord(messages[1].content);
  EXPECT_EQ(rec.message_id, later);
  EXPECT_GT(rec.id, max_id);
  EXPECT_EQ(Rows(), 2);
}

TEST_F(WalCaptureSql, WalMarkerOfAnEmptyTableCarriesZero) {
  SetCapture("wal");
  auto markers = Markers();
  ASSERT_EQ(markers.size(), 1u);
  EXPECT_EQ(markers[0].mode, 'w');
  EXPECT_EQ(markers[0].max_id, 0);
}

TEST_F(WalCaptureSql, SameModeIsANoOp) {
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"), "0");
  SetCapture("wal");
  SetCapture("wal");
  EXPECT_EQ(Markers().size(), 1u);
  EXPECT_EQ(Failure("SELECT outbox.set_capture('WAL')").sqlstate, "22023");
  EXPECT_EQ(Failure("SELECT outbox.set_capture(NULL)").sqlstate, "22023");
}

// ---- Switching back ---------------------------------------------------------------------------

TEST_F(WalCaptureSql, SetCaptureTableEmitsATableMarkerAndSetsWalDraining) {
  SetCapture("wal");
  auto in_wal = Publish("orders", std::string("k"), "wal");
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table true");
  EXPECT_TRUE(SlotExists());
  auto in_table = Publish("orders", std::string("k"), "table");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.messages WHERE message_id = '" + in_table + "'"), "1");

  auto messages = Peek();
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0].prefix, "outbox.switch");
  EXPECT_EQ(DecodeMarker(messages[0].content).mode, 'w');
  EXPECT_EQ(messages[1].prefix, "outbox");
  EXPECT_EQ(DecodeRecord(messages[1].content).message_id, in_wal);
  ASSERT_EQ(messages[2].prefix, "outbox.switch");
  auto marker = DecodeMarker(messages[2].content);
  EXPECT_EQ(marker.mode, 't');
  EXPECT_EQ(marker.max_id, 0);
}

TEST_F(WalCaptureSql, SetCaptureWalIsRefusedWhileDraining) {
  SetCapture("wal");
  SetCapture("table");
  auto f = Failure("SELECT outbox.set_capture('wal')");
  EXPECT_EQ(f.sqlstate, "55000");
  EXPECT_THAT(f.message, HasSubstr("wal_draining"));
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
}

TEST_F(WalCaptureSql, WalDrainedAsTheRelayDropsTheSlotAndClearsDraining) {
  SetCapture("wal");
  // Not draining: a no-op that keeps the slot.
  EXPECT_EQ(Scalar("SELECT outbox.wal_drained('" + Slot() + "')", relay_db_), "f");
  EXPECT_TRUE(SlotExists());
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT outbox.wal_drained('some_other_slot')", relay_db_), "f");
  EXPECT_EQ(Scalar("SELECT wal_draining FROM outbox.settings"), "t");
  // The relay login has no REPLICATION: the function runs as the owner.
  ASSERT_EQ(Scalar("SELECT rolreplication FROM pg_roles WHERE rolname = current_user", relay_db_), "f");
  EXPECT_EQ(Scalar("SELECT outbox.wal_drained('" + Slot() + "')", relay_db_), "t");
  EXPECT_FALSE(SlotExists());
  EXPECT_EQ(Scalar("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table false");
  // And wal again, with a new slot.
  SetCapture("wal");
  EXPECT_TRUE(SlotExists());
  EXPECT_EQ(Markers().size(), 1u);
}

TEST_F(WalCaptureSql, WalDrainedRefusesWhileTheSlotIsInUse) {
  SetCapture("wal");
  SetCapture("table");
  // A walsender streaming from the slot.
  auto conninfo = db_ + " replication=database";
  PGconn* stream = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(stream), CONNECTION_OK) << PQerrorMessage(stream);
  auto start = "START_REPLICATION SLOT " + Slot() +
               " LOGICAL 0/0 (proto_version '1', publication_names 'outbox_wal', messages 'true')";
  PGresult* res = PQexec(stream, start.c_str());
  ASSERT_EQ(PQresultStatus(res), PGRES_COPY_BOTH) << PQerrorMessage(stream);
  PQclear(res);
  auto f = Failure("SELECT outbox.wal_drained('" + Slot() + "')", relay_db_);
  EXPECT_EQ(f.sqlstate, "55006");
  EXPECT_EQ(Scalar("SELECT wal_draining FROM outbox.settings"), "t");
  PQfinish(stream);
  // Once the walsender is gone the slot is dropped.
  EXPECT_TRUE(test::WaitUntil(
      [&] { return Failure("SELECT outbox.wal_drained('" + Slot() + "')", relay_db_).sqlstate.empty(); },
      std::chrono::seconds(5)));
  EXPECT_FALSE(SlotExists());
}

TEST_F(WalCaptureSql, SwitchingBackWithoutASlotWarnsAndDoesNotDrain) {
  SetCapture("wal");
  Exec("SELECT pg_drop_replication_slot('" + Slot() + "')");
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table false");
}

// ---- Refusals ---------------------------------------------------------------------------------

TEST_F(WalCaptureSql, PublishInWalModeRefusesWhenTheSlotIsGone) {
  SetCapture("wal");
  Exec("SELECT pg_drop_replication_slot('" + Slot() + "')");
  auto f = Failure("SELECT outbox.publish('orders', 'k', 'p'::bytea)", producer_db_);
  EXPECT_EQ(f.sqlstate, "55000");
  EXPECT_THAT(f.message, HasSubstr("missing"));
  // A slot of that name in another database is not this database's.
  const auto postgres = test::SharedCluster().conninfo();
  Exec("SELECT pg_create_logical_replication_slot('" + Slot() + "', 'pgoutput')", postgres);
  f = Failure("SELECT outbox.publish('orders', 'k', 'p'::bytea)", producer_db_);
  Exec("SELECT pg_drop_replication_slot('" + Slot() + "')", postgres);
  EXPECT_EQ(f.sqlstate, "55000");
  EXPECT_EQ(Rows(), 0);
}

TEST_F(WalCaptureSql, ProducersAndTheRelayCannotChangeTheCaptureMode) {
  for (const auto& login : {producer_db_, relay_db_}) {
    EXPECT_EQ(Failure("SELECT outbox.set_capture('wal')", login).sqlstate, "42501");
    EXPECT_EQ(Failure("UPDATE outbox.settings SET capture = 'wal'", login).sqlstate, "42501");
    EXPECT_EQ(Failure("UPDATE outbox.settings SET slot_name = 'x'", login).sqlstate, "42501");
    EXPECT_EQ(Failure("UPDATE outbox.settings SET wal_draining = true", login).sqlstate, "42501");
  }
  EXPECT_EQ(Failure("SELECT outbox.wal_drained('x')", producer_db_).sqlstate, "42501");
  EXPECT_EQ(Failure("SELECT outbox.dead_letter_wal(1, gen_random_uuid(), 't', NULL, NULL, '{}', now(), 'e')",
                    producer_db_).sqlstate,
            "42501");
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
}

// Nobody but outbox.publish may write an 'outbox' record (a forged one would bypass every check).
TEST_F(WalCaptureSql, ProducersCannotEmitLogicalMessagesDirectly) {
  for (const auto& login : {producer_db_, relay_db_}) {
    EXPECT_EQ(Failure("SELECT pg_logical_emit_message(true, 'outbox', '\\x01'::bytea)", login).sqlstate, "42501");
    EXPECT_EQ(Failure("SELECT pg_logical_emit_message(true, 'outbox', 'x'::text)", login).sqlstate, "42501");
  }
}

TEST_F(WalCaptureSql, SetCaptureNeedsReplication) {
  Exec("GRANT EXECUTE ON FUNCTION outbox.set_capture(text) TO outbox_test_relay");  // this test only
  auto f = Failure("SELECT outbox.set_capture('wal')", relay_db_);
  EXPECT_EQ(f.sqlstate, "42501");
  EXPECT_THAT(f.message, HasSubstr("REPLICATION"));
  EXPECT_THAT(f.message, HasSubstr("ALTER ROLE outbox_test_relay REPLICATION"));
  EXPECT_FALSE(SlotExists());
  // With REPLICATION the check passes (it then fails where the relay may not write).
  test::GrantReplication(db_, test::Login::kRelay);
  f = Failure("SELECT outbox.set_capture('wal')", relay_db_);
  Exec("ALTER ROLE outbox_test_relay NOREPLICATION");
  EXPECT_THAT(f.message, Not(HasSubstr("REPLICATION")));
  EXPECT_EQ(f.sqlstate, "42501");
  EXPECT_THAT(f.message, HasSubstr("settings"));
}

TEST_F(WalCaptureSql, SetCaptureRefusesATransactionThatAlreadyWrote) {
  pqxx::connection c{db_};
  pqxx::work tx{c};
  tx.exec("UPDATE outbox.settings SET notify = notify");
  try {
    tx.exec("SELECT outbox.set_capture('wal')");
    ADD_FAILURE() << "set_capture succeeded";
  } catch (const pqxx::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "25001");
    EXPECT_THAT(e.what(), HasSubstr("outbox.set_capture in its own transaction"));
  }
  tx.abort();
  EXPECT_FALSE(SlotExists());
}

TEST_F(WalCaptureSql, SetCaptureRefusesAnotherKindOfSlotAndReusesItsOwn) {
  Exec("SELECT pg_create_logical_replication_slot('" + Slot() + "', 'test_decoding')");
  auto f = Failure("SELECT outbox.set_capture('wal')");
  EXPECT_EQ(f.sqlstate, "42710");
  EXPECT_THAT(f.message, HasSubstr("slot_name"));
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
  Exec("SELECT pg_drop_replication_slot('" + Slot() + "')");
  // A pgoutput slot of that name in another database.
  const auto postgres = test::SharedCluster().conninfo();
  Exec("SELECT pg_create_logical_replication_slot('" + Slot() + "', 'pgoutput')", postgres);
  f = Failure("SELECT outbox.set_capture('wal')");
  Exec("SELECT pg_drop_replication_slot('" + Slot() + "')", postgres);
  EXPECT_EQ(f.sqlstate, "42710");
  EXPECT_THAT(f.message, HasSubstr("of database postgres"));
  // An inactive pgoutput slot of this database (a switch that rolled back) is reused.
  Exec("SELECT pg_create_logical_replication_slot('" + Slot() + "', 'pgoutput')");
  SetCapture("wal");
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "wal");
  EXPECT_TRUE(SlotExists());
  EXPECT_EQ(Markers().size(), 1u);
}

TEST_F(WalCaptureSql, SetCaptureRefusesASlotInUse) {
  Exec("SELECT pg_create_logical_replication_slot('" + Slot() + "', 'pgoutput')");
  auto conninfo = db_ + " replication=database";
  PGconn* stream = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(stream), CONNECTION_OK) << PQerrorMessage(stream);
  auto start = "START_REPLICATION SLOT " + Slot() +
               " LOGICAL 0/0 (proto_version '1', publication_names 'outbox_wal', messages 'true')";
  PGresult* res = PQexec(stream, start.c_str());
  ASSERT_EQ(PQresultStatus(res), PGRES_COPY_BOTH) << PQerrorMessage(stream);
  PQclear(res);
  auto f = Failure("SELECT outbox.set_capture('wal')");
  PQfinish(stream);
  EXPECT_EQ(f.sqlstate, "55006");
  EXPECT_THAT(f.message, HasSubstr("in use"));
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
  // Once the walsender is gone the slot is reused.
  EXPECT_TRUE(test::WaitUntil([&] { return Failure("SELECT outbox.set_capture('wal')").sqlstate.empty(); },
                              std::chrono::seconds(5)));
}

TEST_F(WalCaptureSql, SetCaptureNamesTheLimitWhenNoSlotIsFree) {
  auto total = std::stoi(Scalar("SHOW max_replication_slots"));
  auto used = std::stoi(Scalar("SELECT count(*) FROM pg_replication_slots"));
  for (int i = used; i < total; ++i) {
    Exec("SELECT pg_create_physical_replication_slot('filler_" + std::to_string(i) + "')");
  }
  auto f = Failure("SELECT outbox.set_capture('wal')");
  Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'filler\\_%'");
  EXPECT_EQ(f.sqlstate, "53400");
  EXPECT_THAT(f.message, HasSubstr("max_replication_slots"));
  EXPECT_EQ(Scalar("SELECT capture FROM outbox.settings"), "table");
}

// A REPEATABLE READ snapshot taken before a switch back to table must not emit into the
// slot the relay is about to drop.
TEST_F(WalCaptureSql, AStaleRepeatableReadSnapshotCannotPublishIntoTheOldMode) {
  SetCapture("wal");
  pqxx::connection c{producer_db_};
  pqxx::transaction<pqxx::repeatable_read> tx{c};
  tx.exec("SELECT 1");  // the snapshot: capture = wal
  SetCapture("table");
  try {
    outbox::Publish(tx, "orders", std::string_view("k"), "stale");
    tx.commit();
    ADD_FAILURE() << "published with a stale snapshot";
  } catch (const pqxx::serialization_failure& e) {
    EXPECT_THAT(e.what(), HasSubstr("could not serialize access"));
  }
  EXPECT_TRUE(Records().empty());
}

// ---- Dead letters -----------------------------------------------------------------------------

TEST_F(WalCaptureSql, DeadLetterWalParksAndRetryPutsItIntoTheTableUnderTheSameId) {
  SetCapture("wal");
  auto mid = Publish("orders", std::string("k"), "refused", {{"h", "v"}});
  auto records = Records();
  ASSERT_EQ(records.size(), 1u);
  const auto& r = records[0];
  auto call = "SELECT outbox.dead_letter_wal(" + std::to_string(r.id) + ", '" + r.message_id +
              "', 'orders', 'k', 'refused'::bytea, '{\"h\": \"v\"}', "
              "timestamptz '2000-01-01 00:00:00+00' + " + std::to_string(r.created_at_us) + " * interval '1 microsecond', ";
  Exec(call + "'first error')", relay_db_);
  Exec(call + "'second error')", relay_db_);
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.dead_letters"), "1");
  EXPECT_EQ(Scalar("SELECT error || ' ' || message_id || ' ' || lane FROM outbox.dead_letters WHERE id = " +
                   std::to_string(r.id)),
            "second error " + mid + " " + Scalar("SELECT outbox.lane_of('k', '" + mid + "', 16)"));
  EXPECT_EQ(Failure("INSERT INTO outbox.dead_letters (id, message_id, lane, topic, headers, created_at, error) "
                    "VALUES (99, gen_random_uuid(), 0, 't', '{}', now(), 'forged')",
                    relay_db_).sqlstate,
            "42501");
  // Retried in wal mode: into the table, same id and message.
  EXPECT_EQ(Scalar("SELECT outbox.retry_dead_letter(" + std::to_string(r.id) + ")", relay_db_), "t");
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox.dead_letters"), "0");
  EXPECT_EQ(Scalar("SELECT message_id || ' ' || topic || ' ' || key || ' ' || convert_from(payload, 'UTF8') || ' ' || "
                   "(headers->>'h') || ' ' || ((extract(epoch FROM created_at) * 1000000)::bigint - 946684800000000) "
                   "FROM outbox.messages WHERE id = " + std::to_string(r.id)),
            mid + " orders k refused v " + std::to_string(r.created_at_us));
}

// A slot dropped while a switch back is drained: the owner's set_capture('table') ends the
// draining (the table lanes would otherwise wait for ever).
TEST_F(WalCaptureSql, SwitchingToTableAgainEndsADrainWhoseSlotIsGone) {
  SetCapture("wal");
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT wal_draining FROM outbox.settings"), "t");
  SetCapture("table");  // the slot is there: still draining
  EXPECT_EQ(Scalar("SELECT wal_draining FROM outbox.settings"), "t");
  Exec("SELECT pg_drop_replication_slot(slot_name) FROM outbox.settings");
  SetCapture("table");
  EXPECT_EQ(Scalar("SELECT capture || ' ' || wal_draining FROM outbox.settings"), "table false");
}

}  // namespace
}  // namespace outbox
