// transfer-bank-a: bank A of the money-transfer example (docs/transfer.md). Debits an
// account and announces the transfer to bank B through outbox-relay.
//
//   transfer-bank-a setup --db CONNINFO [--accounts 50] [--opening 1000000] [--half]
//       [--grant-to LOGIN]...
//       Creates schema bank_a and its accounts (A-0001 ...), each opened with --opening
//       cents. --half also creates the half-message barrier table (variant 2). Run it as
//       the database owner; --grant-to gives bank A's service login what `run` and
//       `serve` need (the login needs no CREATE; in variant 1 it is also granted
//       outbox_producer, for outbox.publish).
//
//   transfer-bank-a run --db CONNINFO --transfers N [--concurrency 8] [--rate 0]
//       [--to-accounts 50] [--max-amount 10000] [--abort-percent 3] [--topic transfers]
//       [--outbox-db CONNINFO --check-url URL] [--seed S] [--kill-after-local-commit N]
//     Runs N transfers from `--concurrency` threads (at most --rate per second in all,
//     0 = unthrottled), each from a random A account to a random B account (B-0001 ...).
//     Variant 1 (default): one transaction debits, records the transfer and calls
//     outbox.publish. Variant 2 (--outbox-db given): a half message in the outbox
//     database, then the local transaction with the barrier row, then commit_prepared;
//     whatever is left undecided by a crash is decided by the relay's check-back.
//     --abort-percent of the transfers roll back on purpose after publishing (they must
//     never reach bank B). SIGTERM/SIGINT: finish the transfers in hand, then stop.
//     Prints "committed=.. rejected=.. aborted=.. uncertain=.." on stdout at the end.
//     --kill-after-local-commit N is a TESTING HOOK (variant 2): the process raises
//     SIGKILL right after the N-th local commit, before its commit_prepared, after
//     printing "killed after local commit transfer_id=ID": check-back must publish it.
//
//   transfer-bank-a serve --db CONNINFO --listen HOST:PORT
//     Variant 2's check-back endpoint (cpp-httplib): GET /check?gid=G answers from
//     outbox::AnswerCheckBack ({"status":"committed"|"rolled_back"|"pending"}). Port 0 picks a free port; prints
//     "listening on HOST:PORT". Serves until killed. Needs the barrier table (setup --half).
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <optional>
#include <outbox/error.h>
#include <outbox/producer.h>
#include <random>
#include <thread>

#include "common.h"

namespace transfer {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }  // lock-free atomic store: signal-safe

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void ThrowIfErrors(const Flags& flags) {
  if (flags.errors().empty()) return;
  std::string all;
  for (const auto& e : flags.errors()) all += (all.empty() ? "" : "; ") + e;
  throw UsageError(all);
}

// ---- setup ------------------------------------------------------------------------------

int Setup(Flags& flags) {
  auto db = flags.Need("db");
  auto accounts = flags.Int("accounts", 50, 1, 9999);
  auto opening = flags.Int("opening", 1000000, 0, 1'000'000'000'000);
  ThrowIfErrors(flags);
  pqxx::connection conn{db};
  pqxx::work tx{conn};
  tx.exec(kBankASchemaSql);
  tx.exec_params(
      "INSERT INTO bank_a.accounts (id, opening, balance) "
      "SELECT 'A-' || lpad(n::text, 4, '0'), $2, $2 FROM generate_series(1, $1) AS n "
      "ON CONFLICT (id) DO NOTHING",
      accounts, opening);
  if (flags.Has("half")) outbox::EnsureBarrierTable(tx);
  // Bank A's service login: debits, records transfers, writes and reads barrier rows.
  for (const auto& login : flags.All("grant-to")) {
    const auto who = tx.quote_name(login);
    tx.exec("GRANT USAGE ON SCHEMA bank_a TO " + who);
    tx.exec("GRANT SELECT, UPDATE ON bank_a.accounts TO " + who);
    tx.exec("GRANT SELECT, INSERT ON bank_a.transfers TO " + who);
    if (flags.Has("half")) tx.exec("GRANT SELECT, INSERT ON outbox_barrier TO " + who);
  }
  tx.commit();
  std::cout << "bank A ready: accounts=" << accounts << " opening=" << opening << "\n";
  return 0;
}

