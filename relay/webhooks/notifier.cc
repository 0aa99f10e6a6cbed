#include "webhooks/notifier.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <outbox/retry.h>

#include "common/errors.h"
#include "pg/db.h"
#include "pg/session_timeout.h"
#include "webhooks/egress_policy.h"
#include "webhooks/http_client.h"

namespace outbox {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kResponseExcerpt = 512;
constexpr int kPurgeBatchesPerRound = 20;

// PostgreSQL reconnects: 200 ms doubling to 10 s, without jitter (one worker per host).
RetryPolicy ReconnectPolicy() {
  RetryPolicy p;
  p.initial_delay = milliseconds(200);
  p.max_delay = milliseconds(10000);
  p.jitter = 0;
  return p;
}

// text[] literal with every element quoted.
std::string TextArray(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string IntArray(const std::vector<int>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + std::to_string(items[i]);
  return out + "}";
}

std::string IntervalParam(milliseconds d) { return std::to_string(d.count()) + " milliseconds"; }

// The start of s as printable ASCII (anything else becomes '?'), so whatever bytes a
// receiver or a library sends are storable as text and safe in logs.
std::string Printable(const std::string& s, std::size_t max) {
  std::string out = s.substr(0, max);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) c = '?';
  }
  return out;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::vector<std::string> Validate(const NotifierOptions& o) {
  std::vector<std::string> p;
  if (o.conninfo.empty()) p.push_back("conninfo is empty");
  try {
    if (!o.conninfo.empty()) relay::CheckConninfo(o.conninfo);
  } catch (const relay::ConfigError& e) {
    for (const auto& problem : e.problems()) p.push_back(problem);
  }
  if (o.session_timeout < relay::kMinSessionTimeout || o.session_timeout > relay::kMaxSessionTimeout) {
    p.push_back("session_timeout must be " + std::to_string(relay::kMinSessionTimeout.count()) + ".." +
                std::to_string(relay::kMaxSessionTimeout.count()) + " ms, got " +
                std::to_string(o.session_timeout.count()));
  }
  if (o.max_in_flight < 1 || o.max_in_flight > 1000) {
    p.push_back("max_in_flight must be 1..1000, got " + std::to_string(o.max_in_flight));
  }
  if (o.max_per_host < 1 || o.max_per_host > std::max(1, o.max_in_flight)) {
    p.push_back("max_per_host must be 1..max_in_flight, got " + std::to_string(o.max_per_host));
  }
  if (o.connect_timeout <= milliseconds::zero()) p.push_back("connect_timeout must be positive");
  if (o.request_timeout <= milliseconds::zero()) p.push_back("request_timeout must be positive");
  if (o.lease < o.request_timeout + milliseconds(1000)) {
    p.push_back("lease (" + std::to_string(o.lease.count()) +
                " ms) must exceed request_timeout (" + std::to_string(o.request_timeout.count()) +
                " ms) by at least 1 s, or a slow request could be sent twice");
  }
  if (o.poll_interval <= milliseconds::zero()) p.push_back("poll_interval must be positive");
  if (o.stats_interval <= milliseconds::zero()) p.push_back("stats_interval must be positive");
  if (o.retention < milliseconds::zero()) p.push_back("retention must not be negative");
  if (o.retention_interval <= milliseconds::zero()) p.push_back("retention_interval must be positive");
  try {
    relay::EgressPolicy::Parse(o.egress_allow);
  } catch (const relay::ConfigError& e) {
    for (const auto& problem : e.problems()) p.push_back(problem);
  }
  return p;
}

// The attempt a worker holds a lease on.
struct Claimed {
  std::int64_t id = 0;
  int attempt = 0;
  int max_attempts = 0;
  std::string host;
  std::string token;
};

struct Finished {
  Claimed claim;
  internal::HttpResponse response;
};

}  // namespace

