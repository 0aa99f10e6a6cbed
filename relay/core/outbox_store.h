#pragma once

#include <cstdint>
#include <limits>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/outbox_row.h"

namespace outbox::relay {

// A failed store call. connection_lost(): the session is gone, and with it every lane
// lock it held; the relay must open a new store. Otherwise the statement failed on a
// live session (e.g. privileges) and may be retried after a pause.
class StoreError : public std::runtime_error {
 public:
  StoreError(const std::string& what, std::string sqlstate, bool connection_lost)
      : std::runtime_error(what), sqlstate_(std::move(sqlstate)), connection_lost_(connection_lost) {}
  const std::string& sqlstate() const { return sqlstate_; }
  bool connection_lost() const { return connection_lost_; }

 private:
  std::string sqlstate_;
  bool connection_lost_;
};

// The relay core's view of PostgreSQL: one session that reads, claims and removes outbox
// rows and holds the lane and member locks (session advisory locks: when the session is
// lost the locks are gone with it, so claims and ownership can never disagree).
// Production: pg/outbox_store.h (libpq); tests/sim: an in-memory model.
// Not thread-safe: owned by the relay loop. Every call may throw StoreError.
class OutboxStore {
 public:
  virtual ~OutboxStore() = default;

  // outbox.settings.lane_count as committed now.
  virtual int LaneCount() = 0;
  // Joins the relay group: holds one member lock. Returns the member slot.
  virtual int JoinGroup() = 0;
  // Leaves the relay group (releases the member lock of `slot`): the other relays' fair
  // share then counts without us. The session stays.
  virtual void LeaveGroup(int slot) = 0;
  // Relays currently holding a member lock on this database (at least 1: us).
  virtual int LiveRelays() = 0;
  // Tries the given lanes in order until `want` are taken; returns those now owned.
  // Like pg_try_advisory_lock, a lane this session already holds is taken again (the
  // lock stacks and needs one more UnlockLane): callers pass only lanes they do not hold.
  virtual std::vector<int> TryLockLanes(const std::vector<int>& lanes, int want) = 0;
  virtual void UnlockLane(int lane) = 0;

  struct LaneClaim {
    int lane;
    std::int64_t known_up_to;  // highest id of the lane the relay has in flight or deleting (0: none)
    int limit;                 // rows to read, counted from the lane's lowest id
    // Rows with id > known_up_to are returned while their key, payload and headers fit
    // in this many bytes together; with take_one the first of them comes even if larger.
    std::int64_t max_bytes = std::numeric_limits<std::int64_t>::max();
    bool take_one = false;
    bool cut = false;  // out: max_bytes stopped the lane's rows (more follow)
  };
  // The lowest `limit` committed rows of each lane in id order (one round trip for all
  // lanes), cut at max_bytes. Rows with id <= known_up_to may come as id and lane only:
  // the caller already has them in flight (or being deleted), or they are late commits
  // it fetches whole (Fetch).
  virtual std::vector<OutboxRow> Claim(std::vector<LaneClaim>& claims) = 0;
  // Whole rows by id, in id order; ids no longer in the table are left out.
  virtual std::vector<OutboxRow> Fetch(const std::vector<std::int64_t>& ids) = 0;
  // Removes published rows, maybe after it returns: production sends the DELETE on a
  // second session and does not wait, so deletes overlap the claims. Returns a ticket
  // (1, 2, 3 ... per store); DeletedUpTo says which deletes are done. A delete that fails
  // is retried by the store (DELETE by id is idempotent); the failure is thrown from a
  // later Delete or DeletedUpTo call.
  virtual std::uint64_t Delete(const std::vector<std::int64_t>& ids) = 0;
  // The highest ticket whose rows are gone for every later statement of this store
  // (their DELETE committed); every lower ticket's are too. Non-blocking.
  virtual std::uint64_t DeletedUpTo() = 0;
  // Moves a row Kafka refused for good to outbox.dead_letters with the error.
  virtual void DeadLetter(std::int64_t id, const std::string& error) = 0;

  // True if a wake-up (PostgreSQL NOTIFY on channel outbox_relay: rows were published)
  // arrived since the last call. Non-blocking.
  virtual bool TakeWakeups() = 0;
  // True if a wake-up arrived during the statements since the last call (the client
  // library read it while waiting for their results, so wait_fd is not readable for it).
  // No I/O: never fails. Clears what it reports, like TakeWakeups.
  virtual bool TakeBufferedWakeups() = 0;
  // A file descriptor readable when a wake-up may be waiting (poll(2)), or -1.
  virtual int wait_fd() const { return -1; }
  // A file descriptor readable when a delete may have finished, or -1.
  virtual int delete_wait_fd() const { return -1; }
};

// Opens a new session (connects, prepares, listens). Throws StoreError.
using OutboxStoreFactory = std::function<std::unique_ptr<OutboxStore>()>;

}  // namespace outbox::relay
