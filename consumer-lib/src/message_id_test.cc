#include "message_id.h"

#include <gtest/gtest.h>

namespace outbox::internal {
namespace {

TEST(InboxMessageId, TakesAUuidOrAPrintableTokenAsIs) {
  std::string uuid = "5f0c6a8e-3b1d-4f2a-9d35-0f6f2c1b7a10";
  EXPECT_EQ(InboxMessageId(&uuid, "t", 0, 1), uuid);
  std::string token = "order-42:v3";
  EXPECT_EQ(InboxMessageId(&token, "t", 0, 1), token);
}

TEST(InboxMessageId, MissingHeaderIsTopicPartitionOffset) {
  EXPECT_EQ(InboxMessageId(nullptr, "orders", 3, 17), "orders/3/17");
  std::string empty;
  EXPECT_EQ(InboxMessageId(&empty, "orders", 3, 17), "orders/3/17");
}

TEST(InboxMessageId, HostileHeadersGetAStableDerivedIdThatNoRealIdCanEqual) {
  std::string too_long(129, 'a');
  std::string bad_utf8 = "abc\xff\xfe";
  std::string control = "a\nb";
  std::string spaced = "a b";
  for (const auto* h : {&too_long, &bad_utf8, &control, &spaced}) {
    auto id = InboxMessageId(h, "t", 0, 1);
    EXPECT_EQ(id.rfind("invalid message_id ", 0), 0u) << id;
    EXPECT_EQ(id, InboxMessageId(h, "other", 5, 9)) << "stable for the same bytes";
    EXPECT_LE(id.size(), kMaxMessageIdBytes);
  }
  EXPECT_NE(InboxMessageId(&too_long, "t", 0, 1), InboxMessageId(&bad_utf8, "t", 0, 1));
  std::string longest(128, 'a');
  EXPECT_EQ(InboxMessageId(&longest, "t", 0, 1), longest);
}

TEST(EscapeForLog, EscapesControlAndNonAsciiBytes) {
  EXPECT_EQ(EscapeForLog("ok-1"), "ok-1");
  EXPECT_EQ(EscapeForLog("a\nb\x1b[31m\xff"), "a\\x0ab\\x1b[31m\\xff");
  EXPECT_EQ(EscapeForLog("back\\slash"), "back\\x5cslash");
}

}  // namespace
}  // namespace outbox::internal
