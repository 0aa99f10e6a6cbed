#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "outbox/message.h"

namespace outbox::internal {

// Headers as the JSON object the SQL functions take ({"name":"value",...}).
inline std::string HeadersJson(const Headers& headers) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : headers) j[k] = v;
  return j.dump();
}

}  // namespace outbox::internal