// ---- run --------------------------------------------------------------------------------

struct RunOptions {
  std::string db;                       // bank A
  std::string outbox_db;                // variant 2 only: where the half messages live
  std::string check_url;                // variant 2 only: the check-back endpoint (serve)
  std::string topic = kDefaultTopic;    // Kafka topic of the transfers
  std::int64_t transfers = 0;           // how many to attempt
  int concurrency = 8;                  // threads, each with its own connection(s)
  std::int64_t rate = 0;                // transfers per second in all; 0 = unthrottled
  int to_accounts = 50;                 // destination accounts B-0001 .. B-<n>
  std::int64_t max_amount = 10000;      // amounts are uniform in 1 .. max_amount cents
  int abort_percent = 3;                // rolled back on purpose after publishing
  std::uint64_t seed = 0;               // 0 = random
  std::int64_t kill_after_local_commit = 0;  // testing hook; 0 = off
  bool half() const { return !outbox_db.empty(); }
};

enum class Outcome {
  kCommitted,  // debited and announced
  kRejected,   // insufficient funds: nothing happened
  kAborted,    // rolled back on purpose after publishing: must never reach bank B
  kUncertain,  // variant 2: the connection broke mid-way; the relay's check-back decides
};

struct Counters {
  std::atomic<std::int64_t> committed{0}, rejected{0}, aborted{0}, uncertain{0};
};

