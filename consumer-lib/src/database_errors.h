#pragma once

// The library boundary for database errors in work the library runs on its own
// transactions: libpqxx exceptions become outbox::DatabaseError (error.h).

#include <pqxx/pqxx>
#include <string>
#include <utility>

#include "outbox/error.h"

namespace outbox::internal {

// Runs f(); a libpqxx exception leaves as outbox::DatabaseError ("<what>: <pqxx text>"),
// a libpqxx usage or conversion error as outbox::Error. outbox::Error passes unchanged.
template <class F>
auto TranslateDatabaseErrors(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return std::forward<F>(f)();
  } catch (const Error&) {
    throw;
  } catch (const pqxx::sql_error& e) {
    throw DatabaseError(what + ": " + e.what(), e.sqlstate());
  } catch (const pqxx::failure& e) {
    throw DatabaseError(what + ": " + e.what(), "");
  } catch (const pqxx::usage_error& e) {
    throw Error(what + ": " + e.what());
  } catch (const pqxx::conversion_error& e) {
    throw Error(what + ": " + e.what());
  }
}

}  // namespace outbox::internal
