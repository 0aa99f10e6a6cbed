#include "batch.h"

#include <map>
#include <set>
#include <string>

#include "kafka.h"

namespace outbox::internal {
namespace {

// Careful mode (a batch whose optimistic run failed): one savepoint name, re-established after each record: "RELEASE; SAVEPOINT" travel in
// one round trip, so a record costs its handler's statements plus one. Each record's
// savepoint is a subtransaction; PostgreSQL caches 64 subtransaction ids per backend, so
// a batch of more than 64 records that write overflows that cache while it is open
// (docs/consumer.md, "Batches").
constexpr const char* kRecordSavepoint = "SAVEPOINT outbox_record";
constexpr const char* kNextRecordSavepoint = "RELEASE SAVEPOINT outbox_record; SAVEPOINT outbox_record";
constexpr const char* kRollbackRecord = "ROLLBACK TO SAVEPOINT outbox_record";

}  // namespace

std::size_t RecordBytes(const Message& m) {
  std::size_t n = (m.key ? m.key->size() : 0) + (m.payload ? m.payload->size() : 0);
  for (const auto& [k, v] : m.headers) n += k.size() + v.size();
  return n;
}

std::vector<Message> TakeBatch(std::deque<Message>& pending, std::size_t max_records,
                               std::size_t max_bytes,
                               const std::function<bool(const Message&)>& drop) {
  std::vector<Message> batch;
  std::set<std::string> ids;
  std::size_t bytes = 0;
  while (!pending.empty() && batch.size() < max_records) {
    Message& next = pending.front();
    if (drop(next)) {
      pending.pop_front();
      continue;
    }
    std::size_t size = RecordBytes(next);
    if (!batch.empty() && bytes + size > max_bytes) break;
    if (ids.count(next.message_id) > 0) break;
    ids.insert(next.message_id);
    bytes += size;
    batch.push_back(std::move(next));
    pending.pop_front();
  }
  return batch;
}

HandlerRun RunHandlers(pqxx::work& tx, const std::vector<Message>& batch,
                       std::vector<RecordResult>& results, const Handler& single,
                       const std::function<void(const std::vector<Message>&, pqxx::work&)>* whole,
                       const HandlerRunOptions& options) {
  std::vector<std::size_t> todo;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (results[i].outcome != Outcome::kDuplicate) todo.push_back(i);
  }
  if (todo.empty()) return {};

  // 0. Optimistic: no savepoint at all; a record costs its handler's own statements. The
  // first failure gives up on the whole transaction: the caller rolls it back and runs the
  // batch again carefully (below), which isolates the failing record.
  if (options.optimistic) {
    auto give_up = [&]() -> HandlerRun {
      auto error = std::current_exception();
      if (options.connection_lost()) return {error, false};
      return {nullptr, true};
    };
    if (whole != nullptr && todo.size() > 1) {
      std::vector<Message> records;
      records.reserve(todo.size());
      for (auto i : todo) records.push_back(batch[i]);
      try {
        (*whole)(records, tx);
      } catch (...) {
        return give_up();
      }
      for (auto i : todo) results[i] = {Outcome::kHandled, nullptr};
      return {};
    }
    bool stopping = false;
    for (auto i : todo) {
      if (stopping) {
        results[i] = {Outcome::kDeferred, nullptr};
        continue;
      }
      try {
        single(batch[i], tx);
      } catch (...) {
        return give_up();
      }
      results[i] = {Outcome::kHandled, nullptr};
      if (options.stop_requested && options.stop_requested()) stopping = true;
    }
    // A handler that swallowed an error of its own statement left the transaction aborted:
    // the inbox INSERT (or the COMMIT) after this fails, and the caller redoes carefully.
    return {};
  }

  // 1. Careful. The batch handler over all of them, under one savepoint (a batch handler
  // that already failed optimistically is not called with the whole batch again).
  if (whole != nullptr && todo.size() > 1 && !options.skip_whole) {
    std::vector<Message> records;
    records.reserve(todo.size());
    for (auto i : todo) records.push_back(batch[i]);
    try {
      tx.exec("SAVEPOINT outbox_batch");
    } catch (...) {
      return {std::current_exception(), false};  // nothing of ours ran yet: the database's fault
    }
    try {
      (*whole)(records, tx);
      tx.exec("RELEASE SAVEPOINT outbox_batch");
      for (auto i : todo) results[i] = {Outcome::kHandled, nullptr};
      return {};
    } catch (...) {
      auto error = std::current_exception();
      if (options.connection_lost()) return {error, false};
      try {
        tx.exec("ROLLBACK TO SAVEPOINT outbox_batch");
      } catch (...) {
        return {std::current_exception(), false};
      }
      // 2. Isolate the culprit(s): each record alone, below.
    }
  }

  // 2. One record at a time, each under the savepoint outbox_record.
  std::set<TopicPartition> blocked;  // kOrdered: partitions with a failure in this batch
  bool stopping = false;
  bool have_savepoint = false;  // outbox_record is established at the current state
  for (auto i : todo) {
    const Message& m = batch[i];
    TopicPartition tp{m.topic, m.partition};
    if (stopping || blocked.count(tp) > 0) {
      results[i] = {Outcome::kDeferred, nullptr};
      continue;
    }
    if (!have_savepoint) {
      try {
        tx.exec(kRecordSavepoint);
      } catch (...) {
        return {std::current_exception(), false};
      }
      have_savepoint = true;
    }
    try {
      single(m, tx);
      // Also what fails if the handler swallowed an error of its own statement (the
      // transaction is aborted): then this record fails, as its COMMIT would have.
      tx.exec(kNextRecordSavepoint);
      results[i] = {Outcome::kHandled, nullptr};
    } catch (...) {
      auto error = std::current_exception();
      if (options.connection_lost()) return {error, false};
      try {
        tx.exec(kRollbackRecord);  // keeps the savepoint, at the state before this record
      } catch (...) {
        return {std::current_exception(), false};
      }
      results[i] = {Outcome::kFailed, error};
      if (options.ordered) blocked.insert(tp);
    }
    if (options.stop_requested && options.stop_requested()) stopping = true;
  }
  return {};
}

}  // namespace outbox::internal
