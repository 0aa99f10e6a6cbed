#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config.h"
#include "core/clock.h"
#include "core/outbox_store.h"
#include "core/record_sink.h"
#include "core/repeat_log.h"
#include "core/relay_observer.h"

namespace spdlog { class logger; }

namespace outbox::relay {

// Bounds on what one relay holds in flight (produced, not yet acknowledged), over all
// lanes: they bound its memory.
struct RelayLimits {
  int max_inflight_records = 50000;
  std::int64_t max_inflight_bytes = 256ll << 20;  // key + payload + headers
  // What one claim reads at most (split over the lanes it claims; each lane gets at least
  // one row): bounds the claim's result in memory next to what is in flight.
  std::int64_t max_claim_bytes = 32ll << 20;
  // Rows one claim asks for at most over the lanes with a backlog (at least one batch):
  // they take turns, a few lanes with full batches per claim. Lanes whose last claim came
  // back short (at their head) are claimed too but not counted: they hold a few rows.
  // With --batch-size 2000 and 16 lanes a drain's claim would otherwise read 32,000 rows,
  // and that result, its decoded copy and what is in flight doubled the peak RSS.
  int max_claim_rows = 4000;
};

// The relay loop (`outbox-relay run`) as a state machine. Per owned lane it claims rows
// in id order, produces them, waits for Kafka's acknowledgements and only then deletes
// them; rows Kafka refuses for good move to outbox.dead_letters. Lanes are owned through
// advisory locks on the relay's one PostgreSQL session and shared fairly with the other
// relays on the database. See docs/relay.md for the design and its guarantees.
//
// It reaches PostgreSQL, Kafka and time only through OutboxStore, RecordSink and Clock,
// so tests/sim drives the same code in a simulated world. Not thread-safe: one thread
// calls Step (or Run) and everything else.
class Relay {
 public:
  Relay(const RunConfig& config, const RelayLimits& limits, const Clock& clock, OutboxStoreFactory connect,
        RecordSink& sink, RelayObserver& observer, std::shared_ptr<spdlog::logger> log, std::uint64_t seed);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // One turn of the loop: serves delivery reports, flushes deletes and dead letters,
  // rebalances, claims and produces. Returns how long the caller may wait before the
  // next turn unless a delivery report or a wake-up arrives first (0: call again now).
  std::chrono::milliseconds Step();
  // Stop claiming; finish what is in flight (up to shutdown_timeout), then done().
  void Stop();
  bool done() const { return done_; }
  // 0, or 1 after a fatal Kafka producer error other than a refused record batch.
  int exit_code() const { return exit_code_; }

  // Runs Step until `stop` becomes true (stop_fd becomes readable at the same time) and
  // the drain is done, waiting in poll(2) on the sink's and the store's descriptors.
  // Returns exit_code().
  int Run(const std::atomic<bool>& stop, int stop_fd);

  // What /readyz answers: ready while the relay has its session, its statements succeed
  // and the rows it knows of move (Kafka acknowledges them); else why not, for an operator.
  struct Readiness {
    bool ready = false;
    std::string reason;  // when not ready; never holds a secret
  };
  Readiness readiness() const;  // thread-safe
  bool ready() const { return readiness().ready; }
  // True while the lanes are handed over because Kafka acknowledged nothing for
  // --kafka-stall-timeout (the relay probes Kafka and rejoins when it answers).
  bool kafka_stalled() const { return standby_; }

  // For checks (tests/sim): what the relay holds now.
  int InFlightRecords() const;
  std::int64_t InFlightBytes() const;
  std::vector<int> OwnedLanes() const;  // owned and not releasing
  bool connected() const { return store_ != nullptr; }

