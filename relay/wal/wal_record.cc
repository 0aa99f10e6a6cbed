#include "wal/wal_record.h"

#include "wal/wire.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace outbox::relay {
namespace {

// A length-prefixed field; -1 is NULL when nullable.
std::optional<std::string> Field(WireReader& r, bool nullable, const char* what) {
  std::int32_t n = r.I32();
  if (n == -1 && nullable) return std::nullopt;
  if (n < 0) throw WalDecodeError(fmt::format("bad {} length {} in WAL message", what, n));
  return std::string(r.Take(static_cast<std::size_t>(n)));
}

void PutField(std::string& out, const std::optional<std::string>& v) {
  if (!v) {
    PutBig(out, 0xffffffffu, 4);
    return;
  }
  PutBig(out, v->size(), 4);
  out += *v;
}

void CheckVersion(std::uint8_t v) {
  if (v != kWalEncodingVersion) {
    throw WalDecodeError(fmt::format(
        "WAL message encoding version {} is not one this relay reads (version {}): upgrade outbox-relay", v,
        kWalEncodingVersion));
  }
}

}  // namespace

std::string UuidText(std::string_view b) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    auto c = static_cast<unsigned char>(b[i]);
    s.push_back(hex[c >> 4]);
    s.push_back(hex[c & 15]);
  }
  return s;
}

std::string UuidBytes(const std::string& text) {
  std::string out;
  int half = -1;
  for (char c : text) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else continue;
    if (half < 0) {
      half = v;
    } else {
      out.push_back(static_cast<char>(half << 4 | v));
      half = -1;
    }
  }
  out.resize(16, '\0');
  return out;
}

std::string HeadersJson(const OutboxRow& row) {
  auto j = nlohmann::json::object();
  for (const auto& [k, v] : row.headers) j[k] = v;
  return j.dump();
}

WalMessage DecodeWalMessage(std::string_view content) {
  WireReader r{content};
  CheckVersion(r.U8());
  WalMessage m;
  m.row.id = r.I64();
  m.row.message_id = UuidText(r.Take(16));
  m.created_at_us = r.I64();
  m.row.topic = *Field(r, false, "topic");
  m.row.key = Field(r, true, "key");
  std::string headers = *Field(r, false, "headers");
  m.row.payload = Field(r, true, "payload");
  if (!r.done()) throw WalDecodeError("trailing bytes after a WAL message");
  auto j = nlohmann::json::parse(headers, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw WalDecodeError("WAL message headers are not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) throw WalDecodeError("WAL message header value is not a string");
    m.row.headers.emplace_back(it.key(), it.value().get<std::string>());
  }
  return m;
}

WalSwitch DecodeWalSwitch(std::string_view content) {
  WireReader r{content};
  CheckVersion(r.U8());
  WalSwitch s;
  s.mode = static_cast<char>(r.U8());
  s.max_id = r.I64();
  if (s.mode != 'w' && s.mode != 't') throw WalDecodeError(fmt::format("unknown capture switch mode {}", +s.mode));
  return s;
}

std::string EncodeWalMessage(const WalMessage& m) {
  std::string out;
  out.push_back(static_cast<char>(kWalEncodingVersion));
  PutBig(out, static_cast<std::uint64_t>(m.row.id), 8);
  out += UuidBytes(m.row.message_id);
  PutBig(out, static_cast<std::uint64_t>(m.created_at_us), 8);
  PutField(out, m.row.topic);
  PutField(out, m.row.key);
  PutField(out, HeadersJson(m.row));
  PutField(out, m.row.payload);
  return out;
}

std::string EncodeWalSwitch(const WalSwitch& s) {
  std::string out;
  out.push_back(static_cast<char>(kWalEncodingVersion));
  out.push_back(s.mode);
  PutBig(out, static_cast<std::uint64_t>(s.max_id), 8);
  return out;
}

}  // namespace outbox::relay
