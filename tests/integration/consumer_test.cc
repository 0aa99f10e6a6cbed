// outbox::Consumer against a real PostgreSQL and the Kafka protocol: inbox dedup, ack
// after commit, retries with backoff, the dead-letter topic, both retry modes,
// rebalances, Stop() and least privilege.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <outbox/consumer.h>
#include <outbox/retention.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include "consumer_fixture.h"
#include "consumer_test_access.h"

namespace outbox {

// Readable parameter names in test output.
void PrintTo(RetryMode mode, std::ostream* os) {
  *os << (mode == RetryMode::kOrdered ? "ordered" : "unordered");
}

namespace {

using test::ConsumerFixture;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ConsumerInbox = ConsumerFixture;

TEST_F(ConsumerInbox, DuplicateDeliveryHasEffectsOnce) {
  Send("k1", "first", "11111111-1111-1111-1111-111111111111");
  Send("k1", "first again",
       "11111111-1111-1111-1111-111111111111");  // the same message, redelivered
  Send("k2", "second", "22222222-2222-2222-2222-222222222222");
  Consumer c{Options(), Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled + c.stats().duplicates == 3; }))
      << log_.All();

  EXPECT_THAT(Column("SELECT message_id || '=' || payload FROM effects ORDER BY id"),
              ElementsAre("11111111-1111-1111-1111-111111111111=first",
                          "22222222-2222-2222-2222-222222222222=second"));
  EXPECT_EQ(c.stats().duplicates, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages WHERE outcome = 'handled'"), 2);
}

TEST_F(ConsumerInbox, ReplayOfAnAlreadyHandledMessageIsSkipped) {
  // E.g. offsets reset or lost acks: the record comes again, the group's inbox knows it.
  Send("k", "a", "33333333-3333-3333-3333-333333333333");
  auto options = Options();
  {
    Consumer first{options, Effect};
    ASSERT_TRUE(StepUntil(first, [&] { return first.stats().handled == 1; })) << log_.All();
  }
  pqxx::connection conn{db_};
  // A different group sees the record as new; the same group's inbox drops it.
  options.group += "-replay";
  {
    pqxx::work tx{conn};
    tx.exec_params(
        "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\") "
        "VALUES ($1, '33333333-3333-3333-3333-333333333333', $2, 0, 0)",
        options.group, topic_);
    tx.commit();
  }
  Consumer replay{options, Effect};
  ASSERT_TRUE(StepUntil(replay, [&] { return replay.stats().duplicates == 1; })) << log_.All();
  EXPECT_EQ(replay.stats().handled, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM effects"), 1);
}

TEST_F(ConsumerInbox, RecordWithoutMessageIdIsIdentifiedByTopicPartitionOffset) {
  Send(std::nullopt, "from someone else", "");
  Consumer c{Options(), Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 1; })) << log_.All();
  EXPECT_THAT(Column("SELECT message_id FROM effects"), ElementsAre(topic_ + "/0/0"));
  EXPECT_THAT(Column("SELECT message_id FROM inbox.messages"), ElementsAre(topic_ + "/0/0"));
  EXPECT_THAT(Column("SELECT coalesce(key, 'NULL') FROM effects"), ElementsAre("NULL"));
}

// Why (issue 13): a message_id too long or not valid UTF-8 made the consumer take its own
// input for a database outage and stall the partition for ever.
TEST_F(ConsumerInbox, HostileMessageIdsAreHandledUnderADerivedIdInsteadOfStallingThePartition) {
  Send(std::string("k"), "too long", std::string(5000, 'x'));
  Send(std::string("k"), "bad utf8", "abc\xff\xfe\x01");
  Send(std::string("k"), "after", "c0000000-0000-0000-0000-000000000003");
  Consumer c{Options(), Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 3; })) << log_.All();
  auto ids = Column("SELECT message_id FROM inbox.messages ORDER BY \"offset\"");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_THAT(ids[0], ::testing::StartsWith("invalid message_id 5000 "));
  EXPECT_THAT(ids[1], ::testing::StartsWith("invalid message_id 6 "));
  EXPECT_EQ(ids[2], "c0000000-0000-0000-0000-000000000003");
  EXPECT_FALSE(log_.Contains("database unavailable")) << log_.All();
}

