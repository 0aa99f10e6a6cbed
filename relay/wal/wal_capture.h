#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/config.h"
#include "common/fd.h"
#include "core/relay_observer.h"
#include "core/repeat_log.h"
#include "core/wal_stream.h"

namespace spdlog { class logger; }

namespace outbox::relay {

class PgConnection;
class KafkaProducer;

// outbox.settings as the capture thread reads it once a second.
struct WalCaptureSettings {
  bool wal = false;       // capture = 'wal'
  bool draining = false;  // wal_draining: a switch back to table is being drained
  std::string slot;
  std::uint64_t wal_end = 0;  // the server's end of WAL when read
};

// Capture mode `wal` on the `run` daemon (docs/wal-capture.md): a thread with its own
// PostgreSQL session and Kafka producer. Once a second it reads outbox.settings; while
// capture = 'wal' (or a switch back to table is being drained) it competes for the stream
// lock, and the holder streams the slot through WalStream. Outages are retried with
// backoff. A lost or invalidated slot, or a message this relay cannot read, stops the
// daemon: `on_fatal` is called once (the caller then stops the relay and exits 1).
class WalCapture {
 public:
  WalCapture(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayObserver& observer,
             std::function<void()> on_fatal);
  // Stop() and join.
  ~WalCapture();
  WalCapture(const WalCapture&) = delete;
  WalCapture& operator=(const WalCapture&) = delete;

  // Finish what is in flight (up to shutdown_timeout), confirm it, close. Returns at once.
  void Stop();
  // Whether the daemon must exit 1 (why was logged).
  bool failed() const { return failed_; }

 private:
  void Loop();
  // One streaming session on `session` (which holds the stream lock). Returns when the
  // session ends (restart, drained, stop); throws what the stream throws.
  void Stream(PgConnection& session, const WalCaptureSettings& settings, KafkaProducer& producer);
  // Waits up to `d` or until Stop; false if stopping.
  bool Sleep(std::chrono::milliseconds d);
  void Fatal(const std::string& what);

  const RunConfig& config_;
  std::shared_ptr<spdlog::logger> log_;
  RelayObserver& observer_;
  std::function<void()> on_fatal_;
  WalStream::Carry carry_;
  RepeatLog repeat_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
  WakePipe wake_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;  // last
};

}  // namespace outbox::relay
