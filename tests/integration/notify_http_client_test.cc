// The internal libcurl wrapper (consumer-lib/src/http_client.h) against the local test
// receiver: what notifications and the relay's check-back rely on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "webhooks/egress_policy.h"
#include "webhooks/http_client.h"
#include "http_server.h"
#include "wait.h"

namespace outbox::internal {
namespace {

using ::testing::HasSubstr;
using std::chrono_literals::operator""ms;
using std::chrono_literals::operator""s;

// The test receivers listen on loopback, which the default egress policy refuses.
const relay::EgressPolicy& LocalServers() {
  static const auto policy = relay::EgressPolicy::Parse("127.0.0.1");
  return policy;
}

TEST(NotifyHttpClient, LoopbackIsRefusedAtConnectTimeUnlessAllowed) {
  test::HttpServer server{[](const test::RecordedRequest&) { return test::Reply{200, "ok", false}; }};
  HttpRequest req;
  req.url = server.Url("/hook");
  auto refused = Perform(req);  // default: public addresses only
  EXPECT_EQ(refused.status, 0);
  EXPECT_THAT(refused.error, HasSubstr("refused by the egress policy: 127.0.0.1 is loopback"));
  EXPECT_TRUE(server.Requests().empty());
  // Any spelling of loopback resolves to the same address and is refused the same way.
  auto port = server.Url("/").substr(server.Url("/").rfind(':') + 1);
  for (std::string host : {"2130706433", "0x7f.1", "127.1", "localhost"}) {
    HttpRequest odd;
    odd.url = "http://" + host + ":" + port;
    auto r = Perform(odd);
    EXPECT_EQ(r.status, 0) << host;
    EXPECT_THAT(r.error, HasSubstr("refused by the egress policy")) << host;
  }
  EXPECT_TRUE(server.Requests().empty());
  req.egress = &LocalServers();
  EXPECT_EQ(Perform(req).status, 200);
}

TEST(NotifyHttpClient, GetReturnsStatusBodyAndLatency) {
  test::HttpServer server{[](const test::RecordedRequest&) { return test::Reply{202, "accepted-body", false}; }};
  HttpRequest req;
  req.egress = &LocalServers();
  req.url = server.Url("/check?gid=g1");
  req.headers = {{"X-Trace", "t1"}, {"X-Empty", ""}};
  auto r = Perform(req);
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "accepted-body");
  EXPECT_TRUE(r.Success());
  EXPECT_GT(r.latency.count(), 0);
  auto got = server.Requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "GET");
  EXPECT_EQ(got[0].target, "/check?gid=g1");
  EXPECT_EQ(got[0].Header("X-Trace"), "t1");
  // The empty X-Empty (sent as curl's "X-Empty;") broke nothing. cpp-httplib 0.11.4's
  // parser drops headers with an empty value, so the receiver cannot show it itself.
}

TEST(NotifyHttpClient, PostSendsTheBodyAsIsAndTruncatesLongAnswers) {
  test::HttpServer server{[](const test::RecordedRequest&) { return test::Reply{500, std::string(5000, 'e'), false}; }};
  HttpRequest req;
  req.egress = &LocalServers();
  req.method = HttpRequest::Method::kPost;
  req.url = server.Url("/hook");
  req.body = std::string("bin\0\xff", 5) + std::string(4000, 'x');  // > 1 KiB: no Expect: 100-continue
  req.max_response_bytes = 100;
  auto r = Perform(req);
  EXPECT_EQ(r.status, 500);
  EXPECT_FALSE(r.Success());
  EXPECT_EQ(r.body.size(), 100u);
  EXPECT_TRUE(r.body_truncated);
  auto got = server.Requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].body, req.body);
  EXPECT_EQ(got[0].Header("Expect"), "");
}

TEST(NotifyHttpClient, TransportFailuresAreValuesNotExceptions) {
  int closed_port;
  {
    test::HttpServer gone;
    closed_port = gone.port();
  }
  HttpRequest refused;
  refused.egress = &LocalServers();
  refused.url = "http://127.0.0.1:" + std::to_string(closed_port) + "/";
  auto r = Perform(refused);
  EXPECT_EQ(r.status, 0);
  EXPECT_THAT(r.error, HasSubstr("onnect"));

  test::HttpServer slow{test::HttpServer::HoldAll()};
  HttpRequest timed;
  timed.egress = &LocalServers();
  timed.url = slow.Url("/");
  timed.total_timeout = 200ms;
  auto t = Perform(timed);
  EXPECT_EQ(t.status, 0);
  EXPECT_THAT(t.error, HasSubstr("timeout after 200 ms"));

  HttpRequest other_scheme;

  other_scheme.egress = &LocalServers();
  other_scheme.url = "file:///etc/passwd";
  auto f = Perform(other_scheme);
  EXPECT_EQ(f.status, 0);
  EXPECT_FALSE(f.error.empty());
  EXPECT_EQ(f.body, "");
}

TEST(NotifyHttpClient, RedirectsAreNotFollowed) {
  test::HttpServer server{test::HttpServer::Always(302)};
  HttpRequest req;
  req.egress = &LocalServers();
  req.url = server.Url("/");
  auto r = Perform(req);
  EXPECT_EQ(r.status, 302);
  EXPECT_EQ(server.RequestCount(), 1);
}

TEST(NotifyHttpClient, MultiRunsRequestsConcurrentlyOnOneThread) {
  test::HttpServer slow{test::HttpServer::HoldAll(201)};
  test::HttpServer fast{test::HttpServer::Always(200)};
  HttpMulti multi;
  HttpRequest a;
  a.egress = &LocalServers();
  a.url = slow.Url("/a");
  HttpRequest b;
  b.egress = &LocalServers();
  b.url = fast.Url("/b");
  multi.Start(1, a);
  multi.Start(2, b);
  EXPECT_EQ(multi.in_flight(), 2u);
  std::vector<std::pair<std::uint64_t, HttpResponse>> done;
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        for (auto& d : multi.Poll(10ms)) done.push_back(std::move(d));
        return !done.empty();
      },
      10s));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].first, 2u);
  EXPECT_EQ(done[0].second.status, 200);
  ASSERT_TRUE(test::WaitUntil([&] { return slow.Held() == 1; }, 10s));
  slow.ReleaseHeld();
  ASSERT_TRUE(test::WaitUntil(
      [&] {
        for (auto& d : multi.Poll(10ms)) done.push_back(std::move(d));
        return done.size() == 2;
      },
      10s));
  EXPECT_EQ(done[1].first, 1u);
  EXPECT_EQ(done[1].second.status, 201);
  EXPECT_EQ(multi.in_flight(), 0u);
}

}  // namespace
}  // namespace outbox::internal
