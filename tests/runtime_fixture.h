// The Kafka runtime's test fixture, for the dev broker (kafka_runtime_test.cc) and a real
// Kafka (real_kafka_test.cc): generated input, the offline oracle, runtimes run until
// they committed, and results compared with the oracle.
//
// The oracle: the same topology run offline (TopologyTestDriver) over each input
// partition's records in offset order — what a task must produce. Counts, sums, minima
// and maxima must match exactly; quantiles are only checked to lie within [min, max]
// (results do not depend on where commits fall — DeterminismTest checks that byte for
// byte — but behind a repartition a window's values arrive in another order than the
// oracle's, and a t-digest's estimates depend on the order).
//
// Topic names: the reference topics with a suffix, "" where each test has a broker of its
// own, the test's name where tests share one (a real Kafka); the application id likewise.
#ifndef STREAMMETRICS_TESTS_RUNTIME_FIXTURE_H_
#define STREAMMETRICS_TESTS_RUNTIME_FIXTURE_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "apps/event_generator.h"
#include "engine/kafka/changelog_reader.h"
#include "engine/kafka/kafka_common.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/runtime.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"
#include "engine/topology_test_driver.h"
#include "operators/strings.h"
#include "tests/aggregate_results.h"
#include "tests/spawn.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics::kafka {

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Where generated input starts: 20 minutes ago, on a minute boundary — how many windows
// close over a run's span depends on where it starts within a minute, and tests count
// on a number of results.
inline int64_t InputStartMs() {
  const int64_t start = NowMs() - 20 * 60'000;
  return start - start % 60'000;
}

// A result, comparable across runs: everything but the quantiles, which come apart.
using ResultKey = std::tuple<std::string, std::string, std::string, std::string, int64_t>;
struct ResultValue {
  uint64_t count;
  double sum, min, max, p50, p95, p99;
};

inline std::map<ResultKey, ResultValue> Index(const std::vector<OutputRecord>& records,
                                              int* dupes) {
  std::map<ResultKey, ResultValue> out;
  for (const OutputRecord& r : records) {
    testing::AggregateResult a = testing::ParseAggregate(r);
    ResultKey k{r.topic, a.service, a.metric, a.tags, a.start};
    if (out.contains(k)) ++*dupes;
    out[k] = ResultValue{a.count, a.sum, a.min, a.max, a.p50, a.p95, a.p99};
  }
  return out;
}

class RuntimeTestBase : public ::testing::Test {
 protected:
  // The broker's bootstrap servers, and topic creation on it.
  virtual std::string Bootstrap() const = 0;
  virtual absl::Status CreateTopic(const std::string& name, int partitions) = 0;
  // The dev broker of this process, if that is the broker (RuntimeOptions::embedded_broker).
  virtual DevBroker* Embedded() const { return nullptr; }

