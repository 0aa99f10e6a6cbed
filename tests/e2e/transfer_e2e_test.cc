// The money-transfer example end to end (docs/transfer.md, examples/transfer/): bank A
// and bank B in different databases of a real PostgreSQL 15, the relay, bank B's
// consumers and bank A's driver as separate processes that the chaos tests kill with
// SIGKILL at random moments, then reconciliation (transfer-reconcile) must come out exact.
// Kafka: librdkafka's mock cluster in this process, or OUTBOX_TEST_BROKERS.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <regex>

#include "kafka_cluster.h"
#include "pg_cluster.h"
#include "process.h"
#include "wait.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kKilled = 128 + SIGKILL;
constexpr int kAccountsA = 40, kAccountsB = 40;

long long Scalar(const std::string& db, const std::string& sql) {
  pqxx::connection c{db};
  pqxx::work tx{c};
  auto v = tx.exec1(sql)[0];
  return v.is_null() ? 0 : v.as<long long>();
}

void Exec(const std::string& db, const std::string& sql) {
  pqxx::connection c{db};
  pqxx::work tx{c};
  tx.exec(sql);
  tx.commit();
}

// "committed=12 rejected=0 ..." -> value of `name`, or -1.
long long Field(const std::string& text, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("(^|\\s)" + name + "=(\\d+)"))) return -1;
  return std::stoll(m[2]);
}

// Bank A, bank B (and, for half messages, a separate outbox database), the Kafka topic,
// and the processes of the example. As deployed: the owner migrates and runs `setup`
// (tables and GRANTs); bank A's driver and endpoint run as a producer login, bank B's
// consumers as a consumer login, the relay as the relay login, and reconciliation reads
// with those logins (each sees what it needs and no more).
class TransferPipeline : public ::testing::Test {
 protected:
  // Variant 1: the outbox lives in bank A's database. Variant 2 (half): bank A's
  // database has no outbox schema at all; half messages live in their own database.
  void SetUpBanks(bool half) {
    half_ = half;
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string base = std::string(info->name()).substr(0, 30);
    std::transform(base.begin(), base.end(), base.begin(),
                   [](unsigned char ch) { return std::isalnum(ch) ? static_cast<char>(std::tolower(ch)) : '_'; });
    auto& cluster = test::SharedCluster();
    bank_a_ = cluster.CreateDatabase(base + "_bank_a");
    bank_b_ = cluster.CreateDatabase(base + "_bank_b");
    outbox_db_ = half ? cluster.CreateDatabase(base + "_outbox") : bank_a_;
    for (const auto& db : std::vector<std::string>{outbox_db_, bank_b_}) {
      auto m = test::RunProcess({test::RelayBinary(), "migrate", "--db", db});
      ASSERT_EQ(m.code, 0) << m.err;
    }
    bank_a_app_ = test::As(test::Login::kProducer, bank_a_);
    producer_ = test::As(test::Login::kProducer, outbox_db_);
    relay_ = test::As(test::Login::kRelay, outbox_db_);
    bank_b_app_ = test::As(test::Login::kConsumer, bank_b_);
    std::vector<std::string> setup_a = {TRANSFER_BANK_A, "setup", "--db", bank_a_, "--accounts",
                                        std::to_string(kAccountsA), "--opening", "1000000", "--grant-to",
                                        test::LoginName(test::Login::kProducer)};
    if (half) setup_a.push_back("--half");
    auto a = test::RunProcess(setup_a);
    ASSERT_EQ(a.code, 0) << a.err;
    auto b = test::RunProcess({TRANSFER_BANK_B, "setup", "--db", bank_b_, "--accounts", std::to_string(kAccountsB),
                               "--opening", "5000", "--grant-to", test::LoginName(test::Login::kConsumer)});
    ASSERT_EQ(b.code, 0) << b.err;
    topic_ = test::UniqueTopic("transfers");
    group_ = test::UniqueTopic("bank-b");
    kafka_.CreateTopic(topic_, 4);
    if (half) {
      serve_ = std::make_unique<test::Process>(
          std::vector<std::string>{TRANSFER_BANK_A, "serve", "--db", bank_a_app_, "--listen", "127.0.0.1:0"});
      ASSERT_TRUE(test::WaitUntil([&] { return serve_->Stdout().find('\n') != std::string::npos; }, 30s))
          << serve_->Stderr();
      std::smatch m;
      std::string out = serve_->Stdout();
      ASSERT_TRUE(std::regex_search(out, m, std::regex("listening on (\\S+)"))) << out;
      check_url_ = "http://" + m[1].str() + "/check";
    }
  }

