#pragma once

// Big-endian fields of the replication protocol and of the WAL message encoding.

#include <cstdint>
#include <string>
#include <string_view>

#include "wal/wal_record.h"

namespace outbox::relay {

// Reads fields front to back; throws WalDecodeError when the bytes run out.
class WireReader {
 public:
  explicit WireReader(std::string_view b) : b_(b) {}
  std::uint8_t U8() { return static_cast<std::uint8_t>(Take(1)[0]); }
  std::uint32_t U32() { return static_cast<std::uint32_t>(Big(Take(4))); }
  std::int32_t I32() { return static_cast<std::int32_t>(U32()); }
  std::uint64_t U64() { return Big(Take(8)); }
  std::int64_t I64() { return static_cast<std::int64_t>(U64()); }
  std::string_view Take(std::size_t n) {
    if (b_.size() - pos_ < n) throw WalDecodeError("truncated message (" + std::to_string(b_.size()) + " bytes)");
    auto s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string_view CString() {
    auto end = b_.find('\0', pos_);
    if (end == std::string_view::npos) throw WalDecodeError("unterminated string in replication message");
    auto s = b_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  std::string_view Rest() { return Take(b_.size() - pos_); }
  bool done() const { return pos_ == b_.size(); }

 private:
  static std::uint64_t Big(std::string_view s) {
    std::uint64_t v = 0;
    for (char c : s) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }
  std::string_view b_;
  std::size_t pos_ = 0;
};

// Appends v as `bytes` big-endian bytes.
inline void PutBig(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace outbox::relay
