#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace outbox {

struct TrimResult {
  std::int64_t messages = 0;  // inbox.messages rows deleted
  std::int64_t attempts = 0;  // inbox.attempts rows deleted
  std::int64_t barrier = 0;   // inbox.barrier rows deleted
  int batches = 0;            // transactions used
};

// Deletes inbox, attempt and barrier rows older than `older_than` in transactions of at
// most `batch_size` rows per table (SELECT inbox.trim_batch(...) until nothing is left),
// so locks, WAL bursts and vacuum work stay small. inbox.retries (pending work) is never
// touched. Choose `older_than` longer than any redelivery can arrive late, than the
// longest retry schedule, and than the longest global transaction (barrier).
// Equivalent SQL: CALL inbox.trim('30 days', 1000). Throws outbox::Error on bad
// arguments, pqxx exceptions on database failures.
TrimResult TrimInbox(const std::string& conninfo, std::chrono::seconds older_than,
                     int batch_size = 1000);

}  // namespace outbox