// A header value the retry table cannot store (not UTF-8) must not stall the consumer:
// the record that cannot be parked for a retry goes to the dead-letter topic.
TEST_F(ConsumerInbox, ARecordTheRetryTableCannotHoldIsDeadLetteredNotRetriedForEver) {
  Send(std::string("k"), "poison", "d0000000-0000-0000-0000-000000000001", {{"note", "\xff\xfe"}});
  Send(std::string("k"), "next", "d0000000-0000-0000-0000-000000000002");
  auto options = Options();
  options.mode = RetryMode::kUnordered;
  Consumer c{options, [](const Message& m, pqxx::work& tx) {
               if (m.payload == "poison") throw std::runtime_error("handler refuses");
               Effect(m, tx);
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 1 && c.stats().dead_lettered == 1; }))
      << log_.All();
  EXPECT_THAT(Column("SELECT outcome FROM inbox.messages ORDER BY \"offset\""),
              ElementsAre("dead_lettered", "handled"));
  auto dlq = test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0].Header("dlq_error"), HasSubstr("cannot park it for a retry"));
}

TEST_F(ConsumerInbox, OffsetIsCommittedAfterTheTransaction) {
  Send("k", "a", "44444444-4444-4444-4444-444444444444");
  Send("k", "b", "55555555-5555-5555-5555-555555555555");
  auto options = Options();
  bool row_visible_before_ack = false;
  std::int64_t offset_at_commit = -2;
  Consumer c{options, Effect};
  internal::ConsumerTestAccess::SetAfterCommit(c, [&](const Message& m) {
    if (m.offset != 1) return;
    // Called between the database commit and the offset commit.
    row_visible_before_ack = Count("SELECT count(*) FROM effects WHERE payload = 'b'") == 1;
    offset_at_commit = test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0);
  });
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 2; })) << log_.All();
  EXPECT_TRUE(row_visible_before_ack);
  EXPECT_EQ(offset_at_commit, 1);  // the first message's ack only
  EXPECT_EQ(test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0), 2);
}

// Retries ------------------------------------------------------------------------------

class ConsumerRetry : public ConsumerFixture, public ::testing::WithParamInterface<RetryMode> {};

