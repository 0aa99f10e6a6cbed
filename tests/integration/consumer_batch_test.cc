// Batches (issue 17): one transaction per batch (optimistic: no savepoints; after a
// failure, again with a savepoint per record), the inbox
// checked and inserted once per batch, one ack per batch — without weaker guarantees:
// a failing record is isolated and retried alone, kOrdered keeps a partition's later
// records behind it, a rebalance loses nothing and applies nothing twice, and the BatchHandler contract.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <outbox/consumer.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include "consumer_fixture.h"

namespace outbox {
namespace {

using test::ConsumerFixture;
using ::testing::ElementsAre;

class ConsumerBatch : public ConsumerFixture {
 protected:
  // Batches of up to `records`; a batch waits up to 2 s for more records, so records
  // produced before the consumer starts fill batches exactly (no timing involved).
  ConsumerOptions BatchOptions(int records, RetryMode mode = RetryMode::kOrdered) {
    auto o = Options();
    o.batch_max_records = records;
    o.batch_max_wait = std::chrono::milliseconds(2000);
    o.mode = mode;
    o.retry.initial_delay = std::chrono::milliseconds(100);
    o.retry.multiplier = 1;
    o.retry.max_delay = std::chrono::milliseconds(100);
    o.retry.jitter = 0;
    o.retry.max_attempts = 3;
    o.on_batch = [this](const BatchStats& s) {
      std::lock_guard lock{mu_};
      batches_.push_back(s);
    };
    return o;
  }
  void SendAll(const std::vector<std::string>& payloads, const std::string& key = "k") {
    for (const auto& p : payloads) Send(key, p, "id-" + p);
  }
  // The transaction that handled a record, as its inbox row's processed_at (now(): the
  // start of the transaction; xmin would be each savepoint's own subtransaction): equal
  // values = committed together.
  std::string Txn(const std::string& payload) {
    auto v = Column("SELECT processed_at::text FROM inbox.messages WHERE message_id = 'id-" +
                    payload + "'");
    return v.size() == 1 ? v[0] : "<" + std::to_string(v.size()) + " rows>";
  }
  std::vector<BatchStats> Batches() {
    std::lock_guard lock{mu_};
    return batches_;
  }

  std::mutex mu_;
  std::vector<BatchStats> batches_;  // Guarded by mu_.
};

TEST_F(ConsumerBatch, RecordsOfABatchCommitInOneTransactionAndAreAcknowledgedInOneCommit) {
  std::vector<std::string> payloads;
  for (int i = 0; i < 20; ++i) payloads.push_back("p" + std::to_string(i));
  SendAll(payloads);
  auto options = BatchOptions(20);
  Consumer c{options, Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 20; })) << log_.All();

  auto expected = payloads;
  EXPECT_EQ(Column("SELECT payload FROM effects ORDER BY id"), expected);
  EXPECT_EQ(Count("SELECT count(DISTINCT processed_at) FROM inbox.messages"), 1)
      << "not one transaction";
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages WHERE outcome = 'handled'"), 20);
  auto batches = Batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].records, 20u);
  EXPECT_EQ(batches[0].handled, 20u);
  EXPECT_EQ(batches[0].failed, 0u);
  EXPECT_EQ(batches[0].lag_records, 0);  // the batch reached the partition's end
  EXPECT_EQ(c.stats().batches, 1u);
  EXPECT_EQ(c.stats().batch_records, 20u);
  EXPECT_TRUE(test::WaitUntil(
      [&] { return test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0) == 20; },
      std::chrono::seconds(30)));
}

