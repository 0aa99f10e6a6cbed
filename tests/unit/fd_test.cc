// Descriptor ownership (relay/common/fd.h).
#include "common/fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

namespace outbox::relay {
namespace {

bool IsOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

TEST(UniqueFd, ClosesOnDestructionAndMovesOwnership) {
  int raw = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a{raw};
    UniqueFd b{std::move(a)};
    EXPECT_FALSE(a);
    EXPECT_EQ(b.get(), raw);
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(WakePipe, PokeMakesTheReadEndReadableAndBothEndsCloseWithIt) {
  int read_fd, write_fd;
  {
    WakePipe pipe;
    read_fd = pipe.read_fd();
    write_fd = pipe.write_fd();
    EXPECT_FALSE(Readable(read_fd));
    pipe.Poke();
    EXPECT_TRUE(Readable(read_fd));
    for (int i = 0; i < 100000; ++i) pipe.Poke();  // a full pipe never blocks
  }
  EXPECT_FALSE(IsOpen(read_fd));
  EXPECT_FALSE(IsOpen(write_fd));
}

}  // namespace
}  // namespace outbox::relay
