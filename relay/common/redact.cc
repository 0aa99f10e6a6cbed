#include "common/redact.h"

#include <regex>

namespace outbox::relay {

std::string RedactConninfo(std::string_view conninfo) {
  std::string s{conninfo};
  // URI form: postgres[ql]://user:secret@host/...
  static const std::regex kUri{R"(^(postgres(?:ql)?://[^:/@]*:)([^@]*)(@))", std::regex::icase};
  s = std::regex_replace(s, kUri, "$1***$3");
  // URI query parameter: ?password=secret&...
  static const std::regex kQuery{R"(([?&](?:ssl)?password=)[^&]*)", std::regex::icase};
  s = std::regex_replace(s, kQuery, "$1***");
  // key=value form: password=secret or password = 'quoted \' secret'
  static const std::regex kKv{R"((^|\s)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*))",
                              std::regex::icase};
  s = std::regex_replace(s, kKv, "$1$2***");
  return s;
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
