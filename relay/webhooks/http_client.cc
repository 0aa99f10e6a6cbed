#include "webhooks/http_client.h"

#include "webhooks/egress_policy.h"

#include <curl/curl.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>

namespace outbox::internal {
namespace {

using Clock = std::chrono::steady_clock;

// curl_global_init is not thread-safe on every build; run it once, the first time a
// handle is needed, rather than asking the application to.
void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("libcurl: curl_global_init failed");
    }
  });
}

struct EasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};

// One request: the handle and everything libcurl points into while it runs.
struct Transfer {
  std::uint64_t tag = 0;
  std::unique_ptr<CURL, EasyDeleter> easy;
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  std::string body;          // libcurl reads the POST body from here (not copied)
  std::size_t max_response = 0;
  long timeout_ms = 0;
  HttpResponse response;
  char error[CURL_ERROR_SIZE] = {};
  Clock::time_point start;
  const relay::EgressPolicy* egress = nullptr;  // null: public addresses only
  std::string url_host;                          // the URL's host, for allowed host names
  std::string egress_refusal;                    // why a connection was refused, if one was
};

// Every connection libcurl opens passes here with the resolved address: the egress
// policy is applied at connect time, so DNS rebinding cannot get round it.
curl_socket_t OnOpenSocket(void* user, curlsocktype, curl_sockaddr* address) {
  auto* t = static_cast<Transfer*>(user);
  static const relay::EgressPolicy kPublicOnly;
  const auto& policy = t->egress ? *t->egress : kPublicOnly;
  if (auto why = policy.Refusal(t->url_host, &address->addr)) {
    t->egress_refusal = *why;
    return CURL_SOCKET_BAD;
  }
  return ::socket(address->family, address->socktype, address->protocol);
}

std::string UrlHost(const std::string& url) {
  std::string host;
  if (CURLU* u = curl_url()) {
    char* h = nullptr;
    if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h) {
      host = h;
      curl_free(h);
    }
    curl_url_cleanup(u);
  }
  return host;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t bytes = size * n;
  size_t room = t->max_response - std::min(t->max_response, t->response.body.size());
  if (bytes > room) t->response.body_truncated = true;
  t->response.body.append(data, std::min(bytes, room));
  return bytes;  // keep reading (and dropping) the rest so the connection stays usable
}

template <typename T>
void Set(CURL* h, CURLoption opt, T value) {
  CURLcode rc = curl_easy_setopt(h, opt, value);
  if (rc != CURLE_OK) {
    throw std::runtime_error(std::string("libcurl: cannot set option: ") + curl_easy_strerror(rc));
  }
}

std::unique_ptr<Transfer> Prepare(std::uint64_t tag, const HttpRequest& req) {
  GlobalInit();
  auto t = std::make_unique<Transfer>();
  t->tag = tag;
  t->easy.reset(curl_easy_init());
  if (!t->easy) throw std::runtime_error("libcurl: curl_easy_init failed");
  CURL* h = t->easy.get();
  t->max_response = req.max_response_bytes;
  t->egress = req.egress;
  t->url_host = UrlHost(req.url);
  Set(h, CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
  Set(h, CURLOPT_OPENSOCKETDATA, static_cast<void*>(t.get()));
  t->timeout_ms = static_cast<long>(req.total_timeout.count());
  Set(h, CURLOPT_URL, req.url.c_str());
  Set(h, CURLOPT_PROTOCOLS_STR, "http,https");
  Set(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  Set(h, CURLOPT_FOLLOWLOCATION, 0L);
  // Timeouts must not use SIGALRM: the process is multi-threaded.
  Set(h, CURLOPT_NOSIGNAL, 1L);
  Set(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(req.connect_timeout.count()));
  Set(h, CURLOPT_TIMEOUT_MS, t->timeout_ms);
  Set(h, CURLOPT_SSL_VERIFYPEER, 1L);
  Set(h, CURLOPT_SSL_VERIFYHOST, 2L);
  Set(h, CURLOPT_USERAGENT, req.user_agent.c_str());
  Set(h, CURLOPT_ERRORBUFFER, t->error);
  Set(h, CURLOPT_WRITEFUNCTION, &OnBody);
  Set(h, CURLOPT_WRITEDATA, static_cast<void*>(t.get()));
  Set(h, CURLOPT_PRIVATE, static_cast<void*>(t.get()));

  curl_slist* list = nullptr;
  auto append = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(list, line.c_str());
    if (!next) throw std::bad_alloc();  // `list` is unchanged and still owned
    // The head stays the same after the first append: hand over without freeing it.
    [[maybe_unused]] curl_slist* same = t->headers.release();
    list = next;
    t->headers.reset(list);
  };
  for (const auto& [name, value] : req.headers) {
    // "Name:" would remove the header; "Name;" sends it with an empty value.
    append(value.empty() ? name + ";" : name + ": " + value);
  }
  switch (req.method) {
    case HttpRequest::Method::kGet:
      Set(h, CURLOPT_HTTPGET, 1L);
      break;
    case HttpRequest::Method::kPost:
      t->body = req.body;
      Set(h, CURLOPT_POST, 1L);
      Set(h, CURLOPT_POSTFIELDS, t->body.data());
      Set(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
      // No "Expect: 100-continue" round trip for larger bodies.
      append("Expect:");
      break;
  }
  if (list) Set(h, CURLOPT_HTTPHEADER, list);
  return t;
}

void Complete(Transfer& t, CURLcode rc) {
  t.response.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t.start);
  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &status);
    t.response.status = static_cast<int>(status);
    return;
  }
  t.response.status = 0;
  if (!t.egress_refusal.empty()) {
    t.response.error = t.egress_refusal;
  } else if (rc == CURLE_OPERATION_TIMEDOUT) {
    t.response.error = "timeout after " + std::to_string(t.timeout_ms) + " ms";
    if (t.error[0]) t.response.error += std::string(" (") + t.error + ")";
  } else {
    t.response.error = curl_easy_strerror(rc);
    if (t.error[0]) t.response.error += std::string(": ") + t.error;
  }
}

}  // namespace

