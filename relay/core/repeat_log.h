#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "core/clock.h"

namespace outbox::relay {

// Keeps an error that repeats from flooding the log (issue 14): the first occurrence of
// a kind is logged at once; later ones within `interval` are only counted, and the next
// one after it is logged with the count ("... (failed 1,234 times in the last 10 s)").
// Time comes from the caller, so the simulator's virtual clock drives it too. Not
// thread-safe.
class RepeatLog {
 public:
  explicit RepeatLog(std::chrono::milliseconds interval = std::chrono::seconds{10}) : interval_(interval) {}

  // Counts an occurrence of `kind`. Returns nullopt when it must not be logged now, else
  // the suffix for its line: "" for the first one, " (failed N times in the last S s)"
  // for a summary.
  std::optional<std::string> Note(const std::string& kind, Clock::TimePoint now);
  // The kind succeeded: the next failure is logged at once again. Returns how many times
  // it had failed in a row (0 if it had not).
  long long Clear(const std::string& kind);

 private:
  struct Entry {
    Clock::TimePoint last_line{};
    long long count = 0;      // occurrences since last_line, not logged yet
    long long total = 0;      // occurrences since the first
  };
  std::chrono::milliseconds interval_;
  std::map<std::string, Entry> entries_;
};

}  // namespace outbox::relay