  std::unique_ptr<test::Process> StartRelay() {
    std::vector<std::string> argv = {test::RelayBinary(), "run", "--db", relay_, "--brokers", kafka_.bootstrap(),
                                     "--poll-interval", "50ms", "--rebalance-interval", "200ms",
                                     "--stats-interval", "500ms", "--metrics-listen", "127.0.0.1:0",
                                     // bank A's check-back endpoint listens on loopback
                                     "--egress-allow", "127.0.0.1"};
    if (half_) {
      // Check back soon and keep checking: the chaos leaves undecided half messages.
      for (const char* a : {"--check-after", "1s", "--check-interval", "1s", "--check-max", "1000",
                            "--check-timeout", "5s"}) {
        argv.push_back(a);
      }
    }
    return std::make_unique<test::Process>(argv);
  }

  std::unique_ptr<test::Process> StartConsumer() {
    return std::make_unique<test::Process>(std::vector<std::string>{
        TRANSFER_BANK_B, "run", "--db", bank_b_app_, "--brokers", kafka_.bootstrap(), "--group", group_, "--topic",
        topic_, "--kafka-consumer", "session.timeout.ms=6000", "--kafka-consumer", "heartbeat.interval.ms=500",
        "--kafka-consumer", "fetch.wait.max.ms=10"});
  }

  std::unique_ptr<test::Process> StartDriver(long long transfers, int rate, int abort_percent = 3,
                                             long long kill_after_local_commit = 0) {
    std::vector<std::string> argv = {TRANSFER_BANK_A, "run", "--db", bank_a_app_, "--transfers",
                                     std::to_string(transfers), "--concurrency", "8", "--rate", std::to_string(rate),
                                     "--to-accounts", std::to_string(kAccountsB), "--topic", topic_,
                                     "--abort-percent", std::to_string(abort_percent)};
    if (half_) {
      for (const auto& a : {std::string("--outbox-db"), producer_, std::string("--check-url"), check_url_}) {
        argv.push_back(a);
      }
    }
    if (kill_after_local_commit > 0) {
      argv.push_back("--kill-after-local-commit");
      argv.push_back(std::to_string(kill_after_local_commit));
    }
    return std::make_unique<test::Process>(argv);
  }

  test::RunResult Reconcile(const std::string& wait = "0ms") {
    return test::RunProcess({TRANSFER_RECONCILE, "check", "--bank-a", bank_a_app_, "--bank-b", bank_b_app_,
                             "--outbox-db", relay_, "--topic", topic_, "--group", group_, "--wait", wait});
  }

  long long Committed() { return Scalar(bank_a_, "SELECT count(*) FROM bank_a.transfers"); }
  long long Credited() { return Scalar(bank_b_, "SELECT count(*) FROM bank_b.credits"); }

  // Runs `transfers` transfers through the whole pipeline without faults and waits until
  // reconciliation passes.
  void RunCleanPipeline(int transfers) {
    auto relay = StartRelay();
    auto consumer = StartConsumer();
    auto driver = StartDriver(transfers, 0);
    ASSERT_EQ(driver->Wait(120s), 0) << driver->Stderr();
    auto r = Reconcile("60s");
    ASSERT_EQ(r.code, 0) << r.out << r.err << relay->Stderr() << consumer->Stderr();
    consumer->Signal(SIGTERM);
    ASSERT_EQ(consumer->Wait(30s), 0) << consumer->Stderr();
    relay->Signal(SIGTERM);
    ASSERT_EQ(relay->Wait(30s), 0) << relay->Stderr();
  }

