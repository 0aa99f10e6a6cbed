#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

// One row of outbox.messages as the relay publishes it.
struct OutboxRow {
  std::int64_t id = 0;
  std::string message_id;               // uuid text, becomes header message_id
  int lane = 0;
  std::string topic;
  std::optional<std::string> key;       // nullopt: record without key
  std::optional<std::string> payload;   // nullopt: record with NULL value (tombstone)
  std::vector<std::pair<std::string, std::string>> headers;  // the row's headers
};

}  // namespace outbox::relay
