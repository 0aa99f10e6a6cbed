// The example programs as users run them (issue 14): each answers --help, and the example
// consumer runs under a least-privilege consumer login.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <pqxx/pqxx>

#include "kafka_cluster.h"
#include "pg_cluster.h"
#include "process.h"
#include "wait.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// Every example program answers --help (usage on stdout, exit 0).
TEST(ExamplePrograms, EveryProgramAnswersHelp) {
  for (const char* program : {TRANSFER_BANK_A, TRANSFER_BANK_B, TRANSFER_RECONCILE, OUTBOX_HALF_MESSAGE_EXAMPLE,
                              OUTBOX_CONSUMER_EXAMPLE}) {
    auto r = test::RunProcess({program, "--help"});
    EXPECT_EQ(r.code, 0) << program << ": " << r.err;
    EXPECT_THAT(r.out, HasSubstr("usage")) << program;
  }
}

// The example consumer needs no CREATE on schema public once its table exists: deployed,
// the table is created by its owner and granted to the consumer login, which (PostgreSQL
// 15's default) cannot create tables in public. The records come the documented way: a
// producer login publishes, `outbox-relay run` as the relay login relays.
TEST(ExamplePrograms, ConsumerRunsUnderAConsumerLoginThatCannotCreateTables) {
  auto db = test::FreshDatabase();
  auto migrate = test::RunProcess({test::RelayBinary(), "migrate", "--db", db});
  ASSERT_EQ(migrate.code, 0) << migrate.err;
  const auto consumer = test::As(test::Login::kConsumer, db);
  const auto login = test::LoginName(test::Login::kConsumer);
  {
    pqxx::connection c{db};
    pqxx::work tx{c};
    tx.exec("CREATE TABLE example_orders (message_id text PRIMARY KEY, order_key text, body text, "
            "received_at timestamptz NOT NULL DEFAULT now())");
    tx.exec("GRANT SELECT, INSERT ON example_orders TO " + tx.quote_name(login));
    ASSERT_FALSE(tx.exec1("SELECT has_schema_privilege(" + tx.quote(login) + ", 'public', 'CREATE')")[0].as<bool>())
        << "the consumer login must not be able to create tables for this test to mean anything";
    tx.commit();
  }
  test::KafkaCluster kafka;
  const auto topic = test::UniqueTopic("orders");
  kafka.CreateTopic(topic, 1);
  kafka.CreateTopic(topic + ".dlq", 1);
  {
    pqxx::connection c{test::As(test::Login::kProducer, db)};
    pqxx::work tx{c};
    for (const char* key : {"order-1", "order-2", "order-3"}) {
      tx.exec_params("SELECT outbox.publish($1, $2, $3::text)", topic, key, std::string("placed ") + key);
    }
    tx.commit();
  }
  test::Process relay{{test::RelayBinary(), "run", "--db", test::As(test::Login::kRelay, db), "--brokers",
                       kafka.bootstrap(), "--poll-interval", "50ms"}};
  test::Process example{{OUTBOX_CONSUMER_EXAMPLE, "--db", consumer, "--brokers", kafka.bootstrap(), "--group",
                         test::UniqueTopic("billing"), "--topic", topic}};
  auto applied = [&] {
    pqxx::connection c{db};
    pqxx::work tx{c};
    return tx.exec1("SELECT count(*) FROM example_orders")[0].as<int>();
  };
  ASSERT_TRUE(test::WaitUntil([&] { return applied() == 3 || !example.Running(); }, 90s))
      << example.Stderr() << relay.Stderr();
  ASSERT_EQ(applied(), 3) << example.Stderr();
  example.Signal(SIGTERM);
  EXPECT_EQ(example.Wait(30s), 0) << example.Stderr();
  EXPECT_THAT(example.Stderr(), HasSubstr("stopped handled=3 duplicates=0 dead_lettered=0"));
  pqxx::connection c{db};
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec1("SELECT string_agg(order_key || ':' || body, ',' ORDER BY order_key) FROM example_orders")[0]
                .as<std::string>(),
            "order-1:placed order-1,order-2:placed order-2,order-3:placed order-3");
}

}  // namespace
}  // namespace outbox
