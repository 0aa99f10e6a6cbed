#pragma once

// Test-only access to an outbox::Consumer (not installed; on the include path of the
// library's own tests through the outbox::consumer_testing target).

#include <functional>

#include "outbox/consumer.h"

namespace outbox::internal {

struct ConsumerTestAccess {
  // Calls `hook` after a message's transaction committed and before its offset is
  // committed (e.g. to kill the process right there). Set it before Run()/Step().
  static void SetAfterCommit(Consumer& consumer, std::function<void(const Message&)> hook);
};

}  // namespace outbox::internal
