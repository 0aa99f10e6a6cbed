#include "message_id.h"

#include <cstdint>
#include <cstdio>

namespace outbox::internal {
namespace {

bool IsToken(std::string_view s) {
  if (s.empty() || s.size() > kMaxMessageIdBytes) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

// FNV-1a, 64 bits: stable across builds and machines (std::hash is not promised to be).
// Not a defence against crafted collisions: a producer who can write the topic can
// send any real message_id anyway; the space in the derived id is what keeps it apart
// from real ones.
std::uint64_t Fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string InboxMessageId(const std::string* header, std::string_view topic, int partition, long long offset) {
  if (header == nullptr || header->empty()) {
    return std::string(topic) + "/" + std::to_string(partition) + "/" + std::to_string(offset);
  }
  if (IsToken(*header)) return *header;
  char buf[64];
  std::snprintf(buf, sizeof buf, "invalid message_id %zu %016llx", header->size(),
                static_cast<unsigned long long>(Fnv1a(*header)));
  return buf;
}

std::string EscapeForLog(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out += c;
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  return out;
}

}  // namespace outbox::internal
