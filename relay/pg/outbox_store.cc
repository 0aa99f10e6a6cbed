#include "pg/outbox_store.h"

#include <nlohmann/json.hpp>
#include <set>

namespace outbox::relay {

namespace {

// Rows in the column order of the claim and fetch statements, binary format.
std::vector<OutboxRow> DecodeRows(const PGresult* res) {
  int n = PQntuples(res);
  std::vector<OutboxRow> rows(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto& row = rows[static_cast<size_t>(i)];
    row.id = ReadInt8(res, i, 0);
    row.lane = ReadInt4(res, i, 2);
    if (PQgetisnull(res, i, 1)) continue;  // a row the claim only names (known to the caller)
    row.message_id = ReadUuid(res, i, 1);
    row.topic.assign(PQgetvalue(res, i, 3), static_cast<size_t>(PQgetlength(res, i, 3)));
    row.key = ReadBytes(res, i, 4);
    row.payload = ReadBytes(res, i, 5);
    std::string_view headers{PQgetvalue(res, i, 6), static_cast<size_t>(PQgetlength(res, i, 6))};
    if (headers != "{}") {
      auto j = nlohmann::json::parse(headers);
      for (auto it = j.begin(); it != j.end(); ++it) {
        row.headers.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
      }
    }
  }
  return rows;
}

}  // namespace

PgOutboxStore::PgOutboxStore(const std::string& conninfo, const std::string& application_name,
                             std::chrono::milliseconds session_timeout)
    : conninfo_(conninfo), application_name_(application_name), session_timeout_(session_timeout) {
  conn_ = std::make_unique<PgConnection>(conninfo, application_name, session_timeout);
  Open();
  OpenDeleter();
}

PgOutboxStore::~PgOutboxStore() {
  // Rows whose delete is lost are published again by the lane's next owner: wait a little
  // for what was asked (a shutdown's last deletes), never long.
  constexpr std::chrono::milliseconds kFinishDeletes{5000};
  try {
    if (!deleter_) return;
    if (sent_ticket_ > done_ticket_) {
      if (!deleter_->WaitReady(kFinishDeletes)) return;
      deleter_->Finish();
      sent_ticket_ = 0;
    }
    if (!delete_queued_.empty()) {
      deleter_->SendPrepared("delete", {ArrayLiteral(delete_queued_.begin(), delete_queued_.end())});
      if (deleter_->WaitReady(kFinishDeletes)) deleter_->Finish();
    }
  } catch (const StoreError&) {
    // Gone: the rows come back and are published again (duplicates, never losses).
  }
}

void PgOutboxStore::OpenDeleter() {
  // Deleting published rows needs no lane lock: any session may do it, and a DELETE by id
  // is idempotent, so after a lost session the same ids are simply sent again.
  deleter_ = std::make_unique<PgConnection>(conninfo_, application_name_ + "-deletes", session_timeout_);
  deleter_->Exec("SET synchronous_commit = off");  // as the main session (see Open)
  deleter_->Prepare("delete", "DELETE FROM outbox.messages WHERE id = ANY($1::bigint[])");
}

std::uint64_t PgOutboxStore::Delete(const std::vector<std::int64_t>& ids) {
  delete_queued_.insert(delete_queued_.end(), ids.begin(), ids.end());
  queued_ticket_ = next_ticket_++;
  PumpDeletes();
  return queued_ticket_;
}

std::uint64_t PgOutboxStore::DeletedUpTo() {
  PumpDeletes();
  return done_ticket_;
}

void PgOutboxStore::FinishDelete() {
  deleter_->Finish();  // throws if the DELETE failed: its rows are sent again (PumpDeletes)
  done_ticket_ = sent_ticket_;
  delete_sent_.clear();
  delete_failing_ = false;
}

void PgOutboxStore::PumpDeletes() {
  try {
    if (!deleter_) OpenDeleter();
    if (sent_ticket_ > done_ticket_) {
      if (!deleter_->Ready()) return;
      FinishDelete();
    }
    if (!delete_queued_.empty()) {
      // Everything queued meanwhile goes in one statement.
      deleter_->SendPrepared("delete", {ArrayLiteral(delete_queued_.begin(), delete_queued_.end())});
      delete_sent_.swap(delete_queued_);
      delete_queued_.clear();
      sent_ticket_ = queued_ticket_;
      if (delete_failing_) {
        // After a refusal, wait for the retry's result: the call that sends it fails or
        // succeeds, so the relay's back-off and /readyz count the failures in a row.
        FinishDelete();
      }
    }
  } catch (const StoreError& e) {
    delete_failing_ = !e.connection_lost();
    // Send the rows again with the next ones (the failed statement may have committed or
    // not: deleting twice is harmless).
    if (sent_ticket_ > done_ticket_) {
      delete_queued_.insert(delete_queued_.end(), delete_sent_.begin(), delete_sent_.end());
      delete_sent_.clear();
      queued_ticket_ = std::max(queued_ticket_, sent_ticket_);
      sent_ticket_ = done_ticket_;
    }
    if (!e.connection_lost()) throw;
    deleter_.reset();
    // Lost: open it again at once (e.g. the backend was terminated). If PostgreSQL is out
    // of reach the main session is too: the relay starts over with a new store.
    OpenDeleter();
  }
}

int PgOutboxStore::LaneCount() {
  auto settings = conn_->Exec("SELECT lane_count FROM outbox.settings");
  if (PQntuples(settings.get()) != 1) {
    throw PgError("outbox.settings is empty: run outbox-relay migrate", "55000", false);
  }
  return std::stoi(PQgetvalue(settings.get(), 0, 0));
}

void PgOutboxStore::Open() {
  LaneCount();  // fails early, with the fix named, if the schema is missing
  conn_->Exec("LISTEN outbox_relay");
  // The relay's own writes (deleting published rows, parking dead letters) need not wait
  // for their WAL flush: if PostgreSQL crashes before the flush, the rows come back and
  // are published again (duplicates, which consumers drop by message_id), never lost.
  // Without this every loop turn waits for an fsync (see docs/performance.md). Producers'
  // commits are not affected: this is a setting of this session only.
  conn_->Exec("SET synchronous_commit = off");
  // Binary results: ids and uuids arrive as raw bytes, payloads without hex decoding.
  // The row comparison restates `lane = c.lane` in a form only the
  // (lane, id) index can use as its start key. Without it the planner prefers walking
  // the primary key in id order and filtering on lane (it rates the pkey's perfect heap
  // correlation above the lane index), which reads every lane's rows to find one lane's:
  // lane_count times the work per claim (see docs/performance.md).
  // Each lane's new rows come while their running size (key + payload + headers, read
  // from the values' headers: no payload is fetched for it) fits in c.max_bytes (with
  // c.take_one the first comes anyway), so a claim over rows of 10 MiB holds one or a
  // few, not batch-size of them. The first row that does not fit comes without payload,
  // flagged in the last column: the store drops it and marks the lane cut.
  // Rows at or below c.known_up_to come as id and lane only: the relay has them in
  // flight (or fetches them whole, when they are late commits).
  // While a switch back from capture mode wal is drained (outbox.settings.wal_draining),
  // no new row is claimed: the WAL's messages, committed before them, go first.
  conn_->Prepare("claim", R"sql(
    SELECT m.id, CASE WHEN m.id > c.known_up_to THEN m.message_id END, m.lane,
           CASE WHEN m.id > c.known_up_to THEN m.topic END, CASE WHEN m.id > c.known_up_to THEN m.key END,
           CASE WHEN m.id > c.known_up_to AND m.fits THEN m.payload END,
           CASE WHEN m.id > c.known_up_to AND m.fits THEN m.headers::text ELSE '{}' END,
           NOT m.fits
    FROM unnest($1::int[], $2::bigint[], $3::int[], $4::bigint[], $5::bool[])
           AS c(lane, known_up_to, lim, max_bytes, take_one)
    CROSS JOIN LATERAL (
      SELECT s.*, s.upto <= c.max_bytes OR (c.take_one AND s.upto = s.bytes) AS fits FROM (
        SELECT w.*, sum(w.bytes) OVER (ORDER BY w.id) AS upto FROM (
          SELECT id, message_id, lane, topic, key, payload, headers,
                 CASE WHEN id > c.known_up_to
                      THEN coalesce(octet_length(key), 0) + coalesce(octet_length(payload), 0) + pg_column_size(headers)
                      ELSE 0 END AS bytes
          FROM outbox.messages
          WHERE lane = c.lane AND (lane, id) > (c.lane, 0)
            AND (id <= c.known_up_to OR NOT (SELECT wal_draining FROM outbox.settings))
          ORDER BY id LIMIT c.lim
        ) AS w
      ) AS s
      WHERE s.upto - s.bytes <= c.max_bytes OR s.upto = s.bytes
    ) AS m)sql");
  conn_->Prepare("fetch", R"sql(
    SELECT id, message_id, lane, topic, key, payload, headers::text
    FROM outbox.messages WHERE id = ANY($1::bigint[]) ORDER BY id)sql");
  // Through the schema's function (0006): the relay role has no write privilege on
  // outbox.dead_letters, so it cannot forge a dead letter.
  conn_->Prepare("dead_letter", "SELECT outbox.dead_letter($1, $2)");
}

int PgOutboxStore::JoinGroup() {
  // Member slots are dense: a relay takes the lowest free one.
  auto r = conn_->Exec("SELECT s FROM generate_series(0, 4095) AS s WHERE pg_try_advisory_lock($1, s) LIMIT 1",
                       {std::to_string(kMemberLockClass)});
  if (PQntuples(r.get()) != 1) throw PgError("more than 4096 relays on one database", "53000", false);
  return std::stoi(PQgetvalue(r.get(), 0, 0));
}

void PgOutboxStore::LeaveGroup(int slot) {
  conn_->Exec("SELECT pg_advisory_unlock($1, $2)", {std::to_string(kMemberLockClass), std::to_string(slot)});
}

int PgOutboxStore::LiveRelays() {
  auto r = conn_->Exec(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
      "AND classid = $1::int::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      {std::to_string(kMemberLockClass)});
  return std::max(1, std::stoi(PQgetvalue(r.get(), 0, 0)));
}

std::vector<int> PgOutboxStore::TryLockLanes(const std::vector<int>& lanes, int want) {
  std::vector<int> got;
  if (lanes.empty() || want <= 0) return got;
  // The filter runs row by row in array order and LIMIT stops it: no lock beyond `want`.
  auto r = conn_->Exec("SELECT l FROM unnest($1::int[]) AS l WHERE pg_try_advisory_lock($2, l) LIMIT $3",
                       {ArrayLiteral(lanes.begin(), lanes.end()), std::to_string(kLaneLockClass),
                        std::to_string(want)});
  for (int i = 0; i < PQntuples(r.get()); ++i) got.push_back(std::stoi(PQgetvalue(r.get(), i, 0)));
  return got;
}

void PgOutboxStore::UnlockLane(int lane) {
  conn_->Exec("SELECT pg_advisory_unlock($1, $2)", {std::to_string(kLaneLockClass), std::to_string(lane)});
}

std::vector<OutboxRow> PgOutboxStore::Claim(std::vector<LaneClaim>& claims) {
  std::vector<int> lanes, limits;
  std::vector<std::int64_t> after, max_bytes;
  std::string take_one = "{";
  for (const auto& c : claims) {
    lanes.push_back(c.lane);
    after.push_back(c.known_up_to);
    limits.push_back(c.limit);
    max_bytes.push_back(c.max_bytes);
    take_one += std::string(take_one.size() > 1 ? "," : "") + (c.take_one ? "t" : "f");
  }
  auto r = conn_->ExecPrepared("claim",
                               {ArrayLiteral(lanes.begin(), lanes.end()), ArrayLiteral(after.begin(), after.end()),
                                ArrayLiteral(limits.begin(), limits.end()),
                                ArrayLiteral(max_bytes.begin(), max_bytes.end()), take_one + "}"},
                               /*binary_results=*/true);
  auto rows = DecodeRows(r.get());
  std::set<int> cut;
  std::vector<OutboxRow> claimed;
  claimed.reserve(rows.size());
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (ReadBool(r.get(), i, 7)) {
      cut.insert(rows[static_cast<size_t>(i)].lane);  // the first row that did not fit
    } else {
      claimed.push_back(std::move(rows[static_cast<size_t>(i)]));
    }
  }
  for (auto& c : claims) c.cut = cut.count(c.lane) > 0;
  return claimed;
}

std::vector<OutboxRow> PgOutboxStore::Fetch(const std::vector<std::int64_t>& ids) {
  if (ids.empty()) return {};
  auto r = conn_->ExecPrepared("fetch", {ArrayLiteral(ids.begin(), ids.end())}, /*binary_results=*/true);
  return DecodeRows(r.get());
}


void PgOutboxStore::DeadLetter(std::int64_t id, const std::string& error) {
  conn_->ExecPrepared("dead_letter", {std::to_string(id), error});
}

bool PgOutboxStore::TakeWakeups() {
  return !conn_->ConsumeNotifications().empty();
}

bool PgOutboxStore::TakeBufferedWakeups() { return !conn_->BufferedNotifications().empty(); }

}  // namespace outbox::relay
