#include "core/repeat_log.h"

#include <fmt/format.h>

namespace outbox::relay {

std::optional<std::string> RepeatLog::Note(const std::string& kind, Clock::TimePoint now) {
  auto [it, first] = entries_.try_emplace(kind);
  Entry& e = it->second;
  ++e.total;
  if (first) {
    e.last_line = now;
    return std::string();
  }
  ++e.count;
  if (now - e.last_line < interval_) return std::nullopt;
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - e.last_line).count();
  std::string suffix = fmt::format(" (failed {} times in the last {} s)", e.count, seconds);
  e.last_line = now;
  e.count = 0;
  return suffix;
}

long long RepeatLog::Clear(const std::string& kind) {
  auto it = entries_.find(kind);
  if (it == entries_.end()) return 0;
  long long total = it->second.total;
  entries_.erase(it);
  return total;
}

}  // namespace outbox::relay
