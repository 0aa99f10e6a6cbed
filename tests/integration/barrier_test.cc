// The sub-transaction barrier on a real PostgreSQL: idempotence, null compensation,
// anti-hanging, and two connections racing on one branch.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <outbox/barrier.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "consumer_fixture.h"

namespace outbox {
namespace {

class Barrier : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::FreshDatabase();
    test::MigrateDb(db_);
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec("CREATE TABLE ledger (gid text, branch_id text, op text)");
    // The service's own table, granted to its login (which cannot create tables).
    tx.exec("GRANT SELECT, INSERT ON ledger TO outbox_consumer");
    tx.commit();
    service_db_ = test::As(test::Login::kConsumer, db_);
  }

  // One branch call in its own transaction, committed — what a TCC/saga handler does.
  BarrierResult Call(BranchOp op, const std::string& gid = "gid-1",
                     const std::string& branch = "01") {
    pqxx::connection c{service_db_};
    pqxx::work tx{c};
    auto r =
        CallBarrier(tx, {"tcc", gid, branch, op}, [&](pqxx::work& t) { Body(t, gid, branch, op); });
    tx.commit();
    return r;
  }

  static void Body(pqxx::work& t, const std::string& gid, const std::string& branch, BranchOp op) {
    t.exec_params("INSERT INTO ledger VALUES ($1, $2, $3)", gid, branch,
                  std::string(BranchOpName(op)));
  }

  // How many times each op's body ran, e.g. "try=1 cancel=0".
  int Ran(BranchOp op) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    return tx
        .exec_params1("SELECT count(*) FROM ledger WHERE op = $1", std::string(BranchOpName(op)))[0]
        .as<int>();
  }

  // Waits until the backend `pid` waits for a lock (the racing insert is blocked).
  bool BlockedOnLock(int pid) {
    pqxx::connection c{db_};
    return test::WaitUntil(
        [&] {
          pqxx::work tx{c};
          return tx.exec_params1(
                       "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = "
                       "'Lock'",
                       pid)[0]
                     .as<int>() == 1;
        },
        std::chrono::seconds(30));
  }

  std::string db_;          // the owner's: migrations and the test's own checks
  std::string service_db_;  // the branch service: a consumer login (inbox.barrier)
};

TEST_F(Barrier, RepeatedTryRunsOnce) {
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kDuplicate);
  EXPECT_EQ(Ran(BranchOp::kTry), 1);
}

TEST_F(Barrier, RepeatedConfirmRunsOnce) {
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kConfirm), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kConfirm), BarrierResult::kDuplicate);
  EXPECT_EQ(Ran(BranchOp::kConfirm), 1);
}

TEST_F(Barrier, CancelAfterTryCompensatesOnce) {
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kCancel), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kCancel), BarrierResult::kDuplicate);
  EXPECT_EQ(Ran(BranchOp::kCancel), 1);
}

TEST_F(Barrier, CancelWithoutTryIsANullCompensation) {
  EXPECT_EQ(Call(BranchOp::kCancel), BarrierResult::kNullCompensation);
  EXPECT_EQ(Ran(BranchOp::kCancel), 0);
  // Repeated, it stays a no-op.
  EXPECT_EQ(Call(BranchOp::kCancel), BarrierResult::kDuplicate);
  EXPECT_EQ(Ran(BranchOp::kCancel), 0);
}

TEST_F(Barrier, TryAfterCancelIsRefused) {
  EXPECT_EQ(Call(BranchOp::kCancel), BarrierResult::kNullCompensation);
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kHanging);
  EXPECT_EQ(Ran(BranchOp::kTry), 0);
}

TEST_F(Barrier, SagaCompensateWithoutActionAndActionAfterIt) {
  EXPECT_EQ(Call(BranchOp::kCompensate), BarrierResult::kNullCompensation);
  EXPECT_EQ(Call(BranchOp::kAction), BarrierResult::kHanging);
  EXPECT_EQ(Ran(BranchOp::kAction), 0);
  EXPECT_EQ(Ran(BranchOp::kCompensate), 0);
  // Another branch of the same global transaction is independent.
  EXPECT_EQ(Call(BranchOp::kAction, "gid-1", "02"), BarrierResult::kRan);
  EXPECT_EQ(Call(BranchOp::kCompensate, "gid-1", "02"), BarrierResult::kRan);
}

TEST_F(Barrier, FailedBodyRollsBackItsBarrierRowSoARetryRuns) {
  {
    pqxx::connection c{service_db_};
    pqxx::work tx{c};
    EXPECT_THROW(CallBarrier(tx, {"tcc", "gid-1", "01", BranchOp::kTry},
                             [](pqxx::work&) { throw std::runtime_error("insufficient funds"); }),
                 std::runtime_error);
    // not committed
  }
  EXPECT_EQ(Call(BranchOp::kTry), BarrierResult::kRan);
  EXPECT_EQ(Ran(BranchOp::kTry), 1);
}

TEST_F(Barrier, RejectsEmptyIds) {
  pqxx::connection c{service_db_};
  pqxx::work tx{c};
  EXPECT_THROW(CallBarrier(tx, {"tcc", "", "01", BranchOp::kTry}, [](pqxx::work&) {}), Error);
  EXPECT_THROW(CallBarrier(tx, {"tcc", "g", "", BranchOp::kTry}, [](pqxx::work&) {}), Error);
}

