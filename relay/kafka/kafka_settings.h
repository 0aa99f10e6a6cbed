#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox::relay {

// What the relay's user may pass to librdkafka (`--kafka-conf KEY=VALUE`), checked before
// the producer is created so that every problem is reported at start-up, at once.

// librdkafka properties in the order given; the first setting of a key wins.
using KafkaSettings = std::vector<std::pair<std::string, std::string>>;

// True if a librdkafka property holds a secret (passwords, SASL secrets, private keys,
// tokens): its value is never printed.
bool IsSecretKafkaProperty(std::string_view key);

// Parses `KEY=VALUE` entries (highest precedence first) into settings, keeping the first
// setting of each key. Refuses, with one problem each:
//   - an entry without '=' (only its start is shown: it may be a mistyped secret);
//   - bootstrap.servers / metadata.broker.list (the relay takes --brokers);
//   - settings that would weaken the relay's guarantees: enable.idempotence other than
//     true, acks / request.required.acks other than all (-1);
//   - anything librdkafka itself rejects (unknown property, bad value); the value of a
//     secret property is removed from librdkafka's message.
// Problems start with "--kafka-conf" and never contain a secret value.
KafkaSettings ParseKafkaSettings(const std::vector<std::string>& entries,
                                 std::vector<std::string>& problems);

// Problems of a bootstrap list "host:port,..." (each entry may carry a protocol prefix
// such as SSL://); empty when it is well-formed. Problems start with "--brokers".
std::vector<std::string> CheckBrokerList(std::string_view brokers);

}  // namespace outbox::relay