  // Builds the topologies and creates the reference topics, every name ending in
  // `suffix`: metrics-events (6 partitions), the three aggregate topics and the dead
  // letters (3 each).
  void SetUpRuntime(const std::string& suffix) {
    SetMinLogLevel(LogLevel::kWarning);
    config_ = ReferencePipelineConfig();
    config_.idle_close_ms = 0;  // deterministic: windows close on stream time only
    // Input keyed by serviceId, aggregated where it lands; tests of the repartition set kAny.
    config_.keying = InputKeying::kByService;
    config_.store = StoreType::kRocksDb;
    config_.input_topic += suffix;
    config_.dead_letter_topic += suffix;
    for (WindowSpec& w : config_.windows) w.topic += suffix;
    app_id_ = "sm-test" + suffix;
    ASSERT_TRUE(CreateTopic(config_.input_topic, 6).ok());
    ASSERT_TRUE(CreateTopic(config_.dead_letter_topic, 3).ok());
    for (const std::string& t : ResultTopics()) ASSERT_TRUE(CreateTopic(t, 3).ok());
    RebuildTopologies();
    dir_ = std::filesystem::temp_directory_path() /
           StrCat("sm-runtime-", ::getpid(), "-",
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // The topologies again, after config_ changed.
  void RebuildTopologies() {
    absl::StatusOr<Topology> t = BuildMetricsTopology(config_);
    ASSERT_TRUE(t.ok()) << t.status();
    topology_ = std::make_unique<Topology>(*std::move(t));
    PipelineConfig in_memory = config_;
    in_memory.store = StoreType::kInMemory;
    // Repartitioned, every event of a service meets in one task: the oracle is one task
    // over all of the input (OracleOfAll).
    if (in_memory.keying == InputKeying::kAny) in_memory.keying = InputKeying::kSingleTask;
    oracle_topology_ = std::make_unique<Topology>(*BuildMetricsTopology(in_memory));
  }

  std::vector<std::string> ResultTopics() const {
    std::vector<std::string> out;
    for (const WindowSpec& w : config_.windows) out.push_back(w.topic);
    return out;
  }

  Properties Props() const {
    return {{"bootstrap.servers", Bootstrap()},
            {"session.timeout.ms", "6000"},
            {"heartbeat.interval.ms", "500"}};
  }

  // Produces `n` generated events (invalid, duplicate and late ones included) keyed by
  // serviceId, as the load generator does.
  // allow_failures: the broker is made to fail produce requests meanwhile (any client's:
  // some of these records may be lost; what reached the topic is what counts).
  // flush_timeout_ms: how long the last flush may wait (a broker restarting: longer).
  void Produce(int n, uint64_t seed, int64_t start_ms, int pace_per_s = 0,
               bool allow_failures = false, int flush_timeout_ms = 10'000) {
    GeneratorOptions g;
    g.seed = seed;
    g.start_ms = start_ms;
    g.events_per_second = 200;
    g.duplicate_fraction = 0.02;
    g.late_fraction = late_fraction_;
    g.late_by_ms = late_by_ms_;
    EventGenerator generator(g);
    absl::StatusOr<std::unique_ptr<Producer>> p = Producer::Create(
        {.properties = {{"bootstrap.servers", Bootstrap()}}, .timeout_ms = flush_timeout_ms});
    ASSERT_TRUE(p.ok()) << p.status();
    std::string doc;
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (pace_per_s > 0 && i % 100 == 0) {
        std::this_thread::sleep_until(started + std::chrono::milliseconds(i * 1000LL / pace_per_s));
      }
      doc.clear();
      generator.Next(&doc);
      (*p)->Send(config_.input_topic, -1, KeyOf(doc), doc, 0, {});
    }
    absl::Status flushed = (*p)->Flush();
    if (!allow_failures) {
      ASSERT_TRUE(flushed.ok()) << flushed;
    }
  }

  // How Produce keys its records: by serviceId (as the load generator and reference/000's
  // producers do), not at all (kcat's default), or by instanceId.
  enum class KeyBy { kService, kNone, kInstance };
  std::string_view KeyOf(std::string_view doc) const {
    switch (key_by_) {
      case KeyBy::kService:
        return GeneratedServiceId(doc);
      case KeyBy::kNone:
        return {};
      case KeyBy::kInstance: {
        constexpr std::string_view kField = "\"instanceId\":\"";
        const size_t at = doc.find(kField);
        if (at == std::string_view::npos) return {};
        const size_t begin = at + kField.size();
        return doc.substr(begin, doc.find('"', begin) - begin);
      }
    }
    return {};
  }

  // One event of service "zz-closer" to every input partition at `ts_ms`: with input
  // repartitioned, every partition's watermark then passes the windows before it, so
  // the runtime closes exactly the windows the oracle (which sees all input) closes.
  void ProduceClosers(int64_t ts_ms, int partitions = 6) {
    absl::StatusOr<std::unique_ptr<Producer>> p =
        Producer::Create({.properties = {{"bootstrap.servers", Bootstrap()}}});
    ASSERT_TRUE(p.ok()) << p.status();
    for (int i = 0; i < partitions; ++i) {
      const std::string doc = StrCat(
          R"({"eventId":"closer-)", i, R"(","timestamp":)", ts_ms,
          R"(,"serviceId":"zz-closer","instanceId":"c","metricType":"CUSTOM_GAUGE","metricName":"closer","value":1})");
      (*p)->Send(config_.input_topic, i, "zz-closer", doc, 0, {});
    }
    ASSERT_TRUE((*p)->Flush().ok());
  }

  // What each task must send: the topology offline over each partition's records. With
  // the input repartitioned (kAny), one task over all of it, in event-time order.
  // `counters`: the offline tasks' counters, summed. end_of_input: then every window
  // holding data closes (as windows closed on the wall clock do, given time).
  std::vector<OutputRecord> Oracle(TaskCounters* counters = nullptr, bool end_of_input = false) {
    absl::StatusOr<std::vector<OutputRecord>> input = ReadTopic(Props(), config_.input_topic);
    EXPECT_TRUE(input.ok()) << input.status();
    std::map<int32_t, std::vector<const OutputRecord*>> by_partition;
    if (config_.keying == InputKeying::kAny) {
      std::vector<std::pair<int64_t, const OutputRecord*>> all;
      std::unique_ptr<MetricEventDecoder> decoder = NewJsonMetricEventDecoder();
      MetricEvent e;
      for (const OutputRecord& r : *input) {
        const bool ok = decoder->Decode(r.value, &e).ok() && e.has_timestamp;
        all.emplace_back(ok ? e.timestamp_ms : INT64_MIN, &r);
      }
      std::stable_sort(all.begin(), all.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& [ts, r] : all) by_partition[0].push_back(r);
    } else {
      for (const OutputRecord& r : *input) by_partition[r.partition].push_back(&r);
    }
    std::vector<OutputRecord> out;
    for (auto& [partition, records] : by_partition) {
      TopologyTestDriver::Options o;
      o.wall_clock_ms = NowMs();
      o.dead_letter_topic = config_.dead_letter_topic;
      auto d = TopologyTestDriver::Create(*oracle_topology_, o);
      EXPECT_TRUE(d.ok()) << d.status();
      for (const OutputRecord* r : records) {
        // Keyed by serviceId in the oracle: its key check, if any, is the runtime's test.
        EXPECT_TRUE((*d)->PipeInput(config_.input_topic, r->key, r->value).ok());
      }
      EXPECT_TRUE((end_of_input ? (*d)->EndOfInput() : (*d)->Commit()).ok());
      for (OutputRecord& r : (*d)->ReadAll()) out.push_back(std::move(r));
      if (counters != nullptr) {
        const TaskCounters& c = (*d)->counters();
        counters->records_read += c.records_read;
        counters->records_processed += c.records_processed;
        for (int i = 0; i < kDeadLetterReasonCount; ++i) counters->dead_letters[i] += c.dead_letters[i];
        counters->duplicates_dropped += c.duplicates_dropped;
        counters->dedupe_ids_evicted += c.dedupe_ids_evicted;
        counters->late_dropped += c.late_dropped;
        counters->late_window_updates += c.late_window_updates;
      }
    }
    return out;
  }

  RuntimeOptions Options(std::string instance) const {
    RuntimeOptions o;
    o.application_id = app_id_;
    o.kafka = Props();
    o.threads = 2;
    o.commit_interval_ms = 100;
    o.state_dir = (dir_ / instance).string();
    o.instance_id = instance;
    o.embedded_broker = Embedded();
    o.dead_letter_topic = config_.dead_letter_topic;
    return o;
  }

  static bool WaitFor(const std::function<bool()>& done, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return done();
  }

  // Runs an instance with `options` until it has committed `events` input records, then
  // stops it; its Join() status. `counters`: the instance's counters before the stop.
  absl::Status RunUntilCommitted(const RuntimeOptions& options, int64_t events,
                                 RuntimeCounters* counters = nullptr) {
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*topology_, options);
    if (!rt.ok()) return rt.status();
    if (absl::Status s = (*rt)->Start(); !s.ok()) return s;
    EXPECT_TRUE(WaitFor([&] { return (*rt)->counters().committed_input == events; }, 150'000))
        << (*rt)->counters().committed_input << " of " << events;
    if (config_.keying == InputKeying::kAny) WaitForRepartitionDrained(options.application_id);
    if (counters != nullptr) *counters = (*rt)->counters();
    (*rt)->Stop();
    return (*rt)->Join();
  }

  // The input records application `app` has committed: per partition, the input offset
  // of the last commit marker in its aggregate store's changelog; -1 when unreadable.
  int64_t CommittedInput(const std::string& app, int partitions = 6) const {
    absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> reader =
        KafkaChangelogReader::Create(Props(), app, 5'000);
    if (!reader.ok()) return -1;
    int64_t sum = 0;
    for (int p = 0; p < partitions; ++p) {
      // Repartitioned, the input's offsets are in the upstream tasks' markers.
      absl::StatusOr<std::optional<CommitMarker>> m = (*reader)->LastMarker(
          config_.keying == InputKeying::kAny ? "by-service-repartition-state" : "aggregate-store",
          p, 0);
      if (!m.ok()) return -1;
      if (!m->has_value()) continue;
      for (const InputOffset& o : (*m)->offsets) {
        if (o.topic == config_.input_topic) sum += o.next_offset;
      }
    }
    return sum;
  }

  // Repartitioned (kAny, exactly-once): the records of app's repartition topic its
  // downstream tasks have not committed yet, from the topic's high watermarks and the
  // aggregate store's last commit markers; -1 when unreadable. Upstream commits first,
  // so "the input is committed" says nothing of the results until this is 0.
  int64_t RepartitionBacklog(const std::string& app, int partitions = 6) const {
    absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> reader =
        KafkaChangelogReader::Create(Props(), app, 5'000);
    absl::StatusOr<KafkaHandle> client = NewClient(RD_KAFKA_CONSUMER, Props());
    if (!reader.ok() || !client.ok()) return -1;
    const std::string topic = app + "-by-service-repartition";
    int64_t backlog = 0;
    for (int p = 0; p < partitions; ++p) {
      int64_t low = 0, high = 0;
      if (rd_kafka_query_watermark_offsets(client->get(), topic.c_str(), p, &low, &high, 5'000) !=
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        return -1;
      }
      absl::StatusOr<std::optional<CommitMarker>> m =
          (*reader)->LastMarker("aggregate-store", p, 0);
      if (!m.ok()) return -1;
      int64_t committed = 0;
      if (m->has_value()) {
        for (const InputOffset& o : (*m)->offsets) {
          if (o.topic == topic) committed = o.next_offset;
        }
      }
      // Under exactly-once every transaction ends with a control record, which takes an
      // offset and is never read: caught up, the committed offset is the high watermark's
      // minus one (a transaction still unread is at least a record and its marker).
      backlog += std::max<int64_t>(0, high - committed - 1);
    }
    return backlog;
  }

  // The default keying (through the repartition) and unkeyed input without late events:
  // the oracle, one task over all input in event-time order, is then exact.
  void UseTheRepartitionWithUnkeyedInput() {
    config_.keying = InputKeying::kAny;
    late_fraction_ = 0;
    key_by_ = KeyBy::kNone;
    RebuildTopologies();
  }

  // Waits until app's downstream tasks have committed all of its repartition topic,
  // including the upstream's last watermarks, which follow its last events by up to a
  // second (RepartitionOptions::watermark_interval_ms, then a commit).
  void WaitForRepartitionDrained(const std::string& app) const {
    EXPECT_TRUE(WaitFor([&] { return RepartitionBacklog(app) == 0; }, 60'000)) << RepartitionBacklog(app);
    std::this_thread::sleep_for(std::chrono::milliseconds(1'500));
    EXPECT_TRUE(WaitFor([&] { return RepartitionBacklog(app) == 0; }, 60'000)) << RepartitionBacklog(app);
  }

  // A config for `streammetrics run` of application `app`: this fixture's topics and
  // windows, RocksDB stores under `state_dir`, 2 threads committing every 100 ms, windows
  // closing on stream time only, the broker with 6 s sessions, then `kafka_extra`
  // (`, key: "value"` items) and `processing_extra` (likewise); written to `path`.
  void WriteRunConfig(const std::string& path, const std::string& app,
                      const std::string& state_dir, const std::string& kafka_extra = "",
                      const std::string& processing_extra = "") const {
    std::ofstream f(path);
    f << "application: {id: " << app << "}\n"
      << "topics: {input: " << config_.input_topic << ", dead_letter: "
      << config_.dead_letter_topic << "}\n"
      << "input: {keyed_by_service: " << (config_.keying == InputKeying::kByService ? "true" : "false")
      << "}\n"
      << "aggregate:\n  store: rocksdb\n  idle_close: \"off\"\n  windows:\n";
    for (const WindowSpec& w : config_.windows) {
      f << "    - {name: " << w.name << ", type: " << (w.tumbling() ? "tumbling" : "hopping")
        << ", size: " << w.size_ms << "ms"
        << (w.tumbling() ? std::string() : StrCat(", advance: ", w.advance_ms, "ms"))
        << ", grace: " << w.grace_ms << "ms, topic: " << w.topic << "}\n";
    }
    f << "processing: {threads: 2, commit_interval: 100ms" << processing_extra << "}\n"
      << "state: {dir: " << state_dir << "}\n"
      << "kafka: {bootstrap.servers: \"" << Bootstrap()
      << "\", session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"" << kafka_extra
      << "}\n";
  }

  // 20,000 generated events, one instance run until it committed them all without a
  // rebuild, its lag then 0, and every result and dead letter exactly the oracle's.
  void RunOnceThenCompare() {
    const int kEvents = 20'000;
    Produce(kEvents, 3, InputStartMs());
    std::vector<OutputRecord> oracle = Oracle();
    RuntimeCounters counters;
    ASSERT_TRUE(RunUntilCommitted(Options("a"), kEvents, &counters).ok());
    EXPECT_EQ(counters.rebuilds, 0u);
    EXPECT_EQ(counters.input_lag, 0);  // everything committed: the fetched watermarks reached
    ExpectMatchesOracle(oracle, /*last_result_wins=*/false);
  }

  // `streammetrics run` of application `app` killed with SIGKILL three times while input
  // keeps arriving (45,000 events over 45 s), each time once it has committed 2,000 more,
  // and restarted on its state dir; the last run gets SIGTERM once everything is
  // committed and must exit 0. Then the results are compared with the oracle's.
  // `config_extra`: YAML appended to the run config (sinks, say); `before_stop`: called
  // while the last run is still up, after it committed everything.
  // `closers`: ProduceClosers once the input is in (a repartitioned pipeline's last
  // windows close then). `with_oracle`: false leaves the comparison to the caller.
  void KillNineRepeatedlyThenCompare(const std::string& app, bool last_result_wins,
                                     const std::string& config_extra = "",
                                     const std::function<void()>& before_stop = nullptr,
                                     bool closers = false, bool with_oracle = true) {
    std::filesystem::create_directories(dir_);
    const std::string config = (dir_ / "crash.yaml").string();
    WriteRunConfig(config, app, (dir_ / "state").string());
    if (!config_extra.empty()) std::ofstream(config, std::ios::app) << config_extra << "\n";
    const int kEvents = 45'000;
    const int64_t start = InputStartMs();
    std::thread producer([&] { Produce(kEvents, 9, start, /*pace_per_s=*/1'000); });
    testing::JoinOnExit joiner{producer};
    const std::string log = (dir_ / "run.log").string();
    const std::vector<std::string> run = {SM_BINARY, "run", "--config", config, "--quiet", "true"};
    std::vector<int64_t> committed_at_kill;
    for (int crash = 0; crash < 3; ++crash) {
      pid_t pid = testing::Spawn(run, log);
      ASSERT_GT(pid, 0);
      const int64_t before = std::max<int64_t>(0, CommittedInput(app));
      WaitFor([&] { return CommittedInput(app) > before + 2'000; }, 150'000);
      committed_at_kill.push_back(CommittedInput(app));
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      EXPECT_TRUE(WIFSIGNALED(status));
    }
    producer.join();
    if (closers) ProduceClosers(start + 10 * 60'000);
    const int64_t total = kEvents + (closers ? 6 : 0);
    pid_t pid = testing::Spawn(run, log);
    ASSERT_GT(pid, 0);
    EXPECT_TRUE(WaitFor([&] { return CommittedInput(app) == total; }, 240'000))
        << CommittedInput(app) << "\n" << testing::ReadFile(log);
    if (config_.keying == InputKeying::kAny) WaitForRepartitionDrained(app);
    if (before_stop) before_stop();
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    ASSERT_EQ(committed_at_kill.size(), 3u);
    for (int64_t c : committed_at_kill) {
      EXPECT_GT(c, 0);
      EXPECT_LT(c, kEvents);  // killed mid-stream
    }
    if (with_oracle) ExpectMatchesOracle(Oracle(), last_result_wins);
  }

  // Every result topic and the dead letters equal the oracle's: results exactly (but
  // quantiles: within [min, max], see the file comment), dead letters by reason and
  // error. last_result_wins: where aborted transactions' records stay visible (the dev
  // broker), each window's last result must be exact and every dead letter there.
  // ignore_service: results of this serviceId are left out on both sides.
  void ExpectMatchesOracle(const std::vector<OutputRecord>& oracle,
                           bool last_result_wins = false,
                           const std::string& ignore_service = "") {
    const auto ignored = [&](const OutputRecord& r) {
      return !ignore_service.empty() && testing::ParseAggregate(r).service == ignore_service;
    };
    std::vector<OutputRecord> expected_results, got_results;
    std::map<std::string, int> expected_dlq, got_dlq;
    for (const OutputRecord& r : oracle) {
      if (r.topic == config_.dead_letter_topic) {
        ++expected_dlq[StrCat(r.Header("dlq.reason").value_or(""), ": ",
                              r.Header("dlq.error").value_or(""))];
      } else if (!ignored(r)) {
        expected_results.push_back(r);
      }
    }
    for (const std::string& topic : ResultTopics()) {
      absl::StatusOr<std::vector<OutputRecord>> got = ReadTopic(Props(), topic);
      ASSERT_TRUE(got.ok()) << got.status();
      for (OutputRecord& r : *got) {
        if (!ignored(r)) got_results.push_back(std::move(r));
      }
    }
    absl::StatusOr<std::vector<OutputRecord>> dlq = ReadTopic(Props(), config_.dead_letter_topic);
    ASSERT_TRUE(dlq.ok()) << dlq.status();
    for (const OutputRecord& r : *dlq) {
      ++got_dlq[StrCat(r.Header("dlq.reason").value_or(""), ": ",
                       r.Header("dlq.error").value_or(""))];
    }
    int expected_dupes = 0, got_dupes = 0;
    std::map<ResultKey, ResultValue> want = Index(expected_results, &expected_dupes);
    std::map<ResultKey, ResultValue> got = Index(got_results, &got_dupes);
    if (!last_result_wins) {
      EXPECT_EQ(got_dupes, 0) << "a window result was sent twice";
      EXPECT_EQ(got_results.size(), expected_results.size());
    }
    ASSERT_EQ(got.size(), want.size());
    ASSERT_GT(want.size(), 100u);
    for (const auto& [k, w] : want) {
      auto it = got.find(k);
      ASSERT_NE(it, got.end()) << std::get<0>(k) << " " << std::get<1>(k) << " " << std::get<4>(k);
      const ResultValue& g = it->second;
      EXPECT_EQ(g.count, w.count);
      if (config_.keying == InputKeying::kAny) {
        // The same values, added in another order (the oracle's is event time's): equal
        // up to rounding.
        EXPECT_NEAR(g.sum, w.sum, 1e-9 * std::abs(w.sum));
      } else {
        EXPECT_EQ(g.sum, w.sum);
      }
      EXPECT_EQ(g.min, w.min);
      EXPECT_EQ(g.max, w.max);
      for (double q : {g.p50, g.p95, g.p99}) {
        EXPECT_GE(q, g.min);
        EXPECT_LE(q, g.max);
      }
    }
    if (!last_result_wins) {
      EXPECT_EQ(got_dlq, expected_dlq);
    } else {  // every dead letter there, some of aborted transactions twice
      for (const auto& [reason, n] : expected_dlq) EXPECT_GE(got_dlq[reason], n) << reason;
    }
  }

  PipelineConfig config_;
  KeyBy key_by_ = KeyBy::kService;
  double late_fraction_ = 0.005;
  int64_t late_by_ms_ = 10 * 60'000;
  std::string app_id_;
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<Topology> oracle_topology_;
  std::filesystem::path dir_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_TESTS_RUNTIME_FIXTURE_H_
