// wal-sim: seeded simulated worlds of the WAL stream (core/wal_stream.h, capture mode wal,
// docs/wal-capture.md). Each world has producers committing transactions of keyed
// messages (and, now and then, capture switches), a slot that streams them from its
// confirmed position, a Kafka whose acknowledgements come late, out of order across keys,
// fail transiently, refuse poison records (and then turn fatal, like the relay's gapless
// producer), and a relay that is killed (kill -9: everything it held is gone) and whose
// stream breaks. After the faults heal the checker demands:
//   - safety: the slot is never confirmed past a message Kafka did not acknowledge and
//     that was not parked (a crash then loses nothing);
//   - nothing after a switch to wal is produced while the table's older rows are left;
//   - only poison records are parked; every other message reaches Kafka;
//   - the first occurrences of each key's messages are in commit order;
//   - liveness: everything committed is published or parked, and the slot confirmed.
//   wal-sim --seeds N [--first S]   worlds S .. S+N-1; stops at the first violation
//   wal-sim --seed N                replays one world, printing its trace
//   --summary FILE                  also append "N worlds, M events" to FILE
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/outbox_store.h"
#include "core/wal_stream.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

class SimClock final : public Clock {
 public:
  TimePoint Now() const override { return now; }
  TimePoint now{};
};

struct Violation {
  std::string what;
};

struct World;

struct Message {
  std::int64_t id;
  std::string key;
  std::uint64_t lsn;
  bool poison;
};
struct Txn {
  std::vector<Message> messages;
  char switch_mode = 0;
  std::int64_t max_id = 0;
  std::uint64_t end_lsn = 0;
};

// The slot: committed transactions, the confirmed position, one reader.
class SimSource final : public WalSource {
 public:
  explicit SimSource(World& w) : w_(w) {}
  void Open() override;
  std::optional<WalEvent> Next() override;
  void Confirm(std::uint64_t lsn) override;
  void Close() override { open_ = false; }
  bool TableHasRowsUpTo(std::int64_t max_id) override;
  void Park(const OutboxRow& row, std::int64_t, const std::string&) override;
  void Drained() override;

  bool open_ = false;
  std::size_t next_txn_ = 0;  // index into the world's transactions
  std::deque<WalEvent> pending_;

 private:
  World& w_;
};

class SimSink final : public RecordSink {
 public:
  explicit SimSink(World& w) : w_(w) {}
  ProduceStatus Produce(const OutboxRow& row, std::uint64_t token, std::string* error,
                        DeliveryFailure* failure) override;
  std::vector<Delivery> Poll() override { return std::exchange(reports_, {}); }
  void Purge() override { FailAll(); }
  std::optional<std::string> FatalError() const override { return fatal_; }
  void Reset() override {
    FailAll();
    fatal_.reset();
  }
  bool Reachable() override { return true; }

  void FailAll() {
    for (auto& [key, q] : queues_) {
      for (auto& r : q) reports_.push_back(Delivery{r.token, false, DeliveryFailure::kTransient, "purged"});
    }
    queues_.clear();
  }
  // Acknowledges (or fails) the head of some partitions.
  void Tick(std::mt19937_64& rng, bool faults);

  struct Rec {
    std::uint64_t token;
    OutboxRow row;
  };
  std::map<std::string, std::deque<Rec>> queues_;  // per key (= per partition here)
  std::vector<Delivery> reports_;
  std::optional<std::string> fatal_;

 private:
  World& w_;
};

struct World {
  explicit World(std::uint64_t seed) : rng(seed), source(*this), sink(*this) {}

  std::mt19937_64 rng;
  SimClock clock;
  std::vector<Txn> txns;  // committed, in commit order
  std::uint64_t next_lsn = 1000;
  std::int64_t next_id = 1;
  std::uint64_t confirmed = 0;  // the slot's
  std::int64_t table_rows_up_to = 0;  // rows with id <= this are left in the table (0: none)
  std::map<std::int64_t, const Message*> by_id;
  std::set<std::int64_t> acked;       // ids Kafka acknowledged
  std::set<std::int64_t> parked;
  std::vector<std::int64_t> kafka_log;  // ids in the order Kafka stored them
  std::optional<std::int64_t> open_hold;  // a switch to wal whose table rows are left
  bool drained = false;
  SimSource source;
  SimSink sink;
  std::ostringstream trace;
  long long events = 0;