 private:
  using TimePoint = Clock::TimePoint;
  struct Batch {
    std::uint64_t seq = 0;
    TimePoint claimed_at;
    std::vector<std::int64_t> ids;                                // produced, in produce order
    std::int64_t bytes = 0;
    int pending = 0;                                              // not yet reported
    std::vector<std::int64_t> delivered;
    std::vector<std::pair<std::int64_t, std::string>> rejected;   // refused for good, the row's own fault
    std::vector<std::int64_t> suspects;   // in a record batch Kafka refused: maybe innocent
    bool retry_needed = false;            // a transient failure
    bool isolated = false;                // one suspect produced alone: its failure is its own
    std::uint64_t epoch = 0;              // the lane's ownership when it was claimed
  };
  struct Lane {
    bool owned = false;
    bool releasing = false;          // stop claiming, unlock once nothing is in flight
    bool at_head = true;             // last claim was short: claim again when woken
    bool short_claim = false;        // at_head because of a claim (not a new owner or session)
    TimePoint resume_at;             // no claims before (after a transient failure)
    bool reset_pending = false;      // a failure or a late commit: claim again once idle
    bool wake = true;                // a wake-up or the poll timer asks for a claim
    std::deque<Batch> inflight;
    std::uint64_t epoch = 0;         // counts acquisitions: batches of an earlier one are stale
    bool drop_suspects = false;      // older refused rows were dropped: until the reset claim
    // Rows Kafka acknowledged whose DELETE was sent (store ticket) and is not known done:
    // a claim may still see them, so they count as known, like rows in flight.
    std::deque<std::pair<std::uint64_t, std::vector<std::int64_t>>> deleting;
  };
  // Where a record given to the sink belongs (the token's entry in tokens_).
  struct InFlightRecord {
    int lane;
    std::uint64_t batch_seq;
    std::int64_t id;
  };

  void Connect();
  void OnConnectionLost(const std::string& why);
  void Rebalance();
  void ClaimAndProduce();
  void HandleDeliveries(std::vector<Delivery> deliveries);
  void CollectCompleted();
  void FlushToDatabase();
  void ForgetDeleted();
  bool DeletesPending() const;
  void ReleaseIdleLanes();
  void Isolate();
  void DropSuspects(int lane);
  bool IsolatedInFlight() const;
  void ResetProducer(const std::string& why, bool give_up);
  void EnterStandby(TimePoint now);
  void DatabaseTurn(TimePoint now);
  void UpdateReadiness(TimePoint now);
  bool CanClaimNow() const;
  std::chrono::milliseconds Jitter(std::chrono::milliseconds d);

  const RunConfig& config_;
  RelayLimits limits_;
  const Clock& clock_;
  OutboxStoreFactory connect_;
  RecordSink& sink_;
  RelayObserver& observer_;
  std::shared_ptr<spdlog::logger> log_;
  std::mt19937_64 rng_;
  std::unique_ptr<OutboxStore> store_;   // null while disconnected
  int member_slot_ = 0;
  int lane_count_ = 0;
  std::map<int, Lane> lanes_;
  std::unordered_map<std::uint64_t, InFlightRecord> tokens_;
  std::uint64_t next_token_ = 1;
  std::uint64_t next_batch_ = 1;
  // Rows of record batches Kafka refused as a whole (ids, lowest first). While any is
  // left nothing else is produced: each is produced alone, nothing else in flight, so a
  // refusal is its own (dead letter) and an acknowledgement publishes it in order.
  std::map<std::int64_t, int> suspects_;  // id -> lane
  TimePoint isolation_resume_{};
  TimePoint next_reset_{};
  int refusals_ = 0;  // permanent failures reported since the last producer reset
  // When the producer's fatal error was first seen: the refused batch's delivery reports
  // may arrive after the fatal error itself (librdkafka raises it on its broker thread).
  std::optional<TimePoint> fatal_since_;
  int next_lane_ = 0;          // where the next turn's claims start (round robin)
  bool bytes_full_ = false;    // the byte cap stopped a lane: wait for acknowledgements
  std::map<int, std::vector<std::int64_t>> to_delete_;  // lane -> acknowledged rows, DELETE not sent
  std::vector<std::pair<std::int64_t, std::string>> to_dead_letter_;
  bool stopping_ = false;
  bool draining_ = false;
  bool done_ = false;
  int exit_code_ = 0;
  TimePoint drain_deadline_{};
  TimePoint next_rebalance_{};
  TimePoint next_poll_{};
  TimePoint next_connect_{};
  std::chrono::milliseconds connect_backoff_{100};
  std::string last_connect_error_;
  bool in_group_ = false;      // holds its member lock (counted by the other relays)
  // A statement failed on a live session: the database turns wait (capped exponential).
  int statement_failures_ = 0;  // in a row
  std::string last_statement_error_;
  std::chrono::milliseconds statement_backoff_{1000};
  TimePoint statement_retry_at_{};
  // Progress: the last acknowledgement, or the last turn with nothing known to wait.
  TimePoint progress_at_{};
  bool standby_ = false;       // Kafka stalled: lanes and membership handed over
  TimePoint next_probe_{};
  RepeatLog repeat_log_;
  mutable std::mutex readiness_mu_;
  Readiness readiness_;        // Guarded by readiness_mu_.
};

}  // namespace outbox::relay
