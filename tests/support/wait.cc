#include "wait.h"

#include <cstdlib>

namespace outbox::test {

std::chrono::milliseconds Scaled(std::chrono::milliseconds d) {
  const char* s = std::getenv("OUTBOX_TEST_TIME_SCALE");
  double scale = s ? std::atof(s) : 1.0;
  if (scale <= 0) scale = 1.0;
  return std::chrono::milliseconds(static_cast<long long>(d.count() * scale));
}

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + Scaled(deadline);
  auto pause = std::chrono::milliseconds(2);
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= until) return pred();
    std::this_thread::sleep_for(pause);
    if (pause < std::chrono::milliseconds(50)) pause *= 2;
  }
}

}  // namespace outbox::test
