// How the relay core composes a claim (relay/core/relay.cc, ClaimAndProduce): lanes with
// a backlog take turns within RelayLimits::max_claim_rows, lanes at their head join every
// claim. The protocol's safety is the simulator's (tests/sim); this checks the sizing that
// bounds the relay's memory and keeps one round trip per wake-up at low rates.
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/relay.h"

namespace outbox::relay {
namespace {

constexpr int kLanes = 16;

struct Table {
  std::map<std::int64_t, OutboxRow> rows;  // by id
  std::int64_t next_id = 1;
  bool wakeup = false;
  // Per claim statement: lane -> rows returned above the lane's known_up_to.
  std::vector<std::map<int, int>> claims;

  void Add(int lane, int count) {
    for (int i = 0; i < count; ++i) {
      OutboxRow r;
      r.id = next_id++;
      r.message_id = "m" + std::to_string(r.id);
      r.lane = lane;
      r.topic = "t";
      r.key = "k" + std::to_string(lane);
      r.payload = std::string(16, 'x');
      rows[r.id] = r;
    }
    wakeup = true;
  }
};

// Deletes at once; one session; every lane free to take.
class MemoryStore final : public OutboxStore {
 public:
  explicit MemoryStore(Table& t) : t_(t) {}
  int LaneCount() override { return kLanes; }
  int JoinGroup() override { return 0; }
  void LeaveGroup(int) override {}
  int LiveRelays() override { return 1; }
  std::vector<int> TryLockLanes(const std::vector<int>& lanes, int want) override {
    return {lanes.begin(), lanes.begin() + std::min<size_t>(lanes.size(), static_cast<size_t>(want))};
  }
  void UnlockLane(int) override {}
  std::vector<OutboxRow> Claim(std::vector<LaneClaim>& claims) override {
    std::vector<OutboxRow> out;
    std::map<int, int> fresh;
    for (auto& c : claims) {
      int n = 0;
      for (const auto& [id, row] : t_.rows) {
        if (row.lane != c.lane) continue;
        if (n++ >= c.limit) break;
        out.push_back(row);
        if (id > c.known_up_to) ++fresh[c.lane];
      }
      fresh.emplace(c.lane, 0);
    }
    t_.claims.push_back(fresh);
    return out;
  }
  std::vector<OutboxRow> Fetch(const std::vector<std::int64_t>& ids) override {
    std::vector<OutboxRow> out;
    for (auto id : ids) {
      if (auto it = t_.rows.find(id); it != t_.rows.end()) out.push_back(it->second);
    }
    return out;
  }
  std::uint64_t Delete(const std::vector<std::int64_t>& ids) override {
    for (auto id : ids) t_.rows.erase(id);
    return ++ticket_;
  }
  std::uint64_t DeletedUpTo() override { return ticket_; }
  void DeadLetter(std::int64_t id, const std::string&) override { t_.rows.erase(id); }
  bool TakeWakeups() override { return std::exchange(t_.wakeup, false); }
  bool TakeBufferedWakeups() override { return false; }

 private:
  Table& t_;
  std::uint64_t ticket_ = 0;
};

// Acknowledges every record at the next Poll.
class AckingSink final : public RecordSink {
 public:
  ProduceStatus Produce(const OutboxRow&, std::uint64_t token, std::string*, DeliveryFailure*) override {
    queued_.push_back(token);
    return ProduceStatus::kQueued;
  }
  std::vector<Delivery> Poll() override {
    std::vector<Delivery> out;
    for (auto t : queued_) out.push_back(Delivery{t, true, DeliveryFailure::kTransient, ""});
    queued_.clear();
    return out;
  }
  void Purge() override { queued_.clear(); }
  std::optional<std::string> FatalError() const override { return std::nullopt; }
  void Reset() override {}
  bool Reachable() override { return true; }

 private:
  std::vector<std::uint64_t> queued_;
};

class FixedClock final : public Clock {
 public:
  TimePoint Now() const override { return now; }
  TimePoint now = std::chrono::steady_clock::now();
};

struct World {
  Table table;
  AckingSink sink;
  FixedClock clock;
  RelayObserver observer;
  RunConfig config;  // defaults: --batch-size 2000, 4 batches in flight per lane (Relay keeps a reference)
  std::unique_ptr<Relay> relay;

  explicit World(const RelayLimits& limits = RelayLimits{}) {
    auto log = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
    relay = std::make_unique<Relay>(
        config, limits, clock, [this] { return std::make_unique<MemoryStore>(table); }, sink, observer, log, 1);
  }
  // Turns until the outbox is empty (the clock does not move: no timer fires).
  void Drain() {
    for (int i = 0; i < 1000 && !table.rows.empty(); ++i) relay->Step();
    ASSERT_TRUE(table.rows.empty()) << table.rows.size() << " rows left";
  }
};

TEST(RelayClaim, LanesWithABacklogTakeTurnsWithinTheClaimRows) {
  World w;
  for (int lane = 0; lane < kLanes; ++lane) w.table.Add(lane, 3000);
  w.Drain();
  std::set<int> first_round;
  for (size_t i = 0; i < w.table.claims.size(); ++i) {
    int fresh = 0;
    for (const auto& [lane, n] : w.table.claims[i]) fresh += n;
    EXPECT_LE(fresh, RelayLimits{}.max_claim_rows) << "claim " << i;
    if (i < 8) {
      EXPECT_EQ(w.table.claims[i].size(), 2u) << "claim " << i << ": two lanes of 2,000 rows";
      for (const auto& [lane, n] : w.table.claims[i]) first_round.insert(lane);
    }
  }
  // Round robin: the first eight claims reached every lane once.
  EXPECT_EQ(first_round.size(), static_cast<size_t>(kLanes));
}

TEST(RelayClaim, ABatchSizeAboveTheClaimRowsStillClaimsWholeBatches) {
  RelayLimits limits;
  limits.max_claim_rows = 100;
  World w(limits);
  for (int lane = 0; lane < 4; ++lane) w.table.Add(lane, 2500);
  w.Drain();
  ASSERT_FALSE(w.table.claims.empty());
  EXPECT_EQ(w.table.claims.front().size(), 1u);
  EXPECT_EQ(w.table.claims.front().begin()->second, 2000);  // one lane, one whole batch
}

TEST(RelayClaim, LanesAtTheirHeadJoinEveryClaim) {
  World w;
  for (int lane = 0; lane < kLanes; ++lane) w.table.Add(lane, 10);
  w.Drain();  // every lane's last claim came back short: all at their head
  for (int round = 0; round < 3; ++round) {
    size_t before = w.table.claims.size();
    for (int lane = 0; lane < kLanes; ++lane) w.table.Add(lane, 3);
    w.Drain();
    ASSERT_GT(w.table.claims.size(), before);
    EXPECT_EQ(w.table.claims[before].size(), static_cast<size_t>(kLanes))
        << "round " << round << ": one claim for every lane woken";
  }
}

}  // namespace
}  // namespace outbox::relay
