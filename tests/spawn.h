// Child processes and ports for tests: the streammetrics binary, servers.
#ifndef STREAMMETRICS_TESTS_SPAWN_H_
#define STREAMMETRICS_TESTS_SPAWN_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <spawn.h>
#include <unistd.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

extern char** environ;

namespace streammetrics::testing {

// Starts `args` (args[0]: the program's path) with stdout and stderr appended to `log`;
// the child's pid, or -1.
inline pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// The whole text of the file at `path` ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs `args` to its end, stdout and stderr appended to `log`: its wait status (-1: it
// could not be started) and the log's text.
struct Finished {
  int status = -1;
  std::string output;
  bool ok() const { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};
inline Finished RunToEnd(const std::vector<std::string>& args, const std::string& log) {
  Finished f;
  const pid_t pid = Spawn(args, log);
  if (pid > 0) waitpid(pid, &f.status, 0);
  f.output = ReadFile(log);
  return f;
}

// A loopback TCP port nothing listens on now (a server started right after takes it).
inline int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// Joins a thread when the scope ends, also when an assertion returns early.
struct JoinOnExit {
  std::thread& thread;
  ~JoinOnExit() {
    if (thread.joinable()) thread.join();
  }
};

// Polls `done` every 10 ms until it holds or `seconds` pass; its last value.
inline bool WaitUntil(const std::function<bool()>& done, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// Sends `signal` to *pid (if running) and reaps it; *pid becomes -1.
inline void StopChild(pid_t* pid, int signal) {
  if (*pid <= 0) return;
  kill(*pid, signal);
  int status = 0;
  waitpid(*pid, &status, 0);
  *pid = -1;
}

// Starts a server (args[0]: its path) with output appended to `log` and waits until
// `ready` holds (up to 5 s); its pid, or Unavailable naming the log.
inline absl::StatusOr<pid_t> StartServer(const std::vector<std::string>& args, const std::string& log,
                                         const std::function<bool()>& ready) {
  pid_t pid = Spawn(args, log);
  if (pid <= 0) return absl::InternalError("cannot start " + args[0]);
  for (int i = 0; i < 200; ++i) {
    if (ready()) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  StopChild(&pid, SIGKILL);
  return absl::UnavailableError(args[0] + " did not start; see " + log);
}

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_SPAWN_H_
