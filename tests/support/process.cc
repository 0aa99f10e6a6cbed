#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "wait.h"

namespace outbox::test {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "outbox-test.XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> extra_env) {
  static int counter = 0;
  std::string base = (std::filesystem::temp_directory_path() /
                      ("outbox-proc-" + std::to_string(getpid()) + "-" + std::to_string(++counter)))
                         .string();
  out_path_ = base + ".out";
  err_path_ = base + ".err";
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // The test may block SIGTERM/SIGINT; children get the default mask.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // O_CLOEXEC: only the dup2 copies (0, 1, 2) reach the program; these close at exec.
    int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (const auto& [k, v] : extra_env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait(std::chrono::milliseconds(10000));
  }
  unlink(out_path_.c_str());
  unlink(err_path_.c_str());
}

void Process::Signal(int sig) {
  if (!status_) kill(pid_, sig);
}

bool Process::Running() {
  if (status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return r == 0;
}

std::optional<int> Process::Wait(std::chrono::milliseconds deadline) {
  WaitUntil([&] { return !Running(); }, deadline);
  return status_;
}

std::string Process::Stdout() const { return ReadFile(out_path_); }
std::string Process::Stderr() const { return ReadFile(err_path_); }

RunResult RunProcess(std::vector<std::string> argv, std::map<std::string, std::string> extra_env) {
  Process p{std::move(argv), std::move(extra_env)};
  auto code = p.Wait(std::chrono::milliseconds(60000));
  RunResult r;
  if (!code) {
    p.Signal(SIGKILL);
    p.Wait(std::chrono::milliseconds(5000));
    throw std::runtime_error("command timed out: " + p.Stderr());
  }
  r.code = *code;
  r.out = p.Stdout();
  r.err = p.Stderr();
  return r;
}

std::string RelayBinary() { return OUTBOX_RELAY_BIN; }
std::string SourceDir() { return OUTBOX_SOURCE_DIR; }

}  // namespace outbox::test
