#include "pg/startup_check.h"

#include <optional>
#include <vector>

#include "common/errors.h"
#include "pg/pg.h"

namespace outbox::relay {
namespace {

bool Contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

}  // namespace

// libpq reports no SQLSTATE for a failed connection, so the server's message decides.
std::string PermanentConnectProblem(const std::string& raw) {
  const std::string what = OneLine(raw);
  if (Contains(what, "no password supplied")) {
    return "PostgreSQL asks this login for a password and none was given: put it in libpq's password file "
           "(~/.pgpass, PGPASSFILE or passfile=... in --db; mode 0600): " + what;
  }
  if (Contains(what, "password authentication failed") || Contains(what, "authentication failed")) {
    return "PostgreSQL refused the login (authentication failed): check the user and password in --db, "
           "~/.pgpass or PGPASSFILE: " + what;
  }
  if (Contains(what, "no pg_hba.conf entry")) {
    return "PostgreSQL does not accept this login from this host (pg_hba.conf): " + what;
  }
  if (Contains(what, "role \"") && Contains(what, "does not exist")) {
    return "the login in --db does not exist on the server: create it and GRANT it the documented role: " + what;
  }
  if (Contains(what, "database \"") && Contains(what, "does not exist")) {
    return "the database in --db does not exist: " + what;
  }
  return "";
}

namespace {

struct Need {
  const char* schema;  // the schema the object lives in (its USAGE comes first)
  const char* check;   // SQL boolean
  const char* what;    // what is missing, for the message
};

// What a command needs, all of it granted by `outbox_relay`: USAGE on `schemas`, then `needs`.
struct Requirements {
  std::vector<const char*> schemas;
  std::vector<Need> needs;
};

Requirements RequirementsOf(StartupRole role) {
  switch (role) {
    case StartupRole::kRelay:
      return {{"outbox"},
              {{"outbox", "has_table_privilege('outbox.messages', 'SELECT, DELETE')",
                "SELECT and DELETE on outbox.messages"},
               {"outbox", "has_table_privilege('outbox.settings', 'SELECT')", "SELECT on outbox.settings"},
               {"outbox", "has_function_privilege('outbox.dead_letter(bigint,text)', 'EXECUTE')",
                "EXECUTE on outbox.dead_letter"},
               {"outbox", "has_function_privilege('outbox.claim_prepared_checks(integer,interval,interval)', 'EXECUTE')",
                "EXECUTE on outbox.claim_prepared_checks"}}};
    case StartupRole::kNotifier:
      return {{"inbox"},
              {{"inbox",
                "has_function_privilege('inbox.claim_notifications(integer,interval,integer,text[],integer[])', "
                "'EXECUTE')",
                "EXECUTE on inbox.claim_notifications"}}};
    case StartupRole::kStatusReader:
      return {{"outbox", "inbox"},
              {{"outbox", "has_table_privilege('outbox.messages', 'SELECT')", "SELECT on outbox.messages"},
               {"outbox", "has_table_privilege('outbox.settings', 'SELECT')", "SELECT on outbox.settings"},
               {"outbox", "has_table_privilege('outbox.dead_letters', 'SELECT')", "SELECT on outbox.dead_letters"},
               {"outbox", "has_table_privilege('outbox.prepared', 'SELECT')", "SELECT on outbox.prepared"},
               {"inbox", "has_table_privilege('inbox.notifications', 'SELECT')", "SELECT on inbox.notifications"}}};
    case StartupRole::kDeadLetterOperator:
      return {{"outbox"},
              {{"outbox", "has_table_privilege('outbox.dead_letters', 'SELECT')", "SELECT on outbox.dead_letters"},
               {"outbox", "has_function_privilege('outbox.retry_dead_letter(bigint)', 'EXECUTE')",
                "EXECUTE on outbox.retry_dead_letter"},
               {"outbox", "has_function_privilege('outbox.drop_dead_letter(bigint)', 'EXECUTE')",
                "EXECUTE on outbox.drop_dead_letter"}}};
    case StartupRole::kPreparedOperator:
      return {{"outbox"},
              {{"outbox", "has_table_privilege('outbox.prepared', 'SELECT')", "SELECT on outbox.prepared"},
               {"outbox", "has_function_privilege('outbox.resume_prepared(text)', 'EXECUTE')",
                "EXECUTE on outbox.resume_prepared"},
               {"outbox", "has_function_privilege('outbox.drop_prepared(text)', 'EXECUTE')",
                "EXECUTE on outbox.drop_prepared"}}};
  }
  return {};
}

// Connects. A connection failure that waiting cannot heal is a ConfigError naming the
// fix; any other (the server cannot be reached now) is rethrown as the PgError.
std::unique_ptr<PgConnection> Connect(const std::string& conninfo, const std::string& application_name,
                                      std::chrono::milliseconds session_timeout = kDefaultSessionTimeout) {
  try {
    return std::make_unique<PgConnection>(conninfo, application_name, session_timeout);
  } catch (const PgError& e) {
    auto problem = PermanentConnectProblem(e.what());
    if (!problem.empty()) throw ConfigError({problem});
    throw;
  }
}

// The schema version and the role's privileges, on an open session. Throws ConfigError
// naming the fix, PgError if a statement fails (or the session is lost).
void CheckSession(PgConnection& conn, StartupRole role) {
  if (auto problem = SchemaProblem(conn)) throw ConfigError({*problem});
  if (auto problem = PrivilegeProblem(conn, role)) throw ConfigError({*problem});
  if (role == StartupRole::kRelay) {
    if (auto problem = CaptureProblem(conn)) throw ConfigError({*problem});
  }
}

}  // namespace

std::optional<std::string> SchemaProblem(PgConnection& conn) {
  // The newest object of the migrations this binary carries: older schemas lack it.
  // Catalog reads need no privilege on the schema (to_regclass would need USAGE).
  auto schema = conn.Exec(
      "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "               WHERE n.nspname = 'outbox' AND c.relname = 'settings'), "
      "       EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
      "               WHERE n.nspname = 'outbox' AND p.proname = 'wal_drained')");
  if (TextValue(schema, 0, 0) != "t") {
    return "the database has no outbox schema: run `outbox-relay migrate --db ...` as the schema owner first";
  }
  if (TextValue(schema, 0, 1) != "t") {
    return "the outbox schema is older than this outbox-relay: run `outbox-relay migrate --db ...` as the schema "
           "owner (it applies only the missing migrations)";
  }
  return std::nullopt;
}

