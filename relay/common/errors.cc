#include "common/errors.h"

namespace outbox::relay {

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(problems.empty() ? "bad configuration" : problems.front()),
      problems_(std::move(problems)) {}

}  // namespace outbox::relay
