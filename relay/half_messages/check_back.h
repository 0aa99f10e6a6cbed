#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include <outbox/retry.h>

#include "core/repeat_log.h"
#include "common/config.h"
#include "webhooks/egress_policy.h"
#include "ops/relay_metrics.h"

namespace spdlog { class logger; }
namespace outbox::internal { class HttpMulti; struct HttpResponse; }

namespace outbox::relay {

class PgConnection;

// What one check-back answer means. Only kCommitted and kRolledBack decide; every other
// result is inconclusive (checked again after --check-interval, parked after --check-max).
enum class CheckResult {
  kCommitted,    // 2xx {"status":"committed"}: publish
  kRolledBack,   // 2xx {"status":"rolled_back"}: discard
  kPending,      // 2xx {"status":"pending"}: the producer does not know yet
  kHttpError,    // an answer that is not 2xx (redirects are not followed)
  kMalformed,    // 2xx but not {"status": one of the three}
  kUnreachable,  // no answer: connection refused, DNS, TLS, timeout
};

// The metric label / log name of a result: committed, rolled_back, pending, http_error,
// malformed, unreachable.
const char* CheckResultName(CheckResult r);

struct ClassifiedAnswer {
  CheckResult result;
  std::string detail;  // why it is inconclusive (no URL, no body beyond a short prefix)
};

// The one classifier of check-back answers. status 0 = no answer (transport_error says
// why).
ClassifiedAnswer ClassifyCheckAnswer(int status, const std::string& transport_error, const std::string& body);

// check_url with gid appended as a query parameter (?gid= or &gid=), percent-encoded.
std::string CheckRequestUrl(const std::string& check_url, const std::string& gid);

// The relay's check-back of half messages (docs/half-messages.md), on its own thread and
// PostgreSQL session (never the relay loop's). It claims due half messages through
// outbox.claim_prepared_checks (FOR UPDATE SKIP LOCKED plus a lease, so with several
// relays each one is checked by one relay at a time and a dead relay's claim expires),
// sends at most config.check_concurrency GETs at once, and records each answer with
// outbox.record_prepared_check: committed -> published, rolled_back -> discarded,
// anything else -> checked again after check_interval (with jitter) and parked after
// check_max such checks. Reconnects with backoff when PostgreSQL goes away, and backs off
// (capped exponential, with jitter) while a statement keeps failing. Also keeps
// the outbox_relay_prepared gauge fresh and purges old committed/rolled-back tombstones.
// Logs show gid and host:port, never the check URL (it may carry a token).
class CheckBack {
 public:
  // Starts the thread. config must outlive this object.
  CheckBack(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayMetrics& metrics);
  // Stop() and join.
  ~CheckBack();
  CheckBack(const CheckBack&) = delete;
  CheckBack& operator=(const CheckBack&) = delete;

  // Asks the thread to stop: requests in flight are aborted and their claims handed
  // back (due again at once, not counted). Returns at once; thread-safe.
  void Stop();

 private:
  using Clock = std::chrono::steady_clock;
  struct InFlight {
    std::string gid;
    std::string host;
    std::string token;
    int attempt = 0;
  };

  void Loop();
  void Connect();
  void OnDbError(const std::exception& e, bool connection_lost, const std::string& sqlstate);
  int Claim(int max_rows);
  void Finish(std::uint64_t tag, const internal::HttpResponse& response);
  void ReleaseInFlight();
  void RefreshGauge();
  void Purge();
  std::chrono::milliseconds Jittered(std::chrono::milliseconds d, double spread);

  const RunConfig& config_;
  std::shared_ptr<spdlog::logger> log_;
  RelayMetrics& metrics_;
  std::chrono::milliseconds lease_;
  const EgressPolicy egress_;  // which addresses check-back requests may reach
  std::atomic<bool> stopping_{false};
  // Owned by the thread (Stop() only calls its thread-safe Wakeup()).
  std::unique_ptr<internal::HttpMulti> http_;
  std::unique_ptr<PgConnection> conn_;
  std::map<std::uint64_t, InFlight> in_flight_;
  std::uint64_t next_tag_ = 1;
  ReconnectBackoff backoff_;  // PostgreSQL reconnects: 100 ms doubling to 5 s
  RepeatLog repeat_log_;      // connection failures: once per 10 s with their count
  // After a failed statement (the session still up): 500 ms doubling to 30 s, with
  // jitter, so a statement that keeps failing neither spins nor floods the log.
  ReconnectBackoff statement_backoff_;
  // No database work before this: reconnect backoff, or a pause after a failed statement.
  Clock::time_point db_resume_at_{};
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace outbox::relay
