// The Grafana dashboard and the Prometheus alert rules in ops/ (issue 18) name only
// metrics the relay and the notification worker export: a renamed metric breaks this
// test, not an operator's alerting.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "ops/relay_metrics.h"
#include "process.h"

namespace outbox {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in{path};
  EXPECT_TRUE(in) << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every sample name a scrape of `run` or `notify` can show.
std::set<std::string> ExportedNames() {
  std::set<std::string> names;
  prometheus::Registry registry;
  relay::RelayMetrics metrics{registry};
  // A family without children is not collected: give each labelled one a child, as the
  // running relay does.
  metrics.pending.Add({{"lane", "0"}});
  metrics.oldest_pending.Add({{"lane", "0"}});
  metrics.checkbacks.Add({{"result", "committed"}});
  metrics.prepared.Add({{"state", "parked"}});
  metrics.lane_count.Add({});
  for (const auto& family : registry.Collect()) names.insert(family.name);
  // The notification worker's metrics live inside notify_command.cc (no header): read
  // their declarations.
  const auto notify = Read(test::SourceDir() + "/relay/webhooks/notify_command.cc");
  std::regex declared{R"re(\.Name\("(outbox_notify_[a-z_]+)"\))re"};
  for (auto it = std::sregex_iterator(notify.begin(), notify.end(), declared); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
  }
  std::set<std::string> with_series;
  for (const auto& n : names) {
    with_series.insert(n);
    for (const char* suffix : {"_bucket", "_sum", "_count"}) with_series.insert(n + suffix);  // histograms
  }
  return with_series;
}

std::set<std::string> NamesIn(const std::string& text) {
  std::set<std::string> names;
  std::regex metric{R"(\b(outbox_(relay|notify)_[a-z_]+))"};
  for (auto it = std::sregex_iterator(text.begin(), text.end(), metric); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
  }
  return names;
}

TEST(OpsAssets, TheRelayExportsWhatTheDashboardAndAlertsRead) {
  const auto exported = ExportedNames();
  ASSERT_TRUE(exported.count("outbox_relay_published_total"));
  ASSERT_TRUE(exported.count("outbox_notify_exhausted_total"));
  for (const char* file : {"/ops/grafana/outbox-relay.json", "/ops/prometheus/alerts.yml"}) {
    const auto used = NamesIn(Read(test::SourceDir() + file));
    EXPECT_GE(used.size(), 5u) << file;
    for (const auto& name : used) EXPECT_TRUE(exported.count(name)) << file << " reads " << name << ", not exported";
  }
}

TEST(OpsAssets, TheDashboardShowsWhatIssue18Names) {
  auto dashboard = nlohmann::json::parse(Read(test::SourceDir() + "/ops/grafana/outbox-relay.json"));
  std::string exprs;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) exprs += target["expr"].get<std::string>() + "\n";
  }
  for (const char* metric : {"outbox_relay_published_total", "outbox_relay_oldest_pending_age_seconds",
                             "outbox_relay_inflight_messages", "outbox_relay_dead_letters", "outbox_relay_prepared",
                             "outbox_notify_exhausted_total", "outbox_relay_owned_lanes"}) {
    EXPECT_THAT(exprs, ::testing::HasSubstr(metric));
  }
}

TEST(OpsAssets, EveryAlertNamedInTheRulesIsExplainedInTheOperationsGuide) {
  const auto rules = Read(test::SourceDir() + "/ops/prometheus/alerts.yml");
  const auto guide = Read(test::SourceDir() + "/docs/operations.md");
  std::regex alert{R"(- alert: ([A-Za-z]+))"};
  int n = 0;
  for (auto it = std::sregex_iterator(rules.begin(), rules.end(), alert); it != std::sregex_iterator(); ++it, ++n) {
    EXPECT_THAT(guide, ::testing::HasSubstr("`" + (*it)[1].str() + "`")) << "docs/operations.md";
  }
  EXPECT_GE(n, 5);
}

// The first executable NAME on PATH, or "".
std::string OnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs{path ? path : ""};
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    auto candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Issue 18: the rules file is checked with promtool (Debian 12: package prometheus, which
// ops/install-deps.sh installs with CI=true or OUTBOX_INSTALL_PROMTOOL=1). Then the rules'
// own unit tests (ops/prometheus/alerts_test.yml) run too.
TEST(OpsAssets, PromtoolAcceptsTheAlertRules) {
  const auto promtool = OnPath("promtool");
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not on PATH: `apt-get install --no-install-recommends prometheus` "
                    "(or OUTBOX_INSTALL_PROMTOOL=1 ops/install-deps.sh)";
  }
  const auto check = test::RunProcess({promtool, "check", "rules", test::SourceDir() + "/ops/prometheus/alerts.yml"});
  EXPECT_EQ(check.code, 0) << check.out << check.err;
  EXPECT_THAT(check.out, ::testing::HasSubstr("SUCCESS"));
  const auto unit = test::RunProcess({promtool, "test", "rules", test::SourceDir() + "/ops/prometheus/alerts_test.yml"});
  EXPECT_EQ(unit.code, 0) << unit.out << unit.err;
}

}  // namespace
}  // namespace outbox
