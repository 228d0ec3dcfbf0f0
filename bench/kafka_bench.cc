// End to end through the dev broker (in-process) on this machine, under exactly_once_v2
// and at_least_once:
//   - sustained throughput: a producer thread keeps the engine's input topic topped up
//     (at most --backlog events produced and not yet consumed, so nothing reaches the
//     dev broker's per-partition retention of 5 MiB / 100,000 messages); after a warm-up
//     of 2 s, events committed per second over --seconds; and the CPU time per event
//     of the stream threads and of the whole process (feeder, dev broker and every
//     client's librdkafka threads), from /proc/self/task — what the rate is made of on
//     a machine the feeder shares;
//   - the feeder alone (1,000,000 events to a topic nothing reads) and a plain consumer
//     under the same sustained load, with their CPU per event: the harness's own cost;
//   - draining a full topic: --drain-events pool events (2,520,000) in --drain-partitions
//     partitions (72; a service each, see FillTopic), produced before anything
//     reads it; the rate at which a plain librdkafka consumer (read_committed, one
//     client, all partitions) drains it, first record to last, and the rate at which the
//     engine does (a bounded run, as `run --until-end`: from its first consumed record
//     until it has committed the last and every window has closed, and it has stopped),
//     directly (input keyed by serviceId, aggregated where it lands) and through the
//     repartition (--repartition off|on|both (both)) — with the
//     machine to itself: no feeder, as when an engine catches up on a backlog (a real
//     deployment's producers run elsewhere). --drain-runs drains each (3), compared by
//     their medians. The topic must fit the dev broker's retention (~45,000 of these
//     events a partition): fewer records read than produced fails the run;
//   - latency (--latency-seconds, 0: skip): events produced at --latency-rate (default
//     100,000/s, reference/001's rate) with event time = wall clock; for each result of the 1m-10s hopping window, the time it became
//     visible to a read_committed consumer minus the moment its window could close
//     (window end + grace, when the event that closes it is produced): p50/p99/max.
//
//   build/bench/kafka_bench [--seconds S (0: skip)] [--threads T] [--backlog N]
//                           [--latency-seconds L] [--latency-rate R] [--commit-ms C]
//                           [--input-compression lz4|none|snappy|zstd|gzip (lz4)]
//                           [--guarantee eos|alos|both (both)]
//                           [--drain-events N (0: skip)] [--drain-partitions P]
//                           [--drain-runs R (3)] [--repartition off|on|both (both)]
//                           [--broker dev|kafka (dev)]
//
// --broker kafka runs all of it against Apache Kafka's own broker (one KRaft node started
// by scripts/kafka.sh; `scripts/setup.sh --kafka` fetches its jars), a JVM sharing the 2
// cores: no retention bound, so drains of any size are valid there.
//
// SM_BENCH_PROPS=k=v,k=v adds librdkafka properties to the engine's clients.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "apps/event_generator.h"
#include "bench/event_pool.h"
#include "engine/kafka/admin.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/runtime.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"
#include "tests/real_kafka.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics::kafka {
namespace {

using Clock = std::chrono::steady_clock;

// The broker the bench runs against: the dev broker in this process (--broker dev, the
// default), or Apache Kafka's own, one KRaft node started by scripts/kafka.sh from the
// jars `scripts/setup.sh --kafka` fetched (--broker kafka; a JVM on the same 2 cores).
class BenchBroker {
 public:
  static absl::StatusOr<std::unique_ptr<BenchBroker>> Start(const std::string& kind) {
    auto b = std::unique_ptr<BenchBroker>(new BenchBroker());
    if (kind == "kafka") {
      absl::StatusOr<std::unique_ptr<testing::RealKafka>> k = testing::RealKafka::Start(1);
      if (!k.ok()) return k.status();
      b->real_ = *std::move(k);
      b->bootstrap_ = b->real_->bootstrap_servers();
    } else {
      absl::StatusOr<std::unique_ptr<DevBroker>> d = DevBroker::Start(3);
      if (!d.ok()) return d.status();
      b->dev_ = *std::move(d);
      b->bootstrap_ = b->dev_->bootstrap_servers();
    }
    for (const auto& [topic, partitions] : DevBroker::ReferenceTopics()) {
      if (absl::Status s = b->CreateTopic(topic, partitions); !s.ok()) return s;
    }
    return b;
  }
  absl::Status CreateTopic(const std::string& name, int partitions) {
    if (dev_ != nullptr) return dev_->CreateTopic(name, partitions);
    return CreateTopics({{"bootstrap.servers", bootstrap_}},
                        {{.name = name, .partitions = partitions}});
  }
  const std::string& bootstrap_servers() const { return bootstrap_; }
  // The dev broker, for RuntimeOptions::embedded_broker; nullptr on Kafka.
  DevBroker* dev() const { return dev_.get(); }

