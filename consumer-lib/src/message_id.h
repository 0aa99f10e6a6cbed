#pragma once

// The inbox key of a record: its message_id header, checked (docs/security.md).

#include <string>
#include <string_view>

namespace outbox::internal {

// Longest message_id taken as is.
inline constexpr std::size_t kMaxMessageIdBytes = 128;

// The message_id to dedup on. A header that is 1..128 bytes of printable ASCII without
// spaces (a UUID, or a producer's own token) is taken as is. Anything else — too long,
// control characters, invalid UTF-8, spaces — gets a derived id "invalid message_id
// <length> <hash>": stable for the same bytes, and never equal to a real one (real ones
// contain no space). A missing or empty header gives "topic/partition/offset".
std::string InboxMessageId(const std::string* header, std::string_view topic, int partition, long long offset);

// `s` with every byte outside printable ASCII written as \xNN, for log lines.
std::string EscapeForLog(std::string_view s);

}  // namespace outbox::internal