HttpResponse Perform(const HttpRequest& request) {
  auto t = Prepare(0, request);
  t->start = Clock::now();
  CURLcode rc = curl_easy_perform(t->easy.get());
  Complete(*t, rc);
  return std::move(t->response);
}

struct HttpMulti::Impl {
  std::unique_ptr<CURLM, MultiDeleter> multi;
  // Declared after `multi`, so destroyed before it; ~HttpMulti removes them from it first.
  std::map<std::uint64_t, std::unique_ptr<Transfer>> transfers;
};

HttpMulti::HttpMulti() : impl_(std::make_unique<Impl>()) {
  GlobalInit();
  impl_->multi.reset(curl_multi_init());
  if (!impl_->multi) throw std::runtime_error("libcurl: curl_multi_init failed");
}

HttpMulti::~HttpMulti() {
  for (auto& [tag, t] : impl_->transfers) curl_multi_remove_handle(impl_->multi.get(), t->easy.get());
  impl_->transfers.clear();
}

void HttpMulti::Start(std::uint64_t tag, const HttpRequest& request) {
  if (impl_->transfers.count(tag)) throw std::logic_error("HttpMulti: tag already in flight");
  auto t = Prepare(tag, request);
  t->start = Clock::now();
  CURLMcode rc = curl_multi_add_handle(impl_->multi.get(), t->easy.get());
  if (rc != CURLM_OK) {
    throw std::runtime_error(std::string("libcurl: curl_multi_add_handle: ") + curl_multi_strerror(rc));
  }
  impl_->transfers.emplace(tag, std::move(t));
}

std::vector<std::pair<std::uint64_t, HttpResponse>> HttpMulti::Poll(
    std::chrono::milliseconds timeout, const std::vector<int>& extra_fds) {
  std::vector<std::pair<std::uint64_t, HttpResponse>> done;
  auto collect = [&] {
    int running = 0;
    curl_multi_perform(impl_->multi.get(), &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(impl_->multi.get(), &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      auto* t = static_cast<Transfer*>(priv);
      CURLcode rc = msg->data.result;
      curl_multi_remove_handle(impl_->multi.get(), msg->easy_handle);
      Complete(*t, rc);
      done.emplace_back(t->tag, std::move(t->response));
      impl_->transfers.erase(t->tag);
    }
  };
  collect();
  if (!done.empty()) return done;
  std::vector<curl_waitfd> fds;
  for (int fd : extra_fds) fds.push_back(curl_waitfd{fd, CURL_WAIT_POLLIN, 0});
  curl_multi_poll(impl_->multi.get(), fds.empty() ? nullptr : fds.data(), static_cast<unsigned>(fds.size()),
                  static_cast<int>(std::max<std::int64_t>(0, timeout.count())), nullptr);
  collect();
  return done;
}

void HttpMulti::Wakeup() { curl_multi_wakeup(impl_->multi.get()); }

std::size_t HttpMulti::in_flight() const { return impl_->transfers.size(); }

}  // namespace outbox::internal
