#pragma once

// Internal HTTP client over libcurl (not installed, not part of the public API). Used by
// the notification worker and the relay's check-back. libcurl types stay in the .cc.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {
class EgressPolicy;
}

namespace outbox::internal {

struct HttpRequest {
  enum class Method { kGet, kPost };
  Method method = Method::kGet;
  std::string url;                                          // http:// or https:// only
  std::vector<std::pair<std::string, std::string>> headers;  // sent in this order
  std::string body;                                         // POST only
  std::chrono::milliseconds connect_timeout{5000};          // TCP + TLS handshake
  std::chrono::milliseconds total_timeout{10000};           // whole exchange
  std::size_t max_response_bytes = 64 * 1024;              // the rest is read and dropped
  std::string user_agent = "outbox-relay";
  // Which addresses may be connected to (not owned; must outlive the request); null =
  // public addresses only. A refused connection is an `error` naming the reason.
  const relay::EgressPolicy* egress = nullptr;
};

struct HttpResponse {
  // HTTP status of the answer; 0 when none arrived (then `error` says why).
  int status = 0;
  // Empty when an answer arrived; otherwise a transport error ("timeout after 2000 ms",
  // "connection refused", TLS failure, ...). Never contains header values.
  std::string error;
  std::string body;           // the first max_response_bytes of the answer body
  bool body_truncated = false;
  std::chrono::microseconds latency{0};  // start of the request to the end of the answer

  bool Success() const { return error.empty() && status >= 200 && status <= 299; }
};

// Performs one request and waits for it. Thread-safe (each call has its own handle).
// TLS peers are verified; redirects are not followed (a 3xx is returned as is); only
// http and https are allowed. Never throws for network problems: they are in `error`.
// Throws std::bad_alloc / std::runtime_error only if libcurl cannot be set up.
HttpResponse Perform(const HttpRequest& request);

// Many requests in flight on one thread (libcurl's multi interface). Not thread-safe,
// except Wakeup(), which may be called from any thread.
class HttpMulti {
 public:
  HttpMulti();
  ~HttpMulti();  // aborts the requests still in flight
  HttpMulti(const HttpMulti&) = delete;
  HttpMulti& operator=(const HttpMulti&) = delete;

  // Starts a request; `tag` identifies it in Poll's result.
  void Start(std::uint64_t tag, const HttpRequest& request);
  // Runs transfers for up to `timeout` or until one finishes, Wakeup() is called, or
  // one of `extra_fds` becomes readable; returns the finished requests (maybe none).
  std::vector<std::pair<std::uint64_t, HttpResponse>> Poll(std::chrono::milliseconds timeout,
                                                           const std::vector<int>& extra_fds = {});
  // Makes a Poll in progress (or the next one) return early.
  void Wakeup();
  std::size_t in_flight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outbox::internal
