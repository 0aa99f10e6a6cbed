#include "ops/signals.h"

#include <csignal>
#include <ctime>

namespace outbox::relay {
namespace {

sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// How often the watcher looks whether its owner is going away.
constexpr long kQuitCheckNanos = 100'000'000;

}  // namespace

void BlockTerminationSignals() {
  sigset_t set = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A closed consumer socket must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

TerminationWatcher::TerminationWatcher() {
  thread_ = std::thread([this] {
    const sigset_t set = TerminationSet();
    const timespec tick{0, kQuitCheckNanos};
    while (!quit_.load()) {
      // Bounded waits, so the destructor can end this thread (sigwait cannot be woken).
      if (sigtimedwait(&set, nullptr, &tick) > 0) {
        stop_.store(true);
        pipe_.Poke();
        return;
      }
    }
  });
}

TerminationWatcher::~TerminationWatcher() {
  quit_.store(true);
  thread_.join();
}

}  // namespace outbox::relay
