#pragma once

#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>

#include "outbox/message.h"

namespace outbox {

// Writes an outbox message inside the caller's transaction (SELECT outbox.publish(...)).
// It is published to Kafka by outbox-relay iff `tx` commits. `key` absent = no key (and
// no ordering promise); messages of one key are published in commit order. Header
// values are strings; the name message_id is reserved. Returns the message id (uuid
// text), which the Kafka record carries as header message_id.
// Throws pqxx::sql_error on a bad topic or headers (the transaction is then aborted).
std::string Publish(pqxx::work& tx, std::string_view topic, std::optional<std::string_view> key,
                    std::string_view payload, const Headers& headers = {});

}  // namespace outbox