  int Rand(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

  void CommitTxn(bool allow_switch) {
    Txn t;
    if (allow_switch && Chance(0.05) && !drained) {
      // A switch to wal with rows left in the table that the table lanes still publish.
      t.switch_mode = 'w';
      t.max_id = next_id;
      table_rows_up_to = next_id++;
    } else {
      int n = 1 + Rand(Chance(0.2) ? 30 : 4);
      for (int i = 0; i < n; ++i) {
        Message m{next_id++, "k" + std::to_string(Rand(6)), next_lsn++, Chance(0.01)};
        t.messages.push_back(m);
      }
    }
    next_lsn += 1;
    t.end_lsn = next_lsn++;
    txns.push_back(t);
    trace << "commit end=" << t.end_lsn << " msgs=" << t.messages.size()
          << (t.switch_mode ? " switch" : "") << "\n";
  }
  void Index() {
    by_id.clear();
    for (const auto& t : txns) {
      for (const auto& m : t.messages) by_id[m.id] = &m;
    }
  }
};

void SimSource::Open() {
  open_ = true;
  pending_.clear();
  next_txn_ = 0;
  while (next_txn_ < w_.txns.size() && w_.txns[next_txn_].end_lsn <= w_.confirmed) ++next_txn_;
}

std::optional<WalEvent> SimSource::Next() {
  if (!open_) throw StoreError("stream closed", "08003", true);
  if (w_.Chance(0.002)) {
    open_ = false;
    throw StoreError("stream broke", "08006", true);
  }
  if (pending_.empty()) {
    if (w_.Chance(0.3)) return std::nullopt;  // nothing arrived yet
    if (next_txn_ >= w_.txns.size()) {
      if (w_.Chance(0.3)) {
        WalEvent k;
        k.kind = WalEvent::Kind::kKeepalive;
        k.lsn = w_.next_lsn;
        k.reply_requested = w_.Chance(0.3);
        return k;
      }
      return std::nullopt;
    }
    const Txn& t = w_.txns[next_txn_++];
    WalEvent b;
    b.kind = WalEvent::Kind::kBegin;
    pending_.push_back(b);
    for (const auto& m : t.messages) {
      WalEvent e;
      e.kind = WalEvent::Kind::kMessage;
      e.lsn = m.lsn;
      e.row.id = m.id;
      e.row.message_id = std::to_string(m.id);
      e.row.key = m.key;
      e.row.topic = "t";
      e.row.payload = std::string(static_cast<std::size_t>(w_.Rand(300)), 'x');
      pending_.push_back(e);
    }
    if (t.switch_mode) {
      WalEvent s;
      s.kind = WalEvent::Kind::kSwitch;
      s.switch_mode = t.switch_mode;
      s.max_id = t.max_id;
      pending_.push_back(s);
    }
    WalEvent c;
    c.kind = WalEvent::Kind::kCommit;
    c.lsn = t.end_lsn;
    pending_.push_back(c);
  }
  auto e = pending_.front();
  pending_.pop_front();
  return e;
}

void SimSource::Confirm(std::uint64_t lsn) {
  if (!open_) throw StoreError("stream closed", "08003", true);
  // Safety: every message of a transaction that ends at or before lsn is done.
  for (const auto& t : w_.txns) {
    if (t.end_lsn > lsn) break;
    for (const auto& m : t.messages) {
      if (!w_.acked.count(m.id) && !w_.parked.count(m.id)) {
        throw Violation{"confirmed " + std::to_string(lsn) + " past message " + std::to_string(m.id) +
                        " that Kafka did not acknowledge"};
      }
    }
    if (t.switch_mode == 'w' && w_.table_rows_up_to != 0 && w_.table_rows_up_to <= t.max_id) {
      throw Violation{"confirmed past a switch to wal while the table's rows are left"};
    }
  }
  w_.confirmed = std::max(w_.confirmed, lsn);
}

bool SimSource::TableHasRowsUpTo(std::int64_t max_id) {
  return w_.table_rows_up_to != 0 && w_.table_rows_up_to <= max_id;
}

void SimSource::Park(const OutboxRow& row, std::int64_t, const std::string&) {
  const Message* m = w_.by_id.at(row.id);
  if (!m->poison) throw Violation{"innocent message " + std::to_string(row.id) + " parked"};
  w_.parked.insert(row.id);
  w_.trace << "park " << row.id << "\n";
}

void SimSource::Drained() { w_.drained = true; }

RecordSink::ProduceStatus SimSink::Produce(const OutboxRow& row, std::uint64_t token, std::string* error,
                                           DeliveryFailure* failure) {
  if (fatal_) {
    *error = "fatal";
    *failure = DeliveryFailure::kTransient;
    return ProduceStatus::kRejected;
  }
  if (w_.Chance(0.01)) return ProduceStatus::kQueueFull;
  // Nothing after a switch to wal may be produced while the table's older rows are left.
  for (const auto& t : w_.txns) {
    if (t.switch_mode == 'w' && w_.table_rows_up_to != 0 && w_.table_rows_up_to <= t.max_id) {
      bool after = false;
      for (const auto& u : w_.txns) {
        if (&u == &t) after = true;
        else if (after) {
          for (const auto& m : u.messages) {
            if (m.id == row.id) throw Violation{"message " + std::to_string(row.id) + " produced before the table drained"};
          }
        }
      }
    }
  }
  queues_[*row.key].push_back({token, row});
  return ProduceStatus::kQueued;
}

void SimSink::Tick(std::mt19937_64& rng, bool faults) {
  (void)rng;
  for (auto& [key, q] : queues_) {
    if (q.empty() || !w_.Chance(0.4)) continue;
    auto r = q.front();
    const Message* m = w_.by_id.at(r.row.id);
    if (m->poison) {
      // The whole partition's batch is refused; the gapless producer turns fatal.
      for (auto& x : q) reports_.push_back(Delivery{x.token, false, DeliveryFailure::kPermanent, "too large"});
      q.clear();
      fatal_ = "record batch refused";
      continue;
    }
    if (faults && w_.Chance(0.01)) {
      for (auto& x : q) reports_.push_back(Delivery{x.token, false, DeliveryFailure::kTransient, "timed out"});
      q.clear();
      fatal_ = "timed out (gapless)";
      continue;
    }
    q.pop_front();
    w_.acked.insert(r.row.id);
    w_.kafka_log.push_back(r.row.id);
    reports_.push_back(Delivery{r.token, true, DeliveryFailure::kTransient, ""});
  }
}

struct Result {
  bool ok = true;
  std::string why;
  long long events = 0;
};

Result RunWorld(std::uint64_t seed, bool print_trace) {
  World w{seed};
  auto log = std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
  RelayObserver observer;
  WalStreamLimits limits;
  limits.max_inflight_records = 1 + w.Rand(40);
  limits.max_inflight_bytes = 200 + w.Rand(5000);
  std::unique_ptr<WalStream> stream;
  WalStream::Carry carry;
  Result result;
  auto open = [&] {
    w.source.Open();
    stream = std::make_unique<WalStream>(w.source, w.sink, w.clock, observer, log, limits, carry);
  };
  auto restart = [&](bool kill) {
    w.source.Close();
    w.sink.Reset();
    stream.reset();
    if (kill) carry = {};
  };
  try {
    const int kFaultSteps = 3000, kHealSteps = 20000;
    int txns_to_commit = 20 + w.Rand(80);
    for (int step = 0; step < kFaultSteps + kHealSteps; ++step) {
      bool faults = step < kFaultSteps;
      ++w.events;
      w.clock.now += milliseconds{1 + w.Rand(50)};
      if (txns_to_commit > 0 && w.Chance(0.05)) {
        w.CommitTxn(/*allow_switch=*/true);
        w.Index();
        --txns_to_commit;
      }
      if (w.table_rows_up_to != 0 && w.Chance(0.01)) w.table_rows_up_to = 0;  // table lanes drained
      w.sink.Tick(w.rng, faults);
      if (!stream) {
        if (!faults || w.Chance(0.2)) open();
        continue;
      }
      if (faults && w.Chance(0.002)) {
        w.trace << "kill -9\n";
        restart(/*kill=*/true);
        continue;
      }
      try {
        auto r = stream->Step();
        carry = stream->carry();
        if (r.outcome == WalStream::Outcome::kRestart) {
          w.trace << "restart: " << r.why << "\n";
          restart(false);
        }
      } catch (const StoreError& e) {
        w.trace << "stream error: " << e.what() << "\n";
        carry = stream->carry();
        restart(false);
      }
      if (!faults && txns_to_commit == 0 && w.sink.queues_.empty()) {
        bool all = true;
        for (const auto& [id, m] : w.by_id) all = all && (w.acked.count(id) || w.parked.count(id));
        if (all && !w.txns.empty() && w.confirmed >= w.txns.back().end_lsn) break;
      }
    }
    // Liveness and the end state.
    for (const auto& [id, m] : w.by_id) {
      if (!w.acked.count(id) && !w.parked.count(id)) {
        throw Violation{"message " + std::to_string(id) + " never published after the faults healed"};
      }
      if (m->poison && !w.parked.count(id)) throw Violation{"poison message " + std::to_string(id) + " not parked"};
    }
    if (!w.txns.empty() && w.confirmed < w.txns.back().end_lsn) {
      throw Violation{"slot not confirmed to the end after the faults healed"};
    }
    // First occurrences per key in commit order.
    std::map<std::string, std::int64_t> last;
    std::set<std::int64_t> seen;
    for (auto id : w.kafka_log) {
      if (!seen.insert(id).second) continue;
      const Message* m = w.by_id.at(id);
      auto& l = last[m->key];
      if (id < l) {
        throw Violation{"key " + m->key + ": message " + std::to_string(id) + " first published after " +
                        std::to_string(l)};
      }
      l = id;
    }
  } catch (const Violation& v) {
    result.ok = false;
    result.why = v.what;
  }
  result.events = w.events;
  if (print_trace || !result.ok) {
    if (print_trace) std::cout << w.trace.str();
  }
  return result;
}

}  // namespace
}  // namespace outbox::relay

