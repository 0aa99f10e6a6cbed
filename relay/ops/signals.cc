#include "ops/signals.h"

#include <csignal>
#include <thread>
#include <unistd.h>

namespace outbox::relay {
namespace {

sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

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

std::atomic<bool>& WatchTerminationSignals(int wake_fd) {
  static std::atomic<bool> stop{false};
  std::thread([wake_fd] {
    WaitForTerminationSignal();
    stop.store(true);
    if (wake_fd >= 0) {
      char one = 1;
      [[maybe_unused]] auto n = write(wake_fd, &one, 1);
    }
  }).detach();
  return stop;
}

}  // namespace outbox::relay
