#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace outbox::test {

// A child process with stdout and stderr captured to files in a temporary directory.
// The destructor kills it (SIGKILL) if it still runs.
class Process {
 public:
  Process(std::vector<std::string> argv, std::map<std::string, std::string> extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit up to deadline; returns the exit code (128+signal if killed), or
  // nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds deadline);
  bool Running();
  std::string Stdout() const;
  std::string Stderr() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string out_path_, err_path_;
};

// Runs argv to completion (deadline 60 s scaled); returns exit code, stdout, stderr.
struct RunResult {
  int code = -1;
  std::string out, err;
};
RunResult RunProcess(std::vector<std::string> argv, std::map<std::string, std::string> extra_env = {});

// The outbox-relay binary under test, and the source tree.
std::string RelayBinary();
std::string SourceDir();

// A fresh temporary directory (removed by the destructor).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace outbox::test
