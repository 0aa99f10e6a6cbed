#pragma once

#include <chrono>

namespace outbox::relay {

// Where the relay core reads the time. Production uses the steady clock; the simulator
// (tests/sim) a virtual one that only moves when the world says so.
class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
};

}  // namespace outbox::relay
