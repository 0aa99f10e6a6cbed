#include "wal/pg_wal_source.h"

#include <fmt/format.h>

#include <thread>

#include "common/redact.h"
#include "pg/db.h"
#include "pg/session_timeout.h"
#include "wal/pgoutput.h"
#include "wal/wal_record.h"

namespace outbox::relay {
namespace {

std::string Hex(const std::string& bytes) {
  static const char* hex = "0123456789abcdef";
  std::string s = "\\x";
  s.reserve(2 + bytes.size() * 2);
  for (unsigned char c : bytes) {
    s.push_back(hex[c >> 4]);
    s.push_back(hex[c & 15]);
  }
  return s;
}

std::string QuoteIdent(const std::string& name) {
  std::string s = "\"";
  for (char c : name) {
    if (c == '"') s.push_back('"');
    s.push_back(c);
  }
  return s + "\"";
}

}  // namespace

PgWalSource::PgWalSource(std::string conninfo, PgConnection& session, std::string slot,
                         std::chrono::milliseconds session_timeout)
    : conninfo_(std::move(conninfo)), session_(session), slot_(std::move(slot)), session_timeout_(session_timeout) {}

PgWalSource::~PgWalSource() = default;

void PgWalSource::Fail(const std::string& what, PGresult* result) {
  std::string sqlstate;
  std::string msg;
  if (result) {
    if (const char* s = PQresultErrorField(result, PG_DIAG_SQLSTATE)) sqlstate = s;
    msg = PQresultErrorMessage(result);
    PQclear(result);
  }
  if (msg.empty() && conn_) msg = PQerrorMessage(conn_.get());
  msg = OneLine(RedactSecret(msg, password_));
  bool lost = !conn_ || PQstatus(conn_.get()) != CONNECTION_OK || sqlstate.rfind("08", 0) == 0 ||
              sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
  // The slot is gone (42704) or can no longer serve changes (55000: invalidated, its WAL
  // removed): waiting cannot heal either.
  if (sqlstate == "42704" || (sqlstate == "55000" && msg.find("slot") != std::string::npos) ||
      msg.find("can no longer get changes") != std::string::npos ||
      msg.find("has already been removed") != std::string::npos) {
    conn_.reset();
    throw WalSlotLost(fmt::format("replication slot \"{}\": {}", slot_, msg));
  }
  conn_.reset();
  throw PgError(fmt::format("{}: {}", what, msg), sqlstate, lost);
}

void PgWalSource::Open() {
  Close();
  const auto keepalives = KeepalivesFor(session_timeout_);
  try {
    conn_ = ConnectLibpq(conninfo_, "outbox-relay wal", keepalives, {{"replication", "database"}});
  } catch (const PgError& e) {
    std::string msg = e.what();
    bool privilege = msg.find("replication") != std::string::npos && msg.find("permission") != std::string::npos;
    throw PgError("replication connection: " + msg, privilege ? "42501" : "08001", !privilege);
  }
  if (const char* pw = PQpass(conn_.get())) password_ = pw;
  PGresult* r = PQexec(conn_.get(), ServerSettingsStatement(keepalives).c_str());
  if (PQresultStatus(r) != PGRES_TUPLES_OK) Fail("replication connection", r);
  PQclear(r);
  std::string start = fmt::format(
      "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names 'outbox_wal', messages 'true')",
      QuoteIdent(slot_));
  r = PQexec(conn_.get(), start.c_str());
  if (PQresultStatus(r) != PGRES_COPY_BOTH) Fail("START_REPLICATION", r);
  PQclear(r);
}

std::optional<WalEvent> PgWalSource::Next() {
  if (!conn_) throw PgError("replication stream is closed", "08003", true);
  bool consumed = false;
  while (true) {
    char* buf = nullptr;
    int n = PQgetCopyData(conn_.get(), &buf, /*async=*/1);
    if (n > 0) {
      std::optional<WalEvent> e;
      try {
        e = DecodeCopyData(std::string_view(buf, static_cast<std::size_t>(n)));
      } catch (...) {
        PQfreemem(buf);
        throw;
      }
      PQfreemem(buf);
      if (e) return e;
      continue;
    }
    if (n == 0) {
      if (consumed) return std::nullopt;
      if (!PQconsumeInput(conn_.get())) Fail("replication stream", nullptr);
      consumed = true;
      continue;
    }
    if (n == -1) Fail("replication stream ended", PQgetResult(conn_.get()));
    Fail("replication stream", nullptr);
  }
}

void PgWalSource::Confirm(std::uint64_t lsn) {
  if (!conn_) return;
  auto msg = StandbyStatusUpdate(lsn, false);
  if (PQputCopyData(conn_.get(), msg.data(), static_cast<int>(msg.size())) != 1 || PQflush(conn_.get()) != 0) {
    Fail("replication status update", nullptr);
  }
}

void PgWalSource::Close() {
  if (!conn_) return;
  // End the copy politely so the server frees the slot at once; then close.
  if (PQputCopyEnd(conn_.get(), nullptr) == 1) PQflush(conn_.get());
  conn_.reset();
}

bool PgWalSource::TableHasRowsUpTo(std::int64_t max_id) {
  auto r = session_.Exec("SELECT EXISTS (SELECT 1 FROM outbox.messages WHERE id <= $1::bigint)",
                         {std::to_string(max_id)});
  return TextValue(r, 0, 0) == "t";
}

void PgWalSource::Park(const OutboxRow& row, std::int64_t created_at_us, const std::string& error) {
  std::optional<std::string> payload;
  if (row.payload) payload = Hex(*row.payload);
  session_.Exec(
      "SELECT outbox.dead_letter_wal($1::bigint, $2::uuid, $3, $4, $5::bytea, $6::jsonb, "
      "timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $7::bigint / 1000000.0), $8)",
      {std::to_string(row.id), row.message_id, row.topic, row.key, payload, HeadersJson(row),
       std::to_string(created_at_us), error});
}

void PgWalSource::Drained() {
  // The slot can be dropped only once our walsender has gone (it exits when the stream
  // closes): wait up to 10 s; a failure is retried by the capture thread.
  for (int i = 0; i < 200; ++i) {
    auto r = session_.Exec("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", {slot_});
    if (TextValue(r, 0, 0) == "0") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  session_.Exec("SELECT outbox.wal_drained($1)", {slot_});
}

int PgWalSource::wait_fd() const { return conn_ ? PQsocket(conn_.get()) : -1; }

}  // namespace outbox::relay
