#pragma once

// The bytes of a logical replication stream (START_REPLICATION ... LOGICAL with the
// pgoutput plugin, protocol version 1, messages on) into the relay core's WalEvents.
// https://www.postgresql.org/docs/15/protocol-replication.html and
// protocol-logicalrep-message-formats.html

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/wal_source.h"

namespace outbox::relay {

// One CopyData payload from the server: 'w' (XLogData carrying one pgoutput message) or
// 'k' (primary keepalive). Returns nullopt for what the relay ignores (table changes,
// relation and type descriptions, origins, logical messages with other prefixes or
// outside a transaction). Throws WalDecodeError on malformed bytes.
std::optional<WalEvent> DecodeCopyData(std::string_view data);

// The standby status update that confirms `lsn` (written, flushed and applied).
std::string StandbyStatusUpdate(std::uint64_t lsn, bool reply_requested);

// "X/Y" as PostgreSQL prints an LSN, and back (throws WalDecodeError).
std::string LsnText(std::uint64_t lsn);
std::uint64_t ParseLsn(const std::string& text);

// Microseconds since 2000-01-01 UTC now (the protocol's timestamps).
std::int64_t PgEpochMicrosNow();

}  // namespace outbox::relay