struct Notifier::Impl {
  explicit Impl(NotifierOptions o)
      : opt(std::move(o)),
        egress(relay::EgressPolicy::Parse(opt.egress_allow)),
        keepalives(relay::KeepalivesFor(opt.session_timeout)),
        conninfo(relay::WithClientKeywords(opt.conninfo, keepalives)) {}

  void Run();
  bool Connected() const { return conn != nullptr; }
  void Connect();
  void DbFailed(const std::string& what);
  void Claim();
  void Record();
  void Stats();
  void Purge();
  void Report(const std::function<void()>& call);

  const NotifierOptions opt;
  const relay::EgressPolicy egress;  // which addresses requests may reach
  const relay::SessionKeepalives keepalives;  // both ends give up on a silent network
  const std::string conninfo;                 // opt.conninfo with the client side of it
  std::atomic<bool> stop{false};
  internal::HttpMulti http;

  // Everything below is used by the Run() thread only.
  std::unique_ptr<pqxx::connection> conn;
  std::map<std::uint64_t, Claimed> in_flight;   // by HttpMulti tag
  std::map<std::string, int> host_load;         // requests in flight per host:port
  std::deque<Finished> unrecorded;              // answers not yet written to the database
  std::uint64_t next_tag = 1;
  bool claim_again = false;                     // the last claim got rows and slots are left
  ReconnectBackoff backoff{ReconnectPolicy()};
  Clock::time_point reconnect_at{};
  Clock::time_point next_stats{};
  Clock::time_point next_purge{};
};

void Notifier::Impl::Report(const std::function<void()>& call) {
  // Callbacks must not take the worker down.
  try {
    call();
  } catch (const std::exception& e) {
    if (opt.on_error) {
      try {
        opt.on_error(std::string("notifier callback threw: ") + e.what());
      } catch (...) {
      }
    }
  } catch (...) {
  }
}

void Notifier::Impl::DbFailed(const std::string& what) {
  conn.reset();
  const milliseconds wait = backoff.Failed();
  reconnect_at = Clock::now() + wait;
  Report([&] {
    if (opt.on_error) opt.on_error(what + " (reconnecting in " + std::to_string(wait.count()) + " ms)");
  });
}

void Notifier::Impl::Connect() {
  auto c = std::make_unique<pqxx::connection>(conninfo);
  pqxx::nontransaction tx{*c};
  // The server ends the session once this worker has been silent for session_timeout
  // (pg/session_timeout.h). Leases are time-based: they never depend on the session.
  tx.exec(relay::ServerSettingsStatement(keepalives));
  auto row = tx.exec1(
      "SELECT to_regprocedure('inbox.claim_notifications(integer,interval,integer,text[],integer[])') IS NOT NULL, "
      "current_setting('application_name') = ''");
  if (!row[0].as<bool>()) {
    throw Error("inbox.claim_notifications is missing (or not visible to this role): run `outbox-relay migrate` "
                "and grant the worker's role outbox_relay");
  }
  if (row[1].as<bool>()) tx.exec("SET application_name = 'outbox-notifier'");
  conn = std::move(c);
  backoff.Succeeded();
}