TEST_P(ConsumerRetry, HandlerFailingTwiceThenSucceedingHasEffectsOnceAfterBackoff) {
  Send("k", "flaky", "66666666-6666-6666-6666-666666666666");
  Send("k", "next", "77777777-7777-7777-7777-777777777777");
  auto options = Options();
  options.mode = GetParam();
  options.retry.initial_delay = std::chrono::milliseconds(200);
  options.retry.multiplier = 3;
  options.retry.max_delay = std::chrono::milliseconds(10000);
  options.retry.jitter = 0.5;
  options.retry.max_attempts = 5;
  int calls = 0;
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               Effect(m, tx);  // written, then rolled back by the throw
               if (*m.payload == "flaky" && ++calls <= 2)
                 throw std::runtime_error("flaky failure " + std::to_string(calls));
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 2; })) << log_.All();

  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY payload"), ElementsAre("flaky", "next"));
  EXPECT_EQ(calls, 3);
  // The recorded attempts: two failures, each with its planned delay.
  pqxx::connection conn{db_};
  pqxx::work tx{conn};
  auto rows = tx.exec(
      "SELECT attempt, error, error_kind, "
      "  extract(epoch FROM next_attempt_at - failed_at) * 1000, "
      "  started_at <= failed_at, "
      "  lead(started_at) OVER (ORDER BY attempt) >= next_attempt_at "
      "FROM inbox.attempts WHERE message_id = '66666666-6666-6666-6666-666666666666' ORDER BY "
      "attempt");
  ASSERT_EQ(rows.size(), 2u) << log_.All();
  EXPECT_EQ(rows[0][0].as<int>(), 1);
  EXPECT_EQ(rows[0][1].as<std::string>(), "flaky failure 1");
  EXPECT_EQ(rows[0][2].as<std::string>(), "retryable");
  EXPECT_EQ(rows[1][0].as<int>(), 2);
  // Delay n is in [base_n * (1 - jitter), base_n]: 200 ms * 3^(n-1), jitter 0.5.
  double d1 = rows[0][3].as<double>(), d2 = rows[1][3].as<double>();
  EXPECT_GE(d1, 100 - 1);
  EXPECT_LE(d1, 200 + 1);
  EXPECT_GE(d2, 300 - 1);
  EXPECT_LE(d2, 600 + 1);
  EXPECT_TRUE(rows[0][4].as<bool>());
  EXPECT_TRUE(rows[0][5].as<bool>()) << "attempt 2 started before its backoff had passed";
  // The successful attempt (the inbox row's transaction) started after the second delay.
  EXPECT_TRUE(tx.exec1("SELECT m.processed_at >= a.next_attempt_at FROM inbox.messages m JOIN "
                       "inbox.attempts a "
                       "USING (group_id, message_id) WHERE a.attempt = 2")[0]
                  .as<bool>());
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM inbox.retries")[0].as<int>(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, ConsumerRetry,
                         ::testing::Values(RetryMode::kOrdered, RetryMode::kUnordered),
                         [](const auto& info) {
                           return info.param == RetryMode::kOrdered ? "Ordered" : "Unordered";
                         });

// Dead letters -------------------------------------------------------------------------

class ConsumerDeadLetter : public ConsumerFixture, public ::testing::WithParamInterface<RetryMode> {
 protected:
  // m1 ok, m2 always fails, m3 ok — all of key "acct-1" on one partition.
  void RunPoisonScenario(RetryMode mode) {
    Send("acct-1", "m1", "a1111111-0000-0000-0000-000000000000", {{"type", "credit"}});
    Send("acct-1", "poison", "a2222222-0000-0000-0000-000000000000", {{"type", "debit"}});
    Send("acct-1", "m3", "a3333333-0000-0000-0000-000000000000", {{"type", "credit"}});
    auto options = Options();
    options.mode = mode;
    options.retry.initial_delay = std::chrono::milliseconds(150);
    options.retry.multiplier = 1;
    options.retry.max_delay = std::chrono::milliseconds(150);
    options.retry.jitter = 0;
    options.retry.max_attempts = 3;
    group_ = options.group;
    Consumer c{options, [](const Message& m, pqxx::work& tx) {
                 Effect(m, tx);
                 if (*m.payload == "poison")
                   throw std::runtime_error("cannot apply debit: account closed");
               }};
    ASSERT_TRUE(StepUntil(c, [&] {
      return c.stats().handled == 2 && c.stats().dead_lettered == 1;
    })) << log_.All();
    EXPECT_EQ(c.stats().failed_attempts, 3u);
  }
  std::string group_;
};

