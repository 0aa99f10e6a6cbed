#pragma once

// Best-effort notifications ("maximum-effort notify"): tell a third party (a merchant
// webhook, a partner system) about a result, retrying on a growing schedule.
//
//   // Inside the business transaction (nothing is sent unless it commits):
//   auto id = outbox::Notify(tx, "https://merchant.example/hooks/paid", R"({"order":42})",
//                            {{"Content-Type", "application/json"}});
//
//   // The worker that sends them is a daemon: `outbox-relay notify` (relay/webhooks/).
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
std::int64_t Notify(pqxx::transaction_base& tx, std::string_view url, std::string_view body,
                    const Headers& headers = {},
                    const std::optional<std::vector<std::chrono::milliseconds>>& schedule = std::nullopt);

enum class NotificationState { kPending, kDelivered, kExhausted };

// "pending", "delivered", "exhausted" (the values of inbox.notifications.state).
const char* ToString(NotificationState state);
// The inverse of ToString; anything else reads as kPending.
NotificationState ParseNotificationState(std::string_view state);

struct NotificationStatus {
  std::int64_t id = 0;
  NotificationState state = NotificationState::kPending;
  int attempts = 0;                      // attempts finished
  int max_attempts = 0;                  // schedule length + 1
  bool in_flight = false;                // a worker is sending attempt attempts + 1
  std::optional<int> last_status_code;   // HTTP status of the last finished attempt
  std::string last_error;                // why the last finished attempt failed, if it did
  // Start of the last answer body; empty unless the worker keeps replies
  // (`outbox-relay notify --store-replies`, NotifierOptions::store_replies).
  std::string last_response;
};

// The status of one notification (SELECT * FROM inbox.notification_status(id)), or
// nothing for an unknown (or purged) id.
std::optional<NotificationStatus> NotificationStatusOf(pqxx::transaction_base& tx, std::int64_t id);

// Retention: deletes delivered and exhausted notifications (with their attempts) that
// finished more than `older_than` ago, at most `batch_size` per batch. Pending
// notifications are never deleted. Returns the number deleted. Equivalent SQL:
// SELECT inbox.purge_notifications('7 days', 1000) until it returns less than 1000.
// (`outbox-relay notify --retention` does this for you.)

// Every batch in its own transaction on `conn` (which must have none open). Throws
// outbox::Error on bad arguments, outbox::DatabaseError if the database fails.
std::int64_t PurgeNotifications(pqxx::connection_base& conn, std::chrono::seconds older_than,
                                int batch_size = 1000);

// One batch in the caller's transaction. Throws outbox::Error on bad arguments; pqxx
// exceptions from tx propagate.
std::int64_t PurgeNotificationsBatch(pqxx::transaction_base& tx, std::chrono::seconds older_than,
                                     int batch_size = 1000);

}  // namespace outbox
