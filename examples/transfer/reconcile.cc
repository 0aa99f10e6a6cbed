// transfer-reconcile: reconciliation (对账) of the money-transfer example
// (docs/transfer.md), and its progress counters.
//
//   transfer-reconcile check --bank-a CONNINFO --bank-b CONNINFO [--outbox-db CONNINFO]
//       [--topic transfers] [--group bank-b] [--wait DURATION] [--max-report 20]
//     Checks, once the pipeline is drained:
//       - every transfer debited in bank A is credited in bank B exactly once, to the same
//         account, with the same amount (reports missing, duplicated, mismatched credits);
//       - no credit in bank B without a debit in bank A;
//       - every account's balance equals its opening balance minus its debits (A) or
//         plus its credits (B);
//       - the money is conserved: sum of both banks' balances == sum of their openings;
//       - nothing is stuck: no outbox rows, unresolved half messages or relay dead
//         letters left for the topic (in --outbox-db, default bank A's database), and no
//         record dead-lettered by bank B's consumer group.
//     Every discrepancy is one line "DISCREPANCY kind=... transfer_id=... ..." (at most
//     --max-report per kind, then a count). With --wait, a failing check is repeated
//     until it passes or DURATION is over: transfers still in flight are not reported
//     unless they stay missing. The last line is "reconciled: transfers=N ..." or
//     "reconciliation FAILED: ...".
//     Exit codes: 0 reconciled, 1 discrepancies, 2 bad usage or a database unreachable.
//     Least privilege: --bank-a may be bank A's service login, --bank-b bank B's
//     consumer login (a member of --group: a login sees only its own groups' inbox
//     rows), --outbox-db a login granted outbox_relay (the queue, dead letters and half
//     messages are readable by that role, not by producers).
//
//   transfer-reconcile progress --bank-a CONNINFO --bank-b CONNINFO [--outbox-db CONNINFO]
//       [--topic transfers]
//     One line "committed=N published=N consumed=N lag=N": transfers committed in bank
//     A, of which already handed to Kafka (no outbox row left), credited in bank B, and
//     committed but not yet credited.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "common.h"

