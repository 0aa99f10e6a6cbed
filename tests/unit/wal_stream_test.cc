// The WAL stream's protocol (core/wal_stream.h) against models of the slot and of Kafka,
// and the decoders of the replication stream (wal/pgoutput.h, wal/wal_record.h).
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <set>

#include "core/wal_stream.h"
#include "wal/pgoutput.h"
#include "wal/wal_record.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return now; }
  TimePoint now{};
};

// A slot: committed transactions in order; a session reads from the confirmed position.
class FakeSource final : public WalSource {
 public:
  struct Txn {
    std::uint64_t end_lsn;
    std::vector<WalEvent> body;  // messages and switches
  };
  std::vector<Txn> slot;
  std::uint64_t confirmed = 0;
  std::deque<WalEvent> queue;
  bool open = false;
  std::int64_t table_max_id = 0;  // rows with id <= this are left in the table (0: none)
  std::vector<std::int64_t> parked;
  bool drained = false;

  std::uint64_t next_lsn = 100;
  // Appends a committed transaction of messages (id, key) and returns its end LSN.
  std::uint64_t Commit(const std::vector<std::pair<std::int64_t, std::string>>& messages, char switch_mode = 0,
                       std::int64_t max_id = 0) {
    Txn t;
    for (const auto& [id, key] : messages) {
      WalEvent e;
      e.kind = WalEvent::Kind::kMessage;
      e.lsn = next_lsn++;
      e.row.id = id;
      e.row.message_id = "00000000-0000-0000-0000-" + std::to_string(100000000000 + id);
      e.row.topic = "t";
      e.row.key = key;
      e.row.payload = "p" + std::to_string(id);
      t.body.push_back(e);
    }
    if (switch_mode) {
      WalEvent e;
      e.kind = WalEvent::Kind::kSwitch;
      e.lsn = next_lsn++;
      e.switch_mode = switch_mode;
      e.max_id = max_id;
      t.body.push_back(e);
    }
    t.end_lsn = next_lsn++;
    slot.push_back(t);
    if (open) Enqueue(slot.back());
    return t.end_lsn;
  }
  void Enqueue(const Txn& t) {
    WalEvent b;
    b.kind = WalEvent::Kind::kBegin;
    queue.push_back(b);
    for (const auto& e : t.body) queue.push_back(e);
    WalEvent c;
    c.kind = WalEvent::Kind::kCommit;
    c.lsn = t.end_lsn;
    queue.push_back(c);
  }
  void Keepalive(bool reply = false) {
    WalEvent k;
    k.kind = WalEvent::Kind::kKeepalive;
    k.lsn = next_lsn;
    k.reply_requested = reply;
    queue.push_back(k);
  }

  void Open() override {
    open = true;
    queue.clear();
    for (const auto& t : slot) {
      if (t.end_lsn > confirmed) Enqueue(t);
    }
  }
  std::optional<WalEvent> Next() override {
    if (queue.empty()) return std::nullopt;
    auto e = queue.front();
    queue.pop_front();
    return e;
  }
  void Confirm(std::uint64_t lsn) override { confirmed = std::max(confirmed, lsn); }
  void Close() override {
    open = false;
    queue.clear();
  }
  bool TableHasRowsUpTo(std::int64_t max_id) override { return table_max_id != 0 && table_max_id <= max_id; }
  void Park(const OutboxRow& row, std::int64_t, const std::string&) override { parked.push_back(row.id); }
  void Drained() override { drained = true; }
};

// Kafka: records in produce order; acknowledged when the test says so.
class FakeSink final : public RecordSink {
 public:
  struct Rec {
    std::uint64_t token;
    OutboxRow row;
  };
  std::deque<Rec> inflight;
  std::vector<std::int64_t> log;  // ids written, in order (duplicates included)
  std::set<std::int64_t> poison;  // refused for good
  std::optional<std::string> fatal;
  std::vector<Delivery> reports;