  // A transfer id picked deterministically from bank B's credits.
  std::string SomeCreditedTransfer() {
    pqxx::connection c{bank_b_};
    pqxx::work tx{c};
    return tx.exec1("SELECT transfer_id FROM bank_b.credits ORDER BY id OFFSET 7 LIMIT 1")[0].as<std::string>();
  }

  bool half_ = false;
  std::string bank_a_, bank_b_, outbox_db_;  // the owner's: migrations, setup, the test's own checks
  std::string bank_a_app_;                   // bank A's service login (a producer login)
  std::string producer_;                     // the same login in the outbox database (variant 2)
  std::string relay_;                        // the relay login in the outbox database
  std::string bank_b_app_;                   // bank B's consumer login
  std::string topic_, group_, check_url_;
  test::KafkaCluster kafka_;
  std::unique_ptr<test::Process> serve_;
};

// ---- chaos ------------------------------------------------------------------------------

enum class Fault { kKillRelay, kKillConsumer, kKillDriver, kRestartPostgres };

const char* Name(Fault f) {
  switch (f) {
    case Fault::kKillRelay: return "kill -9 relay";
    case Fault::kKillConsumer: return "kill -9 consumer";
    case Fault::kKillDriver: return "kill -9 bank A driver";
    case Fault::kRestartPostgres: return "restart PostgreSQL (immediate)";
  }
  return "?";
}

class TransferChaos : public TransferPipeline {
 protected:
  // Runs kTransfers transfers at a bounded rate from 8 threads while `faults` happen at
  // random points of the load (chosen by committed count, not time), each followed by a
  // restart; then waits for the driver and reconciles. With `self_kill` (half messages)
  // the first driver kills itself with SIGKILL right after a local commit, before its
  // commit_prepared, so at least one transfer can only be published by check-back.
  void RunChaos(std::vector<Fault> faults, bool self_kill = false) {
    constexpr long long kTransfers = 3000;
    constexpr int kRate = 150;  // per second: ~20 s of load, so the faults land mid-stream
    std::mt19937 rng{std::random_device{}()};
    std::shuffle(faults.begin(), faults.end(), rng);
    std::vector<long long> marks;
    std::uniform_int_distribution<long long> at(kTransfers / 20, kTransfers * 4 / 5);
    for (size_t i = 0; i < faults.size(); ++i) marks.push_back(at(rng));
    std::sort(marks.begin(), marks.end());

    auto relay = StartRelay();
    std::vector<std::unique_ptr<test::Process>> consumers;
    consumers.push_back(StartConsumer());
    consumers.push_back(StartConsumer());
    int kills = 0;
    std::unique_ptr<test::Process> driver;
    if (self_kill) {
      driver = StartDriver(kTransfers, kRate, 3, std::uniform_int_distribution<long long>(50, 300)(rng));
      ASSERT_EQ(driver->Wait(120s), kKilled) << driver->Stdout() << driver->Stderr();
      ++kills;
      std::smatch m;
      std::string out = driver->Stdout();
      ASSERT_TRUE(std::regex_search(out, m, std::regex("killed after local commit transfer_id=(\\S+)"))) << out;
      self_killed_transfer_ = m[1];
    }
    driver = StartDriver(kTransfers - Committed(), kRate);

    for (size_t i = 0; i < faults.size(); ++i) {
      ASSERT_TRUE(test::WaitUntil([&] { return Committed() >= marks[i] || !driver->Running(); }, 180s))
          << driver->Stderr();
      ASSERT_TRUE(driver->Running()) << "the load ended before fault " << i << " (" << Name(faults[i])
                                     << "): " << driver->Stdout() << driver->Stderr();
      RecordProperty("fault_" + std::to_string(i), std::string(Name(faults[i])) + " at " + std::to_string(marks[i]));
      const long long before = Committed();
      switch (faults[i]) {
        case Fault::kKillRelay:
          relay->Signal(SIGKILL);
          ASSERT_EQ(relay->Wait(10s), kKilled);
          ++kills;
          // Bank A keeps committing while no relay runs: the backlog must be caught up.
          ASSERT_TRUE(test::WaitUntil([&] { return Committed() >= before + 30 || !driver->Running(); }, 60s));
          relay = StartRelay();
          break;
        case Fault::kKillConsumer: {
          auto& victim = consumers[std::uniform_int_distribution<size_t>(0, consumers.size() - 1)(rng)];
          victim->Signal(SIGKILL);
          ASSERT_EQ(victim->Wait(10s), kKilled);
          ++kills;
          victim = StartConsumer();
          break;
        }
        case Fault::kKillDriver: {
          driver->Signal(SIGKILL);
          ASSERT_EQ(driver->Wait(10s), kKilled);
          ++kills;
          driver = StartDriver(std::max(100LL, kTransfers - Committed()), kRate);
          break;
        }
        case Fault::kRestartPostgres:
          test::SharedCluster().Restart("immediate");
          break;
      }
    }
    ASSERT_EQ(driver->Wait(180s), 0) << driver->Stdout() << driver->Stderr();
    driver_summary_ = driver->Stdout();

    auto r = Reconcile("90s");
    std::string logs = "\n--- relay ---\n" + relay->Stderr().substr(0, 20000);
    for (auto& c : consumers) logs += "\n--- consumer ---\n" + c->Stderr().substr(0, 20000);
    EXPECT_EQ(r.code, 0) << r.out << r.err << logs;
    EXPECT_THAT(r.out, HasSubstr("reconciled: transfers=" + std::to_string(Committed()) +
                                 " credited_once=" + std::to_string(Committed())));
    EXPECT_THAT(r.out, Not(HasSubstr("DISCREPANCY")));
    EXPECT_GE(Committed(), kTransfers / 2) << "too little load to call this a chaos run";
    EXPECT_GE(kills, static_cast<int>(std::count_if(faults.begin(), faults.end(), [](Fault f) {
                return f != Fault::kRestartPostgres;
              })));

    for (auto& c : consumers) {
      c->Signal(SIGTERM);
      EXPECT_EQ(c->Wait(30s), 0) << c->Stderr();
    }
    relay->Signal(SIGTERM);
    EXPECT_EQ(relay->Wait(30s), 0) << relay->Stderr();
  }

