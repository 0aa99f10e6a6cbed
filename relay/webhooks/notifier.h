#pragma once

// The best-effort notification worker (`outbox-relay notify`): claims due rows of
// inbox.notifications and POSTs them (the scheduling side is <outbox/notifications.h>).
//
//   outbox::NotifierOptions opt;
//   opt.conninfo = "host=db dbname=app user=notifier";
//   opt.on_exhausted = [](const outbox::NotificationAttempt& a) { page_someone(a.id); };
//   outbox::Notifier notifier{opt};
//   notifier.Run();                        // until Stop() from another thread

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <outbox/notifications.h>

namespace outbox {

// One finished attempt, as reported to the callbacks.
struct NotificationAttempt {
  std::int64_t id = 0;
  int attempt = 0;                       // 1-based
  int max_attempts = 0;
  std::string host;                      // host:port of the URL (the URL itself may hold secrets)
  int status_code = 0;                   // 0 when no answer arrived
  std::string error;                     // empty when delivered
  std::chrono::microseconds latency{0};
  // The notification's state after this attempt; nullopt when the worker had lost its
  // lease and the result was dropped (another worker owns the attempt).
  std::optional<NotificationState> state;
};

struct NotifierStats {
  std::int64_t pending = 0;              // notifications not yet delivered or exhausted
  std::int64_t due = 0;                  // of those, due now and not in flight (backlog)
  double oldest_due_seconds = 0;         // how late the oldest due one is
  int in_flight = 0;                     // requests this worker has in flight
};

struct NotifierOptions {
  std::string conninfo;                  // libpq conninfo of the database with inbox.notifications
  int max_in_flight = 32;                // concurrent requests of this worker, 1..1000
  int max_per_host = 4;                  // concurrent requests to one host:port, 1..max_in_flight
  std::chrono::milliseconds connect_timeout{5000};   // TCP + TLS handshake (within request_timeout)
  std::chrono::milliseconds request_timeout{15000};  // one whole attempt
  // How long a claimed attempt belongs to this worker. Must exceed request_timeout (by
  // at least 1 s); after it, a crashed worker's attempt is sent again by another.
  std::chrono::milliseconds lease{60000};
  std::chrono::milliseconds poll_interval{500};      // look for due notifications this often
  std::chrono::milliseconds stats_interval{5000};    // on_stats period
  // A silent network ends the worker's PostgreSQL session within this, on both ends: a
  // statement fails (the worker reconnects) instead of hanging for TCP's ~15 minutes.
  // 4s..1h (relay/pg/session_timeout.h).
  std::chrono::milliseconds session_timeout{20000};
  // Delete delivered/exhausted notifications older than this (checked every
  // retention_interval); 0 = keep them forever.
  std::chrono::milliseconds retention{std::chrono::hours(24 * 7)};
  std::chrono::milliseconds retention_interval{std::chrono::minutes(10)};
  std::string user_agent = "outbox-notifier";
  // Hosts and CIDRs requests may reach besides public addresses (comma-separated; empty =
  // public addresses only). See relay/webhooks/egress_policy.h.
  std::string egress_allow;
  // Store the start of each answer body (512 bytes, printable ASCII) in
  // inbox.notification_attempts.response (notification_status shows it as
  // last_response). Off: replies are read and dropped; a receiver's reply may hold data
  // this database should not keep (docs/security.md).
  bool store_replies = false;

  // Callbacks run on the thread that called Run(); keep them quick and don't throw.
  std::function<void(const NotificationAttempt&)> on_attempt;    // every finished attempt
  std::function<void(const NotificationAttempt&)> on_exhausted;  // after the last attempt failed
  std::function<void(const NotifierStats&)> on_stats;            // every stats_interval
  // A database problem (the worker reconnects with backoff and goes on). Text only; it
  // never contains the conninfo's password.
  std::function<void(const std::string&)> on_error;
};

// The notification worker. One thread calls Run(); Stop() may be called from any thread.
class Notifier {
 public:
  // Validates the options; throws outbox::Error listing every problem.
  explicit Notifier(NotifierOptions options);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Claims due notifications and delivers them until Stop(); then stops claiming,
  // waits for the requests in flight (at most request_timeout), records them and
  // returns. Database outages are reported to on_error and retried; returns normally
  // only after Stop(). Throws outbox::Error if the schema is missing at start.
  void Run();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outbox
