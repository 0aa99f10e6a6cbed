#include "common/redact.h"

#include <array>
#include <cctype>
#include <regex>

namespace outbox::relay {

std::string RedactConninfo(std::string_view conninfo) {
  std::string s{conninfo};
  // URI form: postgres[ql]://user:secret@host/...
  static const std::regex kUri{R"(^(postgres(?:ql)?://[^:/@]*:)([^@]*)(@))", std::regex::icase};
  s = std::regex_replace(s, kUri, "$1***$3");
  // URI query parameter: ?password=secret&...
  static const std::regex kQuery{R"(([?&]password=)[^&]*)", std::regex::icase};
  s = std::regex_replace(s, kQuery, "$1***");
  // key=value form: password=secret or password = 'quoted \' secret'
  static const std::regex kKv{R"((^|\s)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*))",
                              std::regex::icase};
  s = std::regex_replace(s, kKv, "$1$2***");
  return s;
}

bool IsSecretKafkaProperty(std::string_view key) {
  std::string k;
  for (char c : key) k += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static constexpr std::array<std::string_view, 5> kMarks = {"password", "secret", "key.pem",
                                                             "sasl.oauthbearer.config", "token"};
  for (auto m : kMarks) {
    if (k.find(m) != std::string::npos) return true;
  }
  return false;
}

std::string RedactSecret(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos)) {
    text.replace(pos, secret.size(), "***");
    pos += 3;
  }
  return text;
}

}  // namespace outbox::relay
