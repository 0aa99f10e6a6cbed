// transfer-bank-b: bank B of the money-transfer example (docs/transfer.md). Credits the
// transfers bank A published, each exactly once, with outbox::Consumer.
//
//   transfer-bank-b setup --db CONNINFO [--accounts 50] [--opening 0] [--grant-to LOGIN]...
//       Creates schema bank_b and its accounts (B-0001 ...). The database also needs the
//       inbox schema: `outbox-relay migrate --db CONNINFO`. Run it as the database owner;
//       --grant-to gives bank B's consumer login (granted outbox_consumer) what `run`
//       needs.
//
//   transfer-bank-b run --db CONNINFO --brokers HOST:PORT[,...] [--group bank-b]
//       [--topic transfers] [--kafka KEY=VALUE]... [--kafka-consumer KEY=VALUE]...
//     Consumes until SIGTERM/SIGINT (exit 0 after the message in hand is committed and
//     acknowledged). Run several for parallelism (partitions are the unit).
//
// A credit is the account update plus a bank_b.credits row, made inside the inbox
// transaction of its record: both commit with the inbox row or neither does, and a
// redelivered record is skipped by the inbox. A malformed record or an unknown account
// cannot be fixed by retrying: it goes to <topic>.dlq (and reconciliation reports the
// transfer as not credited).
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
#include <outbox/consumer.h>
#include <signal.h>

#include <iostream>
#include <memory>

#include "common.h"

namespace transfer {
namespace {

outbox::Consumer* g_consumer = nullptr;

void OnSignal(int) {
  if (g_consumer) g_consumer->Stop();  // a lock-free atomic store: signal-safe
}

int Usage(const Flags& flags) {
  for (const auto& e : flags.errors()) std::cerr << "transfer-bank-b: " << e << "\n";
  return 2;
}

int Setup(Flags& flags) {
  auto db = flags.Need("db");
  auto accounts = flags.Int("accounts", 50, 1, 9999);
  auto opening = flags.Int("opening", 0, 0, 1'000'000'000'000);
  if (!flags.errors().empty()) return Usage(flags);
  pqxx::connection conn{db};
  pqxx::work tx{conn};
  tx.exec(kBankBSchemaSql);
  tx.exec_params(
      "INSERT INTO bank_b.accounts (id, opening, balance) "
      "SELECT 'B-' || lpad(n::text, 4, '0'), $2, $2 FROM generate_series(1, $1) AS n "
      "ON CONFLICT (id) DO NOTHING",
      accounts, opening);
  // Bank B's consumer login: credits accounts and records each credit.
  for (const auto& login : flags.All("grant-to")) {
    const auto who = tx.quote_name(login);
    tx.exec("GRANT USAGE ON SCHEMA bank_b TO " + who);
    tx.exec("GRANT SELECT, UPDATE ON bank_b.accounts TO " + who);
    tx.exec("GRANT SELECT, INSERT ON bank_b.credits TO " + who);
    tx.exec("GRANT USAGE ON SEQUENCE bank_b.credits_id_seq TO " + who);
  }
  tx.commit();
  std::cout << "bank B ready: accounts=" << accounts << " opening=" << opening << "\n";
  return 0;
}

// The handler: runs inside the transaction that holds the record's inbox row.
void Credit(const outbox::Message& m, pqxx::work& tx) {
  if (!m.payload) throw outbox::PermanentError("transfer record without a value");
  Transfer t;
  try {
    t = DecodeTransfer(*m.payload);
  } catch (const std::invalid_argument& e) {
    throw outbox::PermanentError(std::string("malformed transfer: ") + e.what());
  }
  auto r = tx.exec_params("UPDATE bank_b.accounts SET balance = balance + $2 WHERE id = $1", t.to, t.amount);
  if (r.affected_rows() != 1) {
    throw outbox::PermanentError("unknown account " + t.to + " in transfer_id=" + t.id);
  }
  tx.exec_params(
      "INSERT INTO bank_b.credits (transfer_id, from_account, to_account, amount, message_id) "
      "VALUES ($1, $2, $3, $4, $5)",
      t.id, t.from, t.to, t.amount, m.message_id);
}

int Run(Flags& flags) {
  outbox::ConsumerOptions o;
  o.conninfo = flags.Need("db");
  o.brokers = flags.Need("brokers");
  o.group = flags.Get("group", kDefaultGroup);
  o.topics = {flags.Get("topic", kDefaultTopic)};
  o.kafka = flags.KeyValues("kafka");
  o.kafka_consumer = flags.KeyValues("kafka-consumer");
  if (!flags.errors().empty()) return Usage(flags);
  // The application owns logging: the library hands us lines.
  o.log = [](outbox::LogLevel level, const std::string& line) {
    switch (level) {
      case outbox::LogLevel::kDebug: return;
      case outbox::LogLevel::kInfo: std::clog << "info " << line << '\n'; return;
      case outbox::LogLevel::kWarn: std::clog << "warn " << line << '\n'; return;
      case outbox::LogLevel::kError: std::clog << "error " << line << '\n'; return;
    }
  };
  o.retry.initial_delay = std::chrono::milliseconds(200);
  o.retry.max_attempts = 5;

  std::unique_ptr<outbox::Consumer> owned;
  try {
    owned = std::make_unique<outbox::Consumer>(o, Credit);
  } catch (const outbox::Error& e) {  // every invalid option, listed at once
    std::cerr << "transfer-bank-b run: " << e.what() << "\n";
    return 2;
  }
  outbox::Consumer& consumer = *owned;
  g_consumer = &consumer;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::clog << "info bank B consuming topic=" << o.topics[0] << " group=" << o.group << std::endl;
  consumer.Run();
  g_consumer = nullptr;
  auto s = consumer.stats();
  std::cout << "credited=" << s.handled << " duplicates=" << s.duplicates << " failed_attempts=" << s.failed_attempts
            << " dead_lettered=" << s.dead_lettered << std::endl;
  return 0;
}

}  // namespace
}  // namespace transfer

int main(int argc, char** argv) {
  using transfer::Flags;
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "setup") {
      Flags f{argc, argv, 2, {{"db", true}, {"accounts", true}, {"opening", true}, {"grant-to", true}}};
      return transfer::Setup(f);
    }
    if (cmd == "run") {
      Flags f{argc, argv, 2,
              {{"db", true}, {"brokers", true}, {"group", true}, {"topic", true}, {"kafka", true},
               {"kafka-consumer", true}}};
      return transfer::Run(f);
    }
    // --help: usage on stdout, exit 0; anything else is a usage error on stderr, exit 2.
    bool help = cmd == "--help" || cmd == "-h";
    (help ? std::cout : std::cerr) << "usage: transfer-bank-b setup|run [options] (see docs/transfer.md)\n";
    return help ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "transfer-bank-b " << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
