#include "half_messages/check_back.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <nlohmann/json.hpp>

#include "webhooks/http_client.h"
#include "pg/pg.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

// Longest single wait of the loop: bounds how stale "now" can get between decisions.
constexpr milliseconds kMaxWait{1000};
// Committed/rolled-back tombstones are kept this long (repeated commit_prepared or
// rollback_prepared calls stay idempotent within it), then purged in batches.
constexpr const char* kTombstoneRetention = "7 days";
constexpr int kPurgeBatch = 10000;
constexpr int kPurgeBatchesPerRound = 20;
constexpr milliseconds kPurgeInterval{10 * 60 * 1000};
constexpr milliseconds kFirstPurgeAfter{10 * 1000};
// After a failed statement (not a lost connection): the first pause, and the longest.
constexpr milliseconds kStatementErrorFirstPause{500};
constexpr milliseconds kStatementErrorMaxPause{30000};
// When the database lacks the half-message schema, look again this often.
constexpr milliseconds kSchemaMissingPause{60000};
// How far the next check moves at random around --check-interval, so checks that
// failed together (an endpoint outage, a relay restart) do not come back together.
constexpr double kRetrySpread = 0.2;

RetryPolicy StatementErrorPolicy() {
  RetryPolicy p;
  p.initial_delay = kStatementErrorFirstPause;
  p.max_delay = kStatementErrorMaxPause;
  p.jitter = 0.2;
  return p;
}

std::string Interval(milliseconds d) { return std::to_string(d.count()) + " milliseconds"; }

std::string PercentEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string Value(const PgResult& r, int row, int col) {
  return PQgetisnull(r.get(), row, col) ? std::string() : std::string(PQgetvalue(r.get(), row, col));
}

}  // namespace

const char* CheckResultName(CheckResult r) {
  switch (r) {
    case CheckResult::kCommitted:
      return "committed";
    case CheckResult::kRolledBack:
      return "rolled_back";
    case CheckResult::kPending:
      return "pending";
    case CheckResult::kHttpError:
      return "http_error";
    case CheckResult::kMalformed:
      return "malformed";
    case CheckResult::kUnreachable:
      return "unreachable";
  }
  return "unknown";
}

ClassifiedAnswer ClassifyCheckAnswer(int status, const std::string& transport_error, const std::string& body) {
  if (status == 0) {
    return {CheckResult::kUnreachable, transport_error.empty() ? std::string("no answer") : transport_error};
  }
  if (status < 200 || status > 299) return {CheckResult::kHttpError, "HTTP " + std::to_string(status)};
  static const std::string kExpected =
      R"(expected {"status": "committed"|"rolled_back"|"pending"})";
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return {CheckResult::kMalformed, "malformed answer (not a JSON object, " + std::to_string(body.size()) +
                                         " bytes): " + kExpected};
  }
  auto it = j.find("status");
  if (it == j.end() || !it->is_string()) {
    return {CheckResult::kMalformed, "malformed answer (no string \"status\"): " + kExpected};
  }
  const auto& s = it->get_ref<const std::string&>();
  if (s == "committed") return {CheckResult::kCommitted, {}};
  if (s == "rolled_back") return {CheckResult::kRolledBack, {}};
  if (s == "pending") return {CheckResult::kPending, "the producer answered pending"};
  // Only a short, escaped prefix of what the producer sent goes into logs and the table.
  nlohmann::json shown = s.substr(0, 32);
  return {CheckResult::kMalformed, "malformed answer (unknown status " +
                                       shown.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                       "): " + kExpected};
}

std::string CheckRequestUrl(const std::string& check_url, const std::string& gid) {
  std::string url = check_url;
  auto q = url.find('?');
  if (q == std::string::npos) {
    url += '?';
  } else if (url.back() != '?' && url.back() != '&') {
    url += '&';
  }
  return url + "gid=" + PercentEncode(gid);
}

