#include "inbox.h"

#include "headers_json.h"

#include <nlohmann/json.hpp>
#include <set>

namespace outbox::internal {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if invalid.
size_t Utf8Length(const std::string& s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return 0;
  }
  return n;
}

Headers HeadersFromJson(const std::string& text) {
  Headers h;
  const nlohmann::json j = nlohmann::json::parse(text);
  for (auto it = j.cbegin(); it != j.cend(); ++it) h[it.key()] = it.value().get<std::string>();
  return h;
}

// libpqxx 6 has no nullable binary parameter: a flag plus a (possibly empty) binarystring.
pqxx::binarystring Bytes(const std::optional<std::string>& s) {
  return s ? pqxx::binarystring{s->data(), s->size()} : pqxx::binarystring{"", 0};
}

}  // namespace

std::string CleanText(const std::string& s, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8Length(s, i);
    if (n == 0 || s[i] == '\0') {
      if (out.size() + 1 > max_bytes) break;
      out += '?';
      ++i;
      continue;
    }
    if (out.size() + n > max_bytes) break;
    out.append(s, i, n);
    i += n;
  }
  return out;
}

std::optional<std::string> ClaimInbox(pqxx::work& tx, const std::string& group, const Message& m,
                                      bool skip_if_parked) {
  auto r = tx.exec_params(
      "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\") "
      "SELECT $1::text, $2::text, $3::text, $4::integer, $5::bigint WHERE NOT ($6::boolean AND "
      "EXISTS ("
      "  SELECT 1 FROM inbox.retries WHERE group_id = $1 AND message_id = $2)) "
      "ON CONFLICT (group_id, message_id) DO NOTHING RETURNING processed_at::text",
      group, m.message_id, m.topic, m.partition, m.offset, skip_if_parked);
  if (r.empty()) return std::nullopt;
  return r[0][0].as<std::string>();
}

namespace {

// The batch's rows as one JSON array parameter (libpqxx 6 has no array parameters; ids
// are valid UTF-8 without NUL, see message_id.h).
std::string RowsJson(const std::vector<const Message*>& messages) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Message* m : messages) {
    rows.push_back({{"id", m->message_id}, {"t", m->topic}, {"p", m->partition}, {"o", m->offset}});
  }
  return rows.dump();
}

}  // namespace

std::vector<bool> KnownMessages(pqxx::work& tx, const std::string& group,
                                const std::vector<const Message*>& messages,
                                bool skip_if_parked, std::string& started_at) {
  // One index probe per record (LATERAL ... LIMIT 1 keeps the plan a nested loop): a
  // join or IN would let the planner scan all of the group's inbox rows, which grow
  // without bound between retention runs.
  auto r = tx.exec_params(
      "SELECT now()::text, NULL::text UNION ALL "
      "SELECT NULL, b.r->>'id' FROM jsonb_array_elements($2::jsonb) b(r) "
      "CROSS JOIN LATERAL (SELECT 1 FROM inbox.messages m "
      "  WHERE m.group_id = $1 AND m.message_id = b.r->>'id' LIMIT 1) known "
      "UNION ALL "
      "SELECT NULL, b.r->>'id' FROM jsonb_array_elements($2::jsonb) b(r) "
      "CROSS JOIN LATERAL (SELECT 1 FROM inbox.retries p "
      "  WHERE $3::boolean AND p.group_id = $1 AND p.message_id = b.r->>'id' LIMIT 1) parked",
      group, RowsJson(messages), skip_if_parked);
  std::set<std::string> known;
  for (const auto& row : r) {
    if (!row[0].is_null()) started_at = row[0].as<std::string>();
    if (!row[1].is_null()) known.insert(row[1].as<std::string>());
  }
  std::vector<bool> out;
  out.reserve(messages.size());
  for (const Message* m : messages) out.push_back(known.count(m->message_id) > 0);
  return out;
}

size_t InsertHandled(pqxx::work& tx, const std::string& group,
                     const std::vector<const Message*>& messages) {
  if (messages.empty()) return 0;
  auto r = tx.exec_params(
      "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\") "
      "SELECT $1::text, r->>'id', r->>'t', (r->>'p')::integer, (r->>'o')::bigint "
      "FROM jsonb_array_elements($2::jsonb) r "
      "ON CONFLICT (group_id, message_id) DO NOTHING",
      group, RowsJson(messages));
  return static_cast<size_t>(r.affected_rows());
}