TEST_P(ConsumerDeadLetter, AlwaysFailingMessageLandsInDlqWithHeadersAndLaterMessagesAreHandled) {
  RunPoisonScenario(GetParam());
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("m1", "m3"));
  EXPECT_THAT(Column("SELECT outcome FROM inbox.messages ORDER BY \"offset\""),
              ElementsAre("handled", "dead_lettered", "handled"));
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.retries"), 0);

  auto dlq = test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1);
  ASSERT_EQ(dlq.size(), 1u);
  const auto& r = dlq[0];
  EXPECT_EQ(r.key, "acct-1");
  EXPECT_EQ(r.value, "poison");
  EXPECT_EQ(r.Header("message_id"), "a2222222-0000-0000-0000-000000000000");
  EXPECT_EQ(r.Header("type"), "debit");  // the original headers travel along
  EXPECT_EQ(r.Header("dlq_error"), "cannot apply debit: account closed");
  EXPECT_EQ(r.Header("dlq_error_kind"), "retryable");
  EXPECT_EQ(r.Header("dlq_attempts"), "3");
  EXPECT_EQ(r.Header("dlq_original_topic"), topic_);
  EXPECT_EQ(r.Header("dlq_original_partition"), "0");
  EXPECT_EQ(r.Header("dlq_original_offset"), "1");
  EXPECT_EQ(r.Header("dlq_group"), group_);
  EXPECT_EQ(r.Header("dlq_message_id"), "a2222222-0000-0000-0000-000000000000");
  // Past the poison message: the group's offset is at the end.
  EXPECT_EQ(test::CommittedOffset(kafka_.bootstrap(), group_, topic_, 0), 3);
}

INSTANTIATE_TEST_SUITE_P(Modes, ConsumerDeadLetter,
                         ::testing::Values(RetryMode::kOrdered, RetryMode::kUnordered),
                         [](const auto& info) {
                           return info.param == RetryMode::kOrdered ? "Ordered" : "Unordered";
                         });

using ConsumerOrdering = ConsumerDeadLetter;

TEST_F(ConsumerOrdering, OrderedModeHandlesTheNextMessageOfTheKeyOnlyAfterThePoisonIsDeadLettered) {
  RunPoisonScenario(RetryMode::kOrdered);
  // m3 (same key, after the poison message) committed after the poison's last attempt.
  EXPECT_EQ(
      Count(
          "SELECT count(*) FROM inbox.messages m WHERE message_id LIKE 'a333%' AND processed_at > "
          "(SELECT max(failed_at) FROM inbox.attempts)"),
      1);
}

TEST_F(ConsumerOrdering, UnorderedModeMovesOnWhileThePoisonWaitsInTheRetryTable) {
  RunPoisonScenario(RetryMode::kUnordered);
  // m3 committed before the poison's second attempt: the partition did not wait.
  EXPECT_EQ(
      Count(
          "SELECT count(*) FROM inbox.messages m WHERE message_id LIKE 'a333%' AND processed_at < "
          "(SELECT started_at FROM inbox.attempts WHERE attempt = 2)"),
      1);
}

TEST_F(ConsumerDeadLetter, PermanentErrorGoesStraightToTheDlq) {
  Send("k", "bad schema", "b1111111-0000-0000-0000-000000000000");
  Send("k", "fine", "b2222222-0000-0000-0000-000000000000");
  auto options = Options();
  options.retry.max_attempts = 10;
  Consumer c{options, [](const Message& m, pqxx::work& tx) {
               if (*m.payload == "bad schema") throw PermanentError("unknown schema version 7");
               Effect(m, tx);
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 1 && c.stats().dead_lettered == 1; }))
      << log_.All();
  EXPECT_EQ(c.stats().failed_attempts, 1u);
  EXPECT_THAT(Column("SELECT error_kind || ':' || coalesce(next_attempt_at::text, 'last') FROM "
                     "inbox.attempts"),
              ElementsAre("permanent:last"));
  auto dlq = test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].Header("dlq_error_kind"), "permanent");
  EXPECT_EQ(dlq[0].Header("dlq_attempts"), "1");
  EXPECT_EQ(dlq[0].Header("dlq_error"), "unknown schema version 7");
}

// Rebalances and shutdown --------------------------------------------------------------

using ConsumerRebalance = ConsumerFixture;

