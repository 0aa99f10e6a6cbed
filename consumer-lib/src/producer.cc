#include "outbox/producer.h"

#include "headers_json.h"
#include "transaction_start.h"

#include <nlohmann/json.hpp>

#include "outbox/error.h"

namespace outbox {

std::string Publish(pqxx::transaction_base& tx, std::string_view topic, std::optional<std::string_view> key,
                    std::string_view payload, const Headers& headers) {
  internal::StartTransaction(tx);
  // libpqxx 6 sends parameters as text: pass the payload as bytea via binarystring.
  pqxx::binarystring bytes{payload.data(), payload.size()};
  std::optional<std::string> k;
  if (key) k = std::string(*key);
  auto row = tx.exec_params1("SELECT outbox.publish($1, $2, $3::bytea, $4::jsonb)::text",
                             std::string(topic), k, bytes, internal::HeadersJson(headers));
  return row[0].as<std::string>();
}

const char* const kBarrierTableSql =
    "CREATE TABLE IF NOT EXISTS outbox_barrier ("
    " gid text PRIMARY KEY,"
    " op text NOT NULL CHECK (op IN ('commit', 'rollback')),"
    " created_at timestamptz NOT NULL DEFAULT now())";

void Prepare(pqxx::transaction_base& outbox_tx, std::string_view gid, std::string_view topic,
             std::optional<std::string_view> key, std::string_view payload, const Headers& headers,
             std::string_view check_url) {
  internal::StartTransaction(outbox_tx);
  pqxx::binarystring bytes{payload.data(), payload.size()};
  std::optional<std::string> k;
  if (key) k = std::string(*key);
  outbox_tx.exec_params("SELECT outbox.prepare($1, $2, $3, $4::bytea, $5::jsonb, $6)", std::string(gid),
                        std::string(topic), k, bytes, internal::HeadersJson(headers), std::string(check_url));
}

std::string CommitPrepared(pqxx::transaction_base& outbox_tx, std::string_view gid) {
  internal::StartTransaction(outbox_tx);
  return outbox_tx.exec_params1("SELECT outbox.commit_prepared($1)::text", std::string(gid))[0].as<std::string>();
}

void RollbackPrepared(pqxx::transaction_base& outbox_tx, std::string_view gid) {
  internal::StartTransaction(outbox_tx);
  outbox_tx.exec_params("SELECT outbox.rollback_prepared($1)", std::string(gid));
}

void EnsureBarrierTable(pqxx::transaction_base& tx) { tx.exec(kBarrierTableSql); }

void WriteCommitBarrier(pqxx::transaction_base& business_tx, std::string_view gid) {
  if (gid.empty()) throw Error("outbox::WriteCommitBarrier: gid must not be empty");
  internal::StartTransaction(business_tx);
  // ON CONFLICT waits for a QueryPrepared still in flight and then sees its row.
  auto inserted = business_tx.exec_params(
      "INSERT INTO outbox_barrier (gid, op) VALUES ($1, 'commit') ON CONFLICT (gid) DO NOTHING RETURNING 1",
      std::string(gid));
  if (!inserted.empty()) return;
  auto op = business_tx.exec_params1("SELECT op FROM outbox_barrier WHERE gid = $1", std::string(gid))[0]
                .as<std::string>();
  if (op != "commit") {
    throw Error("outbox::WriteCommitBarrier: half message '" + std::string(gid) +
                "' was already rolled back by a check-back; roll back this transaction");
  }
}

PreparedStatus QueryPrepared(pqxx::transaction_base& business_tx, std::string_view gid) {
  if (gid.empty()) throw Error("outbox::QueryPrepared: gid must not be empty");
  internal::StartTransaction(business_tx);
  // Two statements on purpose: under READ COMMITTED the SELECT takes a new snapshot,
  // so it sees the `commit` row of a business transaction the INSERT waited for.
  business_tx.exec_params("INSERT INTO outbox_barrier (gid, op) VALUES ($1, 'rollback') ON CONFLICT (gid) DO NOTHING",
                          std::string(gid));
  auto op = business_tx.exec_params1("SELECT op FROM outbox_barrier WHERE gid = $1", std::string(gid))[0]
                .as<std::string>();
  return op == "commit" ? PreparedStatus::kCommitted : PreparedStatus::kRolledBack;
}

const char* PreparedStatusName(PreparedStatus status) {
  switch (status) {
    case PreparedStatus::kCommitted:
      return "committed";
    case PreparedStatus::kRolledBack:
      return "rolled_back";
  }
  return "rolled_back";
}

std::string CheckBackAnswer(PreparedStatus status) {
  return std::string("{\"status\":\"") + PreparedStatusName(status) + "\"}";
}

namespace {

// outbox.check_gid's rule: 1 to 128 characters, no spaces or control characters.
// Characters are counted as PostgreSQL does in UTF-8 (continuation bytes are not).
bool ValidGid(std::string_view gid) {
  size_t chars = 0;
  for (unsigned char c : gid) {
    if (c <= 0x20 || c == 0x7f) return false;  // ASCII control characters and space
    if ((c & 0xc0) != 0x80) ++chars;
  }
  return chars >= 1 && chars <= 128;
}

CheckBackReply DatabaseFailed(const std::string& why) {
  return {500, R"({"error":"database error"})", why};
}

}  // namespace

CheckBackReply AnswerCheckBack(pqxx::connection& business, std::string_view gid,
                               std::chrono::milliseconds lock_timeout) {
  if (lock_timeout.count() <= 0) throw Error("outbox::AnswerCheckBack: lock_timeout must be positive");
  if (gid.empty()) return {400, R"({"error":"expected GET <check_url>?gid=<gid>"})", "no gid in the request"};
  if (!ValidGid(gid)) {
    return {400, R"({"error":"invalid gid: use 1 to 128 characters without spaces or control characters"})",
            "invalid gid"};
  }
  try {
    pqxx::work tx{business};
    tx.exec("SET LOCAL lock_timeout = " + tx.quote(std::to_string(lock_timeout.count()) + "ms"));
    auto status = QueryPrepared(tx, gid);
    // Only a committed `rollback` row makes "rolled_back" true: commit before answering.
    tx.commit();
    return {200, CheckBackAnswer(status), {}};
  } catch (const pqxx::sql_error& e) {
    // 55P03 lock_not_available: a business transaction still holds gid.
    if (e.sqlstate() == "55P03") return {200, R"({"status":"pending"})", {}};
    return DatabaseFailed(e.what());
  } catch (const pqxx::failure& e) {  // broken connection, commit in doubt
    return DatabaseFailed(e.what());
  }
}

CheckBackReply AnswerCheckBack(const std::string& business_conninfo, std::string_view gid,
                               std::chrono::milliseconds lock_timeout) {
  if (lock_timeout.count() <= 0) throw Error("outbox::AnswerCheckBack: lock_timeout must be positive");
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(business_conninfo);
  } catch (const pqxx::failure& e) {
    return DatabaseFailed(e.what());
  }
  return AnswerCheckBack(*conn, gid, lock_timeout);
}

}  // namespace outbox
