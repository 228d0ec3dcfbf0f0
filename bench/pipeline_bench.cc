// The in-process pipeline on one thread over pre-generated events, stage by stage:
//
//   decode            JSON -> MetricEvent only (the decoder alone)
//   stage/0 source    + the task and source node (routing, stream time)
//   stage/1 validate  + validate
//   stage/2 enrich    + enrich (statusClass, isError, lookup table)
//   stage/3 dedupe    + dedupe by eventId within 10 min
//   stage/4 aggregate + 1m and 5m tumbling and 1m/10s hopping windows, count/sum/min/max/
//                       avg/rate and t-digest p50/p95/p99, results serialized as JSON
//   stage/5 rocksdb   stage 4 with the dedupe and window stores in RocksDB, without
//                       changelogs: every commit writes changed state back and flushes
//                       RocksDB's memtables (the local store is the only copy)
//   stage/6 rocksdb+changelog
//                     stage 4 on RocksDB behind the changelogging layer, as the engine
//                       runs it: each commit stages changes, appends them and a commit
//                       marker to a changelog (copied into memory here, where the
//                       engine hands them to the Kafka producer), applies them to
//                       RocksDB; a checkpoint (memtable flush) every 100,000 changes
//
// BM_IdSetFill/N: dedupe's id set filled from empty with N ids, one erase per two
// inserts of the oldest (as a dedupe window that fills while ids also expire): ns per
// operation and the longest 1,024 operations (ms): the stall of a doubling.
//
// BM_ActiveKeys/keys/panes: resident bytes per group key of the aggregate alone when
// many keys get 3 events per 10 s pane (see the function).
//
// BM_Restore: RestoreFromChangelog of 1M changelog records (window-store puts of
// 40-byte keys and 200-byte values, a commit marker every 1,000) into a RocksDB or an
// in-memory window store: records/s.
//
// The cost of a stage is the difference of ns_per_event between a stage and the one
// before it. Commits happen every 10,000 events, as in offline mode, so the write-back
// of panes and dedupe ids to the stores is included.
//
//   build/bench/pipeline_bench --benchmark_counters_tabular=true [--cold-heap]
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <memory>
#include <random>
#include <new>
#include <string>
#include <vector>

#include "apps/event_generator.h"
#include "engine/in_memory_log.h"
#include "bench/counting_collector.h"
#include "engine/record_collector.h"
#include "engine/task.h"
#include "operators/id_set.h"
#include "operators/metric_event_codec.h"
#include "operators/metric_stats.h"
#include "operators/windowed_aggregate.h"
#include "statestore/changelog.h"
#include "statestore/in_memory_stores.h"
#include "statestore/logged_stores.h"
#include "statestore/rocksdb_stores.h"
#include "topology/metrics_pipeline.h"

