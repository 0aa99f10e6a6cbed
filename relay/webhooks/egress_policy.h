#pragma once

// Which addresses outgoing HTTP requests whose URL came from the database (HTTP
// notifications, half-message check-backs) may connect to (docs/security.md).
//
// By default only public addresses: loopback, private (RFC 1918, ULA), link-local (cloud
// metadata services), carrier-grade NAT, multicast, unspecified, reserved and
// documentation ranges are refused, for IPv4 and IPv6, including IPv4 addresses embedded
// in IPv6 (mapped, NAT64, 6to4). The check runs on the address libcurl is about to
// connect to, after name resolution, so DNS rebinding or odd spellings of an address
// (2130706433, 0x7f.1, [::ffff:127.0.0.1]) cannot get round it. Exceptions are listed
// by the operator (--egress-allow): host names (matched against the URL's host) and
// addresses or CIDR ranges.

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace outbox::relay {

class EgressPolicy {
 public:
  // Public addresses only.
  EgressPolicy() = default;
  // `list`: comma-separated host names, addresses and CIDRs (e.g.
  // "localhost,127.0.0.1,10.0.0.0/8,fd00::/8"). Throws ConfigError naming every bad entry.
  static EgressPolicy Parse(std::string_view list);

  // Why a connection to `addr` for a URL whose host is `url_host` is refused, or nullopt
  // if it is allowed. The reason names the address, its class and the option to use.
  std::optional<std::string> Refusal(std::string_view url_host, const sockaddr* addr) const;

  // The entries as given (for logs).
  const std::string& description() const { return description_; }

 private:
  struct Range {
    std::array<std::uint8_t, 16> prefix{};  // IPv4 as ::ffff:a.b.c.d
    int bits = 0;                           // of the 128
  };
  std::vector<std::string> hosts_;  // lower-case
  std::vector<Range> ranges_;
  std::string description_;
};

}  // namespace outbox::relay
