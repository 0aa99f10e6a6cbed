#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace outbox::relay {

// Bad configuration or usage: exit code 2. Carries every problem found, one per line,
// none of which may contain a secret.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// A failure while running (database or Kafka unusable, ...): exit code 1.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum ExitCode : int { kExitOk = 0, kExitRuntime = 1, kExitUsage = 2 };

}  // namespace outbox::relay
