#include "outbox/consumer.h"

#include <algorithm>
#include <deque>
#include <set>
#include <iostream>
#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "batch.h"
#include "inbox.h"
#include "message_id.h"
#include "kafka.h"
#include "testing/consumer_test_access.h"

namespace outbox {
namespace {

using Clock = std::chrono::steady_clock;
using internal::TopicPartition;
using std::chrono::milliseconds;

constexpr size_t kMaxErrorBytes = 4000;
// Stop() promises to be callable from a signal handler.
static_assert(std::atomic<bool>::is_always_lock_free);

enum class FailureKind {
  kRetryable,       // counts as an attempt; retried with backoff
  kPermanent,       // counts as an attempt; straight to the dead-letter topic
  kInfrastructure,  // our database connection failed: not the message's fault, not counted
};

struct Failure {
  FailureKind kind;
  std::string what;
};

// The one place that decides what a failure means. `db_lost`: our connection is gone
// (a broken_connection thrown by some other connection of the handler is its own failure).
Failure Classify(std::exception_ptr e, bool db_lost) {
  try {
    std::rethrow_exception(e);
  } catch (const PermanentError& x) {
    return {FailureKind::kPermanent, x.what()};
  } catch (const pqxx::broken_connection& x) {
    return {db_lost ? FailureKind::kInfrastructure : FailureKind::kRetryable, x.what()};
  } catch (const pqxx::in_doubt_error& x) {
    // The commit may or may not have happened; the next attempt's inbox insert tells.
    return {db_lost ? FailureKind::kInfrastructure : FailureKind::kRetryable, x.what()};
  } catch (const std::exception& x) {
    return {FailureKind::kRetryable, x.what()};
  } catch (...) {
    return {FailureKind::kRetryable, "handler threw a non-std::exception"};
  }
}

std::string What(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

std::string OneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string Describe(const Message& m) {
  return "topic=" + m.topic + " partition=" + std::to_string(m.partition) +
         " offset=" + std::to_string(m.offset) + " message_id=" + internal::EscapeForLog(m.message_id);
}

// An error the database raised because of the message's own bytes (a data exception,
// a program limit such as an index row too large), on a connection that is still fine:
// retrying cannot help, so the record takes the dead-letter path instead of the
// reconnect loop.
bool MessageFault(std::exception_ptr e, bool db_lost) {
  if (db_lost) return false;
  try {
    std::rethrow_exception(e);
  } catch (const pqxx::sql_error& x) {
    auto state = x.sqlstate();
    return state.rfind("22", 0) == 0 || state.rfind("54", 0) == 0;
  } catch (const nlohmann::json::exception&) {
    return true;  // the record's headers cannot be written as JSON (not UTF-8)
  } catch (...) {
    return false;
  }
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

using BatchFn = std::function<void(const std::vector<Message>&, pqxx::work&)>;

std::vector<std::string> ValidateOptions(const ConsumerOptions& o, bool have_handler) {
  static const std::regex kTopic{"^[A-Za-z0-9._-]{1,249}$"};
  std::vector<std::string> p;
  if (o.brokers.empty()) p.push_back("brokers must not be empty");
  if (o.group.empty()) p.push_back("group must not be empty");
  if (o.topics.empty()) p.push_back("topics must name at least one topic");
  for (const auto& t : o.topics) {
    if (!std::regex_match(t, kTopic) || t == "." || t == "..") {
      p.push_back("topics: '" + t + "' is not a valid Kafka topic name");
    }
  }
  if (o.conninfo.empty()) p.push_back("conninfo must not be empty");
  if (!have_handler) p.push_back("handler must not be empty");
  for (auto& r : Validate(o.retry)) p.push_back(r);
  if (o.poll_timeout.count() <= 0) p.push_back("poll_timeout must be positive");
  if (o.retry_scan_interval.count() <= 0) p.push_back("retry_scan_interval must be positive");
  if (o.dlq_timeout.count() <= 0) p.push_back("dlq_timeout must be positive");
  if (o.batch_max_records < 1 || o.batch_max_records > 100000)
    p.push_back("batch_max_records must be 1 to 100000 (1 = one record per transaction)");
  if (o.batch_max_bytes < 1) p.push_back("batch_max_bytes must be positive");
  if (o.batch_max_wait.count() < 0) p.push_back("batch_max_wait must not be negative");
  return p;
}

}  // namespace

class Consumer::Impl {
 public:
  // `batch` set: the consumer was given a BatchHandler; `handler` is then unused.
  Impl(ConsumerOptions options, Handler handler, BatchFn batch, const std::atomic<bool>* stop)
      : options_(std::move(options)), handler_(std::move(handler)), batch_fn_(std::move(batch)),
        stop_(stop) {
    auto problems = ValidateOptions(options_, batch_fn_ ? true : static_cast<bool>(handler_));
    if (batch_fn_) {
      // Retries and the isolation of a failing record call it with one record.
      handler_ = [fn = batch_fn_](const Message& m, pqxx::work& tx) { fn({m}, tx); };
    }
    auto log = [this](LogLevel level, const std::string& line) { Log(level, line); };
    // The producer first: the consumer is created (and subscribed) only if every option
    // is valid, so a throwing constructor never leaves group callbacks behind.
    dlq_ = std::make_unique<internal::DlqProducer>(options_, log, problems);
    kafka_ = std::make_unique<internal::KafkaConsumer>(
        options_, log, [this](const std::vector<TopicPartition>& tps) { Revoked(tps); }, problems);
    if (!problems.empty()) {
      std::string all;
      for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
      throw Error("invalid consumer options: " + all);
    }
    rng_.seed(std::random_device{}());
  }

  // testing/consumer_test_access.h
  void SetAfterCommitForTest(std::function<void(const Message&)> hook) { after_commit_for_test_ = std::move(hook); }

  ~Impl() {
    // Leave the group first: its revoke callback still uses this object.
    if (kafka_) kafka_->Close();
  }

  StepResult Step(milliseconds timeout);
  milliseconds poll_timeout() const { return options_.poll_timeout; }
  // Commits the acks still in flight (Run() returning).
  void FlushAcks() { kafka_->CommitStored(); }

  ConsumerStats Stats() const {
    ConsumerStats s;
    s.handled = handled_;
    s.duplicates = duplicates_;
    s.failed_attempts = failed_attempts_;
    s.parked = parked_;
    s.dead_lettered = dead_lettered_;
    s.batches = batches_;
    s.optimistic_batches = optimistic_batches_;
    s.careful_batches = careful_batches_;
    s.batch_records = batch_records_;
    s.handler_us = handler_us_;
    s.commit_us = commit_us_;
    s.lag_records = lag_records_;
    return s;
  }

 private:
  enum class Source {
    kLive,    // just fetched; its offset is committed when done
    kParked,  // a row of inbox.retries; the row is deleted when done
  };

  // A live message this consumer keeps in memory while its partition is paused: it
  // waits for a retry (ordered mode) or for the database / the DLQ to come back.
  struct Held {
    Message message;
    Clock::time_point due;
    // Set when the attempts are over and only the dead-letter send is left.
    bool dead_letter = false;
    int attempts = 0;
    std::string last_error;
    bool permanent = false;
    // Records after it were delivered despite the pause and dropped: seek before resume.
    bool refetch = false;
  };
  static Held Keep(Message m, Clock::time_point due = {}) {
    Held h;
    h.message = std::move(m);
    h.due = due;
    return h;
  }
  static Held KeepForDeadLetter(Message m, Clock::time_point due, int attempts, std::string error,
                                bool permanent) {
    Held h = Keep(std::move(m), due);
    h.dead_letter = true;
    h.attempts = attempts;
    h.last_error = std::move(error);
    h.permanent = permanent;
    return h;
  }

  StepResult Attempt(Message msg, Source source, std::unique_ptr<pqxx::work> tx);
  StepResult Failed(Message msg, Source source, const Failure& failure,
                    const std::string& started_at);
  StepResult DeadLetter(const Message& msg, Source source, int attempts, const std::string& error,
                        bool permanent);
  StepResult DatabaseTrouble(Held held, Source source, std::exception_ptr error);
  StepResult RunParked(Clock::time_point now);
  // Batches (batch.h; docs/consumer.md, "Batches").
  void Fetched(Message record);
  void FillPending(Clock::time_point deadline);
  StepResult RunBatch(std::vector<Message> batch);
  StepResult FinishBatch(std::vector<Message>& batch, std::vector<internal::RecordResult>& results,
                         const std::string& started_at, BatchStats& stats);
  StepResult BatchDatabaseTrouble(const std::vector<Message>& batch, std::exception_ptr error);
  StepResult OneByOne(std::vector<Message> batch);
  bool DbLost() const { return !db_ || !db_->is_open(); }
  void Hold(Held held);
  void Done(const Message& msg, Source source);
  void Revoked(const std::vector<TopicPartition>& tps);
  pqxx::connection& Db();
  void Log(LogLevel level, const std::string& line) const;

  ConsumerOptions options_;
  Handler handler_;
  BatchFn batch_fn_;                     // set when given a BatchHandler
  const std::atomic<bool>* stop_;        // Consumer::stop_: a batch stops after the record in hand
  std::deque<Message> pending_;          // fetched, not handled yet (fetch order)
  // While a batch's outcomes are settled: the offsets to ack in one request (Done()).
  std::map<TopicPartition, std::int64_t>* batch_acks_ = nullptr;
  // Declared before kafka_ so it outlives the revoke callback during kafka_'s close.
  std::map<TopicPartition, Held> held_;  // paused partitions and their message
  std::unique_ptr<internal::KafkaConsumer> kafka_;
  std::unique_ptr<internal::DlqProducer> dlq_;
  std::unique_ptr<pqxx::connection> db_;
  std::string group_refused_;            // why inbox.join_group refused the group, if it did
  std::function<void(const Message&)> after_commit_for_test_;  // testing/consumer_test_access.h
  Clock::time_point next_scan_{};        // when inbox.retries is due to be scanned
  bool kafka_turn_ = false;              // poll Kafka before the next parked message
  ReconnectBackoff db_backoff_;          // 100 ms doubling to 5 s while PostgreSQL is away
  std::mt19937_64 rng_;
  std::atomic<std::uint64_t> handled_{0}, duplicates_{0}, failed_attempts_{0}, parked_{0},
      dead_lettered_{0}, batches_{0}, optimistic_batches_{0}, careful_batches_{0}, batch_records_{0},
      handler_us_{0}, commit_us_{0};
  std::atomic<std::int64_t> lag_records_{-1};
};

void Consumer::Impl::Log(LogLevel level, const std::string& line) const {
  if (options_.log) {
    options_.log(level, line);
  } else if (level == LogLevel::kWarn || level == LogLevel::kError) {
    std::cerr << "outbox consumer " << LevelName(level) << ": " << line << '\n';
  }
}

pqxx::connection& Consumer::Impl::Db() {
  if (!db_ || !db_->is_open()) {
    auto conn = std::make_unique<pqxx::connection>(options_.conninfo);
    // The group's inbox rows belong to the logins registered for it (schema 0006): a
    // group of another login is refused for good, not retried as an outage.
    try {
      pqxx::nontransaction tx{*conn};
      tx.exec_params("SELECT inbox.join_group($1)", options_.group);
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() == "42501") group_refused_ = e.what();
      throw;
    }
    db_ = std::move(conn);
  }
  return *db_;
}

StepResult Consumer::Impl::Step(milliseconds timeout) {
  if (!group_refused_.empty()) throw Error("consumer group refused by the database: " + group_refused_);
  auto now = Clock::now();
  // 1. A held message whose time has come, earliest first.
  auto due = held_.end();
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->second.due <= now && (due == held_.end() || it->second.due < due->second.due)) due = it;
  }
  if (due != held_.end()) {
    Held h = due->second;
    if (h.dead_letter)
      return DeadLetter(h.message, Source::kLive, h.attempts, h.last_error, h.permanent);
    return Attempt(std::move(h.message), Source::kLive, nullptr);
  }
  // 2. A parked message that is due (alternating with Kafka so neither starves).
  if (!kafka_turn_ && now >= next_scan_) {
    if (auto r = RunParked(now); r != StepResult::kIdle) return r;
  }
  kafka_turn_ = false;
  // 3. The next record, waiting no longer than the next held or parked message.
  auto until = now + timeout;
  for (const auto& [tp, h] : held_) until = std::min(until, h.due);
  until = std::min(until, std::max(next_scan_, now));
  auto wait = std::chrono::duration_cast<milliseconds>(until - now);
  if (pending_.empty()) {
    auto record = kafka_->Poll(std::max(wait, milliseconds(0)));
    if (!record) return StepResult::kIdle;
    Fetched(std::move(*record));
    FillPending(Clock::now() + options_.batch_max_wait);
  }
  auto batch = internal::TakeBatch(
      pending_, static_cast<std::size_t>(options_.batch_max_records), options_.batch_max_bytes,
      [this](const Message& m) {
        auto it = held_.find(TopicPartition{m.topic, m.partition});
        if (it == held_.end()) return false;
        // Fetched before the pause took effect (or behind a record that failed in its
        // batch). Dropped (not acknowledged) and fetched again after the held message is
        // done, so the partition's order is kept.
        it->second.refetch = true;
        return true;
      });
  if (batch.empty()) return StepResult::kIdle;
  // A batch of one takes the single-record path: its INSERT ... ON CONFLICT claims the
  // inbox row, no savepoint, a synchronous ack — cheaper than a batch's bookkeeping
  // (batch_max_records = 1 is that path only, as before batches existed).
  if (batch.size() == 1) return Attempt(std::move(batch.front()), Source::kLive, nullptr);
  return RunBatch(std::move(batch));
}

