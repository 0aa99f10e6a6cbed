#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace outbox {

// Kafka headers of a record, by name (the relay writes string values only).
using Headers = std::map<std::string, std::string>;

// A record as a consumer sees it.
struct Message {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::optional<std::string> key;      // absent when the record has no key
  std::optional<std::string> payload;  // absent for a tombstone (NULL value)
  Headers headers;                     // includes message_id when written by the relay
  std::string message_id;              // the message_id header (see consumer.h for others)
};

}  // namespace outbox
