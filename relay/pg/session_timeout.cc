#include "pg/session_timeout.h"

#include <libpq-fe.h>

#include <algorithm>
#include <memory>
#include <set>

#include "pg/db.h"

namespace outbox::relay {

SessionKeepalives KeepalivesFor(std::chrono::milliseconds timeout) {
  timeout = std::clamp(timeout, kMinSessionTimeout, kMaxSessionTimeout);
  const int total_s = static_cast<int>(timeout.count() / 1000);
  SessionKeepalives k;
  k.count = 3;
  k.interval_s = std::max(1, total_s / 4);
  k.idle_s = std::max(1, total_s - k.count * k.interval_s);
  k.user_timeout_ms = static_cast<int>(timeout.count());
  // libpq counts whole seconds (and takes 1 as 2); a connection attempt never waits
  // longer than the session would.
  k.connect_timeout_s = std::max(2, total_s);
  return k;
}

std::vector<std::pair<std::string, std::string>> ClientKeywords(const SessionKeepalives& k) {
  return {{"keepalives", "1"},
          {"keepalives_idle", std::to_string(k.idle_s)},
          {"keepalives_interval", std::to_string(k.interval_s)},
          {"keepalives_count", std::to_string(k.count)},
          {"tcp_user_timeout", std::to_string(k.user_timeout_ms)},
          {"connect_timeout", std::to_string(k.connect_timeout_s)}};
}

namespace {

struct OptionsDeleter {
  void operator()(PQconninfoOption* o) const { PQconninfoFree(o); }
};

std::string Quoted(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

std::string WithClientKeywords(const std::string& conninfo, const SessionKeepalives& k) {
  CheckConninfo(conninfo);  // a ConfigError that never repeats the text
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsDeleter> options{PQconninfoParse(conninfo.c_str(), &err)};
  if (err) PQfreemem(err);
  std::string out;
  std::set<std::string> given;
  for (auto* o = options.get(); o && o->keyword; ++o) {
    if (!o->val) continue;
    given.insert(o->keyword);
    out += (out.empty() ? "" : " ") + std::string(o->keyword) + "=" + Quoted(o->val);
  }
  for (const auto& [key, value] : ClientKeywords(k)) {
    if (!given.count(key)) out += (out.empty() ? "" : " ") + key + "=" + value;
  }
  return out;
}

std::string ServerSettingsStatement(const SessionKeepalives& k) {
  auto set = [](const char* name, int value) {
    return std::string("set_config('") + name + "', '" + std::to_string(value) + "', false)";
  };
  return "SELECT " + set("tcp_keepalives_idle", k.idle_s) + ", " + set("tcp_keepalives_interval", k.interval_s) +
         ", " + set("tcp_keepalives_count", k.count) + ", " + set("tcp_user_timeout", k.user_timeout_ms);
}

}  // namespace outbox::relay
