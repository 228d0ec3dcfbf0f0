#include "apps/kafka_commands.h"

#include "apps/tcp_forwarder.h"

#include <signal.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "engine/kafka/dev_broker.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/runtime.h"
#include "engine/kafka/sink_runner.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"
#include "engine/postgres/postgres_sink.h"
#include "engine/redis/redis_sink.h"
#include "operators/strings.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics {
namespace {

using Clock = std::chrono::steady_clock;

void OnStopSignal(int) { StopRequested().store(true); }

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Sleeps up to ms, waking early on a stop request.
void SleepUnlessStopped(int64_t ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  while (!StopRequested().load() && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(ms, 20)));
  }
}

std::string Thousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string ClockTime(int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return buf;
}

kafka::Properties KafkaProperties(const AppConfig& config, const std::string& bootstrap) {
  kafka::Properties props;
  for (const auto& [k, v] : config.kafka) {
    if (k != "bootstrap.servers") props.emplace_back(k, v);
  }
  props.emplace_back("bootstrap.servers", bootstrap);
  return props;
}

// The built-in load generator of the embedded main job: events stamped with the wall
// clock, produced at `rate` per second, keyed by serviceId. It never gets more than
// `max_ahead` events ahead of `read()`, the engine's progress: the dev broker keeps only
// the last 5 MiB / 100,000 records of each partition and drops older ones silently, so
// a generator outrunning the engine would lose events before they are read. Held back,
// it produces at the engine's pace (held_back() says so) and does not burst to catch up.
class LoadGenerator {
 public:
  // Produces nothing before `reading()` (the engine has tasks): until its group has
  // formed — seconds, at times — the dev broker would drop what a crowded partition
  // held beyond its 5 MiB before anything read it.
  LoadGenerator(kafka::Producer* producer, std::string topic, double rate,
                std::function<uint64_t()> read, uint64_t max_ahead, std::function<bool()> reading)
      : producer_(producer), topic_(std::move(topic)), rate_(rate), read_(std::move(read)),
        max_ahead_(max_ahead), reading_(std::move(reading)) {}
  ~LoadGenerator() { Stop(); }
  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t produced() const { return produced_.load(); }
  // Times the generator waited for the engine.
  uint64_t held_back() const { return held_back_.load(); }

