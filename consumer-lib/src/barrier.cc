#include "outbox/barrier.h"

#include <optional>

#include "outbox/error.h"
#include "transaction_start.h"

namespace outbox {
namespace {

// The op a compensating op undoes; none for the others.
std::optional<BranchOp> OriginOf(BranchOp op) {
  switch (op) {
    case BranchOp::kCancel:
      return BranchOp::kTry;
    case BranchOp::kCompensate:
      return BranchOp::kAction;
    case BranchOp::kTry:
    case BranchOp::kConfirm:
    case BranchOp::kAction:
      return std::nullopt;
  }
  return std::nullopt;
}

// INSERT ... ON CONFLICT DO NOTHING: true if this call inserted the row. A concurrent
// uncommitted insert of the same key makes this wait for that transaction's outcome,
// which is what serializes two racing calls of one branch.
bool InsertBarrier(pqxx::transaction_base& tx, const BranchCall& call, BranchOp op, BranchOp reason) {
  auto r = tx.exec_params(
      "INSERT INTO inbox.barrier (owner, trans_type, gid, branch_id, op, reason) "
      "VALUES (session_user, $1, $2, $3, $4, $5) "
      "ON CONFLICT (owner, gid, branch_id, op) DO NOTHING",
      call.trans_type, call.gid, call.branch_id, std::string(BranchOpName(op)),
      std::string(BranchOpName(reason)));
  return r.affected_rows() == 1;
}

}  // namespace

const char* BranchOpName(BranchOp op) {
  switch (op) {
    case BranchOp::kTry:
      return "try";
    case BranchOp::kConfirm:
      return "confirm";
    case BranchOp::kCancel:
      return "cancel";
    case BranchOp::kAction:
      return "action";
    case BranchOp::kCompensate:
      return "compensate";
  }
  return "?";
}

BarrierResult EnterBarrier(pqxx::transaction_base& tx, const BranchCall& call) {
  if (call.gid.empty() || call.branch_id.empty()) {
    throw Error("outbox::EnterBarrier: gid and branch_id must not be empty");
  }
  internal::StartTransaction(tx);
  // DTM's order: a compensating op first claims its origin's row. Success means the
  // origin never ran (null compensation) and also blocks it from running later (the
  // anti-hanging row). The op's own row is inserted in both cases so a repeated cancel
  // is a duplicate.
  bool origin_claimed = false;
  if (auto origin = OriginOf(call.op)) origin_claimed = InsertBarrier(tx, call, *origin, call.op);
  bool current_inserted = InsertBarrier(tx, call, call.op, call.op);
  if (origin_claimed) return BarrierResult::kNullCompensation;
  if (!current_inserted) {
    // Tell "already ran" from "claimed by a compensation that came first".
    auto reason =
        tx.exec_params1(
              "SELECT reason FROM inbox.barrier WHERE owner = session_user AND gid = $1 AND branch_id = $2 AND op = $3",
              call.gid, call.branch_id, std::string(BranchOpName(call.op)))[0]
            .as<std::string>();
    return reason == BranchOpName(call.op) ? BarrierResult::kDuplicate : BarrierResult::kHanging;
  }
  return BarrierResult::kRan;
}

}  // namespace outbox