int main(int argc, char** argv) {
  std::uint64_t seeds = 0, first = 1, one = 0;
  bool replay = false;
  std::string summary;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "wal-sim: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seeds") seeds = std::stoull(next());
    else if (a == "--first") first = std::stoull(next());
    else if (a == "--seed") { one = std::stoull(next()); replay = true; }
    else if (a == "--summary") summary = next();
    else {
      std::cerr << "usage: wal-sim (--seeds N [--first S] | --seed N) [--summary FILE]\n";
      return 2;
    }
  }
  if (replay) {
    auto r = outbox::relay::RunWorld(one, true);
    std::cout << (r.ok ? "ok" : "VIOLATION: " + r.why) << "\n";
    return r.ok ? 0 : 1;
  }
  long long events = 0;
  for (std::uint64_t s = first; s < first + seeds; ++s) {
    auto r = outbox::relay::RunWorld(s, false);
    events += r.events;
    if (!r.ok) {
      std::cout << "seed " << s << ": VIOLATION: " << r.why << "\nreplay: wal-sim --seed " << s << "\n";
      return 1;
    }
  }
  std::cout << "wal-sim: " << seeds << " worlds, " << events << " events, no violation\n";
  if (!summary.empty()) std::ofstream(summary, std::ios::app) << "wal-sim: " << seeds << " worlds, " << events << " events\n";
  return 0;
}
