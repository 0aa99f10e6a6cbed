#include "outbox/notifications.h"

#include "database_errors.h"
#include "headers_json.h"
#include "transaction_start.h"

#include <nlohmann/json.hpp>

namespace outbox {
namespace {

using std::chrono::milliseconds;

// interval[] literal, e.g. {"200 milliseconds","400 milliseconds"}.
std::string IntervalArray(const std::vector<milliseconds>& schedule) {
  std::string out = "{";
  for (size_t i = 0; i < schedule.size(); ++i) {
    if (i) out += ',';
    out += '"' + std::to_string(schedule[i].count()) + " milliseconds\"";
  }
  return out + "}";
}

}  // namespace

const char* ToString(NotificationState state) {
  switch (state) {
    case NotificationState::kPending:
      return "pending";
    case NotificationState::kDelivered:
      return "delivered";
    case NotificationState::kExhausted:
      return "exhausted";
  }
  return "pending";
}

NotificationState ParseNotificationState(std::string_view s) {
  if (s == "delivered") return NotificationState::kDelivered;
  if (s == "exhausted") return NotificationState::kExhausted;
  return NotificationState::kPending;
}

std::int64_t Notify(pqxx::transaction_base& tx, std::string_view url, std::string_view body, const Headers& headers,
                    const std::optional<std::vector<milliseconds>>& schedule) {
  internal::StartTransaction(tx);
  // libpqxx 6 sends parameters as text: pass the body as bytea via binarystring.
  pqxx::binarystring bytes{body.data(), body.size()};
  if (schedule) {
    return tx
        .exec_params1("SELECT inbox.notify($1, $2::bytea, $3::jsonb, $4::interval[])", std::string(url), bytes,
                      internal::HeadersJson(headers), IntervalArray(*schedule))[0]
        .as<std::int64_t>();
  }
  return tx.exec_params1("SELECT inbox.notify($1, $2::bytea, $3::jsonb)", std::string(url), bytes,
                         internal::HeadersJson(headers))[0]
      .as<std::int64_t>();
}

std::optional<NotificationStatus> NotificationStatusOf(pqxx::transaction_base& tx, std::int64_t id) {
  internal::StartTransaction(tx);
  auto r = tx.exec_params(
      "SELECT id, state, attempts, max_attempts, in_flight, last_status_code, "
      "coalesce(last_error, ''), coalesce(last_response, '') FROM inbox.notification_status($1)",
      id);
  if (r.empty()) return std::nullopt;
  NotificationStatus s;
  s.id = r[0][0].as<std::int64_t>();
  s.state = ParseNotificationState(r[0][1].as<std::string>());
  s.attempts = r[0][2].as<int>();
  s.max_attempts = r[0][3].as<int>();
  s.in_flight = r[0][4].as<bool>();
  if (!r[0][5].is_null()) s.last_status_code = r[0][5].as<int>();
  s.last_error = r[0][6].as<std::string>();
  s.last_response = r[0][7].as<std::string>();
  return s;
}

std::int64_t PurgeNotificationsBatch(pqxx::transaction_base& tx, std::chrono::seconds older_than, int batch_size) {
  if (older_than.count() < 0) throw Error("outbox::PurgeNotifications: older_than must not be negative");
  if (batch_size < 1) throw Error("outbox::PurgeNotifications: batch_size must be at least 1");
  internal::StartTransaction(tx);
  return tx
      .exec_params1("SELECT inbox.purge_notifications($1::interval, $2)",
                    std::to_string(older_than.count()) + " seconds", batch_size)[0]
      .as<std::int64_t>();
}

std::int64_t PurgeNotifications(pqxx::connection_base& conn, std::chrono::seconds older_than, int batch_size) {
  if (older_than.count() < 0) throw Error("outbox::PurgeNotifications: older_than must not be negative");
  if (batch_size < 1) throw Error("outbox::PurgeNotifications: batch_size must be at least 1");
  return internal::TranslateDatabaseErrors("outbox::PurgeNotifications", [&] {
    std::int64_t total = 0;
    while (true) {
      pqxx::work tx{conn};
      auto n = PurgeNotificationsBatch(tx, older_than, batch_size);
      tx.commit();
      total += n;
      if (n < batch_size) return total;
    }
  });
}

}  // namespace outbox
