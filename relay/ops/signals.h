#pragma once

#include <atomic>

namespace outbox::relay {

// Process-wide termination handling, owned by main (library code never touches signals).
// Call BlockTerminationSignals() first thing in main, before any thread starts, so every
// thread inherits the mask and only the watcher thread receives SIGTERM/SIGINT.
void BlockTerminationSignals();

// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTerminationSignal();

// Starts a thread that waits for SIGTERM/SIGINT and then sets the returned flag and
// writes to wake_fd (if >= 0). The flag lives for the whole process.
std::atomic<bool>& WatchTerminationSignals(int wake_fd);

}  // namespace outbox::relay
