#pragma once

// Batches of records (docs/consumer.md, "Batches"): taking a batch from what was fetched,
// and running its handlers in one transaction: optimistically without savepoints, or (after
// a failure) carefully with a SAVEPOINT per record. The consumer
// (consumer.cc) owns the rest: the inbox, the commit, the ack and the retry paths.

#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <pqxx/pqxx>
#include <vector>

#include "outbox/consumer.h"
#include "outbox/message.h"

namespace outbox::internal {

// Bytes a record counts for against ConsumerOptions::batch_max_bytes.
std::size_t RecordBytes(const Message& m);

// Moves the next batch off the front of `pending` (records fetched and not yet handled,
// in fetch order): up to max_records records and max_bytes (at least one record). A
// record for which `drop` returns true is removed and not taken (its partition is held:
// it is fetched again later). The batch ends before a message_id that is already in it
// (a repeated delivery is judged only once the first one's fate is known); that record
// stays at the front of `pending`.
std::vector<Message> TakeBatch(std::deque<Message>& pending, std::size_t max_records,
                               std::size_t max_bytes, const std::function<bool(const Message&)>& drop);

enum class Outcome {
  kDuplicate,  // the inbox had it: handler skipped
  kHandled,    // its handler succeeded; the inbox row is to be inserted
  kFailed,     // its handler threw (error set): rolled back to its savepoint
  kDeferred,   // not run in this batch (behind a failure of its partition, or Stop())
};

struct RecordResult {
  Outcome outcome = Outcome::kHandled;
  std::exception_ptr error;  // kFailed only
};

struct HandlerRunOptions {
  bool ordered = true;                        // a failure holds back its partition's later records
  std::function<bool()> stop_requested;       // checked after each record
  std::function<bool()> connection_lost;      // our connection broke: not the records' fault
  // No savepoints: the first failure ends the run with redo_carefully (see RunHandlers).
  bool optimistic = false;
  // Careful mode only: do not call the batch handler with all records first (it already
  // failed with them in this batch's optimistic run); go straight to one at a time.
  bool skip_whole = false;
};

struct HandlerRun {
  // The error that left the transaction unusable — our connection broke, or a savepoint
  // statement failed — (then nothing of the batch may commit and `results` mean nothing).
  std::exception_ptr fatal;
  // Optimistic mode: a handler threw. Nothing of the transaction may commit: roll it back
  // and run the batch again with optimistic = false.
  bool redo_carefully = false;
};

// Runs the handlers of the records whose result is not kDuplicate, in order, inside `tx`,
// and fills in their results.
//  * optimistic: without any savepoint (one round trip per record: the handler's own). With
//    `whole` set (and more than one record), one call with all of them. The first throw
//    returns redo_carefully (or fatal, if our connection broke); results then mean nothing.
//  * careful: with `whole` set (unless skip_whole), first all of them in one call under one
//    savepoint; if that throws, each alone (through `single`) under its own savepoint: a
//    failing record is rolled back to it (kFailed) and the others stay.
HandlerRun RunHandlers(pqxx::work& tx, const std::vector<Message>& batch,
                       std::vector<RecordResult>& results, const Handler& single,
                       const std::function<void(const std::vector<Message>&, pqxx::work&)>* whole,
                       const HandlerRunOptions& options);

}  // namespace outbox::internal
