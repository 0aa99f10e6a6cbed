#pragma once

#include <chrono>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "common/config.h"

namespace outbox::relay {

// Opens a connection, its session bounded on both ends by session_timeout
// (pg/session_timeout.h). A conninfo that does not parse is a ConfigError (exit 2); a
// server that cannot be reached is a RuntimeError (exit 1). Messages never contain the
// password, nor any fragment of a conninfo that failed to parse.
std::unique_ptr<pqxx::connection> Connect(const std::string& conninfo, const std::string& application_name,
                                          std::chrono::milliseconds session_timeout = kDefaultSessionTimeout);

// Checks that conninfo parses (without connecting); throws ConfigError if not.
void CheckConninfo(const std::string& conninfo);

// An error text from libpq/libpqxx with any secret of `conninfo` removed.
std::string SafeDbError(const std::string& what, const std::string& conninfo);

}  // namespace outbox::relay