void Consumer::Impl::Fetched(Message record) {
  auto id = record.headers.find("message_id");
  record.message_id = internal::InboxMessageId(id != record.headers.end() ? &id->second : nullptr,
                                               record.topic, record.partition, record.offset);
  pending_.push_back(std::move(record));
}

// Takes what was fetched (and what arrives before `deadline`) into pending_, up to one
// batch's worth. A rebalance inside Poll() removes revoked partitions' records (Revoked).
void Consumer::Impl::FillPending(Clock::time_point deadline) {
  const auto max_records = static_cast<std::size_t>(options_.batch_max_records);
  std::size_t bytes = 0;
  for (const auto& m : pending_) bytes += internal::RecordBytes(m);
  while (pending_.size() < max_records && bytes < options_.batch_max_bytes) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    auto record = kafka_->Poll(std::max(left, milliseconds(0)));
    if (!record) break;
    bytes += internal::RecordBytes(*record);
    Fetched(std::move(*record));
  }
}

StepResult Consumer::Impl::RunBatch(std::vector<Message> batch) {
  BatchStats stats;
  stats.records = batch.size();
  for (const auto& m : batch) stats.bytes += internal::RecordBytes(m);
  std::vector<const Message*> all;
  for (const auto& m : batch) all.push_back(&m);
  internal::HandlerRunOptions run_options;
  run_options.ordered = options_.mode == RetryMode::kOrdered;
  run_options.stop_requested = [this] { return stop_ != nullptr && stop_->load(std::memory_order_relaxed); };
  run_options.connection_lost = [this] { return DbLost(); };
  // First optimistically: no savepoints, a record costs its handler's statements only. If
  // a handler throws (or the inbox INSERT / COMMIT after them fails), the transaction is
  // rolled back and the batch runs again carefully, a savepoint per record, which isolates
  // the failing record (its retry / dead-letter path) and commits the others. The careful
  // run starts a new transaction, so its inbox query sees what committed meanwhile.
  // Runs again also if another transaction inserted an inbox row of this batch meanwhile
  // (the same message_id on another partition, or a member that lost its partition):
  // then that record is a duplicate and the others' handlers run again.
  bool careful = false;
  bool whole_failed = false;  // the BatchHandler threw with all records (optimistic run)
  while (true) {
    run_options.optimistic = !careful;
    run_options.skip_whole = whole_failed;
    std::unique_ptr<pqxx::work> tx;
    std::vector<internal::RecordResult> results(batch.size());
    std::string started_at;
    // 1. BEGIN; which records does the inbox have? (Failures here are the database's.)
    try {
      tx = std::make_unique<pqxx::work>(Db());
      auto known = internal::KnownMessages(*tx, options_.group, all, /*skip_if_parked=*/true,
                                           started_at);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (known[i]) results[i].outcome = internal::Outcome::kDuplicate;
      }
    } catch (...) {
      tx.reset();
      if (DbLost()) return BatchDatabaseTrouble(batch, std::current_exception());
      return OneByOne(std::move(batch));
    }
    // 2. The handlers: optimistic (no savepoints), or careful (a savepoint each).
    auto handlers_start = Clock::now();
    auto run = internal::RunHandlers(*tx, batch, results, handler_,
                                     batch_fn_ ? &batch_fn_ : nullptr, run_options);
    if (run.fatal) {
      tx.reset();
      return BatchDatabaseTrouble(batch, run.fatal);
    }
    if (run.redo_carefully) {
      try {
        tx->abort();
      } catch (...) {
        tx.reset();
        return BatchDatabaseTrouble(batch, std::current_exception());
      }
      tx.reset();
      if (batch_fn_) whole_failed = true;
      careful = true;
      Log(LogLevel::kDebug, "a handler of the batch failed; running the batch again with a "
                            "savepoint per record records=" + std::to_string(batch.size()));
      continue;
    }
    auto commit_start = Clock::now();
    // 3. The inbox rows in one INSERT; COMMIT.
    std::vector<const Message*> handled;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (results[i].outcome == internal::Outcome::kHandled) handled.push_back(&batch[i]);
    }
    bool raced = false;
    try {
      raced = internal::InsertHandled(*tx, options_.group, handled) != handled.size();
      if (raced) {
        tx->abort();
      } else {
        tx->commit();
      }
    } catch (...) {
      tx.reset();
      if (DbLost()) return BatchDatabaseTrouble(batch, std::current_exception());
      // Optimistic: e.g. a handler swallowed an error of its own statement (the transaction
      // is aborted): the careful run finds the record.
      if (!careful) {
        careful = true;
        continue;
      }
      // Not the connection: e.g. a deferred constraint of some handler's writes failed at
      // COMMIT. Which record is guilty is unknown: one at a time finds it.
      return OneByOne(std::move(batch));
    }
    tx.reset();
    if (raced) {
      Log(LogLevel::kInfo, "a message of the batch was committed by another transaction meanwhile; "
                           "handling the batch again records=" + std::to_string(batch.size()));
      continue;
    }
    stats.careful = careful;
    stats.handler_time = std::chrono::duration_cast<std::chrono::microseconds>(commit_start - handlers_start);
    stats.commit_time = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - commit_start);
    return FinishBatch(batch, results, started_at, stats);
  }
}

