#pragma once

#include <atomic>
#include <thread>

#include "common/fd.h"

namespace outbox::relay {

// Process-wide termination handling, owned by main (library code never touches signals).
// Call BlockTerminationSignals() first thing in main, before any thread starts, so every
// thread inherits the mask and only the watcher receives SIGTERM/SIGINT.
void BlockTerminationSignals();

// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTerminationSignal();

// While it lives, a thread waits for SIGTERM/SIGINT; when one arrives it sets stop() and
// makes wake_fd() readable (for poll loops). The destructor ends and joins that thread,
// then closes the pipe: nothing writes to a closed descriptor.
class TerminationWatcher {
 public:
  // Throws RuntimeError if the wake-up pipe cannot be created.
  TerminationWatcher();
  ~TerminationWatcher();
  TerminationWatcher(const TerminationWatcher&) = delete;
  TerminationWatcher& operator=(const TerminationWatcher&) = delete;

  const std::atomic<bool>& stop() const { return stop_; }
  // Readable once a signal arrived or after Wake().
  int wake_fd() const { return pipe_.read_fd(); }
  // Makes wake_fd() readable without a signal (stop() is unchanged). Thread-safe.
  void Wake() const { pipe_.Poke(); }
  // As if SIGTERM arrived: sets stop() and wakes. Thread-safe.
  void RequestStop() {
    stop_ = true;
    pipe_.Poke();
  }

 private:
  WakePipe pipe_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> quit_{false};
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace outbox::relay