// Spaces transfers evenly: at most `rate` per second over all threads.
class RateLimiter {
 public:
  explicit RateLimiter(std::int64_t rate)
      : interval_(rate > 0 ? std::chrono::nanoseconds(1'000'000'000 / rate) : std::chrono::nanoseconds(0)) {}
  void Acquire() {
    if (interval_.count() == 0) return;
    Clock::time_point slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      next_ = std::max(next_, Clock::now());
      slot = next_;
      next_ += interval_;
    }
    std::this_thread::sleep_until(slot);
  }

 private:
  const std::chrono::nanoseconds interval_;
  std::mutex mu_;
  Clock::time_point next_{};  // Guarded by mu_
};

constexpr int kMaxAttempts = 20;

std::atomic<std::int64_t> g_local_commits{0};  // variant 2, for --kill-after-local-commit

outbox::Headers HeadersOf(const Transfer& t) { return {{"type", "transfer"}, {"transfer_id", t.id}}; }

bool Exists(pqxx::connection& conn, const std::string& id) {
  pqxx::work tx{conn};
  return !tx.exec_params("SELECT 1 FROM bank_a.transfers WHERE id = $1", id).empty();
}

// Variant 1: the debit, the transfer row and the outbox message commit together or not
// at all. A connection lost mid-way (even during COMMIT) is retried with the same
// transfer id after checking whether the earlier attempt committed: the id is the
// primary key, so a transfer can never be debited twice.
Outcome PlainTransfer(Connection& bank, const RunOptions& o, const Transfer& t, bool abort_on_purpose) {
  for (int attempt = 1;; ++attempt) {
    try {
      auto& conn = bank.Get();
      if (attempt > 1 && Exists(conn, t.id)) return Outcome::kCommitted;
      pqxx::work tx{conn};
      auto debit = tx.exec_params(
          "UPDATE bank_a.accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2", t.from, t.amount);
      if (debit.affected_rows() == 0) return Outcome::kRejected;  // ~work rolls back
      auto message_id = outbox::Publish(tx, o.topic, t.to, EncodeTransfer(t), HeadersOf(t));
      tx.exec_params(
          "INSERT INTO bank_a.transfers (id, from_account, to_account, amount, message_id) "
          "VALUES ($1, $2, $3, $4, $5::uuid)",
          t.id, t.from, t.to, t.amount, message_id);
      if (abort_on_purpose) {
        tx.abort();  // a business failure after publishing: nothing may reach bank B
        return Outcome::kAborted;
      }
      tx.commit();
      return Outcome::kCommitted;
    } catch (const std::exception& e) {
      if (!IsTransient(e) || attempt >= kMaxAttempts) throw;
      std::cerr << "transfer " << t.id << ": retrying after " << e.what() << "\n";
      bank.Reset();
      Backoff(attempt);
    }
  }
}

// Runs `fn(conn)` in a transaction of `db`, retrying transient failures. Returns false if
// it still failed after a few attempts (the caller leaves the decision to check-back).
template <typename Fn>
bool WithRetries(Connection& db, const char* what, const std::string& gid, Fn fn) {
  for (int attempt = 1;; ++attempt) {
    try {
      pqxx::work tx{db.Get()};
      fn(tx);
      tx.commit();
      return true;
    } catch (const std::exception& e) {
      if (!IsTransient(e)) throw;
      std::cerr << what << " gid=" << gid << " attempt=" << attempt << " failed: " << e.what() << "\n";
      db.Reset();
      if (attempt >= 5) return false;
      Backoff(attempt);
    }
  }
}

// Variant 2 (half messages): bank A's data is not in the outbox database.
//   1. outbox.prepare(gid = transfer id) in the outbox database: stored, not published;
//   2. bank A: debit + transfer row + commit barrier row, one local transaction;
//   3. outbox.commit_prepared (or rollback_prepared when step 2 did not commit).
// If this process dies or loses a database anywhere after step 1, the relay asks
// `serve` (check-back), which answers from the barrier row: published iff step 2 committed.
Outcome HalfTransfer(Connection& bank, Connection& outbox_db, const RunOptions& o, const Transfer& t,
                     bool abort_on_purpose) {
  const std::string payload = EncodeTransfer(t);
  if (!WithRetries(outbox_db, "prepare", t.id, [&](pqxx::work& tx) {
        outbox::Prepare(tx, t.id, o.topic, t.to, payload, HeadersOf(t), o.check_url);
      })) {
    // Whether the prepare committed is unknown: check-back (no barrier row) answers
    // rolled_back if it did. Bank A has not been touched.
    return Outcome::kUncertain;
  }
  Outcome local;
  try {
    pqxx::work tx{bank.Get()};
    auto debit = tx.exec_params(
        "UPDATE bank_a.accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2", t.from, t.amount);
    if (debit.affected_rows() == 0) {
      local = Outcome::kRejected;
    } else {
      tx.exec_params("INSERT INTO bank_a.transfers (id, from_account, to_account, amount) VALUES ($1, $2, $3, $4)",
                     t.id, t.from, t.to, t.amount);
      outbox::WriteCommitBarrier(tx, t.id);
      if (abort_on_purpose) {
        local = Outcome::kAborted;
      } else {
        tx.commit();
        local = Outcome::kCommitted;
        if (o.kill_after_local_commit > 0 && ++g_local_commits == o.kill_after_local_commit) {
          std::cout << "killed after local commit transfer_id=" << t.id << std::endl;
          raise(SIGKILL);
        }
      }
    }
  } catch (const outbox::Error& e) {
    // A check-back already answered rolled_back for this gid (we were slower than
    // --check-after): the transaction rolled back and the message will never be sent.
    std::cerr << "transfer " << t.id << ": " << e.what() << "\n";
    return Outcome::kAborted;
  } catch (const std::exception& e) {
    if (!IsTransient(e)) throw;
    // Committed or not, we cannot tell from here: check-back can (QueryPrepared).
    std::cerr << "transfer " << t.id << ": local transaction in doubt, check-back decides: " << e.what() << "\n";
    bank.Reset();
    return Outcome::kUncertain;
  }
  if (local == Outcome::kCommitted) {
    if (!WithRetries(outbox_db, "commit_prepared", t.id,
                     [&](pqxx::work& tx) { outbox::CommitPrepared(tx, t.id); })) {
      return Outcome::kUncertain;  // committed locally: check-back will publish it
    }
  } else {
    // Best effort: check-back would answer rolled_back anyway.
    WithRetries(outbox_db, "rollback_prepared", t.id, [&](pqxx::work& tx) { outbox::RollbackPrepared(tx, t.id); });
  }
  return local;
}

std::string RunId() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06x", rd() & 0xffffff);
  return buf;
}