// After the batch's COMMIT: counts, the failed records' retry paths, the ack.
StepResult Consumer::Impl::FinishBatch(std::vector<Message>& batch,
                                       std::vector<internal::RecordResult>& results,
                                       const std::string& started_at, BatchStats& stats) {
  db_backoff_.Succeeded();
  std::map<TopicPartition, std::int64_t> acks;
  batch_acks_ = &acks;
  bool any_handled = false;
  StepResult last = StepResult::kIdle;
  std::vector<Message> deferred;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Message& m = batch[i];
    switch (results[i].outcome) {
      case internal::Outcome::kHandled:
        ++handled_;
        ++stats.handled;
        if (options_.log) Log(LogLevel::kDebug, "handled " + Describe(m));  // no string otherwise
        if (after_commit_for_test_) after_commit_for_test_(m);
        Done(m, Source::kLive);
        any_handled = true;
        break;
      case internal::Outcome::kDuplicate:
        ++duplicates_;
        ++stats.duplicates;
        if (options_.log) Log(LogLevel::kDebug, "skipped duplicate " + Describe(m));
        Done(m, Source::kLive);
        last = StepResult::kDuplicate;
        break;
      case internal::Outcome::kFailed: {
        ++stats.failed;
        // The attempt is recorded in its own transaction; in kOrdered mode the record is
        // held (partition paused) and its partition's later records were deferred.
        last = Failed(m, Source::kLive, Classify(results[i].error, /*db_lost=*/false), started_at);
        break;
      }
      case internal::Outcome::kDeferred:
        ++stats.deferred;
        deferred.push_back(std::move(m));
        break;
    }
  }
  batch_acks_ = nullptr;
  // Deferred records go first in the next batch, in their order (or are dropped there if
  // their partition is now held, and fetched again after it).
  pending_.insert(pending_.begin(), std::make_move_iterator(deferred.begin()),
                  std::make_move_iterator(deferred.end()));
  // A record held after this batch (its dead-letter send or its attempt's record failed)
  // caps its partition's ack; records after it that committed are fetched again and
  // skipped by the inbox, so the ack never passes a record that is not done.
  for (auto& [tp, next] : acks) {
    if (auto it = held_.find(tp); it != held_.end() && it->second.message.offset < next) {
      next = it->second.message.offset;
      it->second.refetch = true;
    }
  }
  if (auto err = kafka_->CommitAsync(acks)) {
    Log(LogLevel::kWarn, "offset commit failed partitions=" + std::to_string(acks.size()) + " error=" + *err);
  }
  std::int64_t lag = 0;
  for (const auto& [tp, next] : acks) {
    auto high = kafka_->HighWatermark(tp);
    if (!high) {
      lag = -1;
      break;
    }
    lag += std::max<std::int64_t>(0, *high - next);
  }
  stats.lag_records = acks.empty() ? -1 : lag;
  ++batches_;
  ++(stats.careful ? careful_batches_ : optimistic_batches_);
  batch_records_ += stats.records;
  handler_us_ += static_cast<std::uint64_t>(stats.handler_time.count());
  commit_us_ += static_cast<std::uint64_t>(stats.commit_time.count());
  if (stats.lag_records >= 0) lag_records_ = stats.lag_records;
  if (options_.on_batch) options_.on_batch(stats);
  return any_handled ? StepResult::kHandled : last;
}