 private:
  BenchBroker() = default;
  std::unique_ptr<DevBroker> dev_;
  std::unique_ptr<testing::RealKafka> real_;
  std::string bootstrap_;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Produces `events` generated events (keyed by serviceId) to `topic`; false on failure.
bool ProduceEvents(const Properties& props, const std::string& topic, int events) {
  auto producer = Producer::Create({.properties = props});
  if (!producer.ok()) return false;
  GeneratorOptions g;
  g.start_ms = NowMs() - 30 * 60'000;
  g.events_per_second = 1'000;
  EventGenerator generator(g);
  std::string doc;
  for (int i = 0; i < events; ++i) {
    doc.clear();
    generator.Next(&doc);
    (*producer)->Send(topic, -1, GeneratedServiceId(doc), doc, 0, {});
  }
  return (*producer)->Flush().ok();
}

struct Args {
  double seconds = 10;
  int threads = 2;
  int64_t backlog = 60'000;
  double latency_seconds = 40;
  double latency_rate = 100'000;
  int commit_ms = 100;
  std::string input_compression = "lz4";  // of the feeder: the input topic's batches
  std::string guarantees = "both";         // eos | alos | both: which engine runs
  // The drain runs: a topic of drain_partitions partitions filled with drain_events
  // events before anything reads it (a service a partition), within the dev broker's
  // retention (~45,000 of these events a partition, lz4). 72 partitions: the engine's
  // drain lasts ~4 s (with 24 and 840,000 events it was ~1 s, and a rebalance or a stall
  // of the VM moved it by a third).
  int64_t drain_events = 2'520'000;
  int drain_partitions = 72;
  // Drains of the plain consumer and of each engine: a drain still varies run to run
  // (the rebalance as the second stream thread joins, the VM); medians are compared.
  int drain_runs = 3;
  std::string repartition = "both";  // off | on | both: the drains' paths
  std::string broker = "dev";        // dev | kafka
};

Properties EngineProps(const Properties& base) {
  Properties props = base;
  if (const char* extra = std::getenv("SM_BENCH_PROPS")) {  // k=v,k=v: experiments
    std::string list(extra);
    size_t at = 0;
    while (at < list.size()) {
      size_t comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      std::string kv = list.substr(at, comma - at);
      size_t eq = kv.find('=');
      if (eq != std::string::npos) props.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      at = comma + 1;
    }
  }
  return props;
}

// The plain consumers' settings: the best a librdkafka consumer does here. With
// librdkafka's prefetch defaults a consumer holding 100,000 records stops fetching all its
// partitions for a second (fetch.queue.backoff.ms; docs/SEMANTICS.md, "Prefetch"): the
// plain drain measured 267K-1.6M events/s run to run. So the count never binds, the bytes
// bound is 128 MiB (more than a second of its records), a stopped fetch is retried after
// 10 ms as the stream threads' are, and fetch.wait.max.ms is the stream threads' on the
// dev broker.
Properties PlainConsumerProps(const Properties& base) {
  Properties props = {{"queued.min.messages", "10000000"},
                      {"queued.max.messages.kbytes", "131072"},
                      {"fetch.queue.backoff.ms", "10"}};
  props.emplace_back("fetch.wait.max.ms", "10");  // as the stream threads' on the dev broker
  for (const auto& p : EngineProps(base)) props.push_back(p);
  return props;
}

// A runtime and the topology it runs (declared first: it outlives the runtime).
struct Engine {
  std::unique_ptr<Topology> topology;
  std::unique_ptr<Runtime> runtime;
};

// A runtime on `input`, started and with all 6 tasks assigned and the group settled;
// no runtime on failure.
// With `settle` false: `input` exists (any partition count), and the runtime is returned
// as soon as it started.
Engine StartEngine(BenchBroker* broker, const Properties& props,
                                     const std::string& name, const std::string& input,
                                     ProcessingGuarantee g, const Args& args, bool settle = true,
                                     InputKeying keying = InputKeying::kByService, bool until_end = false) {
  Engine e;
  if (settle && !broker->CreateTopic(input, 6).ok()) return e;
  PipelineConfig config = ReferencePipelineConfig();
  config.store = StoreType::kRocksDb;
  config.idle_close_ms = 0;
  config.input_topic = input;
  // Input keyed by serviceId, aggregated where it lands (the feeders key by serviceId);
  // the drains also through the repartition (kAny).
  config.keying = keying;
  e.topology = std::make_unique<Topology>(*BuildMetricsTopology(config));
  RuntimeOptions o;
  o.application_id = "bench-" + name;
  o.kafka = EngineProps(props);
  o.guarantee = g;
  o.threads = args.threads;
  o.commit_interval_ms = args.commit_ms;
  o.state_dir = "/tmp/sm-kafka-bench-" + name;
  std::system(("rm -rf " + o.state_dir).c_str());
  o.embedded_broker = broker->dev();
  o.until_end = until_end;
  auto rt = Runtime::Create(*e.topology, o);
  if (!rt.ok() || !(*rt)->Start().ok()) return e;
  if (!settle) {
    e.runtime = *std::move(rt);
    return e;
  }
  while ((*rt)->counters().tasks < 6) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::seconds(8));  // the second member's join
  e.runtime = *std::move(rt);
  return e;
}

// The fields of a /proc stat file (`path`) from field 3 (the state) on, field n at
// index n - 3 (the name, field 2, may hold spaces); empty when unreadable.
std::vector<std::string> StatFields(const std::filesystem::path& path) {
  std::ifstream stat_file(path);
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 > stat.size()) return {};
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(std::move(f));
  return fields;
}

