#pragma once

// The sub-transaction barrier (DTM) for TCC and saga branches: call each branch
// operation through CallBarrier, inside the transaction that makes the branch's local
// changes, and the three network anomalies are handled:
//   - repeated call (retry, duplicate request): the body runs at most once per
//     (gid, branch_id, op);
//   - null compensation (cancel/compensate arriving for a try/action that never ran):
//     the body does not run, the call succeeds;
//   - hanging (a try/action arriving after its cancel/compensate): the body does not run.
// It works by inserting a row into inbox.barrier (unique (gid, branch_id, op)) in `tx`:
// the row commits iff the branch's changes commit. Two concurrent calls of one branch
// serialize on that unique key: the second waits for the first transaction and then
// skips (first committed) or runs (first rolled back).
//
//   pqxx::work tx{conn};   // or any pqxx transaction (serializable, subtransaction, ...)
//   auto r = outbox::CallBarrier(tx, {"tcc", gid, branch_id, outbox::BranchOp::kTry},
//                                [&](pqxx::work& t) { /* reserve funds */ });
//   tx.commit();   // also when r != kRan: the barrier rows must commit
//
// Rows are removed by retention (outbox/retention.h) once older than the longest
// global transaction can live; removing them earlier re-opens the hanging window.

#include <pqxx/pqxx>
#include <string>
#include <type_traits>
#include <utility>

namespace outbox {

enum class BranchOp {
  kTry,         // TCC
  kConfirm,     // TCC
  kCancel,      // TCC: compensates kTry
  kAction,      // saga
  kCompensate,  // saga: compensates kAction
};

// The op's name in inbox.barrier.op: "try", "confirm", "cancel", "action", "compensate".
const char* BranchOpName(BranchOp op);

struct BranchCall {
  std::string trans_type;  // "tcc", "saga", ... (stored, informational)
  std::string gid;         // global transaction id (required)
  std::string branch_id;   // branch within the global transaction (required)
  BranchOp op = BranchOp::kTry;
};

enum class BarrierResult {
  kRan,               // the body ran (and its changes commit with tx)
  kDuplicate,         // this op already ran for the branch: body skipped
  kNullCompensation,  // cancel/compensate without its try/action: body skipped
  kHanging,           // try/action after its cancel/compensate: refused, body skipped
};

// Inserts the barrier rows of `call` in tx and says whether the branch's body may run
// (kRan: run it now, in tx) or must be skipped (the other results). The caller commits
// tx in every case (the barrier rows are part of it). Throws outbox::Error for an empty
// gid or branch_id; pqxx exceptions from tx (the caller's transaction) propagate.
BarrierResult EnterBarrier(pqxx::transaction_base& tx, const BranchCall& call);

// EnterBarrier, then `body(tx)` if it says kRan. `body` takes the transaction as the
// caller's type (pqxx::work&, ...) or as pqxx::transaction_base&. If body throws, the
// exception propagates and the caller must not commit tx.
template <class Transaction, class Body>
BarrierResult CallBarrier(Transaction& tx, const BranchCall& call, Body&& body) {
  static_assert(std::is_base_of_v<pqxx::transaction_base, Transaction>,
                "CallBarrier needs a pqxx transaction");
  BarrierResult result = EnterBarrier(tx, call);
  if (result == BarrierResult::kRan) std::forward<Body>(body)(tx);
  return result;
}

}  // namespace outbox
