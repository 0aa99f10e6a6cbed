// The egress policy for HTTP requests whose URL came from the database.
#include "webhooks/egress_policy.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include "common/errors.h"

namespace outbox::relay {
namespace {

using ::testing::HasSubstr;

// A socket address for a numeric address, as libcurl hands it over after resolving.
struct Addr {
  explicit Addr(const std::string& text) {
    if (inet_pton(AF_INET, text.c_str(), &v4.sin_addr) == 1) {
      v4.sin_family = AF_INET;
      sa = reinterpret_cast<const sockaddr*>(&v4);
    } else if (inet_pton(AF_INET6, text.c_str(), &v6.sin6_addr) == 1) {
      v6.sin6_family = AF_INET6;
      sa = reinterpret_cast<const sockaddr*>(&v6);
    } else {
      ADD_FAILURE() << "not an address: " << text;
    }
  }
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const sockaddr* sa = nullptr;
};

bool Refused(const EgressPolicy& p, const std::string& address, const std::string& host = "example.com") {
  Addr a{address};
  return p.Refusal(host, a.sa).has_value();
}

TEST(EgressPolicy, ByDefaultOnlyPublicAddressesAreCalled) {
  EgressPolicy p;
  for (const char* bad : {"127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                          "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
                          "fe80::1", "fd00::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
                          "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2001:db8::1"}) {
    EXPECT_TRUE(Refused(p, bad)) << bad;
  }
  for (const char* good : {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
                           "::ffff:8.8.8.8", "64:ff9b::808:808"}) {
    EXPECT_FALSE(Refused(p, good)) << good;
  }
}

TEST(EgressPolicy, TheRefusalNamesTheAddressItsClassAndTheOption) {
  Addr a{"169.254.169.254"};
  auto why = EgressPolicy{}.Refusal("metadata.internal", a.sa);
  ASSERT_TRUE(why.has_value());
  EXPECT_THAT(*why, HasSubstr("169.254.169.254 is link-local"));
  EXPECT_THAT(*why, HasSubstr("--egress-allow"));
}

TEST(EgressPolicy, AllowedHostsAndRangesOpenExceptions) {
  auto p = EgressPolicy::Parse(" localhost , 10.0.0.0/8,fd00::/8, 192.168.1.7");
  EXPECT_FALSE(Refused(p, "127.0.0.1", "LOCALHOST"));  // by host name, any address
  EXPECT_TRUE(Refused(p, "127.0.0.1", "127.0.0.1"));   // the address itself is not listed
  EXPECT_FALSE(Refused(p, "10.200.0.1"));
  EXPECT_FALSE(Refused(p, "::ffff:10.0.0.1"));
  EXPECT_FALSE(Refused(p, "fd12::1"));
  EXPECT_FALSE(Refused(p, "192.168.1.7"));
  EXPECT_TRUE(Refused(p, "192.168.1.8"));
  EXPECT_TRUE(Refused(p, "169.254.169.254"));
  EXPECT_EQ(p.description(), "localhost,10.0.0.0/8,fd00::/8,192.168.1.7");
}

TEST(EgressPolicy, BadEntriesAreAllReportedAtOnce) {
  try {
    EgressPolicy::Parse("10.0.0.0/33,ok.example,not a host,::1/200");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.problems().size(), 3u);
    EXPECT_THAT(e.problems()[0], HasSubstr("'10.0.0.0/33'"));
    EXPECT_THAT(e.problems()[1], HasSubstr("'not a host'"));
    EXPECT_THAT(e.problems()[2], HasSubstr("'::1/200'"));
  }
}

}  // namespace
}  // namespace outbox::relay
