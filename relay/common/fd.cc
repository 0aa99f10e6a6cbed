#include "common/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/errors.h"

namespace outbox::relay {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) Reset(other.Release());
  return *this;
}

int UniqueFd::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

WakePipe::WakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw RuntimeError(std::string("pipe2: ") + std::strerror(errno));
  read_.Reset(fds[0]);
  write_.Reset(fds[1]);
}

void WakePipe::Poke() const {
  char one = 1;
  // A full pipe (EAGAIN) is already readable: nothing to do.
  [[maybe_unused]] auto n = write(write_.get(), &one, 1);
}

}  // namespace outbox::relay
