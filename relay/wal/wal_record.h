#pragma once

// The bytes of a message carried in the WAL (docs/wal-capture.md, "Encoding"): what
// outbox.publish emits with pg_logical_emit_message in capture mode `wal`, and the
// switch markers outbox.set_capture emits. One decoder, shared by the relay and tests.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/outbox_row.h"

namespace outbox::relay {

// The logical message prefixes.
inline constexpr std::string_view kWalMessagePrefix = "outbox";
inline constexpr std::string_view kWalSwitchPrefix = "outbox.switch";
inline constexpr std::uint8_t kWalEncodingVersion = 1;

// Bytes that are not a message of a version this relay reads. Never skipped: the relay
// stops with it (a newer schema needs a newer relay).
class WalDecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WalMessage {
  OutboxRow row;                // lane is 0: the stream has one order, lanes do not apply
  std::int64_t created_at_us = 0;  // microseconds since 2000-01-01 UTC
};

struct WalSwitch {
  char mode = 0;            // 'w': now wal, 't': now table
  std::int64_t max_id = 0;  // highest outbox.messages.id at the switch
};

WalMessage DecodeWalMessage(std::string_view content);
WalSwitch DecodeWalSwitch(std::string_view content);

// The inverse, for tests and the simulator.
std::string EncodeWalMessage(const WalMessage& m);
std::string EncodeWalSwitch(const WalSwitch& s);

// Headers of a row as the JSON object text the encoding carries, and back.
std::string HeadersJson(const OutboxRow& row);

// Canonical uuid text of 16 bytes, and back.
std::string UuidText(std::string_view bytes16);
std::string UuidBytes(const std::string& text);

}  // namespace outbox::relay