std::optional<std::string> CaptureProblem(PgConnection& conn) {
  // In capture mode wal (or while a switch back is drained) one relay streams the slot
  // over a replication connection: the login itself needs REPLICATION (not inherited).
  auto r = conn.Exec(
      "SELECT s.capture = 'wal' OR s.wal_draining, "
      "       coalesce((SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), false), "
      "       current_user "
      "FROM outbox.settings s");
  if (TextValue(r, 0, 0) != "t" || TextValue(r, 0, 1) == "t") return std::nullopt;
  const std::string login = TextValue(r, 0, 2);
  return "the login " + login +
         " lacks REPLICATION, which the relay's WAL stream needs in capture mode wal: as a superuser run ALTER ROLE " +
         login + " REPLICATION (docs/relay.md, \"Capture mode\")";
}

std::optional<std::string> PrivilegeProblem(PgConnection& conn, StartupRole role) {
  const std::string login = TextValue(conn.Exec("SELECT current_user"), 0, 0);
  const Requirements req = RequirementsOf(role);
  std::vector<std::string> missing, unusable_schemas;
  for (const char* s : req.schemas) {
    if (TextValue(conn.Exec("SELECT has_schema_privilege($1, 'USAGE')", {std::string(s)}), 0, 0) != "t") {
      unusable_schemas.emplace_back(s);
      missing.push_back(std::string("USAGE on schema ") + s);
    }
  }
  for (const auto& n : req.needs) {
    bool schema_unusable = false;  // nothing in it can be checked (or used) without USAGE
    for (const auto& s : unusable_schemas) schema_unusable = schema_unusable || s == n.schema;
    if (schema_unusable) continue;
    if (TextValue(conn.Exec(std::string("SELECT ") + n.check), 0, 0) != "t") missing.push_back(n.what);
  }
  if (missing.empty()) return std::nullopt;
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  return "the login " + login + " lacks " + list + ": GRANT outbox_relay TO " + login + " (as the schema owner)";
}

void CheckStartup(const std::string& conninfo, StartupRole role, std::chrono::milliseconds session_timeout) {
  std::unique_ptr<PgConnection> conn;
  try {
    conn = Connect(conninfo, "outbox-relay-startup", session_timeout);
  } catch (const PgError&) {
    return;  // unreachable now: the command retries with backoff
  }
  try {
    CheckSession(*conn, role);
  } catch (const PgError& e) {
    if (e.connection_lost()) return;  // the outage is retried by the command itself
    throw ConfigError({std::string("cannot check the database at start-up: ") + e.what()});
  }
}

std::unique_ptr<PgConnection> OpenCheckedSession(const std::string& conninfo, StartupRole role) {
  std::unique_ptr<PgConnection> conn;
  try {
    conn = Connect(conninfo, "outbox-relay-cli");
  } catch (const PgError& e) {
    // One-shot: nothing to wait for here; exit 1 tells a script it may try again later.
    throw RuntimeError(std::string("cannot connect to PostgreSQL: ") + e.what());
  }
  try {
    CheckSession(*conn, role);
  } catch (const PgError& e) {
    if (e.connection_lost()) throw RuntimeError(std::string("lost the PostgreSQL session: ") + e.what());
    throw ConfigError({std::string("cannot check the database: ") + e.what()});
  }
  return conn;
}

}  // namespace outbox::relay
