#include "common.h"

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <outbox/retry.h>
#include <random>
#include <stdexcept>
#include <thread>

namespace transfer {

const char* const kBankASchemaSql = R"sql(
CREATE SCHEMA IF NOT EXISTS bank_a;
CREATE TABLE IF NOT EXISTS bank_a.accounts (
  id       text PRIMARY KEY,
  opening  bigint NOT NULL CHECK (opening >= 0),   -- balance when opened, cents
  balance  bigint NOT NULL CHECK (balance >= 0)    -- no overdraft
);
-- One row per committed transfer: the debit, written in the transaction that changes
-- the balance (and, in variant 1, calls outbox.publish).
CREATE TABLE IF NOT EXISTS bank_a.transfers (
  id            text PRIMARY KEY,
  from_account  text NOT NULL REFERENCES bank_a.accounts,
  to_account    text NOT NULL,
  amount        bigint NOT NULL CHECK (amount > 0),
  -- Variant 1: the outbox message id. Variant 2 (half messages): NULL, the id exists
  -- only once the half message is committed, in the outbox database.
  message_id    uuid,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transfers_from_account ON bank_a.transfers (from_account);
)sql";

const char* const kBankBSchemaSql = R"sql(
CREATE SCHEMA IF NOT EXISTS bank_b;
CREATE TABLE IF NOT EXISTS bank_b.accounts (
  id       text PRIMARY KEY,
  opening  bigint NOT NULL CHECK (opening >= 0),
  balance  bigint NOT NULL CHECK (balance >= 0)
);
-- One row per applied credit, written in the inbox transaction of its Kafka record.
-- transfer_id is deliberately NOT unique: the inbox alone makes each credit happen once,
-- and reconciliation checks it independently. A production ledger would add
-- UNIQUE (transfer_id) as a second guard.
CREATE TABLE IF NOT EXISTS bank_b.credits (
  id            bigserial PRIMARY KEY,
  transfer_id   text NOT NULL,
  from_account  text NOT NULL,
  to_account    text NOT NULL REFERENCES bank_b.accounts,
  amount        bigint NOT NULL CHECK (amount > 0),
  message_id    text NOT NULL,
  applied_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS credits_transfer_id ON bank_b.credits (transfer_id);
CREATE INDEX IF NOT EXISTS credits_to_account ON bank_b.credits (to_account);
)sql";

std::string EncodeTransfer(const Transfer& t) {
  return nlohmann::json{{"transfer_id", t.id}, {"from", t.from}, {"to", t.to}, {"amount", t.amount}}.dump();
}

Transfer DecodeTransfer(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw std::invalid_argument("not a JSON object");
  auto text = [&](const char* field) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string() || it->get<std::string>().empty()) {
      throw std::invalid_argument(std::string("field ") + field + " must be a non-empty string");
    }
    return it->get<std::string>();
  };
  Transfer t;
  t.id = text("transfer_id");
  t.from = text("from");
  t.to = text("to");
  auto amount = j.find("amount");
  if (amount == j.end() || !amount->is_number_integer() || amount->get<std::int64_t>() <= 0) {
    throw std::invalid_argument("field amount must be a positive integer");
  }
  t.amount = amount->get<std::int64_t>();
  return t;
}

std::string AccountId(char bank, int n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%c-%04d", bank, n);
  return buf;
}

std::chrono::milliseconds ParseDuration(std::string_view text) {
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || n < 0) throw std::invalid_argument("bad duration '" + std::string(text) + "'");
  std::string_view unit{end, static_cast<size_t>(text.data() + text.size() - end)};
  if (unit.empty() || unit == "ms") return std::chrono::milliseconds(n);
  if (unit == "s") return std::chrono::seconds(n);
  if (unit == "m") return std::chrono::minutes(n);
  throw std::invalid_argument("bad duration '" + std::string(text) + "' (use ms, s or m)");
}

Flags::Flags(int argc, char** argv, int first, const std::map<std::string, bool>& known) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      errors_.push_back("unexpected argument '" + arg + "'");
      continue;
    }
    std::string name = arg.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    auto it = known.find(name);
    if (it == known.end()) {
      errors_.push_back("unknown option --" + name);
      continue;
    }
    if (!it->second) {
      if (inline_value) errors_.push_back("--" + name + " takes no value");
      values_[name].push_back("true");
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        errors_.push_back("--" + name + " needs a value");
        continue;
      }
      value = argv[++i];
    }
    values_[name].push_back(value);
  }
}

std::string Flags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Flags::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string Flags::Need(const std::string& name) {
  auto v = Get(name);
  if (v.empty()) errors_.push_back("--" + name + " is required");
  return v;
}

std::int64_t Flags::Int(const std::string& name, std::int64_t fallback, std::int64_t min, std::int64_t max) {
  if (!Has(name)) return fallback;
  auto text = Get(name);
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < min || n > max) {
    errors_.push_back("--" + name + " must be an integer from " + std::to_string(min) + " to " +
                      std::to_string(max) + ", got '" + text + "'");
    return fallback;
  }
  return n;
}

std::chrono::milliseconds Flags::Duration(const std::string& name, std::chrono::milliseconds fallback) {
  if (!Has(name)) return fallback;
  try {
    return ParseDuration(Get(name));
  } catch (const std::invalid_argument& e) {
    errors_.push_back("--" + name + ": " + e.what());
    return fallback;
  }
}

std::map<std::string, std::string> Flags::KeyValues(const std::string& name) {
  std::map<std::string, std::string> out;
  for (const auto& kv : All(name)) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors_.push_back("--" + name + " expects KEY=VALUE, got '" + kv + "'");
      continue;
    }
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

bool IsTransient(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) || dynamic_cast<const pqxx::in_doubt_error*>(&e)) {
    return true;
  }
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    // 08: connection exception; 57P01..57P03: admin/crash shutdown, cannot connect now;
    // 40001/40P01: serialization failure, deadlock.
    return state.rfind("08", 0) == 0 || state == "57P01" || state == "57P02" || state == "57P03" ||
           state == "40001" || state == "40P01";
  }
  return false;
}

Connection::Connection(std::string conninfo, std::chrono::milliseconds patience)
    : conninfo_(std::move(conninfo)), patience_(patience) {}

pqxx::connection& Connection::Get() {
  if (conn_ && conn_->is_open()) return *conn_;
  conn_.reset();
  auto deadline = std::chrono::steady_clock::now() + patience_;
  for (int attempt = 1;; ++attempt) {
    try {
      conn_ = std::make_unique<pqxx::connection>(conninfo_);
      return *conn_;
    } catch (const std::exception& e) {
      // A server that is restarting refuses connections for a moment (or answers 57P03).
      if (!IsTransient(e) || std::chrono::steady_clock::now() >= deadline) throw;
    }
    Backoff(attempt);
  }
}

void Backoff(int attempt) {
  static const outbox::RetryPolicy kPolicy = [] {
    outbox::RetryPolicy p;
    p.initial_delay = std::chrono::milliseconds(50);
    p.max_delay = std::chrono::milliseconds(2000);
    p.jitter = 0.5;
    return p;
  }();
  thread_local std::mt19937 rng{std::random_device{}()};
  std::this_thread::sleep_for(outbox::BackoffDelay(kPolicy, attempt, std::uniform_real_distribution<double>{0, 1}(rng)));
}

}  // namespace transfer