TEST_F(ConsumerRebalance, PartitionsMovingToANewMemberLoseNothingAndApplyNothingTwice) {
  auto topic = test::UniqueTopic("moving");
  kafka_.CreateTopic(topic, 4);
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) {
    test::Produce(kafka_.bootstrap(), topic, i % 4, "key-" + std::to_string(i % 4),
                  "v" + std::to_string(i), {{"message_id", "m-" + std::to_string(i)}});
  }
  auto options = Options();
  options.topics = {topic};
  // The first message of each partition fails once and is held for a retry (ordered
  // mode) — likely while its partition is revoked.
  options.retry.initial_delay = std::chrono::milliseconds(1500);
  options.retry.jitter = 0;
  std::mutex mu;
  std::map<std::string, int> failures;  // Guarded by mu.
  auto handler = [&](const Message& m, pqxx::work& tx) {
    Effect(m, tx);
    std::lock_guard lock{mu};
    if (m.offset == 0 && failures[m.message_id]++ == 0) throw std::runtime_error("first try fails");
  };
  Consumer a{options, handler};
  ASSERT_TRUE(StepUntil(a, [&] { return a.stats().failed_attempts >= 1; })) << log_.All();
  std::atomic<bool> done{false};
  std::thread a_loop{[&] {
    while (!done) a.Step(std::chrono::milliseconds(50));
  }};
  Consumer b{options, handler};
  std::thread b_loop{[&] {
    while (!done) b.Step(std::chrono::milliseconds(50));
  }};
  bool all = test::WaitUntil(
      [&] { return Count("SELECT count(DISTINCT message_id) FROM effects") == kMessages; },
      std::chrono::seconds(90));
  done = true;
  a_loop.join();
  b_loop.join();
  ASSERT_TRUE(all) << log_.All();
  EXPECT_EQ(Count("SELECT count(*) FROM effects"), kMessages) << "a message was applied twice";
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages"), kMessages);
  EXPECT_GT(b.stats().handled + b.stats().duplicates, 0u)
      << "the second member never got a partition";
}

using ConsumerStop = ConsumerFixture;

TEST_F(ConsumerStop, StopFinishesTheMessageInHandAndAcknowledgesIt) {
  Send("k", "one", "c1111111-0000-0000-0000-000000000000");
  Send("k", "two", "c2222222-0000-0000-0000-000000000000");
  auto options = Options();
  std::mutex mu;
  std::condition_variable cv;
  bool in_handler = false, stopped = false;  // Guarded by mu.
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               {
                 std::unique_lock lock{mu};
                 in_handler = true;
                 cv.notify_all();
                 cv.wait(lock, [&] { return stopped; });  // Stop() arrives while we work
               }
               Effect(m, tx);
             }};
  std::thread runner{[&] { c.Run(); }};
  {
    std::unique_lock lock{mu};
    ASSERT_TRUE(
        cv.wait_for(lock, test::Scaled(std::chrono::seconds(60)), [&] { return in_handler; }));
    c.Stop();
    stopped = true;
    cv.notify_all();
  }
  runner.join();
  EXPECT_THAT(Column("SELECT payload FROM effects"), ElementsAre("one"));
  EXPECT_EQ(c.stats().handled, 1u);
  EXPECT_EQ(test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0), 1);
}

using ConsumerDatabase = ConsumerFixture;

TEST_F(ConsumerDatabase, LostConnectionIsRetriedWithoutCountingAnAttempt) {
  Send("k", "x", "f1111111-0000-0000-0000-000000000000");
  auto options = Options();
  options.retry.max_attempts = 1;  // a counted failure would dead-letter at once
  int calls = 0;
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               if (++calls == 1) {
                 // The database drops the consumer's session mid-transaction.
                 pqxx::connection admin{db_};
                 pqxx::work a{admin};
                 // Returns once the backend is gone (not just signalled).
                 a.exec_params("SELECT pg_terminate_backend($1, 30000)", tx.conn().backendpid());
                 a.commit();
                 tx.exec("SELECT 1");  // throws pqxx::broken_connection
               }
               Effect(m, tx);
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 1; })) << log_.All();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(c.stats().failed_attempts, 0u);
  EXPECT_EQ(c.stats().dead_lettered, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM effects"), 1);
  EXPECT_TRUE(log_.Contains("database unavailable")) << log_.All();
}