// CPU seconds used so far by this process's threads whose name starts with `prefix`
// ("" : every thread), from /proc/self/task/*/stat (fields 14 and 15).
double ThreadCpuSeconds(std::string_view prefix) {
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm_file(task.path() / "comm");
    std::string comm;
    std::getline(comm_file, comm);
    if (comm.compare(0, prefix.size(), prefix) != 0) continue;
    const std::vector<std::string> f = StatFields(task.path() / "stat");
    if (f.size() < 13) continue;
    total += (std::atof(f[14 - 3].c_str()) + std::atof(f[15 - 3].c_str())) / tick;
  }
  return total;
}

// Minor page faults of the whole process so far (/proc/self/stat, field 10): on this VM
// a fault costs microseconds, so a measurement that touches fresh memory pays for it.
uint64_t MinorFaults() {
  const std::vector<std::string> f = StatFields("/proc/self/stat");
  return f.size() < 8 ? 0 : std::strtoull(f[10 - 3].c_str(), nullptr, 10);
}

// CPU time per event over a measurement: of the stream threads, and of the whole process
// (feeder, dev broker and every client's librdkafka threads included); the process's
// minor page faults over it.
struct CpuPerEvent {
  double stream_us = 0;
  double process_us = 0;
  uint64_t faults = 0;
  double stop_ms = 0;  // a bounded drain: its last commit and the consumers' leaving
};

// The producer of the feeder and of the drain topic: the input's batches compressed
// with --input-compression.
absl::StatusOr<std::unique_ptr<Producer>> FeederProducer(const Properties& props, const Args& args) {
  Properties feeder_props = props;
  feeder_props.emplace_back("compression.type", args.input_compression);
  return Producer::Create({.properties = feeder_props});
}