// The database is away (or our transaction broke): nothing of the batch committed. The
// first record of each partition waits in memory (partition paused) as a single record
// would; the records after it are fetched again once it is done.
StepResult Consumer::Impl::BatchDatabaseTrouble(const std::vector<Message>& batch,
                                                std::exception_ptr error) {
  const milliseconds wait = db_backoff_.Failed();
  Log(LogLevel::kError, "database unavailable, will retry in " + std::to_string(wait.count()) +
                            " ms: " + OneLine(internal::CleanText(What(error), kMaxErrorBytes)) +
                            " batch_records=" + std::to_string(batch.size()));
  db_.reset();  // reconnect on next use
  auto due = Clock::now() + wait;
  std::set<TopicPartition> seen;
  for (const auto& m : batch) {
    TopicPartition tp{m.topic, m.partition};
    if (seen.insert(tp).second) {
      Hold(Keep(m, due));
    } else {
      held_[tp].refetch = true;
    }
  }
  return StepResult::kDeferred;
}

// A statement of the batch's own bookkeeping failed without the connection breaking (a
// record the database refuses): each record through the single-record path, which knows
// what to do with a record the database refuses.
StepResult Consumer::Impl::OneByOne(std::vector<Message> batch) {
  StepResult last = StepResult::kIdle;
  for (auto& m : batch) {
    if (auto it = held_.find(TopicPartition{m.topic, m.partition}); it != held_.end()) {
      it->second.refetch = true;  // behind a record of its partition that now waits
      continue;
    }
    auto r = Attempt(std::move(m), Source::kLive, nullptr);
    if (last != StepResult::kHandled) last = r;
  }
  return last;
}