TEST_F(ConsumerBatch, RecordsTheInboxHasAndRepeatsInsideTheBatchAreSkipped) {
  auto options = BatchOptions(10);
  {
    pqxx::connection conn{db_};
    pqxx::work tx{conn};
    tx.exec_params(
        "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\") "
        "VALUES ($1, 'id-old', $2, 0, 99)",
        options.group, topic_);
    tx.commit();
  }
  Send("k", "a", "id-a");
  Send("k", "old", "id-old");   // handled before (by this group)
  Send("k", "a again", "id-a"); // the same message, delivered twice
  Send("k", "b", "id-b");
  Consumer c{options, Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled + c.stats().duplicates == 4; }))
      << log_.All();
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("a", "b"));
  EXPECT_EQ(c.stats().duplicates, 2u);
  // The repeat ends the first batch (it is judged once the first one's fate is known).
  auto batches = Batches();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].records, 2u);
  EXPECT_EQ(batches[0].duplicates, 1u);
  EXPECT_EQ(batches[1].records, 2u);
  EXPECT_EQ(batches[1].duplicates, 1u);
}

class ConsumerBatchPoison : public ConsumerBatch, public ::testing::WithParamInterface<RetryMode> {};

TEST_P(ConsumerBatchPoison, ThePoisonIsRetriedAndDeadLetteredWhileTheOthersOfItsBatchCommit) {
  SendAll({"m1", "m2", "poison", "m4", "m5"});
  auto options = BatchOptions(5, GetParam());
  std::mutex mu;
  std::vector<std::string> calls;  // Guarded by mu.
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               {
                 std::lock_guard lock{mu};
                 calls.push_back(*m.payload);
               }
               Effect(m, tx);  // written, then rolled back to the record's savepoint
               if (*m.payload == "poison") throw std::runtime_error("cannot apply");
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 4 && c.stats().dead_lettered == 1; }))
      << log_.All();

  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("m1", "m2", "m4", "m5"));
  EXPECT_THAT(Column("SELECT outcome FROM inbox.messages ORDER BY \"offset\""),
              ElementsAre("handled", "handled", "dead_lettered", "handled", "handled"));
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts WHERE message_id = 'id-poison'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.retries"), 0);
  auto dlq = test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].value, "poison");
  EXPECT_EQ(dlq[0].Header("dlq_attempts"), "3");
  EXPECT_EQ(dlq[0].Header("dlq_original_offset"), "2");
  // m1 and m2 committed in the first batch, together, despite the poison in it.
  EXPECT_EQ(Txn("m1"), Txn("m2"));
  auto first = Batches().at(0);
  EXPECT_EQ(first.records, 5u);
  EXPECT_EQ(first.failed, 1u);
  if (GetParam() == RetryMode::kOrdered) {
    // m4 and m5 (same partition, so same key order) waited until the poison was done.
    EXPECT_EQ(first.handled, 2u);
    EXPECT_EQ(first.deferred, 2u);
    // The optimistic run (no savepoints) stops at the poison and is rolled back; the
    // careful run (a savepoint per record) runs m1 and m2 again and isolates the poison.
    EXPECT_THAT(calls, ElementsAre("m1", "m2", "poison", "m1", "m2", "poison", "poison", "poison",
                                   "m4", "m5"));
    EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages WHERE message_id IN ('id-m4', 'id-m5') "
                    "AND processed_at > (SELECT max(failed_at) FROM inbox.attempts)"),
              2);
    EXPECT_NE(Txn("m4"), Txn("m1"));
  } else {
    // The partition moved on: m4 and m5 committed with m1 while the poison was parked.
    EXPECT_EQ(first.handled, 4u);
    EXPECT_EQ(first.deferred, 0u);
    EXPECT_EQ(Txn("m4"), Txn("m1"));
    EXPECT_EQ(Txn("m5"), Txn("m1"));
  }
  EXPECT_TRUE(test::WaitUntil(
      [&] { return test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0) == 5; },
      std::chrono::seconds(30)));
}

INSTANTIATE_TEST_SUITE_P(Modes, ConsumerBatchPoison,
                         ::testing::Values(RetryMode::kOrdered, RetryMode::kUnordered),
                         [](const auto& info) {
                           return info.param == RetryMode::kOrdered ? "Ordered" : "Unordered";
                         });