// Two connections race on one branch. The first call's transaction stays open (its body
// waits on a latch) until the second call is seen blocked in PostgreSQL; then the first
// commits or rolls back, and the second's outcome is checked.
struct Race {
  BarrierResult first, second;
  int second_pid = 0;
};

class BarrierRace : public Barrier {
 protected:
  Race Run(BranchOp first_op, BranchOp second_op, bool first_commits) {
    std::mutex mu;
    std::condition_variable cv;
    bool first_inside = false, release = false;  // Guarded by mu.
    Race race{};
    pqxx::connection c1{service_db_}, c2{service_db_};
    race.second_pid = c2.backendpid();
    std::thread first{[&] {
      pqxx::work tx{c1};
      race.first = CallBarrier(tx, {"tcc", "gid-r", "01", first_op},
                               [&](pqxx::work& t) { Body(t, "gid-r", "01", first_op); });
      std::unique_lock lock{mu};
      first_inside = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      if (first_commits) tx.commit();
      // else: rolled back by the destructor
    }};
    {
      std::unique_lock lock{mu};
      cv.wait(lock, [&] { return first_inside; });
    }
    auto second = std::async(std::launch::async, [&] {
      pqxx::work tx{c2};
      auto r = CallBarrier(tx, {"tcc", "gid-r", "01", second_op},
                           [&](pqxx::work& t) { Body(t, "gid-r", "01", second_op); });
      tx.commit();
      return r;
    });
    bool blocked = BlockedOnLock(race.second_pid);
    {
      std::lock_guard lock{mu};
      release = true;
      cv.notify_all();
    }
    first.join();
    race.second = second.get();
    EXPECT_TRUE(blocked) << "the second call never waited for the first";
    return race;
  }
};

TEST_F(BarrierRace, TwoConcurrentTriesRunTheBodyOnce) {
  auto r = Run(BranchOp::kTry, BranchOp::kTry, true);
  EXPECT_EQ(r.first, BarrierResult::kRan);
  EXPECT_EQ(r.second, BarrierResult::kDuplicate);
  EXPECT_EQ(Ran(BranchOp::kTry), 1);
}

TEST_F(BarrierRace, WhenTheFirstTryRollsBackTheSecondRuns) {
  auto r = Run(BranchOp::kTry, BranchOp::kTry, false);
  EXPECT_EQ(r.first, BarrierResult::kRan);
  EXPECT_EQ(r.second, BarrierResult::kRan);
  EXPECT_EQ(Ran(BranchOp::kTry), 1);  // only the committed one
}

TEST_F(BarrierRace, CancelRacingAnInFlightTryWaitsAndThenCompensates) {
  auto r = Run(BranchOp::kTry, BranchOp::kCancel, true);
  EXPECT_EQ(r.first, BarrierResult::kRan);
  EXPECT_EQ(r.second, BarrierResult::kRan);
  EXPECT_EQ(Ran(BranchOp::kTry), 1);
  EXPECT_EQ(Ran(BranchOp::kCancel), 1);
}

TEST_F(BarrierRace, TryRacingAnInFlightCancelIsRefused) {
  auto r = Run(BranchOp::kCancel, BranchOp::kTry, true);
  EXPECT_EQ(r.first, BarrierResult::kNullCompensation);
  EXPECT_EQ(r.second, BarrierResult::kHanging);
  EXPECT_EQ(Ran(BranchOp::kTry), 0);
  EXPECT_EQ(Ran(BranchOp::kCancel), 0);
}

TEST_F(Barrier, ConsumerRoleMayCallTheBarrier) {
  {
    pqxx::connection c{db_};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS tcc_service");
    tx.exec("CREATE ROLE tcc_service LOGIN IN ROLE outbox_consumer");
    tx.exec("GRANT INSERT ON ledger TO tcc_service");
  }
  pqxx::connection c{
      test::SharedCluster().ConninfoFor(pqxx::connection{db_}.dbname(), "tcc_service")};
  {
    pqxx::work tx{c};
    EXPECT_EQ(CallBarrier(tx, {"tcc", "g-role", "01", BranchOp::kCancel}, [](pqxx::work&) {}),
              BarrierResult::kNullCompensation);
    EXPECT_EQ(CallBarrier(tx, {"tcc", "g-role", "01", BranchOp::kTry}, [](pqxx::work&) {}),
              BarrierResult::kHanging);
    tx.commit();
  }
  pqxx::work tx{c};
  EXPECT_THROW(tx.exec("DELETE FROM inbox.barrier"), pqxx::insufficient_privilege);
}

TEST_F(Barrier, WorksInAnyTransactionWithABodyTakingTheBaseType) {
  pqxx::connection c{service_db_};
  pqxx::work tx{c};
  pqxx::subtransaction sub{tx, "branch"};
  auto body = [&](pqxx::transaction_base& t) { t.exec("INSERT INTO ledger VALUES ('gid-sub', '01', 'try')"); };
  EXPECT_EQ(CallBarrier(sub, {"tcc", "gid-sub", "01", BranchOp::kTry}, body), BarrierResult::kRan);
  EXPECT_EQ(CallBarrier(sub, {"tcc", "gid-sub", "01", BranchOp::kTry}, body), BarrierResult::kDuplicate);
  EXPECT_EQ(EnterBarrier(sub, {"tcc", "gid-sub", "01", BranchOp::kCancel}), BarrierResult::kRan);
  sub.commit();
  tx.commit();
  EXPECT_EQ(Ran(BranchOp::kTry), 1);
}

}  // namespace
}  // namespace outbox
