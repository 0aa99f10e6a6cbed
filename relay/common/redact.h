#pragma once

#include <string>
#include <string_view>

namespace outbox::relay {

// Returns conninfo (key=value form or postgres:// URI) with the password replaced by
// "***", for anything that is printed or logged.
std::string RedactConninfo(std::string_view conninfo);

// Transitional: the Kafka adapter owns this (kafka/kafka_settings.h, where it is defined
// and documented); declared here only until kafka_producer.cc includes that header.
bool IsSecretKafkaProperty(std::string_view key);

// Replaces every occurrence of `secret` in `text` by "***" (used on error texts from
// libraries that may echo what they were given).
std::string RedactSecret(std::string text, std::string_view secret);

}  // namespace outbox::relay
