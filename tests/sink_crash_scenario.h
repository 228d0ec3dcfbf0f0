// The crash scenario of a sink process, shared by the Postgres and Redis tests:
// aggregates (11 services × 4 windows, each updated ~68 times, 3,000 in all) are produced
// to metrics-aggregated-1m of an in-process dev broker while `streammetrics sink --config`
// is killed with SIGKILL three times mid-stream (batches of 50, so mostly between one
// batch's transaction and the next) and restarted, then two runners run at once in the
// same group until everything is applied; both then get SIGTERM and must exit 0. The test
// checks the sink's end state against `produced` (in produce order).
#ifndef STREAMMETRICS_TESTS_SINK_CRASH_SCENARIO_H_
#define STREAMMETRICS_TESTS_SINK_CRASH_SCENARIO_H_

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "engine/kafka/dev_broker.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/sink_runner.h"
#include "operators/strings.h"
#include "tests/aggregate_json.h"
#include "tests/spawn.h"

namespace streammetrics::testing {

// A runner that retries fast (tests stop the database for seconds, not minutes).
inline kafka::SinkRunnerOptions FastRetryRunner(const kafka::Properties& props, std::string group,
                                                std::string topic) {
  kafka::SinkRunnerOptions ro;
  ro.kafka = props;
  ro.group_id = std::move(group);
  ro.topics = {std::move(topic)};
  ro.batch_size = 100;
  ro.flush_interval_ms = 50;
  ro.retry_initial_ms = 50;
  ro.retry_max_ms = 400;
  ro.breaker_failures = 3;
  ro.breaker_open_ms = 500;
  return ro;
}

struct ProducedAggregate {
  std::string service;
  int64_t window_start = 0;
  int count = 0;
  double sum = 0;
  std::string json;
};

// `sinks_yaml`: the config's sinks mapping (one sink enabled, topics
// [metrics-aggregated-1m], batch_size 50). `applied`: the sum of the sink's stored
// positions (-1 if unreadable). Fills *produced.
inline void RunSinkCrashScenario(const std::string& sinks_yaml, const std::function<int64_t()>& applied,
                                 std::vector<ProducedAggregate>* produced) {
  auto broker = kafka::DevBroker::Start(1);
  ASSERT_TRUE(broker.ok());
  ASSERT_TRUE((*broker)->CreateReferenceTopics().ok());
  const std::string dir = StrCat("/tmp/sm-sink-test-", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string config = dir + "/sink.yaml";
  {
    std::ofstream f(config);
    f << "application: {id: sinktest}\n"
      << "sinks: " << sinks_yaml << "\n"
      << "kafka: {bootstrap.servers: \"" << (*broker)->bootstrap_servers()
      << "\", session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\", fetch.wait.max.ms: \"50\"}\n";
  }
  const int kRecords = 3'000;
  for (int i = 0; i < kRecords; ++i) {
    ProducedAggregate& p = produced->emplace_back();
    p.service = StrCat("svc", i % 11);
    p.window_start = 60'000 * (i / 11 % 4);
    p.count = i + 1;
    p.sum = i * 2.0;
    p.json = Aggregate(p.service, "latency", "1m", p.window_start, p.count, p.sum);
  }
  const kafka::Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()}};
  // Input in four quarters, each paced (~140/s) and each after the previous kill: every
  // kill lands while input is still to come, however long a restart's group join takes.
  std::atomic<int> kills{0};
  std::thread producer([&] {
    auto p = kafka::Producer::Create({.properties = props});
    ASSERT_TRUE(p.ok());
    for (int i = 0; i < kRecords; ++i) {
      if (i % (kRecords / 4) == 0) {
        const int quarter = i / (kRecords / 4);
        ASSERT_TRUE(WaitUntil([&] { return kills.load() >= quarter; }, 180)) << quarter;
      }
      (*p)->Send("metrics-aggregated-1m", -1, (*produced)[i].service, (*produced)[i].json, 0, {});
      if (i % 100 == 99) {
        ASSERT_TRUE((*p)->Flush().ok());
        std::this_thread::sleep_for(std::chrono::milliseconds(700));
      }
    }
    ASSERT_TRUE((*p)->Flush().ok());
  });
  streammetrics::testing::JoinOnExit joiner{producer};
  struct ReleaseOnExit {  // an early return (a failed ASSERT) lets the producer finish
    std::atomic<int>& kills;
    ~ReleaseOnExit() { kills.store(4); }
  } release{kills};
  const std::string log = dir + "/sink.log";
  const std::vector<std::string> run = {SM_BINARY, "sink", "--config", config};
  std::vector<int64_t> at_kill;
  for (int crash = 0; crash < 3; ++crash) {
    const int64_t before = std::max<int64_t>(0, applied());
    pid_t pid = Spawn(run, log);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(WaitUntil([&] { return applied() >= before + 300; }, 60)) << applied();
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status));
    at_kill.push_back(applied());
    kills.store(crash + 1);
  }
  pid_t a = Spawn(run, log);
  pid_t b = Spawn(run, log);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  producer.join();
  EXPECT_TRUE(WaitUntil([&] { return applied() == kRecords; }, 90)) << applied();
  // Both are up (the last killed runner may have finished the work already, and a
  // SIGTERM before a process installs its handler would kill it): five starts logged.
  auto starts = [&] {
    const std::string text = ReadFile(log);
    int n = 0;
    for (size_t at = text.find("Ctrl-C to stop"); at != std::string::npos;
         at = text.find("Ctrl-C to stop", at + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_TRUE(WaitUntil([&] { return starts() == 5; }, 30)) << starts();
  for (pid_t pid : {a, b}) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "status " << status << "; log: " << log;
  }
  for (int64_t n : at_kill) EXPECT_LT(n, kRecords);  // killed mid-stream
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_SINK_CRASH_SCENARIO_H_
