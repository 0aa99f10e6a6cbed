#include "http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <stdexcept>

#include "process.h"
#include "wait.h"

namespace outbox::test {
namespace {

constexpr int kBacklog = 128;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// One thread per connection (httplib's pool has a fixed size, and tests hold many
// requests open at once). Threads are joined when the server stops.
class ThreadPerConnection : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock{mu_};
    threads_.emplace_back(std::move(fn));
  }
  void shutdown() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock{mu_};
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;  // Guarded by mu_
};

// Pseudo-headers httplib adds to every request it parsed; no client sent them.
bool IsAddedByHttplib(const std::string& name) {
  return name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" || name == "LOCAL_PORT";
}

}  // namespace

std::string RecordedRequest::Header(const std::string& name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? "" : it->second;
}

HttpServer::HttpServer(Policy policy) : server_(std::make_unique<httplib::Server>()), policy_(std::move(policy)) {
  server_->new_task_queue = [] { return new ThreadPerConnection(); };
  int listening_fd = -1;
  server_->set_socket_options([&listening_fd](int fd) {  // no SO_REUSEPORT: a port is one server's
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    listening_fd = fd;
  });
  server_->set_keep_alive_max_count(1);  // one request per connection
  server_->set_keep_alive_timeout(2);    // a connection that sends nothing, at most this
  server_->set_read_timeout(10, 0);
  auto handler = [this](const httplib::Request& in, httplib::Response& out) {
    RecordedRequest req;
    req.arrived = std::chrono::steady_clock::now();
    req.method = in.method;
    req.target = in.target;
    for (const auto& [name, value] : in.headers) {
      if (!IsAddedByHttplib(name)) req.headers[Lower(name)] = value;
    }
    req.body = in.body;
    Reply reply = Handle(std::move(req));
    out.status = reply.status;
    out.set_content(reply.body, "text/plain");
  };
  const std::string any = ".*";
  server_->Get(any, handler);
  server_->Post(any, handler);
  server_->Put(any, handler);
  server_->Patch(any, handler);
  server_->Delete(any, handler);
  server_->Options(any, handler);
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("HttpServer: cannot bind 127.0.0.1:0");
  // Debian's libcpp-httplib is built with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed
  // in the shared library): a burst of clients on a busy host would overflow it and wait
  // a second for the SYN-ACK retransmission. Raise it on httplib's own socket.
  if (listen(listening_fd, kBacklog) != 0) throw std::runtime_error("HttpServer: cannot raise the listen backlog");
  listener_ = std::thread([this] {
    server_->listen_after_bind();
    serving_done_.store(true);
  });
}

HttpServer::~HttpServer() {
  {
    std::lock_guard<std::mutex> lock{mu_};
    stopping_ = true;
  }
  released_cv_.notify_all();
  // httplib's stop() acts only once the listen loop runs: wait for it to start (it does
  // at once), unless it has already ended.
  while (!server_->is_running() && !serving_done_.load()) std::this_thread::yield();
  server_->stop();
  listener_.join();  // joins the connection threads too
}

Reply HttpServer::Handle(RecordedRequest req) {
  std::unique_lock<std::mutex> lock{mu_};
  req.index = static_cast<int>(requests_.size());
  requests_.push_back(req);
  max_open_ = std::max(max_open_, ++open_);
  Policy policy = policy_;
  lock.unlock();
  Reply reply = policy(req);
  lock.lock();
  if (reply.hold) {
    ++held_;
    unsigned generation = release_generation_;
    released_cv_.wait(lock, [&] { return stopping_ || release_generation_ != generation; });
    --held_;
  }
  --open_;
  return reply;
}

std::string HttpServer::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

void HttpServer::SetPolicy(Policy policy) {
  std::lock_guard<std::mutex> lock{mu_};
  policy_ = std::move(policy);
}

std::vector<RecordedRequest> HttpServer::Requests() const {
  std::lock_guard<std::mutex> lock{mu_};
  return requests_;
}

int HttpServer::RequestCount() const {
  std::lock_guard<std::mutex> lock{mu_};
  return static_cast<int>(requests_.size());
}

int HttpServer::Held() const {
  std::lock_guard<std::mutex> lock{mu_};
  return held_;
}

int HttpServer::MaxConcurrent() const {
  std::lock_guard<std::mutex> lock{mu_};
  return max_open_;
}

void HttpServer::ReleaseHeld() {
  {
    std::lock_guard<std::mutex> lock{mu_};
    ++release_generation_;
  }
  released_cv_.notify_all();
}

Policy HttpServer::Always(int status) {
  return [status](const RecordedRequest&) { return Reply{status, status / 100 == 2 ? "ok" : "no", false}; };
}

Policy HttpServer::FailFirst(int n, int fail_status) {
  return [n, fail_status](const RecordedRequest& r) {
    return r.index < n ? Reply{fail_status, "try again", false} : Reply{200, "ok", false};
  };
}

Policy HttpServer::HoldAll(int status_on_release) {
  return [status_on_release](const RecordedRequest&) { return Reply{status_on_release, "late", true}; };
}

HttpAnswer HttpGet(int port, const std::string& path) {
  httplib::Client client{"127.0.0.1", port};
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  HttpAnswer answer;
  if (auto res = client.Get(path.c_str())) {
    answer.status = res->status;
    answer.body = res->body;
  } else {
    answer.error = httplib::to_string(res.error());
  }
  return answer;
}

int WaitForMetricsPort(const Process& process, std::chrono::milliseconds deadline) {
  static const std::regex kServing{R"(serving /metrics /healthz /readyz port=(\d+))"};
  int port = 0;
  WaitUntil(
      [&] {
        std::smatch m;
        std::string log = process.Stderr();
        if (!std::regex_search(log, m, kServing)) return false;
        port = std::stoi(m[1].str());
        return true;
      },
      deadline);
  return port;
}

double MetricSample(const std::string& metrics, const std::string& name) {
  std::smatch m;
  std::regex line{"(^|\n)" + name + " ([0-9.e+-]+)"};
  return std::regex_search(metrics, m, line) ? std::stod(m[2].str()) : -1;
}

}  // namespace outbox::test