StepResult Consumer::Impl::RunParked(Clock::time_point now) {
  std::unique_ptr<pqxx::work> tx;
  std::optional<internal::Parked> parked;
  try {
    tx = std::make_unique<pqxx::work>(Db());
    parked = internal::LockDueParked(*tx, options_.group);
    if (!parked) tx->commit();
  } catch (...) {
    tx.reset();
    return DatabaseTrouble(Held{}, Source::kParked, std::current_exception());
  }
  if (!parked) {
    next_scan_ = now + options_.retry_scan_interval;
    return StepResult::kIdle;
  }
  next_scan_ = now;  // more may be due
  kafka_turn_ = true;
  if (parked->dead_letter) {
    tx->commit();
    return DeadLetter(parked->message, Source::kParked, parked->attempts, parked->last_error,
                      parked->permanent);
  }
  return Attempt(std::move(parked->message), Source::kParked, std::move(tx));
}

StepResult Consumer::Impl::Attempt(Message msg, Source source, std::unique_ptr<pqxx::work> tx) {
  // Phase 1: claim the inbox row. A failure here is the database's, never the message's.
  std::string started_at;
  try {
    if (!tx) tx = std::make_unique<pqxx::work>(Db());
    auto claimed = internal::ClaimInbox(*tx, options_.group, msg, source == Source::kLive);
    if (!claimed) {
      // Already handled or dead-lettered (a redelivery), or parked and owned by the
      // retry path: acknowledge without running the handler.
      if (source == Source::kParked) internal::DeleteParked(*tx, options_.group, msg.message_id);
      tx->commit();
      tx.reset();
      ++duplicates_;
      Log(LogLevel::kDebug, "skipped duplicate " + Describe(msg));
      Done(msg, source);
      return StepResult::kDuplicate;
    }
    started_at = *claimed;
  } catch (...) {
    tx.reset();
    auto error = std::current_exception();
    if (MessageFault(error, !db_ || !db_->is_open())) {
      return DeadLetter(msg, source, /*attempts=*/1,
                        "the database refused the message: " + What(error), /*permanent=*/true);
    }
    return DatabaseTrouble(Keep(msg), source, error);
  }
  // Phase 2: the handler and the commit of its writes (with the inbox row).
  std::exception_ptr error;
  try {
    handler_(msg, *tx);
    if (source == Source::kParked) internal::DeleteParked(*tx, options_.group, msg.message_id);
    tx->commit();
  } catch (...) {
    error = std::current_exception();
  }
  tx.reset();
  if (!error) {
    db_backoff_.Succeeded();
    ++handled_;
    Log(LogLevel::kDebug, "handled " + Describe(msg));
    if (after_commit_for_test_) after_commit_for_test_(msg);
    Done(msg, source);
    return StepResult::kHandled;
  }
  Failure failure = Classify(error, !db_ || !db_->is_open());
  switch (failure.kind) {
    case FailureKind::kInfrastructure:
      return DatabaseTrouble(Keep(msg), source, error);
    case FailureKind::kRetryable:
    case FailureKind::kPermanent:
      return Failed(std::move(msg), source, failure, started_at);
  }
  return StepResult::kDeferred;
}

