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

// Batches of 4 (issue 17), as the consumer login: ten records make batches [1-4] [5-8]
// [9-10]. Killed inside the handler of record 6 (mid-batch) or right after batch 2's
// commit (before its ack): after a restart every record's effect exists exactly once.
class ConsumerCrashInBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    test::MigrateDb(db_);
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec("CREATE TABLE effects (id bigserial PRIMARY KEY, message_id text NOT NULL, payload text)");
    tx.exec("GRANT SELECT, INSERT ON effects TO outbox_consumer");
    tx.exec("GRANT USAGE ON SEQUENCE effects_id_seq TO outbox_consumer");
    tx.commit();
    consumer_db_ = test::As(test::Login::kConsumer, db_);
    topic_ = test::UniqueTopic("payments");
    group_ = test::UniqueTopic("ledger");
    kafka_.CreateTopic(topic_, 1);
    for (int i = 1; i <= 10; ++i) {
      test::Produce(kafka_.bootstrap(), topic_, 0, "acct", "pay-" + std::to_string(i),
                    {{"message_id", "e-" + std::to_string(i)}});
    }
  }
  std::vector<std::string> Effects() {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    std::vector<std::string> out;
    for (const auto& r : tx.exec("SELECT payload FROM effects ORDER BY id"))
      out.push_back(r[0].as<std::string>());
    return out;
  }
  static std::vector<std::string> Payloads(int from, int to) {
    std::vector<std::string> out;
    for (int i = from; i <= to; ++i) out.push_back("pay-" + std::to_string(i));
    return out;
  }
  // Restarts without a kill; returns its stdout once all ten are in and acknowledged.
  std::string Restart() {
    test::Process second{{OUTBOX_CONSUMER_CRASH_HELPER, consumer_db_, kafka_.bootstrap(), topic_,
                          group_, "0", "4"}};
    EXPECT_TRUE(test::WaitUntil([&] { return Effects().size() >= 10; }, std::chrono::seconds(90)))
        << second.Stdout() << second.Stderr();
    EXPECT_TRUE(test::WaitUntil(
        [&] { return test::CommittedOffset(kafka_.bootstrap(), group_, topic_, 0) == 10; },
        std::chrono::seconds(30)));
    second.Signal(SIGTERM);
    EXPECT_EQ(second.Wait(std::chrono::seconds(30)), 0) << second.Stderr();
    return second.Stdout();
  }

  std::string db_, consumer_db_, topic_, group_;
  test::KafkaCluster kafka_;
};

TEST_F(ConsumerCrashInBatch, KilledInTheMiddleOfABatchNothingOfThatBatchCommitsAndNothingIsLost) {
  test::Process first{{OUTBOX_CONSUMER_CRASH_HELPER, consumer_db_, kafka_.bootstrap(), topic_,
                       group_, "0", "4", "6"}};
  ASSERT_EQ(first.Wait(std::chrono::seconds(60)), 128 + SIGKILL) << first.Stdout() << first.Stderr();
  ASSERT_THAT(first.Stdout(), HasSubstr("killed in handler message_id=e-6"));
  // Batch 1 committed; batch 2 (records 5-8) was in progress: none of it is there.
  EXPECT_EQ(Effects(), Payloads(1, 4));
  EXPECT_LE(test::CommittedOffset(kafka_.bootstrap(), group_, topic_, 0), 4)
      << "an ack passed the batch that never committed";

  auto out = Restart();
  EXPECT_EQ(Effects(), Payloads(1, 10));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("skipped duplicate topic=" + topic_ + " partition=0 offset=4")));
}

TEST_F(ConsumerCrashInBatch, KilledBetweenABatchCommitAndItsAckTheRedeliveredBatchIsSkipped) {
  // The after-commit hook runs per record of a committed batch: the 6th is in batch 2.
  test::Process first{{OUTBOX_CONSUMER_CRASH_HELPER, consumer_db_, kafka_.bootstrap(), topic_,
                       group_, "6", "4"}};
  ASSERT_EQ(first.Wait(std::chrono::seconds(60)), 128 + SIGKILL) << first.Stdout() << first.Stderr();
  EXPECT_EQ(Effects(), Payloads(1, 8));
  EXPECT_LE(test::CommittedOffset(kafka_.bootstrap(), group_, topic_, 0), 4)
      << "batch 2 must be unacknowledged";

  auto out = Restart();
  EXPECT_EQ(Effects(), Payloads(1, 10));
  for (int offset = 4; offset <= 7; ++offset) {
    EXPECT_THAT(out, HasSubstr("skipped duplicate topic=" + topic_ + " partition=0 offset=" +
                               std::to_string(offset) + " message_id=e-" + std::to_string(offset + 1)));
  }
}

}  // namespace
}  // namespace outbox
