#pragma once

namespace outbox::relay {

// Owns one file descriptor and closes it on destruction. Movable, not copyable.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release();
  // Closes the descriptor held (if any) and takes `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A pipe used as a wake-up: Poke() makes read_fd() readable (poll() sees POLLIN).
// Both ends are close-on-exec and non-blocking, so a full pipe never blocks Poke().
// Throws RuntimeError if the pipe cannot be created.
class WakePipe {
 public:
  WakePipe();
  int read_fd() const { return read_.get(); }
  int write_fd() const { return write_.get(); }
  // Async-signal-safe and thread-safe.
  void Poke() const;

 private:
  UniqueFd read_;
  UniqueFd write_;
};

}  // namespace outbox::relay