  std::string driver_summary_;
  std::string self_killed_transfer_;
};

TEST_F(TransferChaos, PlainOutboxReconcilesExactlyAfterKillNineOfRelayAndConsumersAndAPostgresRestart) {
  SetUpBanks(/*half=*/false);
  RunChaos({Fault::kKillRelay, Fault::kKillRelay, Fault::kKillRelay, Fault::kKillConsumer, Fault::kKillConsumer,
            Fault::kRestartPostgres});
  // The last driver ran the whole load: some transfers rolled back on purpose after
  // calling outbox.publish, and reconciliation found no credit for any of them.
  EXPECT_GT(Field(driver_summary_, "aborted"), 0) << driver_summary_;
  EXPECT_EQ(Field(driver_summary_, "committed"), Committed()) << driver_summary_;
}

TEST_F(TransferChaos, HalfMessagesReconcileExactlyAfterKillNineOfProducerRelayAndConsumers) {
  SetUpBanks(/*half=*/true);
  RunChaos({Fault::kKillDriver, Fault::kKillRelay, Fault::kKillRelay, Fault::kKillConsumer, Fault::kKillConsumer},
           /*self_kill=*/true);
  // Bank A's database holds no outbox: the messages went through half messages in the
  // outbox database, and the producers killed mid-transfer left some that only the
  // relay's check-back (answered by QueryPrepared) could decide.
  EXPECT_EQ(Scalar(bank_a_, "SELECT count(*) FROM pg_namespace WHERE nspname = 'outbox'"), 0);
  EXPECT_EQ(Scalar(outbox_db_, "SELECT count(*) FROM outbox.prepared WHERE state = 'committed'"), Committed());
  ASSERT_FALSE(self_killed_transfer_.empty());
  EXPECT_EQ(Scalar(outbox_db_, "SELECT count(*) FROM outbox.prepared WHERE gid = '" + self_killed_transfer_ +
                                   "' AND state = 'committed' AND resolved_by = 'check-back'"),
            1);
  EXPECT_EQ(Scalar(bank_b_, "SELECT count(*) FROM bank_b.credits WHERE transfer_id = '" + self_killed_transfer_ + "'"),
            1);
  RecordProperty("resolved_by_check_back",
                 std::to_string(Scalar(outbox_db_, "SELECT count(*) FROM outbox.prepared WHERE resolved_by = 'check-back'")));
}

