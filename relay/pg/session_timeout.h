#pragma once

// How long a PostgreSQL session of the relay outlives a network that went silent
// (--session-timeout, issue 19). Lanes are advisory locks of the relay's session: the
// server frees them only when it ends the session, and a relay that is cut off (its host
// loses the network, a firewall drops its packets) closes nothing. With the kernel's
// defaults the server would keep the session for about two hours (keepalives) or fifteen
// minutes (unacknowledged data). So both ends are told, per session, to give up on a
// peer that stops answering within the timeout T:
//
//   keepalives  idle + count × interval = T (whole seconds): a quiet connection is probed
//               after `idle` seconds, then every `interval`; `count` unanswered probes end it;
//   TCP_USER_TIMEOUT = T: data left unacknowledged for T ends it (also a statement whose
//               reply never comes, and a keepalive-probed connection on Linux).
//
// Server side: the session settings tcp_keepalives_idle/_interval/_count and
// tcp_user_timeout, which any user may set for their own session — no server
// configuration. Client side: the libpq keywords keepalives*, tcp_user_timeout and
// connect_timeout, unless the conninfo sets them itself (the user's choice wins there).
// Both apply to TCP connections only: over a Unix-domain socket PostgreSQL ignores them
// (and such a session cannot be cut off from its server anyway).

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

// The TCP settings for a session timeout T.
struct SessionKeepalives {
  int idle_s = 0;             // silence before the first keepalive probe
  int interval_s = 0;         // between probes
  int count = 0;              // unanswered probes that end the connection
  int user_timeout_ms = 0;    // unacknowledged data older than this ends the connection
  int connect_timeout_s = 0;  // a connection attempt gives up after this
};

// Shortest and longest --session-timeout: below 4 s whole-second keepalives cannot add
// up to T.
inline constexpr std::chrono::milliseconds kMinSessionTimeout{4000};
inline constexpr std::chrono::milliseconds kMaxSessionTimeout{3600000};

// interval = T/4 and count = 3 (whole seconds, at least 1), idle = T - 3 × interval, so
// idle + count × interval ≤ T; user timeout = T. E.g. 20s: 5 + 3 × 5, 20000 ms.
// `timeout` must lie within kMinSessionTimeout..kMaxSessionTimeout.
SessionKeepalives KeepalivesFor(std::chrono::milliseconds timeout);

// The libpq keywords of the client side, in the order given (keepalives=1 first).
std::vector<std::pair<std::string, std::string>> ClientKeywords(const SessionKeepalives& k);

// `conninfo` (key=value or URI) as a key=value conninfo with the client keywords added
// where it sets none, for libpqxx, which takes one string. Throws ConfigError if it does
// not parse (without repeating it: it may hold a password).
std::string WithClientKeywords(const std::string& conninfo, const SessionKeepalives& k);

// One statement that sets the server's side for the session it runs on (one round trip;
// the settings last for the session).
std::string ServerSettingsStatement(const SessionKeepalives& k);

}  // namespace outbox::relay
