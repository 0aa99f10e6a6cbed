#pragma once

// What the money-transfer example's programs share (docs/transfer.md): the transfer
// message, both banks' schemas, flag parsing and reconnecting to PostgreSQL.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

namespace transfer {

// A transfer as bank A publishes it: the Kafka record's value (JSON), keyed by `to`.
struct Transfer {
  std::string id;           // unique; also the half message's gid in variant 2
  std::string from;         // bank A account debited
  std::string to;           // bank B account credited (the Kafka key)
  std::int64_t amount = 0;  // cents, > 0
};

// {"transfer_id":"...","from":"...","to":"...","amount":123}
std::string EncodeTransfer(const Transfer& t);
// Throws std::invalid_argument unless `json` is a well-formed transfer (all four fields,
// non-empty strings, amount > 0).
Transfer DecodeTransfer(std::string_view json);

// "A-0001", "B-0042": account n (from 1) of bank `bank`.
std::string AccountId(char bank, int n);

// Bank A (schema bank_a): accounts, and one row per committed transfer (the debit).
// Idempotent.
extern const char* const kBankASchemaSql;
// Bank B (schema bank_b): accounts, and one row per applied credit. Idempotent.
extern const char* const kBankBSchemaSql;

// The topic and consumer group the programs use unless told otherwise.
inline constexpr const char* kDefaultTopic = "transfers";
inline constexpr const char* kDefaultGroup = "bank-b";

// "250ms", "5s", "2m" (a bare number is milliseconds). Throws std::invalid_argument.
std::chrono::milliseconds ParseDuration(std::string_view text);

// Flags after a subcommand: "--name value", "--name=value", or "--switch". Every problem
// (unknown flag, missing value, bad number, missing required flag) is collected in
// errors() so a program reports them all at once.
class Flags {
 public:
  // `known`: flag name (without "--") -> whether it takes a value.
  Flags(int argc, char** argv, int first, const std::map<std::string, bool>& known);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // The last value given, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // Every value of a repeatable flag, in order.
  std::vector<std::string> All(const std::string& name) const;
  // Like Get, but records an error when absent or empty.
  std::string Need(const std::string& name);
  std::int64_t Int(const std::string& name, std::int64_t fallback, std::int64_t min, std::int64_t max);
  std::chrono::milliseconds Duration(const std::string& name, std::chrono::milliseconds fallback);
  // KEY=VALUE values of a repeatable flag as a map.
  std::map<std::string, std::string> KeyValues(const std::string& name);

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> errors_;
};

// True for failures that a new connection may cure: the connection or the server went
// away (restart, network), a commit whose outcome is unknown, a deadlock or
// serialization failure. The caller reconnects and retries, after checking whether an
// in-doubt commit happened (which is why every write here is keyed by a transfer id).
bool IsTransient(const std::exception& e);

// A connection that is opened on first use and again after Reset(). Not thread-safe.
class Connection {
 public:
  // `patience`: how long Get() keeps retrying a connection that cannot be opened.
  Connection(std::string conninfo, std::chrono::milliseconds patience);
  // The open connection; (re)connects with backoff. Throws the last error once
  // `patience` has passed without a connection.
  pqxx::connection& Get();
  // Drops the connection (after a transient error); the next Get() reconnects.
  void Reset() { conn_.reset(); }

 private:
  std::string conninfo_;
  std::chrono::milliseconds patience_;
  std::unique_ptr<pqxx::connection> conn_;
};

// Sleeps outbox::BackoffDelay for retry number `attempt` (from 1): 50 ms doubling to 2 s,
// up to half of it random.
void Backoff(int attempt);

}  // namespace transfer