void Notifier::Impl::Claim() {
  int free = opt.max_in_flight - static_cast<int>(in_flight.size());
  claim_again = false;
  if (free <= 0) return;
  std::vector<std::string> hosts;
  std::vector<int> counts;
  for (const auto& [host, n] : host_load) {
    hosts.push_back(host);
    counts.push_back(n);
  }
  pqxx::work tx{*conn};
  auto rows = tx.exec_params(
      "SELECT c.id, c.attempt, c.max_attempts, c.url, c.host, c.body, c.headers::text, c.lease_token::text, "
      "n.uid::text "
      "FROM inbox.claim_notifications($1, $2::interval, $3, $4::text[], $5::integer[]) AS c "
      "JOIN inbox.notifications AS n ON n.id = c.id",
      free, IntervalParam(opt.lease), opt.max_per_host, TextArray(hosts), IntArray(counts));
  tx.commit();
  // Rows of hosts at their cap may have crowded the candidates out: look again at once
  // while claims succeed and slots are free (the capped hosts are excluded then).
  claim_again = !rows.empty() && static_cast<int>(rows.size()) < free;
  // Send at once: the lease started with the claim.
  for (const auto& row : rows) {
    Claimed c;
    c.id = row[0].as<std::int64_t>();
    c.attempt = row[1].as<int>();
    c.max_attempts = row[2].as<int>();
    c.host = row[4].as<std::string>();
    c.token = row[7].as<std::string>();
    internal::HttpRequest req;
    req.method = internal::HttpRequest::Method::kPost;
    req.url = row[3].as<std::string>();
    req.body = pqxx::binarystring(row[5]).str();
    req.connect_timeout = std::min(opt.connect_timeout, opt.request_timeout);
    req.total_timeout = opt.request_timeout;
    req.max_response_bytes = opt.store_replies ? kResponseExcerpt : 0;  // the rest is read and dropped
    req.user_agent = opt.user_agent;
    req.egress = &egress;
    bool has_type = false;
    const auto headers = nlohmann::json::parse(row[6].as<std::string>());
    for (const auto& [name, value] : headers.items()) {
      has_type = has_type || IEquals(name, "Content-Type");
      req.headers.emplace_back(name, value.get<std::string>());
    }
    if (!has_type) req.headers.emplace_back("Content-Type", "application/octet-stream");
    req.headers.emplace_back("Notification-Id", std::to_string(c.id));
    // Unique across databases (the id is a per-database counter): the key a receiver fed
    // by several databases deduplicates on.
    req.headers.emplace_back("Notification-Uuid", row[8].as<std::string>());
    req.headers.emplace_back("Notification-Attempt", std::to_string(c.attempt));
    std::uint64_t tag = next_tag++;
    try {
      http.Start(tag, req);
    } catch (const std::exception& e) {
      // Could not even start: a failed attempt like any other.
      Finished f{c, {}};
      f.response.error = std::string("cannot start the request: ") + e.what();
      unrecorded.push_back(std::move(f));
      continue;
    }
    ++host_load[c.host];
    in_flight.emplace(tag, std::move(c));
  }
}

void Notifier::Impl::Record() {
  while (!unrecorded.empty()) {
    const Finished& f = unrecorded.front();
    const auto& r = f.response;
    std::optional<int> status;
    if (r.status != 0) status = r.status;
    std::optional<std::string> error;
    if (!r.error.empty()) error = Printable(r.error, 1024);
    std::optional<std::string> response;  // NULL unless the operator asked to keep replies
    if (r.status != 0 && opt.store_replies) response = Printable(r.body, kResponseExcerpt);
    double latency_ms = static_cast<double>(r.latency.count()) / 1000.0;
    pqxx::work tx{*conn};
    auto row = tx.exec_params1("SELECT inbox.finish_notification_attempt($1, $2::uuid, $3, $4, $5, $6)", f.claim.id,
                               f.claim.token, status, error, latency_ms, response);
    tx.commit();
    // If the commit's outcome was unknown (connection lost at commit), the retry after
    // reconnecting finds the lease gone and reports the result as dropped: no attempt
    // is sent twice, at worst one report is imprecise.
    NotificationAttempt a;
    a.id = f.claim.id;
    a.attempt = f.claim.attempt;
    a.max_attempts = f.claim.max_attempts;
    a.host = f.claim.host;
    a.status_code = r.status;
    a.error = r.Success() ? "" : (r.error.empty() ? "HTTP status " + std::to_string(r.status) : r.error);
    a.latency = r.latency;
    if (!row[0].is_null()) a.state = ParseNotificationState(row[0].as<std::string>());
    unrecorded.pop_front();
    Report([&] {
      if (opt.on_attempt) opt.on_attempt(a);
    });
    if (a.state == NotificationState::kExhausted) {
      Report([&] {
        if (opt.on_exhausted) opt.on_exhausted(a);
      });
    }
  }
}

