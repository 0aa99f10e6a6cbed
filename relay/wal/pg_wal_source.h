#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>

#include "core/wal_source.h"
#include "pg/pg.h"

namespace outbox::relay {

// WalSource over libpq: a replication connection (replication=database) streaming the
// slot with pgoutput, and the capture thread's normal session (`session`, which holds the
// stream lock) for the table check, parking and the end of draining. Not thread-safe.
class PgWalSource final : public WalSource {
 public:
  PgWalSource(std::string conninfo, PgConnection& session, std::string slot,
              std::chrono::milliseconds session_timeout);
  ~PgWalSource() override;

  void Open() override;
  std::optional<WalEvent> Next() override;
  void Confirm(std::uint64_t lsn) override;
  void Close() override;
  bool TableHasRowsUpTo(std::int64_t max_id) override;
  void Park(const OutboxRow& row, std::int64_t created_at_us, const std::string& error) override;
  void Drained() override;
  int wait_fd() const override;

 private:
  [[noreturn]] void Fail(const std::string& what, PGresult* result);

  std::string conninfo_;
  PgConnection& session_;
  std::string slot_;
  std::chrono::milliseconds session_timeout_;
  std::unique_ptr<PGconn, PgConnDeleter> conn_;
  std::string password_;
};

}  // namespace outbox::relay