TEST_F(ConsumerBatch, OrderedModeKeepsAKeysLaterRecordsBehindItsFailingRecordWhileOtherKeysFlow) {
  auto topic = test::UniqueTopic("keys");
  kafka_.CreateTopic(topic, 2);
  // Key A on partition 0: a1, a2 (fails twice), a3. Key B on partition 1: b1, b2.
  for (const char* p : {"a1", "a2", "a3"})
    test::Produce(kafka_.bootstrap(), topic, 0, "A", p, {{"message_id", std::string("id-") + p}});
  for (const char* p : {"b1", "b2"})
    test::Produce(kafka_.bootstrap(), topic, 1, "B", p, {{"message_id", std::string("id-") + p}});
  auto options = BatchOptions(5);
  options.topics = {topic};
  std::mutex mu;
  std::vector<std::string> calls;  // Guarded by mu.
  int a2_failures = 0;
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               {
                 std::lock_guard lock{mu};
                 calls.push_back(*m.payload);
               }
               Effect(m, tx);
               // Three failures: the batch's optimistic run (rolled back, not an attempt), its
               // careful run (attempt 1) and the first retry (attempt 2).
               if (*m.payload == "a2" && ++a2_failures <= 3) throw std::runtime_error("not yet");
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 5; })) << log_.All();

  std::vector<std::string> key_a;
  for (const auto& call : calls) {
    if (call[0] == 'a') key_a.push_back(call);
  }
  // a3 was never run before a2 succeeded (its last call), not even inside a batch (a1 runs
  // twice: in the batch's optimistic run, rolled back, and in its careful run).
  EXPECT_THAT(key_a, ElementsAre("a1", "a2", "a1", "a2", "a2", "a2", "a3"));
  EXPECT_THAT(Column("SELECT payload FROM effects WHERE key = 'A' ORDER BY id"),
              ElementsAre("a1", "a2", "a3"));
  // Key B did not wait: it committed in the first batch, with a1.
  EXPECT_EQ(Txn("b1"), Txn("a1"));
  EXPECT_EQ(Txn("b2"), Txn("a1"));
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts WHERE message_id = 'id-a2'"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages m WHERE message_id = 'id-a3' AND "
                  "processed_at > (SELECT max(failed_at) FROM inbox.attempts)"),
            1);
  EXPECT_TRUE(test::WaitUntil(
      [&] {
        return test::CommittedOffset(kafka_.bootstrap(), options.group, topic, 0) == 3 &&
               test::CommittedOffset(kafka_.bootstrap(), options.group, topic, 1) == 2;
      },
      std::chrono::seconds(30)));
}

// Optimistic batches ------------------------------------------------------------------

// A batch runs first without savepoints: its effects rows were all written by the
// top-level transaction itself (one xmin, that of the inbox rows), not by a subtransaction
// per record, and the stats count it as optimistic.
TEST_F(ConsumerBatch, ABatchWithoutFailuresRunsWithoutASavepointPerRecord) {
  std::vector<std::string> payloads;
  for (int i = 0; i < 10; ++i) payloads.push_back("o" + std::to_string(i));
  SendAll(payloads);
  Consumer c{BatchOptions(10), Effect};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 10; })) << log_.All();
  EXPECT_EQ(Count("SELECT count(DISTINCT xmin::text) FROM effects"), 1)
      << "a subtransaction (savepoint) per record";
  EXPECT_EQ(Count("SELECT count(*) FROM effects e JOIN inbox.messages m "
                  "ON m.message_id = e.message_id AND m.xmin::text = e.xmin::text"),
            10);
  EXPECT_EQ(c.stats().batches, 1u);
  EXPECT_EQ(c.stats().optimistic_batches, 1u);
  EXPECT_EQ(c.stats().careful_batches, 0u);
  ASSERT_EQ(Batches().size(), 1u);
  EXPECT_FALSE(Batches()[0].careful);
}

