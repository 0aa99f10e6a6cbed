#include "notify_command.h"

#include "errors.h"

namespace outbox::relay {

int RunNotifyCommand(const NotifyConfig&, spdlog::logger&) {
  throw RuntimeError("notify: not built yet");
}

}  // namespace outbox::relay
