#pragma once

#include <chrono>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>

#include "outbox/message.h"

namespace outbox {

// Every function here works inside the caller's transaction, of any kind libpqxx offers
// (pqxx::work, a serializable transaction, a pqxx::subtransaction, ...), and throws
// pqxx exceptions from that transaction as they are: it is the caller's to abort.

// Writes an outbox message inside the caller's transaction (SELECT outbox.publish(...)).
// It is published to Kafka by outbox-relay iff `tx` commits. `key` absent = no key (and
// no ordering promise); messages of one key are published in commit order. Header
// values are strings; the name message_id is reserved. Returns the message id (uuid
// text), which the Kafka record carries as header message_id.
// Throws pqxx::sql_error on a bad topic or headers (the transaction is then aborted).
std::string Publish(pqxx::transaction_base& tx, std::string_view topic, std::optional<std::string_view> key,
                    std::string_view payload, const Headers& headers = {});

// ---- Half messages (docs/half-messages.md) ---------------------------------------------
// For a producer whose business data is NOT in the outbox database (RocketMQ
// transactional messages, DTM two-phase messages):
//
//   1. outbox database:   pqxx::work o{outbox}; Prepare(o, gid, ..., check_url); o.commit();
//   2. business database: pqxx::work b{business}; /* changes */ WriteCommitBarrier(b, gid);
//                         b.commit();
//   3. outbox database:   CommitPrepared(o2, gid) (or RollbackPrepared if step 2 failed)
//
// If step 3 never arrives (crash, network), outbox-relay sends GET check_url?gid=<gid>
// (after --check-after, then every --check-interval); serve it with AnswerCheckBack (or
// QueryPrepared and CheckBackAnswer(status) inside a transaction of your own). The message is published iff step 2 committed.
// All calls are idempotent: repeating one is harmless. Each throws pqxx::sql_error with
// a clear message on bad input (invalid gid, topic, headers or check_url; payload over
// the database setting outbox.max_prepared_payload, default 1 MiB), on commit of an
// unknown or rolled-back gid and on rollback of a committed one.

// Registers the half message `gid` (1..128 characters without spaces) in the outbox
// database; nothing is published yet. check_url: http:// or https://, no fragment; it
// may carry a query (and a token: it is never logged). Commit `outbox_tx` at once.
void Prepare(pqxx::transaction_base& outbox_tx, std::string_view gid, std::string_view topic,
             std::optional<std::string_view> key, std::string_view payload, const Headers& headers,
             std::string_view check_url);

// Publishes the half message: it enters its lane when `outbox_tx` commits, like
// Publish. Returns its message id (the same one when repeated).
std::string CommitPrepared(pqxx::transaction_base& outbox_tx, std::string_view gid);

// Discards the half message. A gid never prepared is remembered as rolled back, so a
// late Prepare of it fails instead of publishing.
void RollbackPrepared(pqxx::transaction_base& outbox_tx, std::string_view gid);

// The barrier table in the BUSINESS database, in the caller's search_path:
//   CREATE TABLE IF NOT EXISTS outbox_barrier (
//     gid text PRIMARY KEY,
//     op text NOT NULL CHECK (op IN ('commit', 'rollback')),
//     created_at timestamptz NOT NULL DEFAULT now());
// Create it once at deployment (EnsureBarrierTable does). Rows may be deleted once
// their half message is finished and older than the longest a check-back can arrive
// (--check-after + --check-max x --check-interval, plus the time a message may stay
// parked); deleting them earlier lets a late check-back be answered "rolled_back".
extern const char* const kBarrierTableSql;
void EnsureBarrierTable(pqxx::transaction_base& tx);

// Call inside the business transaction (step 2): inserts the `commit` barrier row for
// gid, which commits iff the business changes commit. Repeating it in a later
// transaction is harmless. Throws outbox::Error if a check-back already answered
// "rolled_back" for gid (QueryPrepared won the race): roll the business transaction
// back, the message will never be published.
void WriteCommitBarrier(pqxx::transaction_base& business_tx, std::string_view gid);

enum class PreparedStatus {
  kCommitted,   // the business transaction committed: publish
  kRolledBack,  // it rolled back, or never ran (and now never will): discard
};

// The check-back answer for gid (DTM QueryPrepared), in the business database: inserts
// a `rollback` barrier row unless one for gid exists, then reads which row exists. A
// business transaction still in flight holds its `commit` row's unique key, so the
// insert waits for it to finish and is never mistaken for a rollback; once the
// `rollback` row is committed, a late business transaction fails in
// WriteCommitBarrier. Use READ COMMITTED (pqxx::work's default; under REPEATABLE READ or
// SERIALIZABLE the wait ends in a serialization failure instead); commit `business_tx`
// BEFORE answering the relay, since the answer is only true once the row is committed.
// Waits as long as the business transaction stays open: bound it with
// SET LOCAL lock_timeout and answer "pending" when that fires.
PreparedStatus QueryPrepared(pqxx::transaction_base& business_tx, std::string_view gid);

// "committed" or "rolled_back".
const char* PreparedStatusName(PreparedStatus status);
// The JSON body the relay expects: {"status":"committed"} or {"status":"rolled_back"}.
std::string CheckBackAnswer(PreparedStatus status);

// An HTTP answer to a check-back request, ready to send with any HTTP server library.
struct CheckBackReply {
  // 200: body is {"status":"committed"|"rolled_back"|"pending"};
  // 400: the gid is missing or invalid (1..128 characters without spaces or control
  //      characters), body {"error":"..."}, nothing was written;
  // 500: the database failed, body {"error":"database error"}; the relay asks again.
  int http_status = 200;
  std::string body;              // JSON; send with Content-Type: application/json
  std::string error;             // why it is not 200, for the caller's log; never sent
};

// The whole check-back endpoint behind GET check_url?gid=<gid>: validates gid (the
// decoded query parameter, empty when absent), runs QueryPrepared in a READ COMMITTED
// transaction of its own on `business` with SET LOCAL lock_timeout = lock_timeout,
// commits, and returns the answer. A business transaction that holds gid longer than
// lock_timeout is answered "pending" (the relay asks again after --check-interval):
// keep lock_timeout well below the relay's --check-timeout (10 s by default).
// Database failures are answers (500), not exceptions; after a broken connection
// (business.is_open() is false) open a new one. `business` must have no transaction
// open; one connection serves one request at a time. Throws outbox::Error only if
// lock_timeout is not positive.
//   server.Get("/check", [&](const httplib::Request& req, httplib::Response& res) {
//     auto reply = outbox::AnswerCheckBack(business_conninfo, req.get_param_value("gid"));
//     res.status = reply.http_status;
//     res.set_content(reply.body, "application/json");
//   });
CheckBackReply AnswerCheckBack(pqxx::connection& business, std::string_view gid,
                               std::chrono::milliseconds lock_timeout = std::chrono::seconds(3));
// The same on a connection opened for this one answer (and closed after it); a
// connection that cannot be opened is answered 500. Thread-safe.
CheckBackReply AnswerCheckBack(const std::string& business_conninfo, std::string_view gid,
                               std::chrono::milliseconds lock_timeout = std::chrono::seconds(3));

}  // namespace outbox