void Notifier::Impl::Stats() {
  pqxx::work tx{*conn};
  auto row = tx.exec1("SELECT pending, due, oldest_due_seconds FROM inbox.notification_backlog()");
  tx.commit();
  NotifierStats s;
  s.pending = row[0].as<std::int64_t>();
  s.due = row[1].as<std::int64_t>();
  s.oldest_due_seconds = row[2].as<double>();
  s.in_flight = static_cast<int>(in_flight.size());
  Report([&] {
    if (opt.on_stats) opt.on_stats(s);
  });
}

void Notifier::Impl::Purge() {
  constexpr int kBatch = 1000;
  // A bounded number of batches per round, so deliveries are not held up for long.
  for (int i = 0; i < kPurgeBatchesPerRound; ++i) {
    pqxx::work tx{*conn};
    int n = tx.exec_params1("SELECT inbox.purge_notifications($1::interval, $2)", IntervalParam(opt.retention),
                            kBatch)[0]
                .as<int>();
    tx.commit();
    if (n < kBatch) break;
  }
}

void Notifier::Impl::Run() {
  std::optional<Clock::time_point> shutdown_deadline;
  while (true) {
    auto now = Clock::now();
    if (stop.load() && !shutdown_deadline) {
      // In-flight requests end within request_timeout; allow a little for recording.
      shutdown_deadline = now + opt.request_timeout + milliseconds(5000);
    }
    if (shutdown_deadline) {
      if (in_flight.empty() && unrecorded.empty()) return;
      if (now >= *shutdown_deadline) {
        Report([&] {
          if (opt.on_error) {
            opt.on_error("stopping with " + std::to_string(unrecorded.size()) +
                         " results not recorded; their attempts are sent again when the leases expire");
          }
        });
        return;
      }
    }
    if (!Connected() && now >= reconnect_at) {
      try {
        Connect();
      } catch (const Error&) {
        throw;  // the schema is missing: not something waiting fixes
      } catch (const std::exception& e) {
        DbFailed(std::string("cannot connect to PostgreSQL: ") + e.what());
      }
    }
    if (Connected()) {
      try {
        Record();
        if (!shutdown_deadline) {
          Claim();
          if (Clock::now() >= next_stats) {
            next_stats = Clock::now() + opt.stats_interval;
            Stats();
          }
          if (opt.retention > milliseconds::zero() && Clock::now() >= next_purge) {
            next_purge = Clock::now() + opt.retention_interval;
            Purge();
          }
        }
      } catch (const std::exception& e) {
        DbFailed(std::string("database error: ") + e.what());
      }
    }
    milliseconds wait = claim_again && Connected() ? milliseconds(0) : opt.poll_interval;
    if (!Connected()) {
      wait = std::min(wait, std::chrono::duration_cast<milliseconds>(
                                std::max(reconnect_at - Clock::now(), Clock::duration::zero())));
    }
    if (shutdown_deadline && in_flight.empty()) wait = std::min(wait, milliseconds(100));
    if (stop.load() && !shutdown_deadline) wait = milliseconds(0);
    for (auto& [tag, response] : http.Poll(wait)) {
      auto it = in_flight.find(tag);
      if (it == in_flight.end()) continue;
      if (--host_load[it->second.host] <= 0) host_load.erase(it->second.host);
      unrecorded.push_back(Finished{std::move(it->second), std::move(response)});
      in_flight.erase(it);
    }
  }
}

Notifier::Notifier(NotifierOptions options) {
  auto problems = Validate(options);
  if (!problems.empty()) {
    std::string all = "invalid NotifierOptions:";
    for (const auto& p : problems) all += " " + p + ";";
    all.pop_back();
    throw Error(all);
  }
  impl_ = std::make_unique<Impl>(std::move(options));
}

Notifier::~Notifier() = default;

void Notifier::Run() { impl_->Run(); }

void Notifier::Stop() {
  impl_->stop.store(true);
  impl_->http.Wakeup();
}

}  // namespace outbox