void MarkDeadLettered(pqxx::work& tx, const std::string& group, const Message& m) {
  tx.exec_params(
      "INSERT INTO inbox.messages (group_id, message_id, topic, \"partition\", \"offset\", "
      "outcome) "
      "VALUES ($1, $2, $3, $4, $5, 'dead_lettered') ON CONFLICT (group_id, message_id) DO NOTHING",
      group, m.message_id, m.topic, m.partition, m.offset);
}

int FailedAttempts(pqxx::work& tx, const std::string& group, const std::string& message_id) {
  return tx
      .exec_params1(
          "SELECT coalesce(max(attempt), 0) FROM inbox.attempts WHERE group_id = $1 AND message_id "
          "= $2",
          group, message_id)[0]
      .as<int>();
}

void RecordFailedAttempt(pqxx::work& tx, const std::string& group, const Message& m, int attempt,
                         const std::string& started_at, const std::string& error, bool permanent,
                         std::optional<std::chrono::milliseconds> next_delay) {
  tx.exec_params(
      "INSERT INTO inbox.attempts (group_id, message_id, attempt, topic, \"partition\", "
      "\"offset\", "
      "  started_at, error, error_kind, next_attempt_at) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8, $9, "
      "  CASE WHEN $10 THEN clock_timestamp() + make_interval(secs => $11 / 1000.0) END)",
      group, m.message_id, attempt, m.topic, m.partition, m.offset, started_at,
      CleanText(error, 4000), std::string(permanent ? "permanent" : "retryable"),
      next_delay.has_value(), next_delay ? static_cast<double>(next_delay->count()) : 0.0);
}

void Park(pqxx::work& tx, const std::string& group, const Parked& p,
          std::chrono::milliseconds delay) {
  const Message& m = p.message;
  tx.exec_params(
      "INSERT INTO inbox.retries (group_id, message_id, topic, \"partition\", \"offset\", key, "
      "payload, "
      "  headers, attempts, last_error, last_error_kind, dead_letter, next_attempt_at) "
      "VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $7::bytea END, CASE WHEN $8 THEN $9::bytea "
      "END, "
      "  $10::jsonb, $11, $12, $13, $14, clock_timestamp() + make_interval(secs => $15 / 1000.0)) "
      "ON CONFLICT (group_id, message_id) DO UPDATE SET attempts = excluded.attempts, "
      "  last_error = excluded.last_error, last_error_kind = excluded.last_error_kind, "
      "  dead_letter = excluded.dead_letter, next_attempt_at = excluded.next_attempt_at",
      group, m.message_id, m.topic, m.partition, m.offset, m.key.has_value(), Bytes(m.key),
      m.payload.has_value(), Bytes(m.payload), internal::HeadersJson(m.headers), p.attempts,
      CleanText(p.last_error, 4000), std::string(p.permanent ? "permanent" : "retryable"),
      p.dead_letter, static_cast<double>(delay.count()));
}

std::optional<Parked> LockDueParked(pqxx::work& tx, const std::string& group) {
  auto r = tx.exec_params(
      "SELECT message_id, topic, \"partition\", \"offset\", key, payload, headers::text, attempts, "
      "  last_error, last_error_kind = 'permanent', dead_letter "
      "FROM inbox.retries WHERE group_id = $1 AND next_attempt_at <= clock_timestamp() "
      "ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
      group);
  if (r.empty()) return std::nullopt;
  const auto& row = r[0];
  Parked p;
  Message& m = p.message;
  m.message_id = row[0].as<std::string>();
  m.topic = row[1].as<std::string>();
  m.partition = row[2].as<std::int32_t>();
  m.offset = row[3].as<std::int64_t>();
  if (!row[4].is_null()) m.key = pqxx::binarystring{row[4]}.str();
  if (!row[5].is_null()) m.payload = pqxx::binarystring{row[5]}.str();
  m.headers = HeadersFromJson(row[6].as<std::string>());
  p.attempts = row[7].as<int>();
  p.last_error = row[8].as<std::string>();
  p.permanent = row[9].as<bool>();
  p.dead_letter = row[10].as<bool>();
  return p;
}

void DeleteParked(pqxx::work& tx, const std::string& group, const std::string& message_id) {
  tx.exec_params("DELETE FROM inbox.retries WHERE group_id = $1 AND message_id = $2", group,
                 message_id);
}

}  // namespace outbox::internal
