#pragma once

// The inbox tables (schema/0002_inbox.sql): every SQL statement the consumer runs.

#include <chrono>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "outbox/message.h"

namespace outbox::internal {

// Inserts the (group, message_id) row. Returns the transaction's start time (text, to be
// passed back to RecordFailedAttempt) when inserted; nothing when the message was
// already handled or dead-lettered, or — with skip_if_parked — waits in inbox.retries.
std::optional<std::string> ClaimInbox(pqxx::work& tx, const std::string& group, const Message& m,
                                      bool skip_if_parked);

// Batches (batch.cc): which of `messages` the group's inbox already has — handled or
// dead-lettered, or (skip_if_parked) waiting in inbox.retries — in one statement.
// `started_at` receives the transaction's start time (as ClaimInbox returns it).
std::vector<bool> KnownMessages(pqxx::work& tx, const std::string& group,
                                const std::vector<const Message*>& messages,
                                bool skip_if_parked, std::string& started_at);

// Inserts the inbox rows of handled messages in one statement (ON CONFLICT DO NOTHING).
// Returns how many were inserted: fewer means another transaction inserted one of them
// since KnownMessages (it waited for that transaction), so this one must not commit.
size_t InsertHandled(pqxx::work& tx, const std::string& group,
                     const std::vector<const Message*>& messages);

// Records that the message went to the dead-letter topic (no-op if already recorded).
void MarkDeadLettered(pqxx::work& tx, const std::string& group, const Message& m);

// Number of failed attempts recorded for the message.
int FailedAttempts(pqxx::work& tx, const std::string& group, const std::string& message_id);

// Appends a failed attempt to inbox.attempts. next_delay: the backoff before the next
// attempt (next_attempt_at = failed_at + next_delay), nothing when it was the last.
void RecordFailedAttempt(pqxx::work& tx, const std::string& group, const Message& m, int attempt,
                         const std::string& started_at, const std::string& error, bool permanent,
                         std::optional<std::chrono::milliseconds> next_delay);

struct Parked {
  Message message;
  int attempts = 0;  // failed attempts so far
  std::string last_error;
  bool permanent = false;    // the last error was an outbox::PermanentError
  bool dead_letter = false;  // no attempts left: only the dead-letter send is
};

// Parks the message in inbox.retries (or updates its row) until now + delay.
void Park(pqxx::work& tx, const std::string& group, const Parked& p,
          std::chrono::milliseconds delay);

// Locks the parked message of `group` that is due soonest (SKIP LOCKED: another consumer
// may be running it); the lock lasts as long as `tx`.
std::optional<Parked> LockDueParked(pqxx::work& tx, const std::string& group);

void DeleteParked(pqxx::work& tx, const std::string& group, const std::string& message_id);

// Text PostgreSQL accepts: valid UTF-8 without NUL bytes, at most max_bytes long (cut at
// a character boundary). Invalid bytes become '?'.
std::string CleanText(const std::string& s, size_t max_bytes = std::string::npos);

}  // namespace outbox::internal
