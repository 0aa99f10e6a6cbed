#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/outbox_store.h"
#include "pg/pg.h"

namespace outbox::relay {

// The libpq implementation of the core's OutboxStore (core/outbox_store.h): one
// PostgreSQL session for everything that needs the lane locks (LISTEN outbox_relay for
// wake-ups, claims, locks, dead letters), and a second one for deleting published rows,
// sent without waiting so that PostgreSQL deletes on one backend while it claims on the
// other. Prepared statements, binary results. Its failures are PgError, which is the
// core's StoreError. Not thread-safe.
class PgOutboxStore final : public OutboxStore {
 public:
  // Connects (the session bounded by session_timeout, pg/session_timeout.h), LISTENs to
  // outbox_relay, prepares statements. Throws StoreError.
  PgOutboxStore(const std::string& conninfo, const std::string& application_name,
                std::chrono::milliseconds session_timeout);
  // Waits (a few seconds at most) for the deletes already asked for.
  ~PgOutboxStore() override;

  int LaneCount() override;
  int JoinGroup() override;
  void LeaveGroup(int slot) override;
  int LiveRelays() override;
  std::vector<int> TryLockLanes(const std::vector<int>& lanes, int want) override;
  void UnlockLane(int lane) override;
  std::vector<OutboxRow> Claim(std::vector<LaneClaim>& claims) override;
  std::vector<OutboxRow> Fetch(const std::vector<std::int64_t>& ids) override;
  std::uint64_t Delete(const std::vector<std::int64_t>& ids) override;
  std::uint64_t DeletedUpTo() override;
  void DeadLetter(std::int64_t id, const std::string& error) override;
  bool TakeWakeups() override;
  bool TakeBufferedWakeups() override;
  int wait_fd() const override { return conn_->socket(); }
  int delete_wait_fd() const override { return deleter_ ? deleter_->socket() : -1; }

 private:
  void Open();  // checks settings, LISTEN, session settings, prepares statements
  void OpenDeleter();
  // Reads the result of the DELETE in flight if it arrived, then sends what is queued.
  void PumpDeletes();
  // Reads the result of the DELETE in flight (blocking until it is there): its ticket is done.
  void FinishDelete();

  std::string conninfo_;
  std::string application_name_;
  std::chrono::milliseconds session_timeout_;
  std::unique_ptr<PgConnection> conn_;
  std::unique_ptr<PgConnection> deleter_;  // null after it was lost, until reopened
  std::vector<std::int64_t> delete_queued_;  // not sent yet
  std::uint64_t queued_ticket_ = 0;          // the highest ticket in delete_queued_
  std::vector<std::int64_t> delete_sent_;    // in the DELETE in flight
  std::uint64_t sent_ticket_ = 0;            // what it covers (0: none in flight)
  std::uint64_t done_ticket_ = 0;
  std::uint64_t next_ticket_ = 1;
  bool delete_failing_ = false;  // the last DELETE was refused: retries wait for their result
};

// Advisory lock namespaces (the first int of the two-int form).
inline constexpr int kLaneLockClass = 0x6f72656c;    // lanes: (class, lane)
inline constexpr int kMemberLockClass = 0x6f726d62;  // relay group members: (class, slot)

}  // namespace outbox::relay
