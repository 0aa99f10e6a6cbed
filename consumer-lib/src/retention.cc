#include "outbox/retention.h"

#include <pqxx/pqxx>

#include "outbox/error.h"

namespace outbox {

TrimResult TrimInbox(const std::string& conninfo, std::chrono::seconds older_than, int batch_size) {
  if (older_than.count() < 0) throw Error("outbox::TrimInbox: older_than must not be negative");
  if (batch_size < 1) throw Error("outbox::TrimInbox: batch_size must be at least 1");
  pqxx::connection conn{conninfo};
  TrimResult total;
  for (;;) {
    // One transaction per batch: each commit releases the deleted rows' locks and lets
    // vacuum reclaim them while the next batch runs.
    pqxx::work tx{conn};
    auto row = tx.exec_params1(
        "SELECT messages, attempts, barrier FROM inbox.trim_batch(make_interval(secs => $1), $2)",
        static_cast<double>(older_than.count()), batch_size);
    tx.commit();
    ++total.batches;
    auto m = row[0].as<std::int64_t>(), a = row[1].as<std::int64_t>(),
         b = row[2].as<std::int64_t>();
    total.messages += m;
    total.attempts += a;
    total.barrier += b;
    if (m < batch_size && a < batch_size && b < batch_size) break;
  }
  return total;
}

}  // namespace outbox