// One record of the batch fails: the optimistic run is rolled back, the careful run
// commits the others once (one effects row each, the counter counts each once although
// their handlers ran twice) and the failing record takes its retry / dead-letter path.
class ConsumerBatchOptimistic : public ConsumerBatch, public ::testing::WithParamInterface<RetryMode> {};

TEST_P(ConsumerBatchOptimistic, AFailingRecordRollsTheBatchBackAndTheOthersCommitOnceCarefully) {
  {
    pqxx::connection conn{db_};
    pqxx::work tx{conn};
    tx.exec("CREATE TABLE handled_count (n bigint NOT NULL)");
    tx.exec("INSERT INTO handled_count VALUES (0)");
    tx.exec("GRANT SELECT, UPDATE ON handled_count TO outbox_consumer");
    tx.commit();
  }
  SendAll({"c1", "c2", "c3", "bad", "c5", "c6"});
  auto options = BatchOptions(6, GetParam());
  std::atomic<int> calls{0};
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               ++calls;
               Effect(m, tx);
               tx.exec("UPDATE handled_count SET n = n + 1");
               if (*m.payload == "bad") throw std::runtime_error("bad record");
             }};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 5 && c.stats().dead_lettered == 1; }))
      << log_.All();

  // Effects exactly once for each good record, none for the bad one.
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"),
              ElementsAre("c1", "c2", "c3", "c5", "c6"));
  EXPECT_EQ(Count("SELECT n FROM handled_count"), 5);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages WHERE outcome = 'handled'"), 5);
  // The bad record: 3 attempts as before (the optimistic run's failure is not one), then
  // the dead-letter topic.
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts WHERE message_id = 'id-bad'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages WHERE message_id = 'id-bad' "
                  "AND outcome = 'dead_lettered'"),
            1);
  auto dlq = test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].value, "bad");
  EXPECT_EQ(dlq[0].Header("dlq_attempts"), "3");
  // The first batch committed from its careful run (a savepoint per record: c1..c3 each in
  // a subtransaction of their own), together.
  auto first = Batches().at(0);
  EXPECT_TRUE(first.careful);
  EXPECT_EQ(first.failed, 1u);
  EXPECT_EQ(Txn("c1"), Txn("c3"));
  EXPECT_EQ(Count("SELECT count(DISTINCT xmin::text) FROM effects WHERE payload IN ('c1', 'c2', 'c3')"), 3);
  EXPECT_GE(c.stats().careful_batches, 1u);
  if (GetParam() == RetryMode::kOrdered) {
    // Optimistic c1 c2 c3 bad; careful c1 c2 c3 bad (c5 c6 deferred); 2 retries of bad;
    // then c5 c6 (a batch of two, optimistic).
    EXPECT_EQ(first.handled, 3u);
    EXPECT_EQ(first.deferred, 2u);
    EXPECT_EQ(calls.load(), 4 + 4 + 2 + 2);
    EXPECT_EQ(c.stats().optimistic_batches, 1u);
  } else {
    // Optimistic c1 c2 c3 bad; careful all six (bad parked); bad's 2 retries from the park.
    EXPECT_EQ(first.handled, 5u);
    EXPECT_EQ(Txn("c6"), Txn("c1"));
    EXPECT_EQ(calls.load(), 4 + 6 + 2);
  }
  EXPECT_TRUE(test::WaitUntil(
      [&] { return test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0) == 6; },
      std::chrono::seconds(30)));
}

INSTANTIATE_TEST_SUITE_P(Modes, ConsumerBatchOptimistic,
                         ::testing::Values(RetryMode::kOrdered, RetryMode::kUnordered),
                         [](const auto& info) {
                           return info.param == RetryMode::kOrdered ? "Ordered" : "Unordered";
                         });

// The BatchHandler contract ----------------------------------------------------------