StepResult Consumer::Impl::Failed(Message msg, Source source, const Failure& failure,
                                  const std::string& started_at) {
  bool permanent = failure.kind == FailureKind::kPermanent;
  int attempt = 0;
  bool last = false;
  std::optional<milliseconds> delay;
  // Parked: in ordered mode too (rows left by an earlier unordered run stay parked).
  bool park = options_.mode == RetryMode::kUnordered || source == Source::kParked;
  try {
    pqxx::work tx{Db()};
    attempt = internal::FailedAttempts(tx, options_.group, msg.message_id) + 1;
    last = permanent || attempt >= options_.retry.max_attempts;
    if (!last)
      delay =
          BackoffDelay(options_.retry, attempt, std::uniform_real_distribution<double>{0, 1}(rng_));
    internal::RecordFailedAttempt(tx, options_.group, msg, attempt, started_at, failure.what,
                                  permanent, delay);
    if (!last && park)
      internal::Park(tx, options_.group, {msg, attempt, failure.what, permanent, false}, *delay);
    tx.commit();
  } catch (...) {
    auto error = std::current_exception();
    if (MessageFault(error, !db_ || !db_->is_open())) {
      // The retry table cannot hold this record (e.g. a header value that is not valid
      // UTF-8): it cannot wait for a retry, so it is dead-lettered now.
      return DeadLetter(msg, source, std::max(attempt, 1),
                        failure.what + "; cannot park it for a retry: " + What(error), permanent);
    }
    return DatabaseTrouble(Keep(msg), source, error);
  }
  ++failed_attempts_;
  Log(LogLevel::kWarn, "handler failed " + Describe(msg) + " attempt=" + std::to_string(attempt) +
                           "/" + std::to_string(options_.retry.max_attempts) +
                           " kind=" + (permanent ? "permanent" : "retryable") +
                           (last ? std::string(" next=dead-letter")
                                 : " retry_in_ms=" + std::to_string(delay->count())) +
                           " error=" + OneLine(internal::CleanText(failure.what, kMaxErrorBytes)));
  if (last) return DeadLetter(msg, source, attempt, failure.what, permanent);
  if (park) {
    next_scan_ = std::min(next_scan_, Clock::now() + *delay);
    if (source == Source::kParked) return StepResult::kFailedAttempt;
    ++parked_;
    Done(msg, source);  // the partition moves on; the row carries the message now
    return StepResult::kParked;
  }
  Hold(Keep(std::move(msg), Clock::now() + *delay));
  return StepResult::kFailedAttempt;
}

