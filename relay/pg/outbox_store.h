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
// PostgreSQL session, LISTEN outbox_relay for wake-ups, prepared statements, binary
// results. Its failures are PgError, which is the core's StoreError. Not thread-safe.
class PgOutboxStore final : public OutboxStore {
 public:
  // Connects (the session bounded by session_timeout, pg/session_timeout.h), LISTENs to
  // outbox_relay, prepares statements. Throws StoreError.
  PgOutboxStore(const std::string& conninfo, const std::string& application_name,
                std::chrono::milliseconds session_timeout);

  int LaneCount() override;
  int JoinGroup() override;
  void LeaveGroup(int slot) override;
  int LiveRelays() override;
  std::vector<int> TryLockLanes(const std::vector<int>& lanes, int want) override;
  void UnlockLane(int lane) override;
  std::vector<OutboxRow> Claim(std::vector<LaneClaim>& claims) override;
  std::vector<OutboxRow> Fetch(const std::vector<std::int64_t>& ids) override;
  void Delete(const std::vector<std::int64_t>& ids) override;
  void DeadLetter(std::int64_t id, const std::string& error) override;
  bool TakeWakeups() override;
  bool TakeBufferedWakeups() override;
  int wait_fd() const override { return conn_->socket(); }

 private:
  void Open();  // checks settings, LISTEN, session settings, prepares statements

  std::unique_ptr<PgConnection> conn_;
};

// Advisory lock namespaces (the first int of the two-int form).
inline constexpr int kLaneLockClass = 0x6f72656c;    // lanes: (class, lane)
inline constexpr int kMemberLockClass = 0x6f726d62;  // relay group members: (class, slot)

}  // namespace outbox::relay
