#include "pg/startup_check.h"

#include <memory>
#include <vector>

#include "common/errors.h"
#include "pg/pg.h"

namespace outbox::relay {
namespace {

bool Contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

// A connection failure that the same attempt later will meet again. libpq reports no
// SQLSTATE for a failed connection, so the server's message decides.
std::string PermanentConnectProblem(const std::string& what) {
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

struct Need {
  const char* check;  // SQL boolean
  const char* what;   // what is missing, for the message
};

}  // namespace

void CheckStartup(const std::string& conninfo, StartupRole role, std::chrono::milliseconds session_timeout) {
  std::unique_ptr<PgConnection> conn;
  try {
    conn = std::make_unique<PgConnection>(conninfo, "outbox-relay-startup", session_timeout);
  } catch (const PgError& e) {
    auto problem = PermanentConnectProblem(e.what());
    if (!problem.empty()) throw ConfigError({problem});
    return;  // unreachable now: the command retries with backoff
  }
  try {
    // The newest object of the migrations this binary carries: older schemas lack it.
    // Catalog reads need no privilege on the schema (to_regclass would need USAGE).
    auto schema = conn->Exec(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "               WHERE n.nspname = 'outbox' AND c.relname = 'settings'), "
        "       EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "               WHERE n.nspname = 'outbox' AND p.proname = 'dead_letter'), current_user");
    const std::string login = TextValue(schema, 0, 2);
    if (TextValue(schema, 0, 0) != "t") {
      throw ConfigError({"the database has no outbox schema: run `outbox-relay migrate --db ...` as the schema "
                         "owner first"});
    }
    if (TextValue(schema, 0, 1) != "t") {
      throw ConfigError({"the outbox schema is older than this outbox-relay: run `outbox-relay migrate --db ...` "
                         "as the schema owner (it applies only the missing migrations)"});
    }
    std::vector<Need> needs;
    if (role == StartupRole::kRelay) {
      needs = {{"has_table_privilege('outbox.messages', 'SELECT, DELETE')", "SELECT and DELETE on outbox.messages"},
               {"has_table_privilege('outbox.settings', 'SELECT')", "SELECT on outbox.settings"},
               {"has_function_privilege('outbox.dead_letter(bigint,text)', 'EXECUTE')", "EXECUTE on outbox.dead_letter"},
               {"has_function_privilege('outbox.claim_prepared_checks(integer,interval,interval)', 'EXECUTE')",
                "EXECUTE on outbox.claim_prepared_checks"}};
    } else {
      needs = {{"has_function_privilege('inbox.claim_notifications(integer,interval,integer,text[],integer[])', "
                "'EXECUTE')",
                "EXECUTE on inbox.claim_notifications"}};
    }
    std::vector<std::string> missing;
    const char* schema_name = role == StartupRole::kRelay ? "outbox" : "inbox";
    if (TextValue(conn->Exec(std::string("SELECT has_schema_privilege('") + schema_name + "', 'USAGE')"), 0, 0) != "t") {
      needs.clear();  // nothing in the schema can be checked (or used) without it
      missing.push_back(std::string("USAGE on schema ") + schema_name);
    }
    for (const auto& n : needs) {
      if (TextValue(conn->Exec(std::string("SELECT ") + n.check), 0, 0) != "t") missing.push_back(n.what);
    }
    if (!missing.empty()) {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      throw ConfigError({"the login " + login + " lacks " + list + ": GRANT outbox_relay TO " + login +
                         " (as the schema owner)"});
    }
  } catch (const PgError& e) {
    if (e.connection_lost()) return;  // the outage is retried by the command itself
    throw ConfigError({std::string("cannot check the database at start-up: ") + e.what()});
  }
}

}  // namespace outbox::relay