// Inserts the whole batch with one multi-row INSERT; refuses any batch holding "poison".
class ConsumerBatchHandler : public ConsumerBatch {
 protected:
  BatchHandler Recording() {
    return BatchHandler{[this](const std::vector<Message>& ms, pqxx::work& tx) {
      std::string call, values;
      for (const auto& m : ms) {
        call += (call.empty() ? "" : ",") + *m.payload;
        values += std::string(values.empty() ? "" : ",") + "(" + tx.quote(m.message_id) + ", " +
                  tx.quote(*m.key) + ", " + tx.quote(*m.payload) + ")";
      }
      {
        std::lock_guard lock{calls_mu_};
        calls_.push_back(call);
      }
      tx.exec("INSERT INTO effects (message_id, key, payload) VALUES " + values);
      if (call.find("poison") != std::string::npos) throw std::runtime_error("batch refused");
    }};
  }
  std::vector<std::string> Calls() {
    std::lock_guard lock{calls_mu_};
    return calls_;
  }
  std::mutex calls_mu_;
  std::vector<std::string> calls_;  // Guarded by calls_mu_.
};

TEST_F(ConsumerBatchHandler, GetsTheBatchInOneCallInsideTheBatchTransaction) {
  SendAll({"r1", "r2", "r3", "r4"});
  Consumer c{BatchOptions(4), Recording()};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 4; })) << log_.All();
  EXPECT_THAT(Calls(), ElementsAre("r1,r2,r3,r4"));
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("r1", "r2", "r3", "r4"));
  EXPECT_EQ(Count("SELECT count(DISTINCT processed_at) FROM inbox.messages"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages"), 4);
}

TEST_F(ConsumerBatchHandler, AFailedBatchIsRetriedOneRecordAtATimeSoOnlyTheCulpritRetries) {
  SendAll({"r1", "r2", "poison", "r4"});
  auto options = BatchOptions(4, RetryMode::kUnordered);
  options.retry.max_attempts = 2;
  Consumer c{options, Recording()};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 3 && c.stats().dead_lettered == 1; }))
      << log_.All();
  // The whole batch once; then each record alone (the batch's savepoint rolled back);
  // then only the culprit, alone, on its retry.
  EXPECT_THAT(Calls(), ElementsAre("r1,r2,poison,r4", "r1", "r2", "poison", "r4", "poison"));
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("r1", "r2", "r4"));
  EXPECT_EQ(Txn("r1"), Txn("r4"));  // the innocent committed together, in the first batch
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.attempts WHERE message_id = 'id-poison'"), 2);
  EXPECT_EQ(test::ReadTopic(kafka_.bootstrap(), topic_ + ".dlq", 1).size(), 1u);
}

TEST_F(ConsumerBatchHandler, InOrderedModeTheRecordsBehindTheCulpritWaitForIt) {
  SendAll({"r1", "poison", "r3"});
  auto options = BatchOptions(3, RetryMode::kOrdered);
  options.retry.max_attempts = 2;
  Consumer c{options, Recording()};
  ASSERT_TRUE(StepUntil(c, [&] { return c.stats().handled == 2 && c.stats().dead_lettered == 1; }))
      << log_.All();
  EXPECT_THAT(Calls(), ElementsAre("r1,poison,r3", "r1", "poison", "poison", "r3"));
  EXPECT_THAT(Column("SELECT payload FROM effects ORDER BY id"), ElementsAre("r1", "r3"));
}

// Rebalances -----------------------------------------------------------------------------