StepResult Consumer::Impl::DeadLetter(const Message& msg, Source source, int attempts,
                                      const std::string& error, bool permanent) {
  std::vector<std::pair<std::string, std::string>> headers(msg.headers.begin(), msg.headers.end());
  headers.emplace_back("dlq_error", internal::CleanText(error, kMaxErrorBytes));
  headers.emplace_back("dlq_error_kind", permanent ? "permanent" : "retryable");
  headers.emplace_back("dlq_attempts", std::to_string(attempts));
  headers.emplace_back("dlq_original_topic", msg.topic);
  headers.emplace_back("dlq_original_partition", std::to_string(msg.partition));
  headers.emplace_back("dlq_original_offset", std::to_string(msg.offset));
  headers.emplace_back("dlq_group", options_.group);
  headers.emplace_back("dlq_message_id", msg.message_id);
  std::string dlq_topic = msg.topic + ".dlq";
  if (auto err = dlq_->Send(dlq_topic, msg.key, msg.payload, headers)) {
    // Not acknowledged: try again later rather than lose the message.
    auto delay = std::max(options_.retry.max_delay, milliseconds(1000));
    Log(LogLevel::kError, "dead-letter send failed " + Describe(msg) + " dlq_topic=" + dlq_topic +
                              " error=" + *err + " retry_in_ms=" + std::to_string(delay.count()));
    if (source == Source::kLive) {
      Hold(KeepForDeadLetter(msg, Clock::now() + delay, attempts, error, permanent));
      return StepResult::kDeferred;
    }
    try {
      pqxx::work tx{Db()};
      internal::Park(tx, options_.group, {msg, attempts, error, permanent, true}, delay);
      tx.commit();
    } catch (...) {
      return DatabaseTrouble(Held{}, source, std::current_exception());
    }
    return StepResult::kDeferred;
  }
  try {
    pqxx::work tx{Db()};
    internal::MarkDeadLettered(tx, options_.group, msg);
    if (source == Source::kParked) internal::DeleteParked(tx, options_.group, msg.message_id);
    tx.commit();
  } catch (...) {
    // Sent but not recorded: it is sent again later (the DLQ may get a duplicate, which
    // carries the same dlq_message_id).
    return DatabaseTrouble(KeepForDeadLetter(msg, {}, attempts, error, permanent), source,
                           std::current_exception());
  }
  ++dead_lettered_;
  Log(LogLevel::kError, "dead-lettered " + Describe(msg) + " dlq_topic=" + dlq_topic +
                            " attempts=" + std::to_string(attempts));
  Done(msg, source);
  return StepResult::kDeadLettered;
}