// What the sustained runs' feeder alone achieves: 1,000,000 pool events produced to a
// topic nothing reads (its retention does not matter), Send to the last delivery.
double FeederRate(BenchBroker* broker, const Properties& props, const Args& args,
                  double* process_us) {
  const std::string topic = "bench-feeder";
  if (!broker->CreateTopic(topic, 6).ok()) return -1;
  auto producer = FeederProducer(props, args);
  if (!producer.ok()) return -1;
  EventPool pool(20'000);
  std::string doc;
  const int events = 1'000'000;
  const double cpu = ThreadCpuSeconds("");
  const auto start = Clock::now();
  for (int i = 0; i < events; ++i) {
    const std::string_view key = pool.Next(&doc);
    (*producer)->Send(topic, -1, key, doc, 0, {});
  }
  if (!(*producer)->Flush().ok()) return -1;
  *process_us = (ThreadCpuSeconds("") - cpu) * 1e6 / events;
  return events / std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps `input` topped up (at most args.backlog events produced and not yet progress())
// while `measure` runs; returns events per second of progress() over args.seconds,
// after a 2 s warm-up.
double Sustained(const Properties& props, const std::string& input, const Args& args,
                 const std::function<uint64_t()>& progress,
                 const std::function<uint64_t()>& consumed, CpuPerEvent* cpu = nullptr) {
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    pthread_setname_np(pthread_self(), "sm:feeder");
    auto producer = FeederProducer(props, args);
    if (!producer.ok()) return;
    EventPool pool(20'000);  // event time: windows close as it runs
    std::string doc;
    int64_t produced = 0;
    while (!stop.load()) {
      if (produced - static_cast<int64_t>(consumed()) > args.backlog) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        continue;
      }
      for (int i = 0; i < 1'000; ++i, ++produced) {
        const std::string_view key = pool.Next(&doc);
        (*producer)->Send(input, -1, key, doc, 0, {});
      }
    }
    (void)(*producer)->Flush();
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const uint64_t from = progress();
  const double stream_cpu = ThreadCpuSeconds("sm:stream"), process_cpu = ThreadCpuSeconds("");
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(args.seconds));
  const uint64_t to = progress();
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  if (cpu != nullptr && to > from) {
    const double n = static_cast<double>(to - from);
    cpu->stream_us = (ThreadCpuSeconds("sm:stream") - stream_cpu) * 1e6 / n;
    cpu->process_us = (ThreadCpuSeconds("") - process_cpu) * 1e6 / n;
  }
  stop = true;
  feeder.join();
  return static_cast<double>(to - from) / s;
}

// The engine's sustained rate: input records committed per second.
double EngineSustained(BenchBroker* broker, const Properties& props, ProcessingGuarantee g,
                       const Args& args, RuntimeCounters* out, CpuPerEvent* cpu) {
  const std::string name = g == ProcessingGuarantee::kExactlyOnceV2 ? "eos" : "alos";
  const std::string input = "bench-input-" + name;
  Engine engine = StartEngine(broker, props, name, input, g, args);
  Runtime* rt = engine.runtime.get();
  if (rt == nullptr) return -1;
  // The feeder stays --backlog ahead of what the engine has consumed (not of what it
  // committed: a commit interval's worth of input, 50,000 events at 500K/s, would use up
  // the backlog and starve the engine between commits). The rate is of commits.
  const double rate = Sustained(props, input, args, [&] { return rt->counters().committed_input; },
                                [&] { return rt->consumed(); }, cpu);
  rt->Stop();
  (void)rt->Join();
  *out = rt->counters();
  std::system(("rm -rf /tmp/sm-kafka-bench-" + name).c_str());
  return rate;
}

// A plain consumer's sustained rate under the same load: records consumed per second.
double PlainSustained(BenchBroker* broker, const Properties& props, const Args& args,
                      CpuPerEvent* cpu) {
  const std::string input = "bench-input-plain";
  if (!broker->CreateTopic(input, 6).ok()) return -1;
  Properties consumer_props = PlainConsumerProps(props);
  auto follower = TopicFollower::Create(consumer_props, input, /*from_start=*/true);
  if (!follower.ok()) return -1;
  std::atomic<uint64_t> consumed{0};
  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    while (!stop.load()) consumed += (*follower)->Poll(10, 1'000).size();
  });
  const double rate = Sustained(props, input, args, [&] { return consumed.load(); },
                                [&] { return consumed.load(); }, cpu);
  stop = true;
  consumer.join();
  return rate;
}

