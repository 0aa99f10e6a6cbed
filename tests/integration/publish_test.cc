// outbox.publish and the least-privilege roles, on a real PostgreSQL 15.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <outbox/producer.h>
#include <pqxx/pqxx>

#include "cli/migrate.h"
#include "pg_cluster.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;

class Publish : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
    relay::Migrate(db_, relay::EmbeddedMigrations(), log);
    producer_db_ = test::As(test::Login::kProducer, db_);
  }
  int Rows() {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    return tx.exec1("SELECT count(*) FROM outbox.messages")[0].as<int>();
  }
  // The error of `sql` run by a producer ("" if none).
  std::string SqlError(const std::string& sql) {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    try {
      tx.exec(sql);
    } catch (const pqxx::sql_error& e) {
      return e.what();
    }
    return "";
  }
  std::string db_;           // the owner's: migrations and the test's own checks
  std::string producer_db_;  // publishes, as services do
};

TEST_F(Publish, CommittedTransactionLeavesARow) {
  pqxx::connection c{producer_db_};
  pqxx::work tx{c};
  auto id = outbox::Publish(tx, "orders", std::string_view("order-1"), "payload", {{"type", "created"}});
  tx.commit();
  pqxx::connection owner{db_};
  pqxx::work check{owner};
  auto row = check.exec_params1(
      "SELECT topic, key, convert_from(payload, 'UTF8'), headers->>'type' FROM outbox.messages "
      "WHERE message_id = $1::uuid", id);
  EXPECT_EQ(row[0].as<std::string>(), "orders");
  EXPECT_EQ(row[1].as<std::string>(), "order-1");
  EXPECT_EQ(row[2].as<std::string>(), "payload");
  EXPECT_EQ(row[3].as<std::string>(), "created");
}

// The API takes pqxx::transaction_base&, like libpqxx's own: any kind of transaction.
TEST_F(Publish, WorksInASerializableTransactionAndASubtransaction) {
  pqxx::connection c{producer_db_};
  {
    pqxx::transaction<pqxx::serializable> tx{c};
    outbox::Publish(tx, "orders", std::string_view("k"), "serializable");
    tx.commit();
  }
  {
    pqxx::work tx{c};
    {
      pqxx::subtransaction kept{tx, "kept"};
      outbox::Publish(kept, "orders", std::string_view("k"), "kept");
      kept.commit();
    }
    {
      pqxx::subtransaction undone{tx, "undone"};
      outbox::Publish(undone, "orders", std::string_view("k"), "undone");
      undone.abort();
    }
    tx.commit();
  }
  pqxx::connection owner{db_};
  pqxx::work check{owner};
  auto r = check.exec("SELECT convert_from(payload, 'UTF8') FROM outbox.messages ORDER BY id");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0][0].as<std::string>(), "serializable");
  EXPECT_EQ(r[1][0].as<std::string>(), "kept");
}

TEST_F(Publish, RolledBackTransactionLeavesNothing) {
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('orders', 'k', 'x'::bytea)");
    tx.abort();
  }
  EXPECT_EQ(Rows(), 0);
}

TEST_F(Publish, BinaryPayloadsSurviveIntact) {
  std::string bytes{"\0\x01\xff\x7f'\\\"", 7};
  std::string id;
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    id = outbox::Publish(tx, "bin", std::nullopt, bytes);
    tx.commit();
  }
  pqxx::connection c{db_};
  pqxx::work tx{c};
  auto row = tx.exec_params1("SELECT payload, key IS NULL FROM outbox.messages WHERE message_id = $1::uuid", id);
  pqxx::binarystring got{row[0]};
  EXPECT_EQ(got.str(), bytes);
  EXPECT_TRUE(row[1].as<bool>());
}