StepResult Consumer::Impl::DatabaseTrouble(Held held, Source source, std::exception_ptr error) {
  const milliseconds wait = db_backoff_.Failed();
  Log(LogLevel::kError, "database unavailable, will retry in " + std::to_string(wait.count()) +
                            " ms: " + OneLine(internal::CleanText(What(error), kMaxErrorBytes)));
  db_.reset();  // reconnect on next use
  auto due = Clock::now() + wait;
  if (source == Source::kLive) {
    held.due = due;
    Hold(std::move(held));
  } else {
    next_scan_ = due;  // the parked row stays where it is
  }
  return StepResult::kDeferred;
}

void Consumer::Impl::Hold(Held held) {
  TopicPartition tp{held.message.topic, held.message.partition};
  auto it = held_.find(tp);
  if (it == held_.end()) {
    kafka_->Pause(tp);
    held_.emplace(tp, std::move(held));
  } else {
    held.refetch = held.refetch || it->second.refetch;
    it->second = std::move(held);
  }
}

void Consumer::Impl::Done(const Message& msg, Source source) {
  if (source == Source::kParked) return;
  TopicPartition tp{msg.topic, msg.partition};
  if (batch_acks_ != nullptr) {
    // Settling a batch: acknowledged with the batch, in one request (FinishBatch).
    auto [it, inserted] = batch_acks_->emplace(tp, msg.offset + 1);
    if (!inserted) it->second = std::max(it->second, msg.offset + 1);
  } else if (auto err = kafka_->Commit(tp, msg.offset + 1)) {
    // The ack. If it fails (e.g. the partition moved to another member meanwhile), the
    // record is delivered again and the inbox skips it.
    Log(LogLevel::kWarn, "offset commit failed " + Describe(msg) + " error=" + *err);
  }
  if (auto it = held_.find(tp); it != held_.end() && it->second.message.offset == msg.offset) {
    bool refetch = it->second.refetch;
    held_.erase(it);
    if (refetch) kafka_->Seek(tp, msg.offset + 1);
    kafka_->Resume(tp);
  }
}

void Consumer::Impl::Revoked(const std::vector<TopicPartition>& tps) {
  // Fetched, not handled: the partitions' next owners fetch them from the committed offset.
  std::set<TopicPartition> revoked(tps.begin(), tps.end());
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [&](const Message& m) {
                                  return revoked.count(TopicPartition{m.topic, m.partition}) > 0;
                                }),
                 pending_.end());
  for (const auto& tp : tps) {
    if (auto it = held_.find(tp); it != held_.end()) {
      Log(LogLevel::kInfo, "partition revoked while holding " + Describe(it->second.message) +
                               "; its next owner redelivers it");
      held_.erase(it);
    }
  }
}

void internal::ConsumerTestAccess::SetAfterCommit(Consumer& consumer, std::function<void(const Message&)> hook) {
  consumer.impl_->SetAfterCommitForTest(std::move(hook));
}

Consumer::Consumer(ConsumerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler), nullptr, &stop_)) {}

Consumer::Consumer(ConsumerOptions options, BatchHandler handler)
    : impl_(std::make_unique<Impl>(std::move(options), nullptr, std::move(handler.fn), &stop_)) {}

Consumer::~Consumer() = default;

void Consumer::Run() {
  while (!stop_.load(std::memory_order_relaxed)) impl_->Step(impl_->poll_timeout());
  impl_->FlushAcks();  // the last batches' acks are in Kafka when Run returns
}

StepResult Consumer::Step(std::chrono::milliseconds timeout) { return impl_->Step(timeout); }

void Consumer::Stop() noexcept { stop_.store(true, std::memory_order_relaxed); }

ConsumerStats Consumer::stats() const { return impl_->Stats(); }

}  // namespace outbox
