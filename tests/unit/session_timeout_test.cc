// The session timeout's arithmetic (issue 19): keepalives and the user timeout add up to
// --session-timeout on both ends, the user's own libpq keywords win on the client side.
#include "pg/session_timeout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/config.h"
#include "common/errors.h"

namespace outbox::relay {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(SessionTimeout, DefaultIsTwentySecondsOfFiveSecondProbes) {
  EXPECT_EQ(kDefaultSessionTimeout, seconds(20));
  auto k = KeepalivesFor(kDefaultSessionTimeout);
  EXPECT_EQ(k.idle_s, 5);
  EXPECT_EQ(k.interval_s, 5);
  EXPECT_EQ(k.count, 3);
  EXPECT_EQ(k.user_timeout_ms, 20000);
  EXPECT_EQ(k.connect_timeout_s, 20);
}

TEST(SessionTimeout, ProbesNeverOutlastTheTimeout) {
  for (auto t = kMinSessionTimeout; t <= kMaxSessionTimeout; t += milliseconds(250)) {
    auto k = KeepalivesFor(t);
    const long long probes_ms = 1000LL * (k.idle_s + k.count * k.interval_s);
    ASSERT_LE(probes_ms, t.count()) << t.count();
    // Whole seconds: at most one second short of T.
    ASSERT_GT(probes_ms + 1000, t.count()) << t.count();
    ASSERT_GE(k.interval_s, 1);
    ASSERT_GE(k.idle_s, 1);
    ASSERT_EQ(k.user_timeout_ms, t.count());
    ASSERT_LE(k.connect_timeout_s * 1000LL, std::max<long long>(2000, t.count()));
  }
  auto k = KeepalivesFor(seconds(30));
  EXPECT_EQ(k.idle_s + 3 * k.interval_s, 30);
  EXPECT_EQ(k.interval_s, 7);
}

TEST(SessionTimeout, ServerSettingsAreTheSessionsOwn) {
  auto sql = ServerSettingsStatement(KeepalivesFor(seconds(8)));
  EXPECT_EQ(sql,
            "SELECT set_config('tcp_keepalives_idle', '2', false), set_config('tcp_keepalives_interval', '2', false), "
            "set_config('tcp_keepalives_count', '3', false), set_config('tcp_user_timeout', '8000', false)");
}

TEST(SessionTimeout, ClientKeywordsFillOnlyWhatTheConninfoLeavesOut) {
  auto k = KeepalivesFor(seconds(8));
  auto kv = WithClientKeywords("host=db dbname=app keepalives_idle=60", k);
  EXPECT_THAT(kv, HasSubstr("host='db'"));
  EXPECT_THAT(kv, HasSubstr("keepalives_idle='60'"));
  EXPECT_THAT(kv, Not(HasSubstr("keepalives_idle=2")));
  EXPECT_THAT(kv, HasSubstr("keepalives_interval=2"));
  EXPECT_THAT(kv, HasSubstr("keepalives_count=3"));
  EXPECT_THAT(kv, HasSubstr("tcp_user_timeout=8000"));
  EXPECT_THAT(kv, HasSubstr("connect_timeout=8"));
  // A URI comes back as keywords; quotes and backslashes in values survive.
  auto uri = WithClientKeywords("postgresql://relay:it's%5Csecret@db:5433/app?sslmode=require", k);
  EXPECT_THAT(uri, HasSubstr("user='relay'"));
  EXPECT_THAT(uri, HasSubstr("password='it\\'s\\\\secret'"));
  EXPECT_THAT(uri, HasSubstr("port='5433'"));
  EXPECT_THAT(uri, HasSubstr("sslmode='require'"));
  EXPECT_THAT(uri, HasSubstr("tcp_user_timeout=8000"));
  try {
    WithClientKeywords("host=db password='unterminated", k);
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), Not(HasSubstr("unterminated")));
  }
}

}  // namespace
}  // namespace outbox::relay