namespace transfer {
namespace {

using namespace std::chrono_literals;

struct Debit {
  std::string id, from, to;
  std::int64_t amount = 0;
};

struct Credit {
  std::string transfer_id, from, to;
  std::int64_t amount = 0;
};

struct Account {
  std::string id;
  std::int64_t opening = 0, balance = 0, moved = 0;  // moved: sum of debits (A) / credits (B)
};

struct Bank {
  std::vector<Account> accounts;
  std::int64_t opening = 0, balance = 0, moved = 0;
};

struct Pending {
  std::int64_t outbox_rows = 0;      // committed, not yet handed to Kafka
  std::int64_t half_messages = 0;    // prepared or parked, not yet decided
  std::int64_t parked = 0;           // of those: parked after --check-max (operator needed)
  std::int64_t relay_dead_letters = 0;
  bool checked = false;              // false: no outbox schema where we looked
};

struct Report {
  std::map<std::string, std::vector<std::string>> discrepancies;  // kind -> lines
  std::int64_t transfers = 0, credits = 0, debited = 0, credited = 0, total_opening = 0, total_balance = 0;
  std::size_t accounts_a = 0, accounts_b = 0;
  Pending pending;
  bool ok() const { return discrepancies.empty(); }
  void Add(const std::string& kind, const std::string& line) { discrepancies[kind].push_back(line); }
};

using ReadOnlyTx = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

Bank ReadAccounts(ReadOnlyTx& tx, const std::string& schema, const std::string& ledger, const std::string& column) {
  Bank bank;
  for (const auto& row : tx.exec("SELECT a.id, a.opening, a.balance, "
                                 "(SELECT coalesce(sum(l.amount), 0) FROM " + schema + "." + ledger + " l WHERE l." +
                                 column + " = a.id) FROM " + schema + ".accounts a ORDER BY a.id")) {
    Account a{row[0].as<std::string>(), row[1].as<std::int64_t>(), row[2].as<std::int64_t>(),
              row[3].as<std::int64_t>()};
    bank.opening += a.opening;
    bank.balance += a.balance;
    bank.moved += a.moved;
    bank.accounts.push_back(std::move(a));
  }
  return bank;
}

Pending ReadPending(const std::string& outbox_db, const std::string& topic) {
  Pending p;
  pqxx::connection conn{outbox_db};
  pqxx::work tx{conn};
  if (tx.exec1("SELECT to_regclass('outbox.messages') IS NOT NULL")[0].as<bool>()) {
    p.checked = true;
    p.outbox_rows = tx.exec_params1("SELECT count(*) FROM outbox.messages WHERE topic = $1", topic)[0].as<std::int64_t>();
    p.relay_dead_letters =
        tx.exec_params1("SELECT count(*) FROM outbox.dead_letters WHERE topic = $1", topic)[0].as<std::int64_t>();
  }
  if (tx.exec1("SELECT to_regclass('outbox.prepared') IS NOT NULL")[0].as<bool>()) {
    auto r = tx.exec_params1(
        "SELECT count(*) FILTER (WHERE state IN ('prepared', 'parked')), count(*) FILTER (WHERE state = 'parked') "
        "FROM outbox.prepared WHERE topic = $1",
        topic);
    p.half_messages = r[0].as<std::int64_t>();
    p.parked = r[1].as<std::int64_t>();
  }
  return p;
}

std::string Describe(const Debit& d) {
  return "transfer_id=" + d.id + " from=" + d.from + " to=" + d.to + " amount=" + std::to_string(d.amount);
}

Report Check(const std::string& bank_a, const std::string& bank_b, const std::string& outbox_db,
             const std::string& topic, const std::string& group) {
  Report rep;
  // Bank B is read before bank A: a transfer is debited (committed in A) before it can
  // be published, so every credit B shows has its debit in A's later snapshot, and a
  // transfer in flight shows up only as a missing credit (which --wait gives time).
  std::vector<Credit> credits;
  Bank b;
  std::vector<std::string> dead_lettered;
  {
    pqxx::connection conn{bank_b};
    ReadOnlyTx tx{conn};
    for (const auto& row : tx.exec("SELECT transfer_id, from_account, to_account, amount FROM bank_b.credits "
                                   "ORDER BY transfer_id COLLATE \"C\", id")) {
      credits.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                         row[3].as<std::int64_t>()});
    }
    b = ReadAccounts(tx, "bank_b", "credits", "to_account");
    if (tx.exec1("SELECT to_regclass('inbox.messages') IS NOT NULL")[0].as<bool>()) {
      for (const auto& row : tx.exec_params(
               "SELECT message_id FROM inbox.messages WHERE group_id = $1 AND topic = $2 AND outcome = "
               "'dead_lettered' ORDER BY message_id",
               group, topic)) {
        dead_lettered.push_back(row[0].as<std::string>());
      }
    }
  }
  std::vector<Debit> debits;
  Bank a;
  {
    pqxx::connection conn{bank_a};
    ReadOnlyTx tx{conn};
    for (const auto& row : tx.exec("SELECT id, from_account, to_account, amount FROM bank_a.transfers "
                                   "ORDER BY id COLLATE \"C\"")) {
      debits.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                        row[3].as<std::int64_t>()});
    }
    a = ReadAccounts(tx, "bank_a", "transfers", "from_account");
  }
  rep.pending = ReadPending(outbox_db, topic);

  // Merge the two lists, both sorted by transfer id (byte order on both sides).
  size_t i = 0, j = 0;
  while (i < debits.size() || j < credits.size()) {
    if (j == credits.size() || (i < debits.size() && debits[i].id < credits[j].transfer_id)) {
      rep.Add("missing_credit", Describe(debits[i]));
      ++i;
      continue;
    }
    if (i == debits.size() || credits[j].transfer_id < debits[i].id) {
      const auto& c = credits[j];
      rep.Add("credit_without_debit", "transfer_id=" + c.transfer_id + " to=" + c.to +
                                          " amount=" + std::to_string(c.amount));
      ++j;
      continue;
    }
    const Debit& d = debits[i];
    size_t n = 0;
    for (; j < credits.size() && credits[j].transfer_id == d.id; ++j, ++n) {
      const auto& c = credits[j];
      if (c.to != d.to || c.from != d.from || c.amount != d.amount) {
        rep.Add("mismatched_credit", Describe(d) + " credited_from=" + c.from + " credited_to=" + c.to +
                                         " credited_amount=" + std::to_string(c.amount));
      }
    }
    if (n > 1) rep.Add("duplicate_credit", Describe(d) + " times=" + std::to_string(n));
    ++i;
  }

  for (const auto& acc : a.accounts) {
    if (acc.balance != acc.opening - acc.moved) {
      rep.Add("account_a", "account=" + acc.id + " balance=" + std::to_string(acc.balance) +
                               " expected=" + std::to_string(acc.opening - acc.moved));
    }
  }
  for (const auto& acc : b.accounts) {
    if (acc.balance != acc.opening + acc.moved) {
      rep.Add("account_b", "account=" + acc.id + " balance=" + std::to_string(acc.balance) +
                               " expected=" + std::to_string(acc.opening + acc.moved));
    }
  }
  rep.total_opening = a.opening + b.opening;
  rep.total_balance = a.balance + b.balance;
  if (rep.total_opening != rep.total_balance) {
    rep.Add("not_conserved", "opening=" + std::to_string(rep.total_opening) +
                                 " balance=" + std::to_string(rep.total_balance) +
                                 " difference=" + std::to_string(rep.total_balance - rep.total_opening));
  }
  const Pending& p = rep.pending;
  if (p.outbox_rows > 0 || p.half_messages > 0) {
    rep.Add("not_drained", "outbox_rows=" + std::to_string(p.outbox_rows) +
                               " undecided_half_messages=" + std::to_string(p.half_messages) +
                               " parked=" + std::to_string(p.parked));
  }
  if (p.relay_dead_letters > 0) {
    rep.Add("relay_dead_letters", "count=" + std::to_string(p.relay_dead_letters) +
                                      " (see `outbox-relay dead-letters list`)");
  }
  for (const auto& id : dead_lettered) rep.Add("consumer_dead_lettered", "message_id=" + id);

  rep.transfers = static_cast<std::int64_t>(debits.size());
  rep.credits = static_cast<std::int64_t>(credits.size());
  rep.debited = a.moved;
  rep.credited = b.moved;
  rep.accounts_a = a.accounts.size();
  rep.accounts_b = b.accounts.size();
  return rep;
}

