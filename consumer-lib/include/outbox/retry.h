#pragma once

#include <chrono>
#include <random>
#include <string>
#include <vector>

namespace outbox {

// How a failing message is retried before it goes to the dead-letter topic.
//
// Attempt n (n >= 1) that fails is followed, if n < max_attempts, by a delay drawn
// uniformly from [base * (1 - jitter), base] where
//   base = min(max_delay, initial_delay * multiplier^(n - 1)).
// Jitter only shortens a delay, so max_delay is a hard upper bound and many consumers
// failing together do not retry in lockstep.
struct RetryPolicy {
  // Delay after the first failed attempt (before jitter).
  std::chrono::milliseconds initial_delay{200};
  // Growth factor of the delay per failed attempt (>= 1).
  double multiplier = 2.0;
  // Upper bound of any delay (>= initial_delay).
  std::chrono::milliseconds max_delay{60000};
  // Handler attempts in total, the first one included (>= 1). After the last one fails
  // the message goes to <topic>.dlq. 1 = no retries.
  int max_attempts = 5;
  // Fraction of the delay that is random, in [0, 1]. 0 = deterministic delays.
  double jitter = 0.2;
};

// Every problem of `policy`, one sentence each (empty when valid). Field names are
// prefixed by `prefix` (e.g. "retry.").
std::vector<std::string> Validate(const RetryPolicy& policy, const std::string& prefix = "retry.");

// The delay after failed attempt `failed_attempt` (>= 1). `unit_random` in [0, 1) picks
// the point in the jitter range (0 = the longest delay, the base). Pure: testable.
std::chrono::milliseconds BackoffDelay(const RetryPolicy& policy, int failed_attempt,
                                       double unit_random);

// Reconnect backoff: the wait before the next attempt to reach a server (PostgreSQL,
// Kafka, an HTTP endpoint) after consecutive failures, drawn with BackoffDelay from
// `policy` (its max_attempts is ignored: reconnecting never gives up). A success starts
// over from policy.initial_delay. Not thread-safe: one per connection owner.
class ReconnectBackoff {
 public:
  // 100 ms, doubling up to 5 s, jitter 0.2: the relay's and the consumer's reconnects.
  ReconnectBackoff();
  // Throws outbox::Error if Validate(policy) finds a problem.
  explicit ReconnectBackoff(const RetryPolicy& policy);

  // Records a failed attempt; returns how long to wait before the next one.
  std::chrono::milliseconds Failed();
  // Records a success: the next failure waits policy.initial_delay again.
  void Succeeded() { failures_ = 0; }
  // Failures since the last success.
  int failures() const { return failures_; }

 private:
  RetryPolicy policy_;
  int failures_ = 0;
  std::minstd_rand rng_;
};

}  // namespace outbox
