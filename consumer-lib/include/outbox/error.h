#pragma once

#include <stdexcept>

namespace outbox {

// Every failure the library reports is an outbox::Error (or a pqxx exception coming
// from the caller's own transaction).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace outbox