CheckBack::CheckBack(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayMetrics& metrics)
    : config_(config),
      log_(std::move(log)),
      metrics_(metrics),
      // A claim must outlive the request it covers (plus recording the answer), or a
      // second relay could check the same half message while the first still waits.
      lease_(config.check_timeout * 2 + milliseconds{1000}),
      egress_(EgressPolicy::Parse(config.egress_allow)),
      http_(std::make_unique<internal::HttpMulti>()),
      statement_backoff_(StatementErrorPolicy()) {
  thread_ = std::thread([this] { Loop(); });
}

CheckBack::~CheckBack() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void CheckBack::Stop() {
  stopping_.store(true);
  http_->Wakeup();
}

milliseconds CheckBack::Jittered(milliseconds d, double spread) {
  std::uniform_real_distribution<double> f{1.0 - spread / 2, 1.0 + spread / 2};
  return std::max(milliseconds{1}, milliseconds(static_cast<long long>(static_cast<double>(d.count()) * f(rng_))));
}

void CheckBack::Connect() {
  try {
    conn_ = std::make_unique<PgConnection>(config_.db, "outbox-relay-checkback", config_.session_timeout);
    backoff_.Succeeded();
    long long failed = repeat_log_.Clear("connect");
    if (failed > 0) {
      log_->info("check-back connected to PostgreSQL after {} failed attempts", failed);
    } else {
      log_->debug("check-back connected to PostgreSQL");
    }
  } catch (const PgError& e) {
    conn_.reset();
    auto wait = backoff_.Failed();
    db_resume_at_ = Clock::now() + wait;
    // The relay loop reports the same outage: one line here per 10 s at most.
    if (auto suffix = repeat_log_.Note("connect", std::chrono::steady_clock::now())) {
      log_->warn("check-back cannot use PostgreSQL, retrying in {}ms error={}{}", wait.count(), e.what(), *suffix);
    }
  }
}

void CheckBack::OnDbError(const std::exception& e, bool connection_lost, const std::string& sqlstate) {
  if (connection_lost) {
    log_->error("check-back lost its PostgreSQL session; answers in flight are dropped and checked again "
                "once their claims expire error={}",
                e.what());
    conn_.reset();
    db_resume_at_ = Clock::now() + backoff_.Failed();
  } else if (sqlstate == "42883" || sqlstate == "42P01") {
    // A database migrated before half messages existed: not an error of this relay.
    log_->warn("check-back is idle: outbox.prepared or its functions are missing; run `outbox-relay migrate` "
               "error={}",
               e.what());
    db_resume_at_ = Clock::now() + kSchemaMissingPause;
  } else {
    // A statement that keeps failing (a revoked privilege, a broken function) waits
    // longer each time: no hot loop, a log line per pause.
    auto pause = statement_backoff_.Failed();
    db_resume_at_ = Clock::now() + pause;
    log_->error("check-back statement failed, retrying in {}ms failures={} error={}", pause.count(),
                statement_backoff_.failures(), e.what());
  }
}

