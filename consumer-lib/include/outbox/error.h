#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace outbox {

// Every failure the library reports is an outbox::Error, except pqxx exceptions raised
// inside a transaction the caller passed in (a function taking pqxx::transaction_base&
// says which ones it lets through, e.g. pqxx::sql_error for bad arguments): that
// transaction is the caller's, and so is its error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A database failure in work the library runs on its own transactions (retention on a
// connection): the libpqxx error's text, and its SQLSTATE when the server sent one.
class DatabaseError : public Error {
 public:
  DatabaseError(const std::string& what, std::string sqlstate)
      : Error(what), sqlstate_(std::move(sqlstate)) {}
  // Empty when no server answer carried one (e.g. the connection was lost).
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  std::string sqlstate_;
};

}  // namespace outbox