int Run(Flags& flags) {
  RunOptions o;
  o.db = flags.Need("db");
  o.transfers = flags.Int("transfers", 0, 1, 100'000'000);
  if (!flags.Has("transfers")) flags.Need("transfers");
  o.concurrency = static_cast<int>(flags.Int("concurrency", o.concurrency, 1, 256));
  o.rate = flags.Int("rate", o.rate, 0, 1'000'000);
  o.to_accounts = static_cast<int>(flags.Int("to-accounts", o.to_accounts, 1, 9999));
  o.max_amount = flags.Int("max-amount", o.max_amount, 1, 1'000'000'000);
  o.abort_percent = static_cast<int>(flags.Int("abort-percent", o.abort_percent, 0, 100));
  o.topic = flags.Get("topic", o.topic);
  o.outbox_db = flags.Get("outbox-db");
  o.check_url = flags.Get("check-url");
  o.seed = static_cast<std::uint64_t>(flags.Int("seed", 0, 0, INT64_MAX));
  o.kill_after_local_commit = flags.Int("kill-after-local-commit", 0, 0, INT64_MAX);
  if (o.half() && o.check_url.empty()) flags.Need("check-url");
  if (!o.half() && !o.check_url.empty()) flags.Need("outbox-db");
  ThrowIfErrors(flags);

  std::vector<std::string> from_accounts;
  {
    pqxx::connection conn{o.db};
    pqxx::work tx{conn};
    for (const auto& row : tx.exec("SELECT id FROM bank_a.accounts ORDER BY id")) {
      from_accounts.push_back(row[0].as<std::string>());
    }
  }
  if (from_accounts.empty()) throw std::runtime_error("bank A has no accounts: run `transfer-bank-a setup` first");

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Transfer ids: <run>-<worker>-<n>, unique across runs (a restarted driver gets a new
  // run id), readable in reconciliation reports.
  const std::string run_id = RunId();
  std::atomic<std::int64_t> next{0};
  Counters counters;
  RateLimiter limiter{o.rate};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string first_error;  // Guarded by err_mu
  std::vector<std::thread> workers;
  for (int w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng{o.seed ? o.seed + static_cast<std::uint64_t>(w) : std::random_device{}()};
      std::uniform_int_distribution<size_t> pick_from(0, from_accounts.size() - 1);
      std::uniform_int_distribution<int> pick_to(1, o.to_accounts);
      std::uniform_int_distribution<std::int64_t> pick_amount(1, o.max_amount);
      std::uniform_int_distribution<int> percent(0, 99);
      Connection bank{o.db, 60s};
      Connection outbox_db{o.half() ? o.outbox_db : o.db, 60s};
      try {
        for (std::int64_t n = next++; n < o.transfers && !g_stop && !failed; n = next++) {
          limiter.Acquire();
          Transfer t;
          t.id = run_id + "-" + std::to_string(w) + "-" + std::to_string(n);
          t.from = from_accounts[pick_from(rng)];
          t.to = AccountId('B', pick_to(rng));
          t.amount = pick_amount(rng);
          const bool abort_on_purpose = percent(rng) < o.abort_percent;
          Outcome r = o.half() ? HalfTransfer(bank, outbox_db, o, t, abort_on_purpose)
                               : PlainTransfer(bank, o, t, abort_on_purpose);
          switch (r) {
            case Outcome::kCommitted: ++counters.committed; break;
            case Outcome::kRejected: ++counters.rejected; break;
            case Outcome::kAborted: ++counters.aborted; break;
            case Outcome::kUncertain: ++counters.uncertain; break;
          }
        }
      } catch (const std::exception& e) {
        failed = true;
        std::lock_guard<std::mutex> lock(err_mu);
        if (first_error.empty()) first_error = e.what();
      }
    });
  }
  for (auto& t : workers) t.join();
  std::cout << "committed=" << counters.committed << " rejected=" << counters.rejected
            << " aborted=" << counters.aborted << " uncertain=" << counters.uncertain << std::endl;
  if (failed) throw std::runtime_error(first_error);
  return 0;
}