void Print(const Report& rep, std::size_t max_report) {
  std::cout << "bank A: accounts=" << rep.accounts_a << " transfers=" << rep.transfers << " debited=" << rep.debited
            << "\n";
  std::cout << "bank B: accounts=" << rep.accounts_b << " credits=" << rep.credits << " credited=" << rep.credited
            << "\n";
  if (!rep.pending.checked) std::cout << "note: no outbox schema found, pending messages not checked\n";
  std::ostringstream counts;
  std::size_t total = 0;
  for (const auto& [kind, lines] : rep.discrepancies) {
    for (size_t k = 0; k < lines.size() && k < max_report; ++k) {
      std::cout << "DISCREPANCY kind=" << kind << " " << lines[k] << "\n";
    }
    if (lines.size() > max_report) {
      std::cout << "DISCREPANCY kind=" << kind << " ... and " << lines.size() - max_report << " more\n";
    }
    counts << " " << kind << "=" << lines.size();
    total += lines.size();
  }
  if (rep.ok()) {
    std::cout << "reconciled: transfers=" << rep.transfers << " credited_once=" << rep.credits
              << " amount=" << rep.debited << " total=" << rep.total_balance << " (conserved, opening "
              << rep.total_opening << ")" << std::endl;
  } else {
    std::cout << "reconciliation FAILED: discrepancies=" << total << counts.str() << " transfers=" << rep.transfers
              << " credits=" << rep.credits << std::endl;
  }
}

