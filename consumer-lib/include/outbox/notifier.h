#pragma once

// Best-effort notifications ("maximum-effort notify"): tell a third party (a merchant
// webhook, a partner system) about a result, retrying on a growing schedule.
//
//   // Inside the business transaction (nothing is sent unless it commits):
//   auto id = outbox::Notify(tx, "https://merchant.example/hooks/paid", R"({"order":42})",
//                            {{"Content-Type", "application/json"}});
//
//   // The worker (what `outbox-relay notify` runs), in a process of your choice:
//   outbox::NotifierOptions opt;
//   opt.conninfo = "host=db dbname=app user=notifier";
//   opt.on_exhausted = [](const outbox::NotificationAttempt& a) { page_someone(a.id); };
//   outbox::Notifier notifier{opt};
//   notifier.Run();                        // until Stop() from another thread
//
// Per notification: attempt 1 at once, then one attempt after each interval of the
// schedule (default 1m 5m 10m 30m 1h 2h 5h 10h: 9 attempts). Each attempt POSTs the body
// with the caller's headers plus Notification-Id (the id) and Notification-Attempt
// (1-based). A 2xx answer delivers it; anything else (other status, timeout, refused
// connection) waits for the next interval; after the last attempt it is `exhausted`.
// Every attempt is a row of inbox.notification_attempts; receivers can ask for the
// result with inbox.notification_status(id) (NotificationStatusOf below).
//
// Delivery is at-least-once: a worker holds a lease on the attempt it sends; if it dies
// mid-request the attempt is sent again (same attempt number) when the lease expires.
// Several workers may run against one database; they never send one attempt twice
// while the lease outlives the request (enforced: lease > request_timeout).
// Receivers should treat Notification-Id as an idempotency key.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

#include "outbox/error.h"
#include "outbox/message.h"

namespace outbox {

// Schedules a notification inside the caller's transaction (SELECT inbox.notify(...)).
// `schedule` = the waits after attempt 1, 2, ...; absent = the default schedule. It must
// be 1 to 32 positive intervals of at most 7 days, in non-decreasing order. Returns the
// notification id (the Notification-Id header). Throws pqxx::sql_error with a clear
// message on a bad URL (http/https only), headers or schedule (the transaction is then
// aborted).
std::int64_t Notify(pqxx::work& tx, std::string_view url, std::string_view body,
                    const Headers& headers = {},
                    const std::optional<std::vector<std::chrono::milliseconds>>& schedule = std::nullopt);

enum class NotificationState { kPending, kDelivered, kExhausted };

// "pending", "delivered", "exhausted" (the values of inbox.notifications.state).
const char* ToString(NotificationState state);

struct NotificationStatus {
  std::int64_t id = 0;
  NotificationState state = NotificationState::kPending;
  int attempts = 0;                      // attempts finished
  int max_attempts = 0;                  // schedule length + 1
  bool in_flight = false;                // a worker is sending attempt attempts + 1
  std::optional<int> last_status_code;   // HTTP status of the last finished attempt
  std::string last_error;                // why the last finished attempt failed, if it did
  std::string last_response;             // start of the last answer body
};

// The status of one notification (SELECT * FROM inbox.notification_status(id)), or
// nothing for an unknown (or purged) id.
std::optional<NotificationStatus> NotificationStatusOf(pqxx::transaction_base& tx, std::int64_t id);

// Retention: deletes delivered and exhausted notifications (with their attempts) that
// finished more than `older_than` ago, in transactions of at most `batch_size` rows.
// Pending notifications are never deleted. Returns the number deleted. Equivalent SQL:
// SELECT inbox.purge_notifications('7 days', 1000) until it returns less than 1000.
std::int64_t PurgeNotifications(const std::string& conninfo, std::chrono::seconds older_than,
                                int batch_size = 1000);

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
  // Delete delivered/exhausted notifications older than this (checked every
  // retention_interval); 0 = keep them forever.
  std::chrono::milliseconds retention{std::chrono::hours(24 * 7)};
  std::chrono::milliseconds retention_interval{std::chrono::minutes(10)};
  std::string user_agent = "outbox-notifier";

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
