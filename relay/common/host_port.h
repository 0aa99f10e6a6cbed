#pragma once

#include <string_view>

namespace outbox::relay {

// True for "host:port" with a host name, an IPv4 address or a bracketed IPv6 address and
// a port from 0 to 65535 (0: any free port, for listen addresses).
bool IsHostPort(std::string_view s);

}  // namespace outbox::relay
