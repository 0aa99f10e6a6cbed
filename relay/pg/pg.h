#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/config.h"
#include "core/outbox_store.h"

namespace outbox::relay {

// A failed statement or a lost connection. connection_lost() tells the two apart: after
// a lost connection every session state (advisory locks, LISTEN) is gone. It is the
// relay core's StoreError (core/outbox_store.h): the adapter's failures are the ones the
// core already knows how to handle.
class PgError : public StoreError {
 public:
  using StoreError::StoreError;
};

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};

struct SessionKeepalives;

// Opens a libpq connection to `conninfo` (key=value or URI) with application_name, the
// client side of the session timeout and `extra` keywords (they win over the conninfo's,
// e.g. replication=database), notices silenced. Throws PgError (connection_lost) with the
// password redacted if it fails.
std::unique_ptr<PGconn, PgConnDeleter> ConnectLibpq(const std::string& conninfo, const std::string& application_name,
                                                    const SessionKeepalives& keepalives,
                                                    const std::vector<std::pair<std::string, std::string>>& extra);

// One libpq connection. Unlike libpqxx 6 it never reconnects behind the caller's back,
// which matters because lane ownership lives in this session's advisory locks.
// Not thread-safe.
class PgConnection {
 public:
  // Connects, then bounds the session on both ends (pg/session_timeout.h): over TCP,
  // a peer silent for `session_timeout` ends it on the server (its locks are freed) and
  // here (a statement fails with connection_lost instead of hanging). Throws PgError
  // (connection_lost) if the server cannot be reached.
  PgConnection(const std::string& conninfo, const std::string& application_name,
               std::chrono::milliseconds session_timeout = kDefaultSessionTimeout);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs a statement with text parameters (nullopt = NULL). binary_results asks for
  // binary column values. Throws PgError.
  PgResult Exec(const std::string& sql, const std::vector<std::optional<std::string>>& params = {},
                bool binary_results = false);
  void Prepare(const std::string& name, const std::string& sql);
  PgResult ExecPrepared(const std::string& name, const std::vector<std::optional<std::string>>& params,
                        bool binary_results = false);

  // One statement at a time without waiting: SendPrepared starts it; Ready reads what
  // arrived (non-blocking) and says whether its result is complete; Finish returns the
  // result (blocking until then) and throws PgError if it failed. WaitReady blocks up to
  // `limit` for it.
  void SendPrepared(const std::string& name, const std::vector<std::optional<std::string>>& params);
  bool Ready();
  bool WaitReady(std::chrono::milliseconds limit);
  PgResult Finish();

  // Reads what the server sent without blocking; returns the channels of the
  // notifications that arrived. Throws PgError if the connection is lost.
  std::vector<std::string> ConsumeNotifications();
  // The notifications libpq already read (during earlier statements), without reading
  // the socket: never fails.
  std::vector<std::string> BufferedNotifications();
  int socket() const { return PQsocket(conn_.get()); }
  bool ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }

 private:
  PgResult Check(PGresult* r);

  std::unique_ptr<PGconn, PgConnDeleter> conn_;
  std::string password_;  // to scrub from error texts
};

// A text-format value; NULL reads as "".
std::string TextValue(const PgResult& r, int row, int col);

// libpq's multi-line message on one line (a log entry is one line): each line break and
// the indentation after it become one space; trailing blanks go.
std::string OneLine(const std::string& what);

// Helpers for binary result values.
std::int64_t ReadInt8(const PGresult* r, int row, int col);
std::int32_t ReadInt4(const PGresult* r, int row, int col);
bool ReadBool(const PGresult* r, int row, int col);
std::string ReadUuid(const PGresult* r, int row, int col);  // 16 bytes -> canonical text
std::optional<std::string> ReadBytes(const PGresult* r, int row, int col);  // NULL -> nullopt

// Text array literal for int/bigint arrays: {1,2,3}.
template <typename It>
std::string ArrayLiteral(It begin, It end) {
  std::string s = "{";
  for (auto it = begin; it != end; ++it) {
    if (it != begin) s += ',';
    s += std::to_string(*it);
  }
  return s + "}";
}

}  // namespace outbox::relay