void CheckBack::Loop() {
  const auto poll = std::clamp(config_.poll_interval, milliseconds{10}, kMaxWait);
  const int slots = config_.check_concurrency;
  auto next_claim = Clock::now();
  auto next_stats = Clock::now();
  auto next_purge = Clock::now() + kFirstPurgeAfter;
  log_->info("check-back started check_after_ms={} check_interval_ms={} check_max={} check_timeout_ms={} "
             "concurrency={} lease_ms={}",
             config_.check_after.count(), config_.check_interval.count(), config_.check_max,
             config_.check_timeout.count(), slots, lease_.count());
  while (!stopping_.load()) {
    auto now = Clock::now();
    try {
      if (!conn_ && now >= db_resume_at_) Connect();
      if (conn_ && now >= db_resume_at_) {
        bool worked = false;  // some statement ran this round, and none failed
        int free = slots - static_cast<int>(in_flight_.size());
        if (now >= next_claim && free > 0) {
          int got = Claim(free);
          worked = true;
          // A full claim means more may be due: claim again as soon as a slot frees.
          next_claim = got == free ? now : now + poll;
        }
        if (conn_ && now >= next_stats) {
          RefreshGauge();
          worked = true;
          next_stats = now + config_.stats_interval;
        }
        if (conn_ && now >= next_purge) {
          Purge();
          worked = true;
          next_purge = now + kPurgeInterval;
        }
        if (worked) statement_backoff_.Succeeded();
      }
    } catch (const PgError& e) {
      OnDbError(e, e.connection_lost(), e.sqlstate());
    } catch (const std::exception& e) {
      OnDbError(e, false, {});
    }

    now = Clock::now();
    auto wake = now + kMaxWait;
    if (!conn_ || db_resume_at_ > now) {
      wake = std::min(wake, db_resume_at_);
    } else {
      wake = std::min({wake, next_stats, next_purge});
      if (static_cast<int>(in_flight_.size()) < slots) wake = std::min(wake, next_claim);
    }
    auto wait = std::max(milliseconds{0}, std::chrono::duration_cast<milliseconds>(wake - now));
    std::vector<std::pair<std::uint64_t, internal::HttpResponse>> done;
    try {
      done = http_->Poll(wait);
    } catch (const std::exception& e) {
      log_->error("check-back HTTP poll failed error={}", e.what());
    }
    for (const auto& [tag, response] : done) {
      try {
        Finish(tag, response);
      } catch (const PgError& e) {
        OnDbError(e, e.connection_lost(), e.sqlstate());
      } catch (const std::exception& e) {
        OnDbError(e, false, {});
      }
    }
  }
  ReleaseInFlight();
  log_->info("check-back stopped");
}

int CheckBack::Claim(int max_rows) {
  auto r = conn_->Exec("SELECT gid, check_url, check_host, attempt, lease_token FROM "
                       "outbox.claim_prepared_checks($1, $2::interval, $3::interval)",
                       {std::to_string(std::min(max_rows, 1000)), Interval(config_.check_after), Interval(lease_)});
  int n = PQntuples(r.get());
  for (int i = 0; i < n; ++i) {
    InFlight f{Value(r, i, 0), Value(r, i, 2), Value(r, i, 4), std::stoi(Value(r, i, 3))};
    internal::HttpRequest req;
    req.method = internal::HttpRequest::Method::kGet;
    req.url = CheckRequestUrl(Value(r, i, 1), f.gid);
    req.headers = {{"Accept", "application/json"}};
    req.connect_timeout = std::min(config_.check_timeout, milliseconds{5000});
    req.total_timeout = config_.check_timeout;
    req.user_agent = "outbox-relay-checkback";
    req.egress = &egress_;
    auto tag = next_tag_++;
    log_->debug("check-back sent gid={} host={} attempt={}", f.gid, f.host, f.attempt);
    in_flight_.emplace(tag, std::move(f));
    try {
      http_->Start(tag, req);
    } catch (const std::exception& e) {
      // Counted as an unreachable endpoint (checked again later), never left claimed.
      internal::HttpResponse failed;
      failed.error = std::string("cannot start the request: ") + e.what();
      Finish(tag, failed);
    }
  }
  metrics_.checkbacks_in_flight.Set(static_cast<double>(in_flight_.size()));
  return n;
}