  ProduceStatus Produce(const OutboxRow& row, std::uint64_t token, std::string*, DeliveryFailure*) override {
    inflight.push_back({token, row});
    return ProduceStatus::kQueued;
  }
  // Acknowledges the oldest n records (poison ones fail for good and make it fatal).
  void Ack(std::size_t n = SIZE_MAX) {
    while (n-- > 0 && !inflight.empty()) {
      auto r = inflight.front();
      inflight.pop_front();
      Delivery d;
      d.token = r.token;
      if (poison.count(r.row.id)) {
        d.ok = false;
        d.failure = DeliveryFailure::kPermanent;
        d.error = "refused";
        fatal = "gapless: batch refused";
      } else {
        log.push_back(r.row.id);
      }
      reports.push_back(d);
    }
  }
  void FailAll() {
    for (auto& r : inflight) {
      Delivery d;
      d.token = r.token;
      d.ok = false;
      d.error = "timed out";
      reports.push_back(d);
    }
    inflight.clear();
  }
  std::vector<Delivery> Poll() override { return std::exchange(reports, {}); }
  void Purge() override { FailAll(); }
  std::optional<std::string> FatalError() const override { return fatal; }
  void Reset() override {
    FailAll();
    fatal.reset();
  }
  bool Reachable() override { return true; }
};

class WalStreamTest : public ::testing::Test {
 protected:
  std::shared_ptr<spdlog::logger> log_ =
      std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
  FakeClock clock_;
  FakeSource source_;
  FakeSink sink_;
  RelayObserver observer_;
  WalStream::Carry carry_;
  std::unique_ptr<WalStream> stream_;

  void OpenSession() {
    source_.Open();
    stream_ = std::make_unique<WalStream>(source_, sink_, clock_, observer_, log_, WalStreamLimits{}, carry_);
  }
  WalStream::StepResult Step() {
    auto r = stream_->Step();
    carry_ = stream_->carry();
    return r;
  }
  // Runs the stream, acknowledging everything, restarting sessions on kRestart, until
  // nothing moves.
  void RunToQuiet() {
    for (int i = 0; i < 200; ++i) {
      auto r = Step();
      clock_.now += milliseconds{1500};
      if (r.outcome == WalStream::Outcome::kRestart) {
        source_.Close();
        sink_.Reset();
        OpenSession();
        continue;
      }
      if (r.outcome == WalStream::Outcome::kDrained) return;
      sink_.Ack();
    }
  }
};

TEST_F(WalStreamTest, ProducesInCommitOrderAndConfirmsOnlyAcknowledgedTransactions) {
  OpenSession();
  auto end1 = source_.Commit({{1, "a"}, {2, "b"}});
  auto end2 = source_.Commit({{3, "a"}});
  Step();
  ASSERT_EQ(sink_.inflight.size(), 3u);
  sink_.Ack(1);  // only record 1: transaction 1 is not done
  clock_.now += milliseconds{2000};
  Step();
  EXPECT_LT(source_.confirmed, end1);
  sink_.Ack(1);
  clock_.now += milliseconds{2000};
  Step();
  EXPECT_EQ(source_.confirmed, end1);
  sink_.Ack();
  clock_.now += milliseconds{2000};
  Step();
  EXPECT_EQ(source_.confirmed, end2);
  EXPECT_EQ(sink_.log, (std::vector<std::int64_t>{1, 2, 3}));
}

TEST_F(WalStreamTest, AFailedDeliveryRestartsFromTheConfirmedPositionAndRepublishesOnlyWhatWasInFlight) {
  OpenSession();
  source_.Commit({{1, "a"}});
  source_.Commit({{2, "a"}});
  Step();
  sink_.Ack(1);
  clock_.now += milliseconds{2000};
  Step();  // transaction 1 confirmed
  sink_.FailAll();
  auto r = Step();
  ASSERT_EQ(r.outcome, WalStream::Outcome::kRestart);
  source_.Close();
  sink_.Reset();
  OpenSession();
  RunToQuiet();
  EXPECT_EQ(sink_.log, (std::vector<std::int64_t>{1, 2}));
}

