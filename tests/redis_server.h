// A real redis-server for tests (DESIGN.md, "Real services in tests"): on a free loopback
// port, its append-only file (fsync every second) in a temp dir (so Stop()/Start() — an outage — keeps the
// data, as a production Redis with persistence would); stopped by the destructor.
#ifndef STREAMMETRICS_TESTS_REDIS_SERVER_H_
#define STREAMMETRICS_TESTS_REDIS_SERVER_H_

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/spawn.h"  // FreeLoopbackPort

namespace streammetrics::testing {

class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> Create() {
    std::unique_ptr<RedisServer> r(new RedisServer());
    char tmpl[] = "/tmp/sm-redis-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
    r->dir_ = tmpl;
    r->port_ = FreeLoopbackPort();
    if (absl::Status s = r->Start(); !s.ok()) return s;
    return r;
  }
  ~RedisServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  absl::Status Start() {
    if (pid_ > 0) return absl::OkStatus();
    const std::vector<std::string> args = {
        "/usr/bin/redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir_,
        "--daemonize", "no"};
    absl::StatusOr<pid_t> pid = StartServer(args, dir_ + "/redis.log", [&] { return Ping(); });
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    return absl::OkStatus();
  }
  void Stop() { StopChild(&pid_, SIGTERM); }
  int port() const { return port_; }

  // One command's reply as text: strings and integers as is, arrays joined by ',',
  // nil as "(nil)", errors as "ERR: ...".
  std::string Command(const std::vector<std::string>& args) {
    timeval tv{2, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (c == nullptr || c->err) {
      if (c != nullptr) redisFree(c);
      return "ERR: connect";
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    std::string out = r == nullptr ? "ERR: no reply" : Text(r);
    if (r != nullptr) freeReplyObject(r);
    redisFree(c);
    return out;
  }

 private:
  RedisServer() = default;
  bool Ping() {
    timeval tv{0, 200'000};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    bool ok = false;
    if (c != nullptr && !c->err) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
      if (r != nullptr) freeReplyObject(r);
    }
    if (c != nullptr) redisFree(c);
    return ok;
  }
  static std::string Text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_STATUS: return std::string(r->str, r->len);
      case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
      case REDIS_REPLY_NIL: return "(nil)";
      case REDIS_REPLY_ERROR: return "ERR: " + std::string(r->str, r->len);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) out += (i ? "," : "") + Text(r->element[i]);
        return out;
      }
    }
    return "?";
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_REDIS_SERVER_H_