// ---- serve (variant 2's check-back endpoint) ------------------------------------------

// The answer is committed before it is sent (outbox::AnswerCheckBack): QueryPrepared's
// rollback row must exist before the relay discards the message. A transfer still in
// flight holds the gid: it is answered "pending" after 3 s rather than making the relay
// wait past its --check-timeout.
int Serve(Flags& flags) {
  auto db = flags.Need("db");
  auto listen_on = flags.Need("listen");
  ThrowIfErrors(flags);
  auto colon = listen_on.rfind(':');
  if (colon == std::string::npos) throw UsageError("--listen: expected HOST:PORT");
  const std::string host = listen_on.substr(0, colon);
  int port = -1;
  try {
    port = std::stoi(listen_on.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) throw UsageError("--listen: expected HOST:PORT with a port from 0 to 65535");
  {
    // The barrier table comes from `setup --half` (the service login cannot create tables).
    pqxx::connection conn{db};
    pqxx::work tx{conn};
    if (tx.exec1("SELECT to_regclass('outbox_barrier') IS NULL")[0].as<bool>()) {
      throw std::runtime_error("bank A has no barrier table outbox_barrier: run `transfer-bank-a setup --half` first");
    }
  }
  httplib::Server server;
  // One request per connection, on more threads than the relay sends checks at once
  // (--check-concurrency, 16): an answer may wait up to 3 s for a lock.
  server.new_task_queue = [] { return new httplib::ThreadPool(32); };
  server.set_keep_alive_max_count(1);
  server.Get("/check", [&db](const httplib::Request& req, httplib::Response& res) {
    auto reply = outbox::AnswerCheckBack(db, req.get_param_value("gid"));
    if (reply.http_status == 500) std::cerr << "check-back failed: " << reply.error << "\n";
    res.status = reply.http_status;
    res.set_content(reply.body, "application/json");
  });
  const int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw std::runtime_error("cannot listen on " + listen_on);
  std::cout << "listening on " << host << ":" << bound << std::endl;
  return server.listen_after_bind() ? 0 : 1;  // serves until killed
}

}  // namespace
}  // namespace transfer

int main(int argc, char** argv) {
  using transfer::Flags;
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "setup") {
      Flags f{argc, argv, 2,
              {{"db", true}, {"accounts", true}, {"opening", true}, {"half", false}, {"grant-to", true}}};
      return transfer::Setup(f);
    }
    if (cmd == "run") {
      Flags f{argc, argv, 2,
              {{"db", true}, {"transfers", true}, {"concurrency", true}, {"rate", true},
               {"to-accounts", true}, {"max-amount", true}, {"abort-percent", true}, {"topic", true},
               {"outbox-db", true}, {"check-url", true}, {"seed", true}, {"kill-after-local-commit", true}}};
      return transfer::Run(f);
    }
    if (cmd == "serve") {
      Flags f{argc, argv, 2, {{"db", true}, {"listen", true}}};
      return transfer::Serve(f);
    }
    // --help: usage on stdout, exit 0; anything else is a usage error on stderr, exit 2.
    bool help = cmd == "--help" || cmd == "-h";
    (help ? std::cout : std::cerr) << "usage: transfer-bank-a setup|run|serve [options] (see docs/transfer.md)\n";
    return help ? 0 : 2;
  } catch (const transfer::UsageError& e) {
    std::cerr << "transfer-bank-a " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "transfer-bank-a " << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
