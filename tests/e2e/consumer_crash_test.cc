// The consumer process is killed with SIGKILL between the database commit and the
// offset commit; after a restart the redelivered message is skipped by the inbox, so
// every message's effects exist exactly once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "../integration/consumer_fixture.h"
#include "process.h"

namespace outbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConsumerCrash, KilledBetweenDbCommitAndOffsetCommitTheRedeliveryIsSkipped) {
  auto db = test::FreshDatabase();
  test::MigrateDb(db);
  {
    pqxx::connection c{db};
    pqxx::work tx{c};
    tx.exec(
        "CREATE TABLE effects (id bigserial PRIMARY KEY, message_id text NOT NULL, payload text)");
    // The application's table, granted to the consumer login it runs as.
    tx.exec("GRANT SELECT, INSERT ON effects TO outbox_consumer");
    tx.exec("GRANT USAGE ON SEQUENCE effects_id_seq TO outbox_consumer");
    tx.commit();
  }
  const auto consumer = test::As(test::Login::kConsumer, db);
  test::KafkaCluster kafka;
  auto topic = test::UniqueTopic("payments");
  auto group = test::UniqueTopic("ledger");
  kafka.CreateTopic(topic, 1);
  for (int i = 1; i <= 3; ++i) {
    test::Produce(kafka.bootstrap(), topic, 0, "acct", "pay-" + std::to_string(i),
                  {{"message_id", "e000000" + std::to_string(i) + "-0000-0000-0000-000000000000"}});
  }
  auto effects = [&] {
    pqxx::connection c{db};
    pqxx::work tx{c};
    std::vector<std::string> out;
    for (const auto& r : tx.exec("SELECT payload FROM effects ORDER BY id"))
      out.push_back(r[0].as<std::string>());
    return out;
  };

  // 1. Dies right after committing message 2's transaction, before acknowledging it.
  test::Process first{{OUTBOX_CONSUMER_CRASH_HELPER, consumer, kafka.bootstrap(), topic, group, "2"}};
  auto code = first.Wait(std::chrono::seconds(60));
  ASSERT_EQ(code, 128 + SIGKILL) << first.Stdout() << first.Stderr();
  EXPECT_THAT(effects(), ElementsAre("pay-1", "pay-2"));
  EXPECT_EQ(test::CommittedOffset(kafka.bootstrap(), group, topic, 0), 1)
      << "message 2 must be unacknowledged";

  // 2. Restarted: message 2 comes again and is skipped; message 3 is handled.
  test::Process second{{OUTBOX_CONSUMER_CRASH_HELPER, consumer, kafka.bootstrap(), topic, group}};
  ASSERT_TRUE(test::WaitUntil([&] { return effects().size() >= 3; }, std::chrono::seconds(90)))
      << second.Stdout() << second.Stderr();
  ASSERT_TRUE(test::WaitUntil(
      [&] { return test::CommittedOffset(kafka.bootstrap(), group, topic, 0) == 3; },
      std::chrono::seconds(30)));
  second.Signal(SIGTERM);
  EXPECT_EQ(second.Wait(std::chrono::seconds(30)), 0) << second.Stderr();

  EXPECT_THAT(effects(), ElementsAre("pay-1", "pay-2", "pay-3"));
  EXPECT_THAT(second.Stdout(),
              HasSubstr("skipped duplicate topic=" + topic +
                        " partition=0 offset=1 message_id=e0000002-0000-0000-0000-000000000000"));
  EXPECT_THAT(second.Stdout(), ::testing::Not(HasSubstr("committed message_id=e0000002")));
}

}  // namespace
}  // namespace outbox
