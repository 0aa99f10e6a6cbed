#include "wal/pgoutput.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "wal/wal_record.h"
#include "wal/wire.h"

namespace outbox::relay {
namespace {

// Microseconds between 1970-01-01 and 2000-01-01.
constexpr std::int64_t kPgEpochOffsetUs = 946684800LL * 1000000;

std::optional<WalEvent> DecodePgoutput(std::string_view msg) {
  WireReader b{msg};
  WalEvent e;
  switch (b.U8()) {
    case 'B':
      e.kind = WalEvent::Kind::kBegin;
      e.lsn = b.U64();  // final LSN of the transaction
      return e;
    case 'C':
      e.kind = WalEvent::Kind::kCommit;
      b.U8();          // flags
      b.U64();         // commit LSN
      e.lsn = b.U64();  // end LSN: where the slot resumes after this transaction
      return e;
    case 'M': {
      auto flags = b.U8();
      e.lsn = b.U64();
      auto prefix = b.CString();
      auto n = b.U32();
      auto content = b.Take(n);
      if ((flags & 1) == 0) return std::nullopt;  // non-transactional: not ours
      if (prefix == kWalMessagePrefix) {
        auto m = DecodeWalMessage(content);
        e.kind = WalEvent::Kind::kMessage;
        e.row = std::move(m.row);
        e.created_at_us = m.created_at_us;
        return e;
      }
      if (prefix == kWalSwitchPrefix) {
        auto s = DecodeWalSwitch(content);
        e.kind = WalEvent::Kind::kSwitch;
        e.switch_mode = s.mode;
        e.max_id = s.max_id;
        return e;
      }
      return std::nullopt;  // another application's logical message
    }
    default:
      return std::nullopt;  // relation, type, origin, table changes, truncate
  }
}

}  // namespace

std::optional<WalEvent> DecodeCopyData(std::string_view data) {
  WireReader b{data};
  switch (b.U8()) {
    case 'w': {
      b.U64();  // start of this WAL data
      b.U64();  // server's end of WAL
      b.U64();  // send time
      return DecodePgoutput(b.Rest());
    }
    case 'k': {
      WalEvent e;
      e.kind = WalEvent::Kind::kKeepalive;
      e.lsn = b.U64();
      b.U64();  // send time
      e.reply_requested = b.U8() != 0;
      return e;
    }
    default:
      throw WalDecodeError(fmt::format("unexpected replication message type {}", +static_cast<unsigned char>(data[0])));
  }
}

std::string StandbyStatusUpdate(std::uint64_t lsn, bool reply_requested) {
  std::string out = "r";
  PutBig(out, lsn, 8);  // written
  PutBig(out, lsn, 8);  // flushed
  PutBig(out, lsn, 8);  // applied
  PutBig(out, static_cast<std::uint64_t>(PgEpochMicrosNow()), 8);
  out.push_back(reply_requested ? 1 : 0);
  return out;
}

std::string LsnText(std::uint64_t lsn) { return fmt::format("{:X}/{:X}", lsn >> 32, lsn & 0xffffffffu); }

std::uint64_t ParseLsn(const std::string& text) {
  unsigned int hi = 0, lo = 0;
  char extra = 0;
  if (std::sscanf(text.c_str(), "%X/%X%c", &hi, &lo, &extra) != 2) throw WalDecodeError("bad LSN " + text);
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

std::int64_t PgEpochMicrosNow() {
  auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  return now - kPgEpochOffsetUs;
}

}  // namespace outbox::relay