// Every heap allocation in this binary is counted, so the benchmark reports allocations
// per event on the measured path.
static std::atomic<uint64_t> g_allocations{0};
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace streammetrics {
namespace {

constexpr size_t kEvents = 500'000;
constexpr uint64_t kCommitEvery = 10'000;

const std::vector<std::string>& Events() {
  static const std::vector<std::string> events = [] {
    GeneratorOptions options;
    options.events_per_second = 10'000;  // 50 s of event time: windows close mid-run
    options.invalid_fraction = 0;
    options.duplicate_fraction = 0;
    options.late_fraction = 0;
    EventGenerator generator(options);
    std::vector<std::string> out(kEvents);
    for (std::string& e : out) generator.Next(&e);
    return out;
  }();
  return events;
}


// Takes changelog records as a producer would (copying them) and counts them.
class CountingChangelog final : public ChangelogWriter, public ChangelogReader {
 public:
  void Append(std::string_view store, const ChangeRecord& r) override {
    ++records;
    buffer_.assign(r.key);
    buffer_.append(r.value);
    bytes += buffer_.size();
  }
  absl::Status Flush() override { return absl::OkStatus(); }
  int64_t EndOffset(std::string_view) const override { return static_cast<int64_t>(records); }
  absl::StatusOr<int64_t> Read(std::string_view, int64_t, const Visitor&) override { return 0; }
  absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view, int64_t) override {
    return std::optional<CommitMarker>();
  }
  uint64_t records = 0;
  uint64_t bytes = 0;

 private:
  std::string buffer_;
};

// The reference pipeline cut after `stage` (0 = source only .. 4 = everything; 5, 6 =
// everything on RocksDB stores, 6 with changelogs).
Topology StageTopology(int stage) {
  PipelineConfig config = ReferencePipelineConfig();
  config.keying = InputKeying::kSingleTask;  // one task, in process
  if (stage >= 5) config.store = StoreType::kRocksDb;
  if (stage >= 4) return *BuildMetricsTopology(config);
  StreamsBuilder b;
  KStream<MetricEvent> s = b.Stream(config.input_topic, EventFormat::kJson);
  if (stage >= 1) s = s.Validate(config.validation);
  if (stage >= 2) s = s.Enrich(config.enrich);
  if (stage >= 3) s = s.Dedupe(config.dedupe);
  s.Filter([](const Record<MetricEvent>& r) { return r.value->value < 0; });  // end: drop
  return *b.Build();
}

void BM_Decode(benchmark::State& state) {
  const std::vector<std::string>& events = Events();
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent event;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const std::string& e = events[i++ % events.size()];
    bytes += e.size();
    benchmark::DoNotOptimize(decoder->Decode(e, &event));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["ns_per_event"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate |
                                                   benchmark::Counter::kInvert);
}
BENCHMARK(BM_Decode);

void BM_Pipeline(benchmark::State& state) {
  const std::vector<std::string>& events = Events();
  const int stage = static_cast<int>(state.range(0));
  Topology topology = StageTopology(stage);
  const int64_t wall_clock = 1'707'267'600'000 + 3'600'000;
  uint64_t outputs = 0, processed = 0, allocations = 0, changes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    CountingCollector collector;
    CountingChangelog changelog;
    TaskConfig config;
    if (stage == 6) {
      config.changelog = &changelog;
      config.changelog_reader = &changelog;
    }
    config.wall_clock = [wall_clock] { return wall_clock; };
    const std::filesystem::path state_dir =
        std::filesystem::temp_directory_path() / ("sm-bench-" + std::to_string(getpid()));
    std::filesystem::remove_all(state_dir);
    config.state_dir = state_dir.string();
    std::unique_ptr<Task> task = *Task::Create(topology, config, &collector);
    SourceRecord record;
    record.topic = "metrics-events";
    state.ResumeTiming();
    const uint64_t allocations_before = g_allocations.load(std::memory_order_relaxed);
    for (size_t i = 0; i < events.size(); ++i) {
      record.offset = static_cast<int64_t>(i);
      record.value = events[i];
      if (!task->Process(record).ok()) state.SkipWithError("process failed");
      if ((i + 1) % kCommitEvery == 0 && !task->Commit().ok()) state.SkipWithError("commit");
    }
    if (!task->EndOfInput().ok()) state.SkipWithError("end of input failed");
    state.PauseTiming();
    allocations += g_allocations.load(std::memory_order_relaxed) - allocations_before;
    outputs += collector.records;
    changes += changelog.records;
    processed += task->counters().records_processed;
    task.reset();
    std::filesystem::remove_all(state_dir);
    state.ResumeTiming();
  }
  const double n = static_cast<double>(state.iterations() * events.size());
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.counters["ns_per_event"] =
      benchmark::Counter(n, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["results"] = static_cast<double>(outputs) / state.iterations();
  state.counters["aggregated"] = static_cast<double>(processed) / state.iterations();
  state.counters["allocs_per_event"] = static_cast<double>(allocations) / n;
  state.counters["changelog"] = static_cast<double>(changes) / state.iterations();
  static const char* kNames[] = {"source", "validate", "enrich", "dedupe", "aggregate",
                                 "rocksdb", "rocksdb+changelog"};
  state.SetLabel(kNames[stage]);
}
// Wall time: RocksDB flushes and compacts on background threads, which CPU time of
// this thread would not count.
BENCHMARK(BM_Pipeline)->DenseRange(0, 6)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

void BM_Restore(benchmark::State& state) {
  const bool rocksdb = state.range(0) == 1;
  constexpr int kRecords = 1'000'000;
  constexpr int kPerCommit = 1'000;
  InMemoryLog log;
  {
    std::string key, value(200, 'v');
    for (int i = 0; i < kRecords; ++i) {
      key = "service-" + std::to_string(i % 5'000) + "|api.request.duration|endpoint";
      key.resize(40, '.');
      value[0] = static_cast<char>(i);
      const uint64_t seq = static_cast<uint64_t>(i / kPerCommit) + 1;
      log.changelog_writer()->Append(
          "w", ChangeRecord{.type = ChangeType::kPut, .key = key,
                            .window_start = 1'707'267'600'000 + (i / 5'000) * 10'000,
                            .value = value, .incarnation = 1, .sequence = seq});
      if ((i + 1) % kPerCommit == 0) {
        const std::string marker = CommitMarker{.incarnation = 1, .sequence = seq}.Encode();
        log.changelog_writer()->Append(
            "w", ChangeRecord{.type = ChangeType::kCommit, .value = marker, .incarnation = 1,
                              .sequence = seq});
      }
    }
    if (!log.collector()->Flush().ok()) state.SkipWithError("log");
  }
  auto resources = RocksDbResources::Create({});
  uint64_t applied = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("sm-bench-restore-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    std::unique_ptr<WindowStore> local;
    if (rocksdb) {
      local = *OpenRocksDbWindowStore("w", dir.string(), resources);
    } else {
      local = NewInMemoryWindowStore("w");
    }
    CommitAttempt attempt;
    std::unique_ptr<WindowStore> store =
        NewLoggedWindowStore(std::move(local), log.changelog_writer(), &attempt);
    LoggedStore* logged = AsLoggedStore(store.get());
    state.ResumeTiming();
    absl::StatusOr<RestoreStats> stats = RestoreFromChangelog(
        *log.changelog_reader(), "w", 0, UINT64_MAX,
        [logged](std::span<const ChangeRecord> c) { return logged->ApplyRestored(c); });
    if (!stats.ok()) state.SkipWithError("restore failed");
    if (rocksdb && !store->Flush().ok()) state.SkipWithError("flush failed");  // durable
    state.PauseTiming();
    applied += stats.ok() ? stats->records_applied : 0;
    store.reset();
    std::filesystem::remove_all(dir);
    state.ResumeTiming();
  }
  state.counters["records_per_s"] = benchmark::Counter(
      static_cast<double>(applied), benchmark::Counter::kIsRate);
  state.SetLabel(rocksdb ? "rocksdb" : "memory");
}
BENCHMARK(BM_Restore)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

void BM_IdSetFill(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<Hash128> ids(n);
  std::mt19937_64 rng(3);
  for (Hash128& id : ids) id = Hash128{rng(), rng()};
  double worst_ms = 0;
  size_t ops = 0;
  for (auto _ : state) {
    IdSet set;
    size_t oldest = 0;
    auto chunk_start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < n; ++i) {
      benchmark::DoNotOptimize(set.Insert(ids[i]));
      if (i % 2 == 1) benchmark::DoNotOptimize(set.Erase(ids[oldest++]));
      if (i % 1024 == 1023) {
        const auto now = std::chrono::steady_clock::now();
        worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(now - chunk_start).count());
        chunk_start = now;
      }
    }
    ops += n + n / 2;
  }
  state.SetItemsProcessed(static_cast<int64_t>(ops));
  state.counters["ns_per_op"] = benchmark::Counter(static_cast<double>(ops),
                                                   benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["worst_1024_ops_ms"] = worst_ms;
}
BENCHMARK(BM_IdSetFill)->Arg(1 << 20)->Arg(1 << 24)->Arg(1 << 26)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

// Resident bytes per active group key when many keys each get a few events per 10 s pane:
// the aggregate alone (group by serviceId and metricName, the reference windows 1m, 5m
// and 1m/10s, grace 10 s, in-memory store), `keys` keys, 3 events per key per pane for
// `panes` panes in event-time order, a commit after each pane (so the in-memory store's
// copy of the panes is included). Each case runs in a forked child, so memory freed by
// an earlier case cannot hide its growth. Counters: resident set growth per key
// (allocator and key index included), live panes per key at the end.
//
//   build/bench/pipeline_bench --benchmark_filter=ActiveKeys --benchmark_counters_tabular=true
size_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long pages = 0, resident = 0;
  if (std::fscanf(f, "%lu %lu", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// In the child: runs the case, returns {bytes per key, panes per key}, or {-1, -1}.
std::pair<double, double> ActiveKeysCase(int64_t keys, int64_t panes) {
  PipelineConfig config = ReferencePipelineConfig();
  StreamsBuilder b;
  AggregateOptions options;
  b.Stream(config.input_topic, EventFormat::kJson)
      .GroupBy(config.group_by)
      .WindowedBy(config.windows)
      .Aggregate(options, "aggregate")
      .ToWindowTopics();
  const Topology topology = *b.Build();
  const int64_t t0 = 1'707'267'600'000;
  CountingCollector collector;
  TaskConfig tc;
  tc.wall_clock = [t0] { return t0 + 3'600'000; };
  const size_t before = ResidentBytes();
  std::unique_ptr<Task> task = *Task::Create(topology, tc, &collector);
  SourceRecord record;
  record.topic = config.input_topic;
  std::string json;
  int64_t offset = 0;
  for (int64_t p = 0; p < panes; ++p) {
    for (int64_t k = 0; k < keys; ++k) {
      for (int e = 0; e < 3; ++e) {
        json.clear();
        json += R"({"eventId":"e)";
        json += std::to_string(offset);
        json += R"(","timestamp":)";
        json += std::to_string(t0 + p * 10'000 + e * 1'000 + k % 1'000);
        json += R"(,"serviceId":"service-)";
        json += std::to_string(k);
        json += R"(","metricType":"HTTP_REQUEST","metricName":"api.request.duration","value":)";
        json += std::to_string(10 + (k + e) % 90);
        json += R"(,"unit":"milliseconds"})";
        record.offset = offset++;
        record.value = json;
        if (!task->Process(record).ok()) return {-1, -1};
      }
    }
    if (!task->Commit().ok()) return {-1, -1};
  }
  const size_t after = ResidentBytes();
  auto* aggregate = task->FindProcessor<WindowedAggregateProcessor>();
  if (aggregate == nullptr || task->counters().records_processed != static_cast<uint64_t>(offset)) {
    return {-1, -1};
  }
  return {(static_cast<double>(after) - static_cast<double>(before)) / static_cast<double>(keys),
          static_cast<double>(aggregate->live_panes()) / static_cast<double>(keys)};
}

void BM_ActiveKeys(benchmark::State& state) {
  std::pair<double, double> result{-1, -1};
  for (auto _ : state) {
    int fds[2];
    if (pipe(fds) != 0) state.SkipWithError("pipe");
    const pid_t child = fork();
    if (child == 0) {
      close(fds[0]);
      const std::pair<double, double> r = ActiveKeysCase(state.range(0), state.range(1));
      const ssize_t ignored = write(fds[1], &r, sizeof(r));
      (void)ignored;
      _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], &result, sizeof(result)) != static_cast<ssize_t>(sizeof(result))) {
      result = {-1, -1};
    }
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (result.first < 0) state.SkipWithError("the case failed");
  }
  state.counters["bytes_per_key"] = result.first;
  state.counters["panes_per_key"] = result.second;
}
BENCHMARK(BM_ActiveKeys)
    ->Args({100'000, 2})
    ->Args({100'000, 32})
    ->Args({1'000'000, 2})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();

// Bytes of one pane (the state of one group key in one 10 s slice) holding n values:
// at rest (its MetricStats encoding, what the window store and changelog hold) and in
// memory (the live pane, buffer included, and after Compact, as panes are once they can
// take no more records). A window's state is the sum of its panes: 6 for 1m, 30 for 5m.
void BM_PaneBytes(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::mt19937_64 rng(1);
  std::lognormal_distribution<double> latency(4.0, 0.6);
  std::vector<double> values(n);
  for (double& v : values) v = latency(rng);
  size_t at_rest = 0, live = 0, compacted = 0;
  for (auto _ : state) {
    MetricStats stats;
    for (double v : values) stats.Add(v);
    live = stats.MemoryBytes();
    std::string encoded;
    stats.AppendTo(&encoded);
    at_rest = encoded.size();
    stats.Compact();
    compacted = stats.MemoryBytes();
    benchmark::DoNotOptimize(encoded);
  }
  state.counters["bytes_at_rest"] = static_cast<double>(at_rest);
  state.counters["bytes_live"] = static_cast<double>(live);
  state.counters["bytes_compacted"] = static_cast<double>(compacted);
}
BENCHMARK(BM_PaneBytes)->Arg(1)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000)->Arg(100000);

}  // namespace
}  // namespace streammetrics

// Each iteration starts a task from empty state and frees it all at the end. With glibc's
// defaults, every large table the task grows is mmap'd and returned to the kernel when
// freed, so each iteration pays again for faulting its pages in (~140K page faults per
// run on this VM, varying run times by ±40%). A long-running engine instead works on a
// warm heap; keeping freed memory in the heap models that steady state and makes the
// numbers repeatable. Pass --cold-heap to measure with glibc's defaults.
int main(int argc, char** argv) {
  bool cold = false;
  for (int i = 1; i < argc; ++i) cold |= std::string_view(argv[i]) == "--cold-heap";
  if (!cold) {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) != "--cold-heap") args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
