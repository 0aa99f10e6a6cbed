#pragma once

#include <chrono>
#include <cstdint>
#include <pqxx/pqxx>

namespace outbox {

struct TrimResult {
  std::int64_t messages = 0;  // inbox.messages rows deleted
  std::int64_t attempts = 0;  // inbox.attempts rows deleted
  std::int64_t barrier = 0;   // inbox.barrier rows deleted
  int batches = 0;            // batches run
};

// Retention of the inbox: deletes inbox, attempt and barrier rows older than
// `older_than`, at most `batch_size` rows per table per batch, so locks, WAL bursts and
// vacuum work stay small. inbox.retries (pending work) is never touched. Choose
// `older_than` longer than any redelivery can arrive late, than the longest retry
// schedule, and than the longest global transaction (barrier).
// Equivalent SQL: CALL inbox.trim('30 days', 1000).

// Every batch in its own transaction on `conn` (which must have none open), until a
// batch finds less than batch_size rows in every table. Throws outbox::Error on bad
// arguments, outbox::DatabaseError if the database fails (batches already committed stay
// deleted; calling again continues).
TrimResult TrimInbox(pqxx::connection_base& conn, std::chrono::seconds older_than, int batch_size = 1000);

// One batch in the caller's transaction (SELECT inbox.trim_batch(...)): the rows go iff
// tx commits. Throws outbox::Error on bad arguments; pqxx exceptions from tx propagate.
TrimResult TrimInboxBatch(pqxx::transaction_base& tx, std::chrono::seconds older_than, int batch_size = 1000);

}  // namespace outbox
