#pragma once

// outbox::Consumer — a Kafka group consumer whose handler runs inside a PostgreSQL
// transaction together with an inbox row, so each message's effects commit once.
//
//   outbox::ConsumerOptions opt;
//   opt.brokers = "kafka:9092"; opt.group = "billing"; opt.topics = {"orders"};
//   opt.conninfo = "host=db dbname=billing user=billing";
//   outbox::Consumer consumer{opt, [](const outbox::Message& m, pqxx::work& tx) {
//     tx.exec_params("INSERT INTO invoices ...", ...);   // no commit here
//   }};
//   consumer.Run();                                      // until Stop()
//
// Records are handled in batches (ConsumerOptions::batch_*; one record per batch by
// default). Per batch:
//   1. BEGIN; one query finds the records whose (group, message_id) the inbox already has:
//      those were handled (or dead-lettered) before — duplicates, their handler is skipped.
//   2. handler(message, tx) for each other record, optimistically: no savepoint, so a
//      record costs its handler's own statements only; then the inbox rows of the handled
//      records in one INSERT; COMMIT. If a handler throws (or that INSERT or the COMMIT
//      fails), the whole transaction is rolled back and the batch runs again from step 1
//      carefully: each record under its own SAVEPOINT (a record that throws is rolled back
//      to it and takes the retry path below; the others stay and commit).
//      So in a batch where one record fails, the handlers of the batch's other records run
//      twice (the first run's database effects rolled back) — handlers must tolerate being
//      run again for a record, as they already must for a re-delivery; only effects through
//      `tx` are undone (not, say, an HTTP call or an in-memory counter). A throw in the
//      optimistic run is not counted as an attempt: the careful run's is.
//   3. Only then the Kafka offsets are stored and committed (asynchronously, one request
//      per batch): the ack. A crash between 2 and 3 redelivers the batch; step 1 skips
//      it. Effects happen once per (group, message_id).
// (What follows says "per record" where a batch of one is meant; docs/consumer.md.)
//
// Per record, as a batch of one:
//   1. BEGIN; INSERT INTO inbox.messages (group, message_id) — if the row exists the
//      message was already handled: skip the handler (a duplicate).
//   2. handler(message, tx); COMMIT.
//   3. Only then commit the Kafka offset (the ack). A crash between 2 and 3 redelivers
//      the record; step 1 skips it. Effects happen once per (group, message_id).
// message_id is the record's `message_id` header (written by outbox-relay). A record
// without it (produced by someone else) gets the id "<topic>/<partition>/<offset>": that
// dedups redeliveries of the same record, not a producer that wrote the same event
// twice (give such producers a message_id header).
//
// A handler that throws rolls its transaction back; the message is retried with the
// RetryPolicy's backoff; after the last attempt it goes to the dead-letter topic
// "<topic>.dlq" with these headers added to its own (key and value unchanged):
//   dlq_error               what() of the last failure (at most 4000 bytes)
//   dlq_error_kind          "retryable" or "permanent"
//   dlq_attempts            number of attempts made
//   dlq_original_topic      dlq_original_partition      dlq_original_offset
//   dlq_group               the consumer group
//   dlq_message_id          the inbox id used (see above)
// and the offset moves on (the inbox records the message as dead_lettered). Throw
// outbox::PermanentError for a failure no retry can fix: it goes to the DLQ at once.
// Every failed attempt is a row of inbox.attempts (times, error, next attempt).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "outbox/error.h"
#include "outbox/message.h"
#include "outbox/retry.h"