int CheckCommand(Flags& flags) {
  auto bank_a = flags.Need("bank-a");
  auto bank_b = flags.Need("bank-b");
  auto outbox_db = flags.Get("outbox-db", bank_a);
  auto topic = flags.Get("topic", kDefaultTopic);
  auto group = flags.Get("group", kDefaultGroup);
  auto wait = flags.Duration("wait", 0ms);
  auto max_report = static_cast<std::size_t>(flags.Int("max-report", 20, 1, 1'000'000));
  if (!flags.errors().empty()) {
    for (const auto& e : flags.errors()) std::cerr << "transfer-reconcile check: " << e << "\n";
    return 2;
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto last_note = std::chrono::steady_clock::now();
  while (true) {
    Report rep = Check(bank_a, bank_b, outbox_db, topic, group);
    const auto now = std::chrono::steady_clock::now();
    if (rep.ok() || now + 250ms > deadline) {
      Print(rep, max_report);
      return rep.ok() ? 0 : 1;
    }
    if (now - last_note >= 5s) {
      std::size_t n = 0;
      for (const auto& [kind, lines] : rep.discrepancies) n += lines.size();
      std::cerr << "waiting: discrepancies=" << n << " transfers=" << rep.transfers << " credits=" << rep.credits
                << "\n";
      last_note = now;
    }
    std::this_thread::sleep_for(250ms);  // a polling interval of the --wait loop
  }
}

int ProgressCommand(Flags& flags) {
  auto bank_a = flags.Need("bank-a");
  auto bank_b = flags.Need("bank-b");
  auto outbox_db = flags.Get("outbox-db", bank_a);
  auto topic = flags.Get("topic", kDefaultTopic);
  if (!flags.errors().empty()) {
    for (const auto& e : flags.errors()) std::cerr << "transfer-reconcile progress: " << e << "\n";
    return 2;
  }
  // Bank B first, then bank A (committed and, when the outbox is there, pending in one
  // snapshot): a transfer is committed before it is published and published before it
  // is consumed, so the counts read in this order never show consumed > published.
  std::int64_t committed = 0, pending = 0, consumed = 0;
  {
    pqxx::connection conn{bank_b};
    pqxx::work tx{conn};
    consumed = tx.exec1("SELECT count(*) FROM bank_b.credits")[0].as<std::int64_t>();
  }
  {
    pqxx::connection conn{bank_a};
    ReadOnlyTx tx{conn};
    committed = tx.exec1("SELECT count(*) FROM bank_a.transfers")[0].as<std::int64_t>();
    if (outbox_db == bank_a) {
      pending = tx.exec_params1("SELECT count(*) FROM outbox.messages WHERE topic = $1", topic)[0].as<std::int64_t>();
    }
  }
  if (outbox_db != bank_a) pending = ReadPending(outbox_db, topic).outbox_rows;
  const std::int64_t published = std::max<std::int64_t>(0, committed - pending);
  std::cout << "committed=" << committed << " published=" << published << " consumed=" << consumed
            << " lag=" << std::max<std::int64_t>(0, committed - consumed) << std::endl;
  return 0;
}

}  // namespace
}  // namespace transfer

int main(int argc, char** argv) {
  using transfer::Flags;
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "check") {
      Flags f{argc, argv, 2,
              {{"bank-a", true}, {"bank-b", true}, {"outbox-db", true}, {"topic", true}, {"group", true},
               {"wait", true}, {"max-report", true}}};
      return transfer::CheckCommand(f);
    }
    if (cmd == "progress") {
      Flags f{argc, argv, 2, {{"bank-a", true}, {"bank-b", true}, {"outbox-db", true}, {"topic", true}}};
      return transfer::ProgressCommand(f);
    }
    // --help: usage on stdout, exit 0; anything else is a usage error on stderr, exit 2.
    bool help = cmd == "--help" || cmd == "-h";
    (help ? std::cout : std::cerr) << "usage: transfer-reconcile check|progress [options] (see docs/transfer.md)\n";
    return help ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "transfer-reconcile " << cmd << ": " << e.what() << "\n";
    return 2;
  }
}
