#include "pg/pg.h"

#include <arpa/inet.h>
#include <endian.h>
#include <poll.h>

#include <cstring>

#include "common/errors.h"
#include "common/redact.h"
#include "pg/db.h"
#include "pg/session_timeout.h"
#include "wal/wal_record.h"

namespace outbox::relay {

std::unique_ptr<PGconn, PgConnDeleter> ConnectLibpq(const std::string& conninfo, const std::string& application_name,
                                                    const SessionKeepalives& keepalives,
                                                    const std::vector<std::pair<std::string, std::string>>& extra) {
  CheckConninfo(conninfo);
  // Keywords/values so application_name and the client side of the session timeout are
  // set without editing the caller's string (which may be a URI). Later duplicates win in
  // libpq, so the user's own settings come after these defaults, and `extra` last.
  std::vector<std::pair<std::string, std::string>> params = {{"application_name", application_name}};
  for (auto& kv : ClientKeywords(keepalives)) params.push_back(std::move(kv));
  params.emplace_back("dbname", conninfo);
  for (const auto& kv : extra) params.push_back(kv);
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : params) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  std::unique_ptr<PGconn, PgConnDeleter> conn{PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1)};
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn.get());
    throw PgError(SafeDbError(msg, conninfo), "08001", true);
  }
  // libpq prints notices (and a FATAL the server sends before closing an idle session)
  // raw on stderr by default: not a log entry. What matters reaches the caller as an error.
  PQsetNoticeProcessor(conn.get(), [](void*, const char*) {}, nullptr);
  return conn;
}

PgConnection::PgConnection(const std::string& conninfo, const std::string& application_name,
                           std::chrono::milliseconds session_timeout) {
  const auto keepalives = KeepalivesFor(session_timeout);
  conn_ = ConnectLibpq(conninfo, application_name, keepalives, {});
  if (const char* pw = PQpass(conn_.get())) password_ = pw;
  // The server's side: it ends this session (and frees its advisory locks) once this
  // relay has been silent for session_timeout, with no server configuration.
  Exec(ServerSettingsStatement(keepalives));
}

PgConnection::~PgConnection() = default;

PgResult PgConnection::Check(PGresult* raw) {
  PgResult r{raw};
  auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
  bool lost = PQstatus(conn_.get()) != CONNECTION_OK;
  std::string sqlstate;
  if (r) {
    if (const char* s = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE)) sqlstate = s;
  }
  // Admin shutdown / crash / connection failure classes also mean the session is gone.
  if (sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    lost = true;
  }
  std::string msg = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_.get());
  if (msg.empty()) msg = PQerrorMessage(conn_.get());
  throw PgError(OneLine(RedactSecret(msg, password_)), sqlstate, lost);
}

namespace {

struct Params {
  std::vector<const char*> values;
  explicit Params(const std::vector<std::optional<std::string>>& p) {
    for (const auto& v : p) values.push_back(v ? v->c_str() : nullptr);
  }
};

}  // namespace

PgResult PgConnection::Exec(const std::string& sql, const std::vector<std::optional<std::string>>& params,
                            bool binary_results) {
  Params p{params};
  return Check(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(params.size()), nullptr, p.values.data(),
                            nullptr, nullptr, binary_results ? 1 : 0));
}

void PgConnection::Prepare(const std::string& name, const std::string& sql) {
  Check(PQprepare(conn_.get(), name.c_str(), sql.c_str(), 0, nullptr));
}

PgResult PgConnection::ExecPrepared(const std::string& name,
                                    const std::vector<std::optional<std::string>>& params,
                                    bool binary_results) {
  Params p{params};
  return Check(PQexecPrepared(conn_.get(), name.c_str(), static_cast<int>(params.size()), p.values.data(),
                              nullptr, nullptr, binary_results ? 1 : 0));
}

void PgConnection::SendPrepared(const std::string& name, const std::vector<std::optional<std::string>>& params) {
  Params p{params};
  if (!PQsendQueryPrepared(conn_.get(), name.c_str(), static_cast<int>(params.size()), p.values.data(), nullptr,
                           nullptr, 0)) {
    Check(nullptr);
  }
}

bool PgConnection::Ready() {
  if (!PQconsumeInput(conn_.get())) Check(nullptr);
  return !PQisBusy(conn_.get());
}

bool PgConnection::WaitReady(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!Ready()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fd{PQsocket(conn_.get()), POLLIN, 0};
    ::poll(&fd, 1, static_cast<int>(left.count()));
  }
  return true;
}

PgResult PgConnection::Finish() {
  PgResult first{PQgetResult(conn_.get())};
  // Up to the end of the statement (ReadyForQuery): an autocommit statement has then committed.
  while (PGresult* more = PQgetResult(conn_.get())) PQclear(more);
  return Check(first.release());
}

std::vector<std::string> PgConnection::ConsumeNotifications() {
  if (!PQconsumeInput(conn_.get())) {
    throw PgError(OneLine(RedactSecret(PQerrorMessage(conn_.get()), password_)), "08006", true);
  }
  std::vector<std::string> channels;
  while (PGnotify* n = PQnotifies(conn_.get())) {
    channels.emplace_back(n->relname);
    PQfreemem(n);
  }
  if (PQstatus(conn_.get()) != CONNECTION_OK) throw PgError("connection lost", "08006", true);
  return channels;
}

std::vector<std::string> PgConnection::BufferedNotifications() {
  std::vector<std::string> channels;
  while (PGnotify* n = PQnotifies(conn_.get())) {
    channels.emplace_back(n->relname);
    PQfreemem(n);
  }
  return channels;
}

std::int64_t ReadInt8(const PGresult* r, int row, int col) {
  std::uint64_t v;
  std::memcpy(&v, PQgetvalue(r, row, col), 8);
  return static_cast<std::int64_t>(be64toh(v));
}

std::int32_t ReadInt4(const PGresult* r, int row, int col) {
  std::uint32_t v;
  std::memcpy(&v, PQgetvalue(r, row, col), 4);
  return static_cast<std::int32_t>(ntohl(v));
}

std::string OneLine(const std::string& what) {
  std::string s;
  s.reserve(what.size());
  bool joining = false;  // after a line break: skip its indentation
  for (char c : what) {
    if (c == '\n' || c == '\r') {
      joining = true;
    } else if (joining && (c == ' ' || c == '\t')) {
      continue;
    } else {
      if (joining && !s.empty()) s += ' ';
      joining = false;
      s += c == '\t' ? ' ' : c;
    }
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

bool ReadBool(const PGresult* r, int row, int col) { return PQgetvalue(r, row, col)[0] != 0; }

std::string ReadUuid(const PGresult* r, int row, int col) {
  return UuidText(std::string_view(PQgetvalue(r, row, col), 16));
}

std::optional<std::string> ReadBytes(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
}

std::string TextValue(const PgResult& r, int row, int col) {
  return PQgetisnull(r.get(), row, col) ? std::string() : std::string(PQgetvalue(r.get(), row, col));
}

}  // namespace outbox::relay