namespace outbox {

namespace internal {
struct ConsumerTestAccess;  // the library's own tests (not installed)
}  // namespace internal

// Thrown by a handler for a failure that retrying cannot fix (bad payload, unknown
// schema version): the message goes straight to the dead-letter topic.
class PermanentError : public Error {
 public:
  using Error::Error;
};

// The handler: runs inside `tx`, which also holds the message's inbox row. It must not
// commit or abort `tx`; it throws to fail the attempt. Exceptions of any type count.
// (The consumer opens this transaction itself, always a pqxx::work, so the handler gets
// that type; everything a handler passes it to takes pqxx::transaction_base&.)
using Handler = std::function<void(const Message& message, pqxx::work& tx)>;

// A handler that takes the records of a batch at once (e.g. one multi-row INSERT or a COPY
// through pqxx::tablewriter), inside the batch's transaction. Pass it wrapped:
//   outbox::Consumer c{opt, outbox::BatchHandler{[](const std::vector<outbox::Message>& ms,
//                                                   pqxx::work& tx) { ... }}};
// Contract:
//  * `messages` are the batch's records that need handling, in the order they were
//    fetched (so each partition's, and key's, in offset order); duplicates are not in it.
//    It is never empty.
//  * It runs without a savepoint. If it throws, the batch's transaction is rolled back and
//    run again (the inbox query anew), and the function is called once per record (a batch
//    of one), each under its own SAVEPOINT: the records that succeed alone commit with the batch; each that fails
//    takes the retry / dead-letter path of a failing record (in kOrdered mode, the later
//    records of its partition wait behind it and are not handled in this batch). So a
//    record's function runs at most twice per batch, and only the guilty are retried.
//  * Retries of a record (backoff, parked messages) call it with that record alone.
//  * Same rules as Handler otherwise: no commit or abort of `tx`; effects through `tx`.
struct BatchHandler {
  std::function<void(const std::vector<Message>& messages, pqxx::work& tx)> fn;
};

enum class RetryMode {
  // A failing message blocks its partition until it succeeds or is dead-lettered: later
  // records of the partition (so of its keys) wait, other partitions keep flowing.
  // The retry waits in memory with the partition paused; attempt counts are in
  // inbox.attempts, so a restart or rebalance continues the count.
  kOrdered,
  // A failing message is parked in inbox.retries and its partition moves on: no per-key
  // order. Any consumer of the group runs a parked message once it is due.
  kUnordered,
};

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Receives the library's log lines ("fixed text key=value ..."). Called on the thread
// that runs the consumer.
using LogSink = std::function<void(LogLevel level, const std::string& line)>;

// What one batch did (ConsumerOptions::on_batch).
struct BatchStats {
  std::size_t records = 0;     // records taken into the batch
  std::size_t bytes = 0;       // their keys + values + headers
  std::size_t handled = 0;     // handlers committed
  std::size_t duplicates = 0;  // skipped by the inbox
  std::size_t failed = 0;      // failed attempts (retry / park / dead letter follow)
  std::size_t deferred = 0;    // not handled in this batch: behind a failing record of its
                               // partition (kOrdered), after Stop(), or a repeated message_id
  std::chrono::microseconds handler_time{0};  // all handlers (and savepoints) of the batch
  std::chrono::microseconds commit_time{0};   // inbox INSERT + COMMIT
  // Records behind the broker's high watermark on the batch's partitions after its ack
  // (as of the last fetch), i.e. the consumer lag there; -1 when not known.
  std::int64_t lag_records = -1;
  // The batch committed from its careful run: its optimistic run (no savepoints) failed —
  // a handler threw, or the inbox INSERT / COMMIT after the handlers did — so it was rolled
  // back and run again with a savepoint per record (handler_time is that of the careful run).
  bool careful = false;
};

struct ConsumerOptions {
  // Kafka bootstrap servers, "host:port,...". Required.
  std::string brokers;
  // Consumer group id; also the inbox's dedup scope. Required.
  std::string group;
  // Topics to subscribe to. Required, at least one.
  std::vector<std::string> topics;
  // libpq connection string of the database the handler writes to (which holds the
  // inbox schema). Required.
  std::string conninfo;
  // librdkafka properties for both the consumer and the dead-letter producer (TLS,
  // SASL, client.id, ...). Applied after the library's defaults.
  std::map<std::string, std::string> kafka;
  // librdkafka properties for the consumer only (session.timeout.ms, fetch.wait.max.ms,
  // auto.offset.reset, ...). Defaults: auto.offset.reset=earliest. The library owns
  // enable.auto.commit (false), enable.auto.offset.store (false) and group.id.
  std::map<std::string, std::string> kafka_consumer;
  RetryPolicy retry;
  RetryMode mode = RetryMode::kOrdered;
  // Longest wait of one Run() step for a record; bounds how late Stop() is noticed.
  std::chrono::milliseconds poll_timeout{200};
  // How often inbox.retries is scanned for due messages parked by any consumer of the
  // group (messages this consumer parked are picked up when due regardless).
  std::chrono::milliseconds retry_scan_interval{1000};
  // How long to wait for the broker to acknowledge a dead-letter record; on timeout the
  // dead-lettering is retried later (the message stays unacknowledged meanwhile).
  std::chrono::milliseconds dlq_timeout{30000};
  // Log sink; when empty, warnings and errors go to stderr.
  LogSink log;

