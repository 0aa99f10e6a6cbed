#include "outbox/producer.h"

#include <nlohmann/json.hpp>

namespace outbox {

std::string HeadersJson(const Headers& headers) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : headers) j[k] = v;
  return j.dump();
}

std::string Publish(pqxx::work& tx, std::string_view topic, std::optional<std::string_view> key,
                    std::string_view payload, const Headers& headers) {
  // libpqxx 6 sends parameters as text: pass the payload as bytea via binarystring.
  pqxx::binarystring bytes{payload.data(), payload.size()};
  std::optional<std::string> k;
  if (key) k = std::string(*key);
  auto row = tx.exec_params1("SELECT outbox.publish($1, $2, $3::bytea, $4::jsonb)::text",
                             std::string(topic), k, bytes, HeadersJson(headers));
  return row[0].as<std::string>();
}

}  // namespace outbox
