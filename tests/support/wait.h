#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace outbox::test {

// Deadlines in tests are multiplied by OUTBOX_TEST_TIME_SCALE (default 1) for slow hosts.
std::chrono::milliseconds Scaled(std::chrono::milliseconds d);

// Polls pred until it returns true or the (scaled) deadline passes; returns the last
// result. The poll interval is short; this is waiting on a condition, not sleeping.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds deadline);

}  // namespace outbox::test
