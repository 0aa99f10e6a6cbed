#include "outbox/retention.h"

#include "database_errors.h"
#include "outbox/error.h"
#include "transaction_start.h"

namespace outbox {
namespace {

void CheckArguments(std::chrono::seconds older_than, int batch_size) {
  if (older_than.count() < 0) throw Error("outbox::TrimInbox: older_than must not be negative");
  if (batch_size < 1) throw Error("outbox::TrimInbox: batch_size must be at least 1");
}

}  // namespace

TrimResult TrimInboxBatch(pqxx::transaction_base& tx, std::chrono::seconds older_than, int batch_size) {
  CheckArguments(older_than, batch_size);
  internal::StartTransaction(tx);
  auto row = tx.exec_params1(
      "SELECT messages, attempts, barrier FROM inbox.trim_batch(make_interval(secs => $1), $2)",
      static_cast<double>(older_than.count()), batch_size);
  TrimResult r;
  r.messages = row[0].as<std::int64_t>();
  r.attempts = row[1].as<std::int64_t>();
  r.barrier = row[2].as<std::int64_t>();
  r.batches = 1;
  return r;
}

TrimResult TrimInbox(pqxx::connection_base& conn, std::chrono::seconds older_than, int batch_size) {
  CheckArguments(older_than, batch_size);
  return internal::TranslateDatabaseErrors("outbox::TrimInbox", [&] {
    TrimResult total;
    for (;;) {
      // One transaction per batch: each commit releases the deleted rows' locks and lets
      // vacuum reclaim them while the next batch runs.
      pqxx::work tx{conn};
      auto r = TrimInboxBatch(tx, older_than, batch_size);
      tx.commit();
      total.messages += r.messages;
      total.attempts += r.attempts;
      total.barrier += r.barrier;
      ++total.batches;
      if (r.messages < batch_size && r.attempts < batch_size && r.barrier < batch_size) return total;
    }
  });
}

}  // namespace outbox