TEST_F(ConsumerBatch, ARebalanceDuringABatchLosesNothingAndAppliesNothingTwice) {
  auto topic = test::UniqueTopic("moving");
  kafka_.CreateTopic(topic, 4);
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) {
    test::Produce(kafka_.bootstrap(), topic, i % 4, "key-" + std::to_string(i % 4),
                  "v" + std::to_string(i), {{"message_id", "m-" + std::to_string(i)}});
  }
  auto options = BatchOptions(10);
  options.batch_max_wait = std::chrono::milliseconds(0);
  options.topics = {topic};
  std::mutex mu;
  std::condition_variable cv;
  bool in_first_batch = false, second_member_joined = false;  // Guarded by mu.
  auto handler = [&](const Message& m, pqxx::work& tx) {
    Effect(m, tx);
    std::unique_lock lock{mu};
    if (!in_first_batch) {
      // The first member's first batch is in progress while the second member joins
      // and the group rebalances.
      in_first_batch = true;
      cv.notify_all();
      cv.wait(lock, [&] { return second_member_joined; });
    }
  };
  Consumer a{options, handler};
  std::atomic<bool> done{false};
  std::thread a_loop{[&] {
    while (!done) a.Step(std::chrono::milliseconds(50));
  }};
  {
    std::unique_lock lock{mu};
    ASSERT_TRUE(cv.wait_for(lock, test::Scaled(std::chrono::seconds(60)), [&] { return in_first_batch; }));
  }
  Consumer b{options, handler};
  std::thread b_loop{[&] {
    while (!done) b.Step(std::chrono::milliseconds(50));
  }};
  {
    std::lock_guard lock{mu};
    second_member_joined = true;
    cv.notify_all();
  }
  auto all_of = [&](int n) {
    return test::WaitUntil(
        [&] { return Count("SELECT count(DISTINCT message_id) FROM effects") == n; },
        std::chrono::seconds(90));
  };
  bool first = all_of(kMessages);
  // More records once the group has settled, so the second member surely has work.
  for (int i = kMessages; i < 2 * kMessages && first; ++i) {
    test::Produce(kafka_.bootstrap(), topic, i % 4, "key-" + std::to_string(i % 4),
                  "v" + std::to_string(i), {{"message_id", "m-" + std::to_string(i)}});
  }
  bool second = first && all_of(2 * kMessages) &&
                test::WaitUntil([&] { return b.stats().handled > 0; }, std::chrono::seconds(60));
  done = true;
  a_loop.join();
  b_loop.join();
  ASSERT_TRUE(first && second) << log_.All();
  EXPECT_EQ(Count("SELECT count(*) FROM effects"), 2 * kMessages) << "a message was applied twice";
  EXPECT_EQ(Count("SELECT count(*) FROM inbox.messages"), 2 * kMessages);
  // Each record's handler committed once in all (redeliveries were skipped by the inbox).
  EXPECT_EQ(a.stats().handled + b.stats().handled, static_cast<std::uint64_t>(2 * kMessages));
}

// Stop and options -------------------------------------------------------------------------

TEST_F(ConsumerBatch, StopEndsTheBatchAfterTheRecordInHandAndLeavesTheRestUnacknowledged) {
  SendAll({"one", "two", "three"});
  auto options = BatchOptions(3);
  Consumer* self = nullptr;
  Consumer c{options, [&](const Message& m, pqxx::work& tx) {
               Effect(m, tx);
               if (*m.payload == "one") self->Stop();
             }};
  self = &c;
  c.Run();
  EXPECT_THAT(Column("SELECT payload FROM effects"), ElementsAre("one"));
  EXPECT_EQ(Batches().at(0).deferred, 2u);
  EXPECT_EQ(test::CommittedOffset(kafka_.bootstrap(), options.group, topic_, 0), 1);
}

TEST(ConsumerBatchOptions, BadBatchOptionsAreReportedWithTheOthers) {
  ConsumerOptions o;
  o.batch_max_records = 0;
  o.batch_max_bytes = 0;
  o.batch_max_wait = std::chrono::milliseconds(-1);
  try {
    Consumer c{o, BatchHandler{}};
    FAIL() << "constructed";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_THAT(what, ::testing::HasSubstr("batch_max_records must be 1 to 100000"));
    EXPECT_THAT(what, ::testing::HasSubstr("batch_max_bytes must be positive"));
    EXPECT_THAT(what, ::testing::HasSubstr("batch_max_wait must not be negative"));
    EXPECT_THAT(what, ::testing::HasSubstr("handler must not be empty"));
    EXPECT_THAT(what, ::testing::HasSubstr("brokers must not be empty"));
  }
}

}  // namespace
}  // namespace outbox