// Configuration and privileges ---------------------------------------------------------

TEST(ConsumerOptions, ReportsEveryProblemAtOnce) {
  ConsumerOptions o;
  o.topics = {"ok", "bad topic"};
  o.retry.multiplier = 0.5;
  o.retry.max_attempts = 0;
  o.kafka_consumer = {{"enable.auto.commit", "true"}};
  o.kafka = {{"no.such.property", "1"}};
  try {
    Consumer c{o, nullptr};
    FAIL() << "constructed";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_THAT(what, HasSubstr("brokers must not be empty"));
    EXPECT_THAT(what, HasSubstr("group must not be empty"));
    EXPECT_THAT(what, HasSubstr("'bad topic' is not a valid Kafka topic name"));
    EXPECT_THAT(what, HasSubstr("conninfo must not be empty"));
    EXPECT_THAT(what, HasSubstr("handler must not be empty"));
    EXPECT_THAT(what, HasSubstr("retry.multiplier"));
    EXPECT_THAT(what, HasSubstr("retry.max_attempts"));
    EXPECT_THAT(what, HasSubstr("kafka_consumer[enable.auto.commit]: owned by the library"));
    EXPECT_THAT(what, HasSubstr("kafka[no.such.property]"));
  }
}

using ConsumerRole = ConsumerFixture;

TEST_F(ConsumerRole, ConsumerRoleCanDoEverythingTheConsumerNeedsAndNoMore) {
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS billing_consumer");
    tx.exec("CREATE ROLE billing_consumer LOGIN IN ROLE outbox_consumer");
    tx.exec("GRANT INSERT ON effects TO billing_consumer");
    tx.exec("GRANT USAGE ON SEQUENCE effects_id_seq TO billing_consumer");
  }
  auto as_consumer =
      test::SharedCluster().ConninfoFor(pqxx::connection{db_}.dbname(), "billing_consumer");
  Send("k", "flaky", "d1111111-0000-0000-0000-000000000000");
  Send("k", "poison", "d2222222-0000-0000-0000-000000000000");
  Send("k", "dup", "d3333333-0000-0000-0000-000000000000");
  Send("k", "dup", "d3333333-0000-0000-0000-000000000000");
  auto options = Options();
  options.conninfo = as_consumer;
  options.mode = RetryMode::kUnordered;  // exercises inbox.retries too
  options.retry.initial_delay = std::chrono::milliseconds(50);
  options.retry.max_delay = std::chrono::milliseconds(50);
  options.retry.max_attempts = 2;
  bool failed_once = false;
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               if (*m.payload == "poison") throw std::runtime_error("poison");
               if (*m.payload == "flaky" && !failed_once) {
                 failed_once = true;
                 throw std::runtime_error("flaky");
               }
               Effect(m, tx);
             }};
  ASSERT_TRUE(StepUntil(c, [&] {
    auto s = c.stats();
    return s.handled == 2 && s.dead_lettered == 1 && s.duplicates == 1;
  })) << log_.All();
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.retries"), 0);
  pqxx::connection conn{as_consumer};
  EXPECT_EQ(TrimInbox(conn, std::chrono::hours(24), 100).messages, 0);  // allowed; nothing old yet

  auto denied = [&](const std::string& sql) {
    pqxx::work tx{conn};
    try {
      tx.exec(sql);
    } catch (const pqxx::insufficient_privilege&) {
      return true;
    }
    return false;
  };
  EXPECT_TRUE(denied("DELETE FROM inbox.messages"));
  EXPECT_TRUE(denied("UPDATE inbox.messages SET outcome = 'handled'"));
  EXPECT_TRUE(denied("DELETE FROM inbox.attempts"));
  EXPECT_TRUE(denied("DELETE FROM inbox.barrier"));
  EXPECT_TRUE(denied("SELECT * FROM outbox.messages"));
}

}  // namespace
}  // namespace outbox
