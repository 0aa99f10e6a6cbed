#include "common/host_port.h"

#include <regex>
#include <string>

namespace outbox::relay {

bool IsHostPort(std::string_view s) {
  static const std::regex kHostPort{R"(^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$)"};
  std::string text{s};
  std::smatch m;
  if (!std::regex_match(text, m, kHostPort)) return false;
  return std::stoi(m[2]) <= 65535;
}

}  // namespace outbox::relay
