#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outbox::test {

// A record as read back by tests/support/kafka_read.py (python confluent_kafka).
struct Record {
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::optional<std::string> key;
  std::optional<std::string> value;
  std::map<std::string, std::string> headers;
};

// Reads `topic` from the beginning until `count` records arrived — with `to_end`, then on
// up to every partition's high watermark, so duplicates are counted (read after the relay
// stopped or drained: nothing is produced any more) — or the (scaled) deadline passed;
// records come in offset order per partition.
std::vector<Record> ReadTopic(const std::string& bootstrap, const std::string& topic, int count,
                              std::chrono::milliseconds deadline, bool to_end = false);

// Checks of what a relay published, for messages carrying headers `key_seq` (a per-key
// sequence number, 0, 1, 2, ...) and message_id.
struct DeliveryReport {
  int records = 0;
  int distinct = 0;            // distinct message_id values
  int duplicates = 0;          // records - distinct
  int missing_message_id = 0;  // records without the header
  int out_of_order_keys = 0;   // keys whose first occurrences are not 0, 1, 2, ... in order
  std::string first_problem;   // human-readable, empty if none
};
DeliveryReport Analyze(const std::vector<Record>& records);

}  // namespace outbox::test
