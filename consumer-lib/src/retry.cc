#include "outbox/retry.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "outbox/error.h"

namespace outbox {

std::vector<std::string> Validate(const RetryPolicy& p, const std::string& prefix) {
  std::vector<std::string> problems;
  if (p.initial_delay.count() < 0)
    problems.push_back(prefix + "initial_delay must not be negative");
  if (!(p.multiplier >= 1.0) || !std::isfinite(p.multiplier)) {
    problems.push_back(prefix + "multiplier must be a finite number >= 1");
  }
  if (p.max_delay < p.initial_delay)
    problems.push_back(prefix + "max_delay must be >= initial_delay");
  if (p.max_attempts < 1) problems.push_back(prefix + "max_attempts must be >= 1");
  if (!(p.jitter >= 0.0 && p.jitter <= 1.0))
    problems.push_back(prefix + "jitter must be in [0, 1]");
  return problems;
}

std::chrono::milliseconds BackoffDelay(const RetryPolicy& p, int failed_attempt,
                                       double unit_random) {
  // Computed in double so a large exponent saturates at max_delay instead of overflowing.
  double base = static_cast<double>(p.initial_delay.count()) *
                std::pow(p.multiplier, static_cast<double>(std::max(failed_attempt, 1) - 1));
  base = std::min(base, static_cast<double>(p.max_delay.count()));
  double u = std::clamp(unit_random, 0.0, 1.0);
  double delay = base * (1.0 - p.jitter * u);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(delay)));
}

namespace {

RetryPolicy DefaultReconnectPolicy() {
  RetryPolicy p;
  p.initial_delay = std::chrono::milliseconds(100);
  p.multiplier = 2.0;
  p.max_delay = std::chrono::milliseconds(5000);
  p.max_attempts = 1;  // unused
  p.jitter = 0.2;
  return p;
}

}  // namespace

ReconnectBackoff::ReconnectBackoff() : ReconnectBackoff(DefaultReconnectPolicy()) {}

ReconnectBackoff::ReconnectBackoff(const RetryPolicy& policy)
    : policy_(policy), rng_(std::random_device{}()) {
  auto problems = Validate(policy, "reconnect backoff: ");
  if (!problems.empty()) throw Error(problems.front());
}

std::chrono::milliseconds ReconnectBackoff::Failed() {
  if (failures_ < std::numeric_limits<int>::max()) ++failures_;
  return BackoffDelay(policy_, failures_, std::uniform_real_distribution<double>{0.0, 1.0}(rng_));
}

}  // namespace outbox
