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
// Per record:
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
};

// Counters since construction; readable from any thread.
struct ConsumerStats {
  std::uint64_t handled = 0;     // handler committed
  std::uint64_t duplicates = 0;  // skipped: inbox row already there (or parked)
  std::uint64_t failed_attempts = 0;
  std::uint64_t parked = 0;         // unordered mode: moved to inbox.retries
  std::uint64_t dead_lettered = 0;  // sent to <topic>.dlq
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
  // Leaves the group (so partitions move to other members at once) and closes.
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Handles messages until Stop(). The message in hand is finished (committed and
  // acknowledged) before Run returns; a message waiting for a retry is left
  // unacknowledged (redelivered later, its attempt count kept). Throws outbox::Error on a
  // fatal Kafka error, or when the database refuses the group (it belongs to other
  // logins: inbox.join_group); a lost database connection is retried, not thrown.
  void Run();
  // One step of Run(): runs a due retry, or waits up to `timeout` for one record and
  // handles it. For tests and for callers with their own loop.
  StepResult Step(std::chrono::milliseconds timeout);
  // Makes Run() return after the current step. Only stores to a lock-free atomic, so it
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