// ---- reconciliation finds what is wrong ---------------------------------------------

class TransferReconcile : public TransferPipeline {
 protected:
  void SetUp() override {
    SetUpBanks(/*half=*/false);
    RunCleanPipeline(300);
    auto r = Reconcile();
    ASSERT_EQ(r.code, 0) << r.out;
    ASSERT_THAT(r.out, HasSubstr("reconciled: transfers=" + std::to_string(Committed())));
  }
};

TEST_F(TransferReconcile, ADeletedCreditFailsNamingTheTransfer) {
  const std::string id = SomeCreditedTransfer();
  // The credit is lost: its row and its effect on the balance are gone.
  Exec(bank_b_, "WITH lost AS (DELETE FROM bank_b.credits WHERE transfer_id = '" + id +
                    "' RETURNING to_account, amount) UPDATE bank_b.accounts a SET balance = a.balance - lost.amount "
                    "FROM lost WHERE a.id = lost.to_account");
  auto r = Reconcile();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=missing_credit transfer_id=" + id + " "));
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=not_conserved"));
  EXPECT_THAT(r.out, HasSubstr("reconciliation FAILED: discrepancies=2"));
  EXPECT_THAT(r.out, Not(HasSubstr("reconciled:")));
}

TEST_F(TransferReconcile, ACreditAppliedTwiceFailsNamingTheTransfer) {
  const std::string id = SomeCreditedTransfer();
  Exec(bank_b_, "WITH again AS (INSERT INTO bank_b.credits (transfer_id, from_account, to_account, amount, message_id) "
                "SELECT transfer_id, from_account, to_account, amount, message_id FROM bank_b.credits WHERE transfer_id = '" +
                    id + "' RETURNING to_account, amount) UPDATE bank_b.accounts a SET balance = a.balance + "
                         "again.amount FROM again WHERE a.id = again.to_account");
  auto r = Reconcile();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=duplicate_credit transfer_id=" + id + " "));
  EXPECT_THAT(r.out, HasSubstr("times=2"));
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=not_conserved"));
}

TEST_F(TransferReconcile, ACreditWithoutItsDebitFailsNamingTheTransfer) {
  const std::string id = SomeCreditedTransfer();
  // Bank A "forgets" the transfer and refunds the account: B holds a credit nobody paid.
  Exec(bank_a_, "WITH gone AS (DELETE FROM bank_a.transfers WHERE id = '" + id +
                    "' RETURNING from_account, amount) UPDATE bank_a.accounts a SET balance = a.balance + gone.amount "
                    "FROM gone WHERE a.id = gone.from_account");
  auto r = Reconcile();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=credit_without_debit transfer_id=" + id + " "));
}

TEST_F(TransferReconcile, ABalanceChangedOutsideTheLedgerFailsNamingTheAccount) {
  Exec(bank_b_, "UPDATE bank_b.accounts SET balance = balance + 1 WHERE id = 'B-0003'");
  auto r = Reconcile();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=account_b account=B-0003 "));
  EXPECT_THAT(r.out, HasSubstr("difference=1"));
}

TEST_F(TransferReconcile, AMessageStillInTheOutboxIsNotDrained) {
  // Committed in bank A, but no relay runs to publish it.
  auto driver = StartDriver(1, 0, /*abort_percent=*/0);
  ASSERT_EQ(driver->Wait(60s), 0) << driver->Stderr();
  auto r = Reconcile("1s");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=not_drained outbox_rows=1 "));
  EXPECT_THAT(r.out, HasSubstr("DISCREPANCY kind=missing_credit transfer_id="));
}

}  // namespace
}  // namespace outbox
