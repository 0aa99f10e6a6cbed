#include "webhooks/egress_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common/errors.h"

namespace outbox::relay {
namespace {

using Bytes = std::array<std::uint8_t, 16>;

std::string Lower(std::string_view s) {
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// IPv4 a.b.c.d as ::ffff:a.b.c.d, so one comparison serves both families.
Bytes Mapped(const in_addr& a) {
  Bytes b{};
  b[10] = b[11] = 0xff;
  std::memcpy(&b[12], &a, 4);
  return b;
}

bool ParseAddress(std::string_view text, Bytes* out, bool* v4) {
  std::string s{text};
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    *out = Mapped(a4);
    *v4 = true;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    std::memcpy(out->data(), &a6, 16);
    *v4 = false;
    return true;
  }
  return false;
}

bool InRange(const Bytes& a, const Bytes& prefix, int bits) {
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    std::uint8_t mask = bits >= 8 ? 0xff : static_cast<std::uint8_t>(0xff << (8 - bits));
    if ((a[i] & mask) != (prefix[i] & mask)) return false;
  }
  return true;
}

struct Class {
  const char* cidr;
  const char* name;
};

// Refused unless allowed. IPv4 ranges are written as IPv4 (checked as ::ffff:0:0/96).
constexpr Class kRefused[] = {
    {"0.0.0.0/8", "unspecified (\"this network\")"},
    {"10.0.0.0/8", "private (RFC 1918)"},
    {"100.64.0.0/10", "carrier-grade NAT (RFC 6598)"},
    {"127.0.0.0/8", "loopback"},
    {"169.254.0.0/16", "link-local (cloud metadata services live here)"},
    {"172.16.0.0/12", "private (RFC 1918)"},
    {"192.0.0.0/24", "IETF protocol assignments"},
    {"192.0.2.0/24", "documentation (TEST-NET-1)"},
    {"192.88.99.0/24", "6to4 relay anycast"},
    {"192.168.0.0/16", "private (RFC 1918)"},
    {"198.18.0.0/15", "benchmarking"},
    {"198.51.100.0/24", "documentation (TEST-NET-2)"},
    {"203.0.113.0/24", "documentation (TEST-NET-3)"},
    {"224.0.0.0/4", "multicast"},
    {"240.0.0.0/4", "reserved (includes broadcast)"},
    {"::/128", "unspecified"},
    {"::1/128", "loopback"},
    {"100::/64", "discard-only"},
    {"2001:db8::/32", "documentation"},
    {"fc00::/7", "unique local (private)"},
    {"fe80::/10", "link-local"},
    {"fec0::/10", "site-local (deprecated)"},
    {"ff00::/8", "multicast"},
};

bool ParseCidr(std::string_view entry, Bytes* prefix, int* bits) {
  auto slash = entry.find('/');
  bool v4 = false;
  if (!ParseAddress(entry.substr(0, slash), prefix, &v4)) return false;
  int max = v4 ? 32 : 128;
  int n = max;
  if (slash != std::string_view::npos) {
    auto digits = entry.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      return false;
    }
    n = std::stoi(std::string(digits));
    if (n > max) return false;
  }
  *bits = v4 ? 96 + n : n;
  return true;
}

// The class that makes `a` refused, or nullptr. IPv4 embedded in IPv6 (mapped, NAT64
// 64:ff9b::/96, 6to4 2002::/16) is judged as the IPv4 address it carries.
const char* RefusedClass(const Bytes& a) {
  static const std::vector<std::pair<Bytes, int>> ranges = [] {
    std::vector<std::pair<Bytes, int>> r;
    for (const auto& c : kRefused) {
      Bytes p{};
      int bits = 0;
      ParseCidr(c.cidr, &p, &bits);
      r.emplace_back(p, bits);
    }
    return r;
  }();
  Bytes v4{};
  v4[10] = v4[11] = 0xff;
  Bytes nat64{0x00, 0x64, 0xff, 0x9b};
  Bytes six_to_four{0x20, 0x02};
  const Bytes* judged = &a;
  Bytes embedded{};
  if (InRange(a, nat64, 96)) {
    embedded = v4;
    std::memcpy(&embedded[12], &a[12], 4);
    judged = &embedded;
  } else if (InRange(a, six_to_four, 16)) {
    embedded = v4;
    std::memcpy(&embedded[12], &a[2], 4);
    judged = &embedded;
  }
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (InRange(*judged, ranges[i].first, ranges[i].second)) return kRefused[i].name;
  }
  return nullptr;
}

std::string Text(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, buf, sizeof buf);
  } else if (addr->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

}  // namespace

EgressPolicy EgressPolicy::Parse(std::string_view list) {
  EgressPolicy p;
  std::vector<std::string> problems;
  std::size_t start = 0;
  while (start <= list.size()) {
    auto end = list.find(',', start);
    if (end == std::string_view::npos) end = list.size();
    auto entry = Trim(list.substr(start, end - start));
    start = end + 1;
    if (entry.empty()) continue;
    Range r;
    bool looks_numeric = entry.find_first_of(":/") != std::string_view::npos ||
                         std::all_of(entry.begin(), entry.end(), [](char c) {
                           return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
                         });
    if (ParseCidr(entry, &r.prefix, &r.bits)) {
      p.ranges_.push_back(r);
    } else if (!looks_numeric && entry.size() <= 253 &&
               std::all_of(entry.begin(), entry.end(), [](char c) {
                 return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
               })) {
      p.hosts_.push_back(Lower(entry));
    } else {
      problems.push_back("--egress-allow: '" + std::string(entry) +
                         "' is neither a host name nor an address or CIDR (e.g. 10.0.0.0/8, fd00::/8)");
    }
    if (!p.description_.empty()) p.description_ += ',';
    p.description_ += std::string(entry);
  }
  if (!problems.empty()) throw ConfigError(problems);
  return p;
}

std::optional<std::string> EgressPolicy::Refusal(std::string_view url_host, const sockaddr* addr) const {
  std::string host = Lower(url_host);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (std::find(hosts_.begin(), hosts_.end(), host) != hosts_.end()) return std::nullopt;
  Bytes a{};
  if (addr->sa_family == AF_INET) {
    a = Mapped(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr);
  } else if (addr->sa_family == AF_INET6) {
    std::memcpy(a.data(), &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, 16);
  } else {
    return std::string("refused by the egress policy: not an IP address");
  }
  for (const auto& r : ranges_) {
    if (InRange(a, r.prefix, r.bits)) return std::nullopt;
  }
  if (const char* cls = RefusedClass(a)) {
    return "refused by the egress policy: " + Text(addr) + " is " + cls +
           "; allow it with --egress-allow if this endpoint is meant to be called";
  }
  return std::nullopt;
}

}  // namespace outbox::relay
