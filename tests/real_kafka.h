// A real Apache Kafka (4.x, KRaft) for tests, run by scripts/kafka.sh from the jars it
// fetches with Maven: what the engine's guarantees are proven on (the dev broker shows
// aborted records, keeps no transactional offsets, never fences and never compacts).
//
// Shared(): the test suite's single-node broker. ctest starts it once for every test
// that needs it (the fixture `real_kafka` in tests/CMakeLists.txt) and names its
// directory in SM_KAFKA_DIR; a test binary run by hand without it starts one of its own,
// stopped when the process exits. Tests on the shared broker name their topics and
// application ids uniquely: tests run in parallel on it.
// Start(nodes): a cluster of the test's own (1 or 3 nodes), for tests that kill or
// restart brokers; stopped and removed by the destructor.
#ifndef STREAMMETRICS_TESTS_REAL_KAFKA_H_
#define STREAMMETRICS_TESTS_REAL_KAFKA_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/spawn.h"

namespace streammetrics::testing {

class RealKafka {
 public:
  static absl::StatusOr<RealKafka*> Shared() {
    static absl::StatusOr<std::unique_ptr<RealKafka>>* shared = [] {
      auto* s = new absl::StatusOr<std::unique_ptr<RealKafka>>;
      const char* dir = std::getenv("SM_KAFKA_DIR");
      if (dir != nullptr && *dir != '\0') {
        std::unique_ptr<RealKafka> k(new RealKafka(dir, /*owned=*/false));
        if (absl::Status r = k->ReadBootstrap(); !r.ok()) {
          *s = r;
        } else {
          *s = std::move(k);
        }
      } else {
        *s = Start(1);
        if (s->ok()) {
          // Stopped at exit: a static's destructor would run after gtest's own teardown.
          static RealKafka* to_stop = s->value().get();
          std::atexit([] { to_stop->Stop(); });
        }
      }
      return s;
    }();
    if (!shared->ok()) return shared->status();
    return shared->value().get();
  }

  static absl::StatusOr<std::unique_ptr<RealKafka>> Start(int nodes) {
    char tmpl[] = "/tmp/sm-kafka-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
    const std::string dir = std::string(tmpl) + "/cluster";
    std::unique_ptr<RealKafka> k(new RealKafka(dir, /*owned=*/true));
    const Finished f = RunToEnd({"/bin/bash", Script(), "start", dir, std::to_string(nodes)},
                                std::string(tmpl) + "/start.log");
    if (!f.ok()) return absl::UnavailableError("kafka.sh start failed:\n" + f.output);
    if (absl::Status s = k->ReadBootstrap(); !s.ok()) return s;
    return k;
  }

  ~RealKafka() { Stop(); }
  RealKafka(const RealKafka&) = delete;
  RealKafka& operator=(const RealKafka&) = delete;

  const std::string& bootstrap_servers() const { return bootstrap_; }

  // kill -9 of node `node` (1-based); Restart brings it back on its ports and storage.
  absl::Status Kill(int node) { return Script({"kill", dir_, std::to_string(node)}); }
  absl::Status Restart(int node) { return Script({"restart", dir_, std::to_string(node)}); }

  // One of Kafka's CLI tools from the same jars (`kafka.sh tool NAME ARGS...`: topics,
  // consumer-groups, transactions, configs, get-offsets, delete-records), with
  // --bootstrap-server of this cluster appended; its output, or Internal with it.
  absl::StatusOr<std::string> Tool(const std::string& name, std::vector<std::string> args) {
    std::vector<std::string> argv = {"/bin/bash", Script(), "tool", name};
    for (std::string& a : args) argv.push_back(std::move(a));
    argv.push_back("--bootstrap-server");
    argv.push_back(bootstrap_);
    const std::string log = TempLog();
    const Finished f = RunToEnd(argv, log);
    std::filesystem::remove(log);
    if (!f.ok()) return absl::InternalError("kafka.sh tool " + name + " failed:\n" + f.output);
    return f.output;
  }

  // Every node's server log, concatenated (what the broker says it did: "cleaned log
  // <topic>-<partition>", elections, ...).
  std::string ServerLogs() const {
    std::string all;
    std::error_code ec;
    for (const auto& node : std::filesystem::directory_iterator(dir_, ec)) {
      for (const auto& f : std::filesystem::directory_iterator(node.path(), ec)) {
        if (f.path().filename().string().rfind("server.log", 0) != 0) continue;
        std::ifstream in(f.path());
        all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
    }
    return all;
  }

  void Stop() {
    if (!owned_ || stopped_) return;
    stopped_ = true;
    (void)Script({"stop", dir_});
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(dir_).parent_path(), ec);
  }

 private:
  RealKafka(std::string dir, bool owned) : dir_(std::move(dir)), owned_(owned) {}

  static std::string Script() { return std::string(SM_SOURCE_DIR) + "/scripts/kafka.sh"; }
  static std::string TempLog() {
    char tmpl[] = "/tmp/sm-kafka-tool-XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    return tmpl;
  }
  absl::Status Script(std::vector<std::string> args) {
    args.insert(args.begin(), {"/bin/bash", Script()});
    const std::string log = TempLog();
    const Finished f = RunToEnd(args, log);
    std::filesystem::remove(log);
    if (!f.ok()) return absl::InternalError("kafka.sh " + args[2] + " failed:\n" + f.output);
    return absl::OkStatus();
  }
  absl::Status ReadBootstrap() {
    std::ifstream in(dir_ + "/bootstrap");
    std::getline(in, bootstrap_);
    if (bootstrap_.empty()) {
      return absl::FailedPreconditionError("no Kafka broker at " + dir_ +
                                           " (scripts/kafka.sh start " + dir_ + ")");
    }
    return absl::OkStatus();
  }

  std::string dir_;
  bool owned_;
  bool stopped_ = false;
  std::string bootstrap_;
};

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_REAL_KAFKA_H_