TEST_F(WalStreamTest, APoisonRecordIsParkedAloneAndTheRecordsAroundItArePublishedInOrder) {
  OpenSession();
  sink_.poison = {3};
  source_.Commit({{1, "a"}, {2, "b"}, {3, "a"}, {4, "b"}});
  auto end = source_.Commit({{5, "a"}});
  RunToQuiet();
  EXPECT_EQ(source_.parked, (std::vector<std::int64_t>{3}));
  // 1 and 2 may come twice (in flight with the refused batch); first occurrences in order.
  std::vector<std::int64_t> first;
  for (auto id : sink_.log) {
    if (std::find(first.begin(), first.end(), id) == first.end()) first.push_back(id);
  }
  EXPECT_EQ(first, (std::vector<std::int64_t>{1, 2, 4, 5}));
  EXPECT_EQ(source_.confirmed, end);
}

TEST_F(WalStreamTest, ASwitchToWalHoldsLaterMessagesUntilTheTablesOlderRowsArePublished) {
  OpenSession();
  source_.table_max_id = 7;  // rows up to id 7 still in the table
  auto marker_end = source_.Commit({}, 'w', 7);
  source_.Commit({{8, "a"}});
  for (int i = 0; i < 5; ++i) {
    Step();
    clock_.now += milliseconds{2000};
  }
  EXPECT_TRUE(sink_.inflight.empty()) << "a message after the switch was produced before the table drained";
  EXPECT_LT(source_.confirmed, marker_end) << "confirming the marker would lose the hold on a restart";
  // A restart while held holds again.
  source_.Close();
  OpenSession();
  Step();
  EXPECT_TRUE(sink_.inflight.empty());
  source_.table_max_id = 0;
  clock_.now += milliseconds{2000};
  Step();
  Step();
  ASSERT_EQ(sink_.inflight.size(), 1u);
  EXPECT_EQ(sink_.inflight.front().row.id, 8);
}

TEST_F(WalStreamTest, ASwitchBackToTableEndsTheStreamOnceEverythingBeforeItIsAcknowledged) {
  OpenSession();
  source_.Commit({{1, "a"}});
  auto end = source_.Commit({}, 't');
  Step();
  EXPECT_FALSE(source_.drained);
  sink_.Ack();
  auto r = Step();
  EXPECT_EQ(r.outcome, WalStream::Outcome::kDrained);
  EXPECT_TRUE(source_.drained);
  EXPECT_EQ(source_.confirmed, end);
  EXPECT_FALSE(source_.open);
}

TEST_F(WalStreamTest, AnIdleStreamConfirmsTheServersEndOfWal) {
  OpenSession();
  source_.Commit({{1, "a"}});
  Step();
  source_.Keepalive();  // arrives while record 1 is in flight: not confirmable
  Step();
  EXPECT_EQ(source_.confirmed, 0u);
  sink_.Ack();
  source_.Keepalive(/*reply=*/true);
  Step();
  EXPECT_EQ(source_.confirmed, source_.next_lsn);
}

TEST_F(WalStreamTest, InFlightBytesAreBounded) {
  WalStreamLimits limits;
  limits.max_inflight_bytes = 1000;
  source_.Open();
  stream_ = std::make_unique<WalStream>(source_, sink_, clock_, observer_, log_, limits, carry_);
  std::vector<std::pair<std::int64_t, std::string>> many;
  for (int i = 1; i <= 100; ++i) many.push_back({i, "k"});
  source_.Commit(many);
  Step();
  EXPECT_LT(sink_.inflight.size(), 20u);
  EXPECT_GT(sink_.inflight.size(), 0u);
}