  // Batches (docs/consumer.md, "Batches"). A batch is what the consumer has fetched, up to
  // batch_max_records records and batch_max_bytes of keys + values + headers (at least
  // one record), waiting at most batch_max_wait after its first record for more. One
  // transaction and one offset commit per batch instead of per record.
  // Default 1: a transaction and a synchronous ack per record, as before batches
  // existed. Raise it for throughput (docs/performance.md, "Consumer": 500 gave about
  // 10x the records/s with fsync on).
  int batch_max_records = 1;
  std::size_t batch_max_bytes = 4 * 1024 * 1024;
  // 0 = take only what is already fetched (no extra wait). Bounds the latency a batch adds.
  std::chrono::milliseconds batch_max_wait{5};
  // Called after each batch (on the consumer's thread) with its figures; for metrics.
  std::function<void(const BatchStats&)> on_batch;
};

// Counters since construction; readable from any thread.
struct ConsumerStats {
  std::uint64_t handled = 0;     // handler committed
  std::uint64_t duplicates = 0;  // skipped: inbox row already there (or parked)
  std::uint64_t failed_attempts = 0;
  std::uint64_t parked = 0;         // unordered mode: moved to inbox.retries
  std::uint64_t dead_lettered = 0;  // sent to <topic>.dlq
  std::uint64_t batches = 0;        // batches committed (see BatchStats)
  std::uint64_t optimistic_batches = 0;  // of those: committed from the optimistic run
  std::uint64_t careful_batches = 0;     // of those: rolled back and run again carefully
  std::uint64_t batch_records = 0;  // records taken into those batches
  std::uint64_t handler_us = 0;     // total handler time in batches, microseconds
  std::uint64_t commit_us = 0;      // total inbox INSERT + COMMIT time of batches
  std::int64_t lag_records = -1;    // BatchStats::lag_records of the last batch
};

// What one Step() did.
enum class StepResult {
  kIdle,           // nothing to do within the timeout
  kHandled,        // a message's handler committed
  kDuplicate,      // a message was skipped by the inbox
  kFailedAttempt,  // an attempt failed; the message will be retried
  kParked,         // unordered: an attempt failed; the message moved to inbox.retries
  kDeadLettered,   // a message went to <topic>.dlq
  kDeferred,       // the database or DLQ was unavailable; the message will be tried again
};

// Not thread-safe, except Stop() and stats(). One Consumer = one group member, one
// database connection, one thread.
class Consumer {
 public:
  // Validates `options` (throws outbox::Error listing every problem at once), creates the
  // Kafka consumer and subscribes. Connects to PostgreSQL lazily (and again after a
  // lost connection).
  Consumer(ConsumerOptions options, Handler handler);
  // The same with a handler for whole batches (see BatchHandler for its contract).
  Consumer(ConsumerOptions options, BatchHandler handler);
  // Leaves the group (so partitions move to other members at once) and closes.
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Handles messages until Stop(). The message in hand is finished (committed and
  // acknowledged) before Run returns (in a batch: the records handled so far; the rest
  // of the batch is left unacknowledged); a message waiting for a retry is left
  // unacknowledged (redelivered later, its attempt count kept). Throws outbox::Error on a
  // fatal Kafka error, or when the database refuses the group (it belongs to other
  // logins: inbox.join_group); a lost database connection is retried, not thrown.
  void Run();
  // One step of Run(): runs a due retry, or waits up to `timeout` for a record and handles
  // it with the batch it starts. For tests and for callers with their own loop. For a
  // batch the result is kHandled if any handler committed, else that of its last record.
  StepResult Step(std::chrono::milliseconds timeout);
  // Makes Run() return after the current step (a batch stops after the record in hand).
  // Only stores to a lock-free atomic, so it
  // may be called from another thread or a signal handler.
  void Stop() noexcept;

  ConsumerStats stats() const;

 private:
  friend struct internal::ConsumerTestAccess;
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace outbox