 private:
  void Run() {
    GeneratorOptions g;
    g.seed = static_cast<uint64_t>(WallMs());
    g.start_ms = WallMs();
    g.events_per_second = rate_;
    EventGenerator generator(g);
    std::string doc;
    // A token bucket holding at most 50 ms of events (at least 1,000).
    const double burst = std::max(1'000.0, rate_ / 20);
    double tokens = 0;
    auto last = Clock::now();
    while (!stop_) {
      const auto now = Clock::now();
      if (!reading_()) {
        last = now;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      tokens = std::min(burst, tokens + std::chrono::duration<double>(now - last).count() * rate_);
      last = now;
      uint64_t n = produced_.load();
      const uint64_t read = read_();
      const uint64_t ahead = n > read ? n - read : 0;
      uint64_t batch = static_cast<uint64_t>(tokens);
      if (ahead + batch > max_ahead_) {
        batch = ahead >= max_ahead_ ? 0 : max_ahead_ - ahead;
        held_back_.fetch_add(1);
      }
      for (uint64_t i = 0; i < batch && !stop_; ++i, ++n) {
        doc.clear();
        generator.Next(&doc);
        producer_->Send(topic_, -1, GeneratedServiceId(doc), doc, 0, {});
      }
      tokens -= static_cast<double>(batch);
      produced_.store(n);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    producer_->Flush().IgnoreError();
  }

  kafka::Producer* producer_;
  std::string topic_;
  double rate_;
  std::function<uint64_t()> read_;
  uint64_t max_ahead_;
  std::function<bool()> reading_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> produced_{0};
  std::atomic<uint64_t> held_back_{0};
  std::thread thread_;
};

// The live view's latest 1m results: per service, the result of its busiest metric in
// the newest window seen.
class LatestResults {
 public:
  // Takes one result; false when it is not a result.
  bool Add(const OutputRecord& r) {
    simdjson::dom::element doc;
    if (parser_.parse(r.value).get(doc) != simdjson::SUCCESS) return false;
    std::string_view service, metric;
    int64_t start = 0;
    uint64_t count = 0;
    double p50 = 0, p95 = 0, p99 = 0;
    if (doc["serviceId"].get(service) || doc["metricName"].get(metric) ||
        doc["windowStart"].get(start) || doc["count"].get(count) || doc["p50"].get(p50) ||
        doc["p95"].get(p95) || doc["p99"].get(p99)) {
      return false;
    }
    if (start > newest_) {
      current_.clear();
      newest_ = start;
    }
    if (start == newest_) {
      Row& row = current_[std::string(service)];
      if (count > row.count) row = Row{std::string(metric), count, p50, p95, p99};
    }
    return true;
  }
  // The newest window's results (a window's results arrive together, at its close).
  void Print(std::ostream& out) const {
    if (current_.empty()) return;
    out << "  1m window " << ClockTime(newest_) << "-" << ClockTime(newest_ + 60'000)
        << "        metric                         p50       p95       p99     count\n";
    char line[256];
    for (const auto& [service, row] : current_) {
      std::snprintf(line, sizeof(line), "    %-22s %-24s %9.2f %9.2f %9.2f %9s\n", service.c_str(),
                    row.metric.c_str(), row.p50, row.p95, row.p99, Thousands(row.count).c_str());
      out << line;
    }
    out.flush();
  }

 private:
  struct Row {
    std::string metric;
    uint64_t count = 0;
    double p50 = 0, p95 = 0, p99 = 0;
  };
  simdjson::dom::parser parser_;
  int64_t newest_ = INT64_MIN;
  std::map<std::string, Row> current_;
};

}  // namespace

std::atomic<bool>& StopRequested() {
  static std::atomic<bool> stop{false};
  return stop;
}

void InstallStopSignals() {
  struct sigaction sa = {};
  sa.sa_handler = &OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

namespace {

// The runner of an enabled sink ("postgres", "redis"), started.
absl::StatusOr<std::unique_ptr<kafka::SinkRunner>> StartSink(const AppConfig& config,
                                                              std::string_view name,
                                                              const kafka::Properties& props) {
  const SinkConfig& sc = name == "postgres" ? config.postgres : config.redis;
  // The group names the sink in its database too (positions, epochs): two applications
  // writing one database keep apart.
  const std::string group =
      sc.group.empty() ? StrCat(config.pipeline.application_id, "-sink-", name) : sc.group;
  std::unique_ptr<Sink> sink;
  if (name == "postgres") {
    sink = std::make_unique<PostgresSink>(
        PostgresSinkOptions{.dsn = sc.url, .sink_name = group, .connections = sc.connections});
  } else {
    RedisSinkOptions ro;
    if (absl::Status s = ParseRedisUrl(sc.url, &ro); !s.ok()) return s;
    ro.sink_name = group;
    sink = std::make_unique<RedisSink>(ro);
  }
  kafka::SinkRunnerOptions o;
  o.kafka = props;
  o.group_id = group;
  o.topics = sc.topics;
  if (o.topics.empty()) {
    for (const WindowSpec& w : config.pipeline.windows) {
      if (!w.topic.empty()) o.topics.push_back(w.topic);
    }
  }
  o.dead_letter_topic = config.pipeline.dead_letter_topic;
  o.batch_size = static_cast<size_t>(sc.batch_size);
  o.flush_interval_ms = static_cast<int>(sc.flush_interval_ms);
  absl::StatusOr<std::unique_ptr<kafka::SinkRunner>> runner =
      kafka::SinkRunner::Create(std::move(sink), std::move(o));
  if (!runner.ok()) return runner.status();
  (*runner)->Start();
  return runner;
}

// The enabled sinks' runners, started (name, runner).
absl::StatusOr<std::vector<std::pair<std::string, std::unique_ptr<kafka::SinkRunner>>>> StartSinks(
    const AppConfig& config, const kafka::Properties& props) {
  std::vector<std::pair<std::string, std::unique_ptr<kafka::SinkRunner>>> out;
  for (const char* name : {"postgres", "redis"}) {
    const SinkConfig& sc = std::string_view(name) == "postgres" ? config.postgres : config.redis;
    if (!sc.enabled) continue;
    absl::StatusOr<std::unique_ptr<kafka::SinkRunner>> r = StartSink(config, name, props);
    if (!r.ok()) return r.status();
    out.emplace_back(name, *std::move(r));
  }
  return out;
}

std::string SinkStatus(const std::string& name, const kafka::SinkRunner& runner) {
  kafka::SinkRunnerCounters c = runner.counters();
  std::string s = StrCat(name, " ", kafka::SinkHealthName(c.health), " ", Thousands(c.records), " rows");
  if (c.rejected > 0) s += StrCat(" (", Thousands(c.rejected), " rejected)");
  if (c.health != kafka::SinkHealth::kHealthy && !c.last_error.empty()) {
    s += StrCat(": ", c.last_error);
  }
  return s;
}

// Stops the runners (each applies what it holds) and prints their last status. at_end
// (`run --until-end`): each first applies everything up to its topics' ends as of now
// (SinkRunner::StopAtEnd), while no stop is requested.
absl::Status StopSinks(std::vector<std::pair<std::string, std::unique_ptr<kafka::SinkRunner>>>* sinks,
                       std::ostream& out, bool at_end = false) {
  absl::Status s;
  if (at_end && !sinks->empty()) {
    out << "applying the last results to the sinks\n";
    out.flush();
    for (auto& [name, runner] : *sinks) runner->StopAtEnd();
    const auto stopped = [&] {
      for (auto& [name, runner] : *sinks) {
        const kafka::SinkHealth h = runner->counters().health;
        if (h != kafka::SinkHealth::kStopped && h != kafka::SinkHealth::kFailed) return false;
      }
      return true;
    };
    while (!stopped() && !StopRequested().load()) SleepUnlessStopped(100);
  }
  for (auto& [name, runner] : *sinks) runner->Stop();
  for (auto& [name, runner] : *sinks) {
    s.Update(runner->Join());
    out << SinkStatus(name, *runner) << "\n";
  }
  return s;
}

}  // namespace

absl::Status RunSinks(const AppConfig& config, std::ostream& out) {
  const std::string bootstrap = BootstrapServers(config);
  if (bootstrap == "embedded") {
    return absl::InvalidArgumentError(
        "sink: kafka.bootstrap.servers must name a running broker (`embedded` is in-process "
        "only; `run` starts enabled sinks itself)");
  }
  if (!config.postgres.enabled && !config.redis.enabled) {
    return absl::InvalidArgumentError("sink: no sink is enabled (sinks.postgres.enabled, sinks.redis.enabled)");
  }
  auto sinks = StartSinks(config, KafkaProperties(config, bootstrap));
  if (!sinks.ok()) return sinks.status();
  for (auto& [name, runner] : *sinks) out << name << " sink: started\n";
  out << "Ctrl-C to stop\n";
  out.flush();
  auto last_line = Clock::now();
  while (!StopRequested().load()) {
    SleepUnlessStopped(200);
    if (Clock::now() - last_line >= std::chrono::seconds(5)) {
      last_line = Clock::now();
      for (auto& [name, runner] : *sinks) out << SinkStatus(name, *runner) << "\n";
      out.flush();
    }
  }
  return StopSinks(&*sinks, out);
}

absl::Status RunReplay(const AppConfig& config, const kafka::ReplayOptions& options, std::ostream& out) {
  const std::string bootstrap = BootstrapServers(config);
  if (bootstrap == "embedded") {
    return absl::InvalidArgumentError(
        "replay: kafka.bootstrap.servers must name a running broker (`embedded` lives and dies "
        "with its process)");
  }
  absl::StatusOr<kafka::ReplayStats> stats = kafka::ReplayTopic(KafkaProperties(config, bootstrap), options);
  if (!stats.ok()) return stats.status();
  out << "read " << stats->read << " records of " << options.from << ": "
      << (options.dry_run ? "would replay " : "replayed ") << stats->replayed << ", filtered out "
      << stats->filtered << ", nothing to replay in " << stats->empty;
  if (stats->truncated > 0) {
    out << ", not replayed (cut to fit, dlq.truncated) " << stats->truncated;
  }
  out << "\n";
  for (const auto& [topic, n] : stats->by_topic) out << "  " << n << " to " << topic << "\n";
  out.flush();
  return absl::OkStatus();
}

absl::Status CreateDevBrokerTopics(kafka::DevBroker* broker, const AppConfig& config,
                                   const Topology& topology) {
  if (absl::Status s = broker->CreateReferenceTopics(); !s.ok()) return s;
  const auto partitions_of = [](const std::string& topic) {
    const int reference = kafka::DevBroker::ReferencePartitions(topic);
    return reference > 0 ? reference : kafka::DevBroker::kInputPartitions;
  };
  for (const std::string& topic : NamedTopics(config)) {
    // Created with the reference topics (the dev broker refuses a topic twice).
    if (kafka::DevBroker::ReferencePartitions(topic) > 0) continue;
    if (absl::Status s = broker->CreateTopic(topic, partitions_of(topic)); !s.ok()) return s;
  }
  // Changelogs have the input topic's partitions (a task per input partition).
  const int input_partitions = partitions_of(config.pipeline.input_topic);
  for (const StoreDef& def : topology.stores()) {
    const std::string topic = kafka::ChangelogTopic(config.pipeline.application_id, def.name);
    if (absl::Status s = broker->CreateTopic(topic, input_partitions); !s.ok()) return s;
  }
  // Repartition topics likewise (the dev broker's protocol has no CreateTopics for `run`).
  for (const std::string& topic : topology.internal_topics(config.pipeline.application_id)) {
    if (absl::Status s = broker->CreateTopic(topic, input_partitions); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status RunKafka(const AppConfig& config, const RunCommandOptions& options,
                      std::ostream& out) {
  absl::StatusOr<Topology> topology = BuildMetricsTopology(config.pipeline);
  if (!topology.ok()) return topology.status();
  // Whatever the store type: checkpoints live there too, and a bad path should fail now,
  // not at the first task's open.
  if (absl::Status s = CheckStateDir(config.state_dir); !s.ok()) return s;

  std::unique_ptr<kafka::DevBroker> broker;
  std::string bootstrap = BootstrapServers(config);
  if (bootstrap == "embedded") {
    absl::StatusOr<std::unique_ptr<kafka::DevBroker>> b = kafka::DevBroker::Start(3);
    if (!b.ok()) return b.status();
    broker = *std::move(b);
    if (absl::Status s = CreateDevBrokerTopics(broker.get(), config, *topology); !s.ok()) return s;
    bootstrap = broker->bootstrap_servers();
    out << "dev broker (in-process): " << bootstrap << "\n";
  }
  const kafka::Properties props = KafkaProperties(config, bootstrap);

  kafka::RuntimeOptions ro;
  ro.application_id = config.pipeline.application_id;
  ro.kafka = props;
  ro.guarantee = config.exactly_once ? kafka::ProcessingGuarantee::kExactlyOnceV2
                                     : kafka::ProcessingGuarantee::kAtLeastOnce;
  ro.threads = config.threads > 0 ? config.threads
                                  : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  ro.commit_interval_ms = config.commit_interval_ms;
  ro.marker_refresh_ms = config.marker_refresh_ms;
  ro.state_dir = StrCat(config.state_dir, "/", config.pipeline.application_id);
  // ro.instance_id stays empty: the process id kept in the state directory.
  ro.rocksdb = RocksDbResources::Create(RocksDbBudget{
      .cache_bytes = config.rocksdb_cache_bytes,
      .write_buffer_bytes = config.rocksdb_write_buffer_bytes});
  if (config.state_cache_max_bytes > 0) {
    ro.cache_budget = std::make_shared<CacheBudget>(config.state_cache_max_bytes);
  }
  ro.embedded_broker = broker.get();
  ro.dead_letter_topic = config.pipeline.dead_letter_topic;
  ro.until_end = options.until_end;
  absl::StatusOr<std::unique_ptr<kafka::Runtime>> runtime = kafka::Runtime::Create(*topology, ro);
  if (!runtime.ok()) return runtime.status();
  if (absl::Status s = (*runtime)->Start(); !s.ok()) return s;
  auto sinks = StartSinks(config, props);
  if (!sinks.ok()) return sinks.status();

  std::unique_ptr<kafka::Producer> load_producer;
  std::unique_ptr<LoadGenerator> load;
  if (broker != nullptr && options.load_rate > 0) {
    absl::StatusOr<std::unique_ptr<kafka::Producer>> p = kafka::Producer::Create({.properties = props});
    if (!p.ok()) return p.status();
    load_producer = *std::move(p);
    // 60,000 events ahead of the committed input: ~10,000 a partition, a few MB of JSON,
    // within what the dev broker keeps even where keys crowd a partition.
    kafka::Runtime* rt = runtime->get();
    load = std::make_unique<LoadGenerator>(
        load_producer.get(), config.pipeline.input_topic, options.load_rate,
        [rt] { return rt->counters().committed_input; }, 60'000,
        [rt] { return rt->counters().tasks > 0; });
    load->Start();
    out << "load generator: " << Thousands(static_cast<uint64_t>(options.load_rate))
        << " events/s, event time = wall clock\n";
  }
  out << "running " << ro.threads << " stream thread(s), "
      << (config.exactly_once ? "exactly_once_v2" : "at_least_once")
      << (options.until_end ? "; until the input's end as of now (every window then closes)"
                            : "; results every minute")
      << "; Ctrl-C to stop\n";
  out.flush();

  std::unique_ptr<kafka::TopicFollower> results;
  if (options.live) {
    for (const WindowSpec& w : config.pipeline.windows) {
      if (w.size_ms == 60'000 && w.advance_ms == 60'000 && !w.topic.empty()) {
        absl::StatusOr<std::unique_ptr<kafka::TopicFollower>> f =
            kafka::TopicFollower::Create(props, w.topic, /*from_start=*/false);
        if (f.ok()) results = *std::move(f);
        break;
      }
    }
  }
  LatestResults latest;
  const auto started = Clock::now();
  uint64_t last_consumed = (*runtime)->consumed();
  kafka::RuntimeCounters last_counters = (*runtime)->counters();
  uint64_t last_produced = load != nullptr ? load->produced() : 0;
  uint64_t last_held = load != nullptr ? load->held_back() : 0;
  auto last_line = Clock::now();
  while (!StopRequested().load() && !(*runtime)->failed() && !(*runtime)->finished()) {
    if (options.duration_ms > 0 &&
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count() >=
            options.duration_ms) {
      break;
    }
    if (results != nullptr) {
      bool any = false;
      for (const OutputRecord& r : results->Poll(200)) any |= latest.Add(r);
      if (any) latest.Print(out);
    } else {
      SleepUnlessStopped(200);
    }
    if (options.live && Clock::now() - last_line >= std::chrono::seconds(1)) {
      const double secs = std::chrono::duration<double>(Clock::now() - last_line).count();
      last_line = Clock::now();
      // Counters only, no broker round trip (the lag is the consumers' view as of their
      // last fetch): a line every second, whatever the broker's speed. The rate is of the
      // records taken from the consumers, live; the totals are as of the last commit.
      kafka::RuntimeCounters c = (*runtime)->counters();
      const uint64_t consumed = (*runtime)->consumed();
      const int64_t elapsed =
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count();
      // Where the stream threads' time went since the last line (as of their last
      // commits): waiting for input with nothing queued — a thread that keeps up mostly
      // waits, one behind should not — and committing.
      const double thread_ms = secs * 1000.0 * ro.threads;
      const auto share = [&](uint64_t now, uint64_t before) {
        return static_cast<int>(std::min(100.0, 100.0 * static_cast<double>(now - before) / thread_ms + 0.5));
      };
      char line[512];
      std::snprintf(line, sizeof(line),
                    "[%4llds] read %s (%s/s) · lag %s · windows %s · dead letters %s · "
                    "duplicates %s · late %s dropped, %s window updates skipped · commits %s · "
                    "threads waited %d%% for input, %d%% in commits\n",
                    static_cast<long long>(elapsed), Thousands(c.records_read).c_str(),
                    Thousands(static_cast<uint64_t>((consumed - last_consumed) / secs)).c_str(),
                    c.tasks > 0 ? Thousands(static_cast<uint64_t>(c.input_lag)).c_str() : "?",
                    Thousands(c.windows_emitted).c_str(), Thousands(c.dead_letters).c_str(),
                    Thousands(c.duplicates).c_str(), Thousands(c.late_dropped).c_str(),
                    Thousands(c.late_window_updates).c_str(), Thousands(c.commits).c_str(),
                    share(c.input_wait_ms, last_counters.input_wait_ms),
                    share(c.commit_ms, last_counters.commit_ms));
      last_consumed = consumed;
      last_counters = c;
      line[std::strlen(line) - 1] = '\0';
      out << line;
      for (auto& [name, runner] : *sinks) out << " · " << SinkStatus(name, *runner);
      if (load != nullptr) {
        const uint64_t produced = load->produced(), held = load->held_back();
        if (held != last_held) {
          out << " · load held back to "
              << Thousands(static_cast<uint64_t>((produced - last_produced) / secs))
              << "/s (the engine is behind)";
        }
        last_produced = produced;
        last_held = held;
      }
      out << "\n";
      out.flush();
    }
  }
  out << ((*runtime)->failed()     ? "a stream thread failed (its error below): stopping the others\n"
          : (*runtime)->finished() ? "the input is read to its end: committing and closing the tasks\n"
                                   : "stopping: committing and closing the tasks\n");
  out.flush();
  if (load != nullptr) load->Stop();
  results.reset();
  (*runtime)->Stop();
  absl::Status s = (*runtime)->Join();
  s.Update(StopSinks(&*sinks, out, options.until_end && (*runtime)->finished() && s.ok()));
  kafka::RuntimeCounters c = (*runtime)->counters();
  out << "read " << Thousands(c.records_read) << ", windows emitted " << Thousands(c.windows_emitted)
      << ", dead letters " << Thousands(c.dead_letters) << ", late " << Thousands(c.late_dropped)
      << " dropped, " << Thousands(c.late_window_updates) << " window updates skipped, commits "
      << Thousands(c.commits) << "\n";
  return s;
}

absl::Status RunBroker(const AppConfig& config, const BrokerCommandOptions& options,
                       std::ostream& out) {
  absl::StatusOr<std::unique_ptr<kafka::DevBroker>> broker = kafka::DevBroker::Start(options.brokers);
  if (!broker.ok()) return broker.status();
  absl::StatusOr<Topology> topology = BuildMetricsTopology(config.pipeline);
  if (!topology.ok()) return topology.status();
  if (absl::Status s = CreateDevBrokerTopics(broker->get(), config, *topology); !s.ok()) return s;
  std::string bootstrap = (*broker)->bootstrap_servers();
  std::unique_ptr<TcpForwarder> forwarder;
  if (options.port > 0) {
    absl::StatusOr<std::unique_ptr<TcpForwarder>> f =
        TcpForwarder::Start(options.port, bootstrap.substr(0, bootstrap.find(',')));
    if (!f.ok()) return f.status();
    forwarder = *std::move(f);
    bootstrap = StrCat("127.0.0.1:", options.port);
  }
  if (!options.bootstrap_file.empty()) {
    const std::string tmp = options.bootstrap_file + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << bootstrap << "\n";
      if (!f) return absl::UnavailableError("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), options.bootstrap_file.c_str()) != 0) {
      return absl::UnavailableError("cannot write " + options.bootstrap_file);
    }
  }
  out << "bootstrap.servers=" << bootstrap << "\n";
  out.flush();
  while (!StopRequested().load()) SleepUnlessStopped(200);
  return absl::OkStatus();
}

absl::Status RunLoadgenKafka(const GeneratorOptions& generator_options,
                             const LoadgenKafkaOptions& options, std::ostream& out) {
  absl::StatusOr<std::unique_ptr<kafka::Producer>> producer =
      kafka::Producer::Create({.properties = {{"bootstrap.servers", options.bootstrap}}});
  if (!producer.ok()) return producer.status();
  EventGenerator generator(generator_options);
  const auto start = Clock::now();
  std::string doc;
  uint64_t i = 0;
  for (; (options.count == 0 || i < options.count) && !StopRequested().load(); ++i) {
    if (options.produce_rate > 0 && i % 100 == 0) {
      const double due = std::chrono::duration<double>(Clock::now() - start).count() *
                         options.produce_rate;
      if (static_cast<double>(i) > due) {
        std::this_thread::sleep_for(std::chrono::microseconds(
            static_cast<int64_t>((static_cast<double>(i) - due) / options.produce_rate * 1e6)));
      }
    }
    doc.clear();
    generator.Next(&doc);
    (*producer)->Send(options.topic, -1, GeneratedServiceId(doc), doc, 0, {});
  }
  absl::Status delivered = (*producer)->Flush();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  out << "produced " << Thousands(i) << " events to " << options.topic << " in " << secs
      << " s (" << Thousands(static_cast<uint64_t>(static_cast<double>(i) / secs)) << " events/s)"
      << (delivered.ok() ? ", all delivered\n" : ", delivery failures: ");
  if (!delivered.ok()) out << delivered.message() << "\n";
  return delivered;
}

}  // namespace streammetrics