TEST(WalRecord, RoundTripsEveryField) {
  WalMessage m;
  m.row.id = 42;
  m.row.message_id = "0123abcd-0000-4000-8000-00000000beef";
  m.row.topic = "orders";
  m.row.key = std::nullopt;
  m.row.payload = std::string("\0\1binary", 8);
  m.row.headers = {{"a", "1"}, {"trace", "x\"y"}};
  m.created_at_us = 123456789;
  auto back = DecodeWalMessage(EncodeWalMessage(m));
  EXPECT_EQ(back.row.id, 42);
  EXPECT_EQ(back.row.message_id, m.row.message_id);
  EXPECT_EQ(back.row.topic, "orders");
  EXPECT_FALSE(back.row.key.has_value());
  EXPECT_EQ(back.row.payload, m.row.payload);
  EXPECT_EQ(back.row.headers, m.row.headers);
  EXPECT_EQ(back.created_at_us, 123456789);
}

TEST(WalRecord, RefusesAnotherVersionAndTruncatedBytes) {
  WalMessage m;
  m.row.message_id = "0123abcd-0000-4000-8000-00000000beef";
  m.row.topic = "t";
  auto bytes = EncodeWalMessage(m);
  auto v2 = bytes;
  v2[0] = 2;
  EXPECT_THROW(DecodeWalMessage(v2), WalDecodeError);
  EXPECT_THROW(DecodeWalMessage(bytes.substr(0, bytes.size() - 1)), WalDecodeError);
  EXPECT_THROW(DecodeWalSwitch(std::string("\1x\0\0\0\0\0\0\0\0", 10)), WalDecodeError);
}

TEST(Pgoutput, DecodesBeginMessageCommitAndKeepalive) {
  auto big = [](std::uint64_t v, int n) {
    std::string s;
    for (int i = n - 1; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
  };
  auto xlog = [&](const std::string& body) { return "w" + big(1, 8) + big(2, 8) + big(3, 8) + body; };
  auto b = DecodeCopyData(xlog("B" + big(0x500, 8) + big(0, 8) + big(7, 4)));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind, WalEvent::Kind::kBegin);
  WalMessage m;
  m.row.id = 9;
  m.row.message_id = "0123abcd-0000-4000-8000-00000000beef";
  m.row.topic = "t";
  m.row.key = "k";
  auto content = EncodeWalMessage(m);
  auto msg = DecodeCopyData(xlog("M" + std::string(1, '\1') + big(0x480, 8) + "outbox" + std::string(1, '\0') +
                                 big(content.size(), 4) + content));
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->kind, WalEvent::Kind::kMessage);
  EXPECT_EQ(msg->lsn, 0x480u);
  EXPECT_EQ(msg->row.id, 9);
  EXPECT_EQ(msg->row.key, "k");
  // Another application's message, and a non-transactional one, are not ours.
  EXPECT_FALSE(DecodeCopyData(xlog("M" + std::string(1, '\1') + big(1, 8) + "other" + std::string(1, '\0') +
                                   big(1, 4) + "x")));
  EXPECT_FALSE(DecodeCopyData(xlog("M" + std::string(1, '\0') + big(1, 8) + "outbox" + std::string(1, '\0') +
                                   big(content.size(), 4) + content)));
  auto c = DecodeCopyData(xlog("C" + std::string(1, '\0') + big(0x500, 8) + big(0x530, 8) + big(0, 8)));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, WalEvent::Kind::kCommit);
  EXPECT_EQ(c->lsn, 0x530u);
  auto k = DecodeCopyData("k" + big(0x900, 8) + big(0, 8) + std::string(1, '\1'));
  ASSERT_TRUE(k);
  EXPECT_EQ(k->kind, WalEvent::Kind::kKeepalive);
  EXPECT_EQ(k->lsn, 0x900u);
  EXPECT_TRUE(k->reply_requested);
  EXPECT_EQ(LsnText(0x1'0000'00A0), "1/A0");
  EXPECT_EQ(ParseLsn("1/A0"), 0x1'0000'00A0u);
}

}  // namespace
}  // namespace outbox::relay