TEST_F(Publish, OneKeyAlwaysMapsToOneLane) {
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    for (int i = 0; i < 20; ++i) tx.exec("SELECT outbox.publish('t', 'same-key', 'x')");
    for (int i = 0; i < 200; ++i) tx.exec("SELECT outbox.publish('t', NULL, 'x')");
    tx.commit();
  }
  pqxx::connection c{db_};
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec1("SELECT count(DISTINCT lane) FROM outbox.messages WHERE key = 'same-key'")[0].as<int>(), 1);
  // NULL keys spread over the lanes.
  EXPECT_GT(tx.exec1("SELECT count(DISTINCT lane) FROM outbox.messages WHERE key IS NULL")[0].as<int>(), 8);
  EXPECT_EQ(tx.exec1("SELECT max(lane) < 16 AND min(lane) >= 0 FROM outbox.messages")[0].as<bool>(), true);
}

TEST_F(Publish, RejectsBadHeadersAndTopicsClearly) {
  EXPECT_THAT(SqlError("SELECT outbox.publish('t', 'k', 'x'::bytea, '[1]')"),
              HasSubstr("headers must be a JSON object of string values, got a JSON array"));
  EXPECT_THAT(SqlError("SELECT outbox.publish('t', 'k', 'x'::bytea, '{\"n\": 1}')"),
              HasSubstr("header \"n\" must be a JSON string, got a JSON number"));
  EXPECT_THAT(SqlError("SELECT outbox.publish('t', 'k', 'x'::bytea, '{\"message_id\": \"x\"}')"),
              HasSubstr("\"message_id\" is reserved"));
  EXPECT_THAT(SqlError("SELECT outbox.publish('no spaces', 'k', 'x'::bytea)"),
              HasSubstr("invalid Kafka topic name"));
  EXPECT_THAT(SqlError("SELECT outbox.publish('', 'k', 'x'::bytea)"), HasSubstr("invalid Kafka topic name"));
  EXPECT_EQ(Rows(), 0);
}

TEST_F(Publish, ProducerRoleMayOnlyPublish) {
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS app_writer");
    tx.exec("CREATE ROLE app_writer LOGIN IN ROLE outbox_producer");
  }
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('t', 'k', 'existing')");
    tx.commit();
  }
  auto as_app = test::SharedCluster().ConninfoFor(pqxx::connection{db_}.dbname(), "app_writer");
  pqxx::connection c{as_app};
  auto denied = [&](const std::string& sql) {
    pqxx::work tx{c};
    try {
      tx.exec(sql);
    } catch (const pqxx::insufficient_privilege&) {
      return true;
    }
    return false;
  };
  {
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('t', 'k', 'from app')");
    tx.commit();
  }
  EXPECT_TRUE(denied("SELECT * FROM outbox.messages"));
  EXPECT_TRUE(denied("DELETE FROM outbox.messages"));
  EXPECT_TRUE(denied("UPDATE outbox.messages SET topic = 'x'"));
  EXPECT_TRUE(denied("INSERT INTO outbox.messages (message_id, lane, topic) VALUES (gen_random_uuid(), 0, 't')"));
  EXPECT_TRUE(denied("SELECT * FROM outbox.dead_letters"));
  EXPECT_TRUE(denied("SELECT outbox.retry_dead_letter(1)"));
  EXPECT_EQ(Rows(), 2);
}

TEST_F(Publish, RelayRoleReadsAndDeletesButCannotWrite) {
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS relay_user");
    tx.exec("CREATE ROLE relay_user LOGIN IN ROLE outbox_relay");
  }
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('t', 'k', 'x')");
    tx.commit();
  }
  auto as_relay = test::SharedCluster().ConninfoFor(pqxx::connection{db_}.dbname(), "relay_user");
  pqxx::connection c{as_relay};
  {
    pqxx::work tx{c};
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM outbox.messages")[0].as<int>(), 1);
    tx.exec("DELETE FROM outbox.messages");
    tx.commit();
  }
  pqxx::work tx{c};
  EXPECT_THROW(tx.exec("UPDATE outbox.messages SET topic = 'x'"), pqxx::insufficient_privilege);
}

TEST_F(Publish, TextOverloadStoresUtf8) {
  {
    pqxx::connection c{producer_db_};
    pqxx::work tx{c};
    tx.exec("SELECT outbox.publish('t', 'k', 'grüße')");
    tx.commit();
  }
  pqxx::connection c{db_};
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec1("SELECT convert_from(payload, 'UTF8') FROM outbox.messages")[0].as<std::string>(), "grüße");
}

}  // namespace
}  // namespace outbox