// A plain consumer's drain rate of `topic` (all partitions, from the start), first
// record to last; -1 on failure.
// `cpu_us`: the whole process's CPU per record over the same span.
double PlainConsumerRate(const Properties& props, const std::string& topic, int64_t events,
                         double* cpu_us, uint64_t* faults) {
  auto follower = TopicFollower::Create(PlainConsumerProps(props), topic, /*from_start=*/true);
  if (!follower.ok()) return -1;
  // The clock starts when the first batch arrives (connecting and fetching the metadata
  // are not draining); that batch is not counted.
  int64_t seen = 0, counted = 0;
  Clock::time_point first;
  double first_cpu = 0;
  uint64_t first_faults = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  auto last = Clock::now();
  while (seen < events && Clock::now() < deadline && Clock::now() - last < std::chrono::seconds(5)) {
    const auto n = static_cast<int64_t>((*follower)->Poll(100, 1'000).size());
    if (n > 0) last = Clock::now();
    if (n > 0 && seen == 0) {
      first = Clock::now();
      first_cpu = ThreadCpuSeconds("");
      first_faults = MinorFaults();
    } else {
      counted += n;
    }
    seen += n;
  }
  if (seen < events || counted == 0) {
    std::fprintf(stderr, "%s: read %lld of %lld events\n", topic.c_str(), (long long)seen, (long long)events);
    return -1;
  }
  *cpu_us = (ThreadCpuSeconds("") - first_cpu) * 1e6 / static_cast<double>(counted);
  *faults = MinorFaults() - first_faults;
  return static_cast<double>(counted) / std::chrono::duration<double>(Clock::now() - first).count();
}

// Fills `topic` (`partitions` partitions, created here) with `events` pool events, lz4;
// false on failure.
bool FillTopic(BenchBroker* broker, const Properties& props, const Args& args,
               const std::string& topic, int partitions, int64_t events) {
  if (!broker->CreateTopic(topic, partitions).ok()) return false;
  auto producer = FeederProducer(props, args);
  if (!producer.ok()) return false;
  // One service a partition, each service's events in its partition (as keying by
  // serviceId does, but evenly: 24 keys hashed onto 24 partitions leave some empty), the
  // invalid events (empty key) round-robin over all of them: in one partition they passed
  // its retention once the topic had 72. Event time moves as in the sustained runs
  // (1 s per 20,000 events: 2,520,000 events span 126 s, and windows close in the drain),
  // with 12x their services: 12x the window results per event — more work, not less.
  EventPool pool(20'000, partitions);
  absl::flat_hash_map<std::string, int32_t> partition_of;
  std::string doc;
  int32_t keyless = 0;
  for (int64_t i = 0; i < events; ++i) {
    const std::string_view key = pool.Next(&doc);
    int32_t partition = 0;
    if (key.empty()) {
      partition = keyless++ % partitions;
    } else {
      auto [it, added] = partition_of.try_emplace(std::string(key), 0);
      if (added) it->second = static_cast<int32_t>((partition_of.size() - 1) % partitions);
      partition = it->second;
    }
    (*producer)->Send(topic, partition, key, doc, 0, {});
  }
  return (*producer)->Flush().ok();
}

// The engine draining `topic` (filled by FillTopic, `events` records) from the start as a
// bounded run (RuntimeOptions::until_end), directly or through the repartition: input
// events per second from its first consumed record until the runtime has stopped by
// itself — every record committed, every window closed and committed; -1 when it did
// not finish in 120 s or committed fewer input records than `events` (the dev broker's
// retention dropped some).
// `run` names the consumer group, so each run starts from the beginning.
double EngineDrain(BenchBroker* broker, const Properties& props, ProcessingGuarantee g,
                   const Args& args, const std::string& topic, int64_t events, int run,
                   bool repartition, RuntimeCounters* out, CpuPerEvent* cpu,
                   RuntimeCounters* during) {
  const std::string name = std::string(g == ProcessingGuarantee::kExactlyOnceV2 ? "drain-eos-" : "drain-alos-") +
                           (repartition ? "rp-" : "") + std::to_string(run);
  Engine engine = StartEngine(broker, props, name, topic, g, args, /*settle=*/false,
                              repartition ? InputKeying::kAny : InputKeying::kByService,
                              /*until_end=*/true);
  Runtime* rt = engine.runtime.get();
  if (rt == nullptr) return -1;
  while (rt->consumed() == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  const auto first = Clock::now();
  const RuntimeCounters at_first = rt->counters();
  const double stream_cpu = ThreadCpuSeconds("sm:stream"), process_cpu = ThreadCpuSeconds("");
  const uint64_t faults = MinorFaults();
  const auto deadline = first + std::chrono::seconds(120);
  while (!rt->finished() && !rt->failed() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // The drain's end: every task has read its input to the end and closed its windows
  // (their last commit and the consumers' leaving follow, timed apart).
  const double s = std::chrono::duration<double>(Clock::now() - first).count();
  const auto n = static_cast<double>(events);
  if (cpu != nullptr && n > 0) {  // while the stream threads still run
    cpu->stream_us = (ThreadCpuSeconds("sm:stream") - stream_cpu) * 1e6 / n;
    cpu->process_us = (ThreadCpuSeconds("") - process_cpu) * 1e6 / n;
    cpu->faults = MinorFaults() - faults;
  }
  const auto stopping = Clock::now();
  rt->Stop();
  (void)rt->Join();
  if (cpu != nullptr) cpu->stop_ms = std::chrono::duration<double, std::milli>(Clock::now() - stopping).count();
  const RuntimeCounters c = rt->counters();
  if (during != nullptr) {
    during->input_wait_ms = c.input_wait_ms - at_first.input_wait_ms;
    during->commit_ms = c.commit_ms - at_first.commit_ms;
    during->rebalance_ms = c.rebalance_ms - at_first.rebalance_ms;
  }
  *out = c;
  std::system(("rm -rf /tmp/sm-kafka-bench-" + name).c_str());
  // Read: the input's records (and, repartitioned, the repartition topic's too).
  if (!rt->finished() || static_cast<int64_t>(c.records_read) < events ||
      (!repartition && static_cast<int64_t>(c.records_read) != events)) {
    std::fprintf(stderr, "engine drain: %s, read %llu records of %lld\n",
                 rt->finished() ? "finished" : "did not finish in 120 s",
                 static_cast<unsigned long long>(c.records_read), static_cast<long long>(events));
    return -1;
  }
  return n / s;
}

// Latency of the 1m-10s results (ms): visible minus window end + grace.
// `cores`: the whole process's CPU over the measurement, in cores (of 2 here): a harness
// that loads the machine inflates every round trip to the dev broker and so the latency.
std::vector<double> Latencies(BenchBroker* broker, const Properties& props, ProcessingGuarantee g,
                              const Args& args, double* cores) {
  const std::string name = g == ProcessingGuarantee::kExactlyOnceV2 ? "lat-eos" : "lat-alos";
  const std::string input = "bench-input-" + name;
  Engine engine = StartEngine(broker, props, name, input, g, args);
  Runtime* rt = engine.runtime.get();
  if (rt == nullptr) return {};
  auto results = TopicFollower::Create({{"bootstrap.servers", broker->bootstrap_servers()},
                                        {"fetch.wait.max.ms", "5"}},
                                       "metrics-aggregated-1m-10s", /*from_start=*/false);
  if (!results.ok()) return {};
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    // linger.ms 5, the engine's own default: at 1 ms this producer's three broker
    // threads spun on sub-millisecond waits, taking a core of the two at 20,000 events/s,
    // and the engine's commits (round trips to the dev broker, which shares the cores)
    // took 20-45 ms instead of 5-10: p50 70-91 ms under exactly_once_v2, 25 ms after.
    auto producer = Producer::Create({.properties = {{"bootstrap.servers", broker->bootstrap_servers()},
                                                     {"linger.ms", "5"}}});
    if (!producer.ok()) return;
    GeneratorOptions go;
    go.start_ms = NowMs();
    go.events_per_second = args.latency_rate;
    go.jitter_ms = 0;       // event time = when it is produced
    go.late_fraction = 0;   // late events are stamped 15 min back
    EventGenerator generator(go);
    std::string doc;
    const auto start = Clock::now();
    uint64_t produced = 0;
    while (!stop.load()) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      for (const uint64_t due = static_cast<uint64_t>(elapsed * args.latency_rate); produced < due;
           ++produced) {
        doc.clear();
        generator.Next(&doc);
        (*producer)->Send(input, -1, GeneratedServiceId(doc), doc, 0, {});
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    (void)(*producer)->Flush();
  });
  std::vector<double> latencies;
  const double cpu_before = ThreadCpuSeconds("");
  const auto started = Clock::now();
  const auto deadline = Clock::now() + std::chrono::duration<double>(args.latency_seconds);
  const int64_t grace_ms = 10'000;
  while (Clock::now() < deadline) {
    for (const OutputRecord& r : (*results)->Poll(5)) {
      const int64_t now = NowMs();
      const int64_t closable = r.timestamp_ms + 1 + grace_ms;  // timestamp: window end - 1
      latencies.push_back(static_cast<double>(now - closable));
    }
  }
  *cores = (ThreadCpuSeconds("") - cpu_before) /
           std::chrono::duration<double>(Clock::now() - started).count();
  stop = true;
  feeder.join();
  rt->Stop();
  (void)rt->Join();
  std::system(("rm -rf /tmp/sm-kafka-bench-" + name).c_str());
  std::sort(latencies.begin(), latencies.end());
  return latencies;
}

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const double v = std::atof(argv[i + 1]);
    if (flag == "--input-compression") args.input_compression = argv[i + 1];
    else if (flag == "--guarantee") {
      args.guarantees = argv[i + 1];
      if (args.guarantees != "eos" && args.guarantees != "alos" && args.guarantees != "both") {
        std::fprintf(stderr, "--guarantee: eos, alos or both, not %s\n", argv[i + 1]);
        return 2;
      }
    }
    else if (flag == "--drain-events") args.drain_events = static_cast<int64_t>(v);
    else if (flag == "--drain-partitions") args.drain_partitions = static_cast<int>(v);
    else if (flag == "--drain-runs") args.drain_runs = std::max(1, static_cast<int>(v));
    else if (flag == "--repartition") {
      args.repartition = argv[i + 1];
      if (args.repartition != "off" && args.repartition != "on" && args.repartition != "both") {
        std::fprintf(stderr, "--repartition: off, on or both, not %s\n", argv[i + 1]);
        return 2;
      }
    }
    else if (flag == "--broker") {
      args.broker = argv[i + 1];
      if (args.broker != "dev" && args.broker != "kafka") {
        std::fprintf(stderr, "--broker: dev or kafka, not %s\n", argv[i + 1]);
        return 2;
      }
    }
    else if (flag == "--seconds") args.seconds = v;
    else if (flag == "--threads") args.threads = static_cast<int>(v);
    else if (flag == "--backlog") args.backlog = static_cast<int64_t>(v);
    else if (flag == "--latency-seconds") args.latency_seconds = v;
    else if (flag == "--latency-rate") args.latency_rate = v;
    else if (flag == "--commit-ms") args.commit_ms = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  // SM_BENCH_LOG=info: the engine's info logs (assignments, restores, commits' trouble).
  const char* log = std::getenv("SM_BENCH_LOG");
  SetMinLogLevel(log != nullptr && std::string_view(log) == "info" ? LogLevel::kInfo
                                                                   : LogLevel::kWarning);
  auto broker = BenchBroker::Start(args.broker);
  if (!broker.ok()) {
    std::fprintf(stderr, "%s broker failed: %s\n", args.broker.c_str(),
                 broker.status().ToString().c_str());
    return 1;
  }
  const Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()}};
  const int events = 60'000;  // fits the dev broker's retention
  {
    const auto start = Clock::now();
    if (!ProduceEvents(props, "metrics-events", events)) return 1;
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("produce (idempotent, acks=all, lz4): %d events in %.3f s = %.0f events/s\n",
                events, s, events / s);
  }
  double feeder_us = 0;
  const double feeder = FeederRate(broker->get(), props, args, &feeder_us);
  std::printf("feeder alone (the sustained runs' producer, %s): %.0f events/s; CPU per event, "
              "whole process %.2f us\n", args.input_compression.c_str(), feeder, feeder_us);
  const auto runs = [&](ProcessingGuarantee g) {
    return args.guarantees == "both" ||
           args.guarantees == (g == ProcessingGuarantee::kExactlyOnceV2 ? "eos" : "alos");
  };
  if (args.drain_events > 0) {
    const std::string topic = "bench-drain";
    if (!FillTopic(broker->get(), props, args, topic, args.drain_partitions, args.drain_events)) {
      std::fprintf(stderr, "filling %s failed\n", topic.c_str());
      return 1;
    }
    // Median of the runs; a failed run (-1) sorts first and fails the median only when
    // half of them failed.
    const auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const auto list = [](const std::vector<double>& v) {
      std::string out;
      for (double r : v) out += (out.empty() ? "" : " / ") + std::to_string(std::lround(r / 1000)) + "K";
      return out;
    };
    std::vector<double> plain_rates, plain_cpus, plain_faults;
    for (int run = 0; run < args.drain_runs; ++run) {
      double cpu = 0;
      uint64_t faults = 0;
      plain_rates.push_back(PlainConsumerRate(props, topic, args.drain_events, &cpu, &faults));
      plain_cpus.push_back(cpu);
      plain_faults.push_back(static_cast<double>(faults));
    }
    const double drain = median(plain_rates);
    std::printf("plain consumer draining a full topic (%lld events, %d partitions, %s; "
                "read_committed, one client): median of %d %.0f events/s (%s); CPU per event, "
                "whole process %.2f us, %.0f page faults (medians)\n",
                static_cast<long long>(args.drain_events), args.drain_partitions,
                args.input_compression.c_str(), args.drain_runs, drain, list(plain_rates).c_str(),
                median(plain_cpus), median(plain_faults));
    for (ProcessingGuarantee g : {ProcessingGuarantee::kExactlyOnceV2, ProcessingGuarantee::kAtLeastOnce}) {
      if (!runs(g)) continue;
      double direct_median = 0;
      for (const bool repartition : {false, true}) {
      if (args.repartition != "both" && (args.repartition == "on") != repartition) continue;
      const std::string guarantee_name =
          std::string(g == ProcessingGuarantee::kExactlyOnceV2 ? "exactly_once_v2" : "at_least_once") +
          (repartition ? " through the repartition" : " directly");
      const char* guarantee = guarantee_name.c_str();
      std::vector<double> rates;
      for (int run = 0; run < args.drain_runs; ++run) {
        RuntimeCounters c, during;
        CpuPerEvent cpu;
        const double rate = EngineDrain(broker->get(), props, g, args, topic, args.drain_events,
                                        run, repartition, &c, &cpu, &during);
        rates.push_back(rate);

        // The stream threads' time (summed) from the first record to the last commit that
        // was not processing: waiting for input with nothing queued, committing, rebalancing.
        std::printf("engine %s draining the same topic from the start (%d threads, commit %d ms), "
                    "run %d: %.0f events/s (%.0f%% of the plain consumer's median; %llu commits, "
                    "%llu windows, %llu late dropped, %llu late window updates; then %.0f ms to "
                    "stop); CPU per event: stream threads %.2f us, whole process %.2f us "
                    "(%llu page faults); stream threads waited for input "
                    "%llu ms, committed %llu ms, rebalanced %llu ms\n",
                    guarantee, args.threads, args.commit_ms, run + 1, rate, 100 * rate / drain,
                    static_cast<unsigned long long>(c.commits),
                    static_cast<unsigned long long>(c.windows_emitted),
                    static_cast<unsigned long long>(c.late_dropped),
                    static_cast<unsigned long long>(c.late_window_updates), cpu.stop_ms,
                    cpu.stream_us, cpu.process_us,
                    static_cast<unsigned long long>(cpu.faults),
                    static_cast<unsigned long long>(during.input_wait_ms),
                    static_cast<unsigned long long>(during.commit_ms),
                    static_cast<unsigned long long>(during.rebalance_ms));
      }
      std::printf("engine %s draining: median of %d %.0f events/s (%s), %.0f%% of the plain "
                  "consumer's median",
                  guarantee, args.drain_runs, median(rates), list(rates).c_str(),
                  100 * median(rates) / drain);
      if (repartition && direct_median > 0) {
        std::printf(", %.0f%% of the direct path's", 100 * median(rates) / direct_median);
      }
      std::printf("\n");
      if (!repartition) direct_median = median(rates);
      }
    }
  }
  CpuPerEvent plain_cpu;
  const double plain = args.seconds > 0 ? PlainSustained(broker->get(), props, args, &plain_cpu) : 0;
  if (args.seconds > 0) std::printf("plain consumer under the same sustained load as the engine (producer in this "
              "process): %.0f events/s over %.0f s; CPU per event, whole process %.2f us\n",
              plain, args.seconds, plain_cpu.process_us);
  for (ProcessingGuarantee g : {ProcessingGuarantee::kExactlyOnceV2, ProcessingGuarantee::kAtLeastOnce}) {
    if (args.seconds <= 0) break;  // --seconds 0: latency only
    if (!runs(g)) continue;
    RuntimeCounters c;
    CpuPerEvent cpu;
    const double rate = EngineSustained(broker->get(), props, g, args, &c, &cpu);
    std::printf("engine %s (%d threads, commit %d ms): %.0f events/s sustained over %.0f s "
                "(%.0f%% of the plain consumer; %llu commits, %llu windows, %llu rebuilds); "
                "CPU per event: stream threads %.2f us, whole process %.2f us\n",
                g == ProcessingGuarantee::kExactlyOnceV2 ? "exactly_once_v2" : "at_least_once",
                args.threads, args.commit_ms, rate, args.seconds, 100.0 * rate / plain,
                static_cast<unsigned long long>(c.commits),
                static_cast<unsigned long long>(c.windows_emitted),
                static_cast<unsigned long long>(c.rebuilds), cpu.stream_us, cpu.process_us);
  }
  if (args.latency_seconds > 0) {
    for (ProcessingGuarantee g : {ProcessingGuarantee::kExactlyOnceV2, ProcessingGuarantee::kAtLeastOnce}) {
      if (!runs(g)) continue;
      double cores = 0;
      std::vector<double> l = Latencies(broker->get(), props, g, args, &cores);
      std::printf("latency %s (%.0f events/s, commit %d ms): %zu results of 1m-10s windows, "
                  "visible after window end + grace: p50 %.0f ms, p99 %.0f ms, max %.0f ms; "
                  "process CPU %.2f cores\n",
                  g == ProcessingGuarantee::kExactlyOnceV2 ? "exactly_once_v2" : "at_least_once",
                  args.latency_rate, args.commit_ms, l.size(), Percentile(l, 0.5),
                  Percentile(l, 0.99), l.empty() ? 0.0 : l.back(), cores);
    }
  }
  return 0;
}

}  // namespace
}  // namespace streammetrics::kafka

int main(int argc, char** argv) { return streammetrics::kafka::Main(argc, argv); }