void CheckBack::Finish(std::uint64_t tag, const internal::HttpResponse& response) {
  auto it = in_flight_.find(tag);
  if (it == in_flight_.end()) return;
  InFlight f = std::move(it->second);
  in_flight_.erase(it);
  metrics_.checkbacks_in_flight.Set(static_cast<double>(in_flight_.size()));

  auto answer = ClassifyCheckAnswer(response.status, response.error, response.body);
  metrics_.checkbacks.Add({{"result", CheckResultName(answer.result)}}).Increment();
  if (!conn_) {
    log_->warn("check-back answer dropped, no PostgreSQL session gid={} host={} result={}", f.gid, f.host,
               CheckResultName(answer.result));
    return;
  }
  const char* verdict = "inconclusive";
  switch (answer.result) {
    case CheckResult::kCommitted:
      verdict = "committed";
      break;
    case CheckResult::kRolledBack:
      verdict = "rolled_back";
      break;
    case CheckResult::kPending:
    case CheckResult::kHttpError:
    case CheckResult::kMalformed:
    case CheckResult::kUnreachable:
      break;
  }
  auto retry_in = Jittered(config_.check_interval, kRetrySpread);
  std::optional<std::string> detail;
  if (!answer.detail.empty()) detail = answer.detail;
  auto r = conn_->Exec("SELECT outbox.record_prepared_check($1, $2::uuid, $3, $4, $5::interval, $6)",
                       {f.gid, f.token, std::string(verdict), detail, Interval(retry_in),
                        std::to_string(config_.check_max)});
  auto state = Value(r, 0, 0);
  auto latency_ms = response.latency.count() / 1000;
  if (state.empty()) {
    log_->warn("check-back answer ignored: the half message was decided meanwhile or its claim expired "
               "gid={} host={} result={}",
               f.gid, f.host, CheckResultName(answer.result));
  } else if (state == "committed") {
    log_->info("half message committed by check-back gid={} host={} attempt={} latency_ms={}", f.gid, f.host,
               f.attempt, latency_ms);
  } else if (state == "rolled_back") {
    log_->info("half message rolled back by check-back gid={} host={} attempt={} latency_ms={}", f.gid, f.host,
               f.attempt, latency_ms);
  } else if (state == "parked") {
    metrics_.prepared_parked.Increment();
    log_->error("half message parked after {} inconclusive check-backs; resume or drop it with `outbox-relay "
                "prepared` gid={} host={} result={} error={}",
                f.attempt, f.gid, f.host, CheckResultName(answer.result), answer.detail);
  } else {
    log_->warn("check-back inconclusive gid={} host={} attempt={}/{} result={} error={} next_check_ms={}", f.gid,
               f.host, f.attempt, config_.check_max, CheckResultName(answer.result), answer.detail,
               retry_in.count());
  }
}

void CheckBack::ReleaseInFlight() {
  // Hand claims back so the next relay (or this one, restarted) checks at once instead
  // of waiting for the lease to expire. Best effort: an expired lease does the same.
  for (const auto& [tag, f] : in_flight_) {
    if (!conn_) break;
    try {
      conn_->Exec("SELECT outbox.record_prepared_check($1, $2::uuid, 'released', NULL, NULL, NULL)",
                  {f.gid, f.token});
    } catch (const PgError& e) {
      log_->warn("check-back could not hand back its claim gid={} error={}", f.gid, e.what());
      if (e.connection_lost()) conn_.reset();
    }
  }
  in_flight_.clear();
  metrics_.checkbacks_in_flight.Set(0);
}

void CheckBack::RefreshGauge() {
  auto r = conn_->Exec(
      "SELECT s.state, count(p.gid) FROM unnest(ARRAY['prepared', 'parked', 'committed', 'rolled_back']) AS "
      "s(state) LEFT JOIN outbox.prepared p ON p.state = s.state GROUP BY s.state");
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    metrics_.prepared.Add({{"state", Value(r, i, 0)}}).Set(std::stod(Value(r, i, 1)));
  }
}

void CheckBack::Purge() {
  long long total = 0;
  for (int i = 0; i < kPurgeBatchesPerRound && !stopping_.load(); ++i) {
    auto r = conn_->Exec("SELECT outbox.purge_prepared($1::interval, $2)",
                         {std::string(kTombstoneRetention), std::to_string(kPurgeBatch)});
    int n = std::stoi(Value(r, 0, 0));
    total += n;
    if (n < kPurgeBatch) break;
  }
  if (total > 0) log_->info("purged finished half messages rows={} older_than={}", total, kTombstoneRetention);
}

}  // namespace outbox::relay
