#include "pg/db.h"
#include "pg/pg.h"

#include <libpq-fe.h>

#include "common/errors.h"
#include "common/redact.h"
#include "pg/session_timeout.h"

namespace outbox::relay {
namespace {

std::string PasswordOf(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err) PQfreemem(err);
  if (!opts) return {};
  std::string password;
  for (auto* o = opts; o->keyword; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val) password = o->val;
  }
  PQconninfoFree(opts);
  return password;
}

}  // namespace

void CheckConninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts) {
    PQconninfoFree(opts);
    return;
  }
  // libpq quotes the offending fragment, which may be a password: do not repeat it.
  std::string what = err ? err : "";
  if (err) PQfreemem(err);
  std::string reason = "it does not parse";
  if (what.find("invalid connection option") != std::string::npos) reason = "it names an unknown option";
  if (what.find("missing \"=\"") != std::string::npos) reason = "a word lacks \"=value\"";
  if (what.find("unterminated quoted string") != std::string::npos) reason = "a quote is not closed";
  if (what.find("URI") != std::string::npos) reason = "the URI is malformed";
  throw ConfigError({"--db: invalid PostgreSQL conninfo: " + reason +
                     " (see https://www.postgresql.org/docs/15/libpq-connect.html)"});
}

std::string SafeDbError(const std::string& what, const std::string& conninfo) {
  return OneLine(RedactSecret(what, PasswordOf(conninfo)));
}

std::unique_ptr<pqxx::connection> Connect(const std::string& conninfo, const std::string& application_name,
                                          std::chrono::milliseconds session_timeout) {
  CheckConninfo(conninfo);
  const auto keepalives = KeepalivesFor(session_timeout);
  // A key=value conninfo with the client side of the session timeout where the user set
  // none. application_name goes last so it names this connection in pg_stat_activity,
  // unless the user set one (libpq: the last setting wins, so only add it when absent).
  std::string full = WithClientKeywords(conninfo, keepalives);
  if (full.find("application_name=") == std::string::npos) full += " application_name=" + application_name;
  try {
    auto c = std::make_unique<pqxx::connection>(full);
    {
      pqxx::nontransaction tx{*c};
      tx.exec(ServerSettingsStatement(keepalives));
    }
    return c;
  } catch (const std::exception& e) {
    throw RuntimeError("cannot connect to PostgreSQL (" + RedactConninfo(conninfo) +
                       "): " + SafeDbError(e.what(), conninfo));
  }
}

}  // namespace outbox::relay
