#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/outbox_row.h"
#include "pg/pg.h"

namespace outbox::relay {

// Where the relay reads, claims and removes outbox rows, and where lane ownership lives
// (session advisory locks held on this one connection: if the connection is lost, the
// locks are gone with it, so claims and ownership can never disagree).
// Not thread-safe: owned by the relay loop. Every call throws PgError; after an error
// with connection_lost() the store must be reopened.
class OutboxStore {
 public:
  // Connects, LISTENs to outbox_relay, prepares statements, reads the lane count.
  OutboxStore(const std::string& conninfo, const std::string& application_name);

  int lane_count() const { return lane_count_; }
  int socket() const { return conn_->socket(); }

  // Joins the relay group: holds one member lock. Returns the member slot.
  int JoinGroup();
  // Relays currently holding a member lock on this database (at least 1: us).
  int LiveRelays();
  // Tries the given lanes in order until `want` are taken; returns those now owned.
  std::vector<int> TryLockLanes(const std::vector<int>& lanes, int want);
  void UnlockLane(int lane);

  struct LaneClaim {
    int lane;
    std::int64_t known_up_to;  // highest id of the lane the relay has in flight (0: none)
    int limit;                 // rows to read, counted from the lane's lowest id
  };
  // The lowest `limit` rows of each lane in id order (one round trip for all lanes).
  // Rows with id <= known_up_to come without payload and headers: the caller already
  // has them in flight, or they are late commits it must not produce yet (relay.cc).
  std::vector<OutboxRow> Claim(const std::vector<LaneClaim>& claims);

  // Whole rows by id, in id order (for late commits the claim returned without payload).
  std::vector<OutboxRow> Fetch(const std::vector<std::int64_t>& ids);

  // Removes published rows.
  void Delete(const std::vector<std::int64_t>& ids);
  // Moves a row Kafka refused for good to outbox.dead_letters with the error.
  void DeadLetter(std::int64_t id, const std::string& error);

  // True if a NOTIFY outbox_relay arrived since the last call (non-blocking).
  bool TakeNotifications();

 private:
  std::unique_ptr<PgConnection> conn_;
  int lane_count_ = 0;
};

// Advisory lock namespaces (the first int of the two-int form).
inline constexpr int kLaneLockClass = 0x6f72656c;    // lanes: (class, lane)
inline constexpr int kMemberLockClass = 0x6f726d62;  // relay group members: (class, slot)

}  // namespace outbox::relay
