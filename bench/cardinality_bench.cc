// The reference job over many distinct group keys: how its cost and memory scale with the
// number of (serviceId, metricName) keys.
//
// Each case runs the main job (validate, enrich, dedupe within 10 min, the 1m, 5m and
// 1m/10s windows with p50/p95/p99, JSON results) on one task, in process, over generated
// events, in a forked child of its own (so no case inherits another's heap), with commits
// every 10,000 records and the default cache budget (state.cache_max_bytes, 512 MiB), as
// `streammetrics process` runs it. A case is `keys:events:seconds[:rocksdb]`: `events`
// events spread evenly over `seconds` of event time (in order), each event's key drawn at
// random from `keys` keys (service-<k/3> x 3 metric names), values lognormal-ish,
// every event valid and distinct. The store is in memory unless `:rocksdb` (RocksDB with
// the default block cache and write-buffer budget, 256 / 64 MiB).
//
// Reported per case (the events are generated in chunks of 8,192 outside the timing):
//   events/s         events over the time spent in Task::Process, Commit and EndOfInput
//   results          window results emitted
//   ns/result        time of the Process calls that closed windows (and EndOfInput),
//                    per result emitted: emission's whole cost (merging panes,
//                    quantiles, JSON) — an event's own ~1 µs is in it once per close
//   peak RSS         the child's VmHWM
//   B/key            (peak RSS - RSS before the task) / keys: what a key costs, the
//                    dedupe ids of the events (~50 B an event) included
//   live panes, keys the aggregate's at the end of input (before EndOfInput)
//
// --dedupe-max-ids N: dedupe.max_ids (default 0, unbounded: every event id of the last
// 10 minutes is kept, ~45 B each — at a million keys that, not the windows, is most of
// the memory).
//
//   build/bench/cardinality_bench                      # 18, 1K, 30K, 1M keys, 1M events, 10 min
//   build/bench/cardinality_bench --case 30000:1000000:600 --case 1000000:20000000:100:rocksdb
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/counting_collector.h"
#include "engine/record_collector.h"
#include "engine/task.h"
#include "operators/windowed_aggregate.h"
#include "statestore/cache_budget.h"
#include "statestore/rocksdb_stores.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics {
namespace {

using Clock = std::chrono::steady_clock;

struct Case {
  int64_t keys = 0;
  int64_t events = 0;
  int64_t seconds = 0;
  bool rocksdb = false;
};

struct Outcome {
  double seconds = 0;
  double emit_seconds = 0;
  uint64_t results = 0;
  uint64_t processed = 0;
  uint64_t live_panes = 0;
  uint64_t live_keys = 0;
  int64_t rss_before = 0;
  int64_t peak_rss = 0;
  bool ok = false;
  char error[200] = {};
};


// kB fields of /proc/self/status, in bytes.
int64_t StatusBytes(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kb = -1;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = std::strtoll(line + n + 1, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr const char* kMetrics[] = {"api.request.duration", "db.query.duration",
                                    "external.call.duration"};
constexpr int64_t kT0 = 1'707'267'600'000;  // 2024-02-07T01:00:00Z

// Event i of case c, appended to *out.
void AppendEvent(const Case& c, int64_t i, std::string* out) {
  const uint64_t h = SplitMix(static_cast<uint64_t>(i));
  const int64_t key = static_cast<int64_t>(h % static_cast<uint64_t>(c.keys));
  const int64_t ts = kT0 + static_cast<int64_t>(static_cast<double>(i) * c.seconds * 1'000.0 /
                                                static_cast<double>(c.events));
  // ~lognormal: exp of a sum of uniforms, 3 decimals.
  const double u = static_cast<double>((h >> 20) & 0xffff) / 65536.0 +
                   static_cast<double>((h >> 36) & 0xffff) / 65536.0 - 1.0;
  const double value = std::round(50.0 * std::exp(0.8 * u) * 1000.0) / 1000.0;
  char buf[512];
  const int n = std::snprintf(
      buf, sizeof(buf),
      "{\"eventId\":\"ev-%016" PRIx64 "-%" PRId64 "\",\"timestamp\":%" PRId64
      ",\"serviceId\":\"service-%" PRId64 "\",\"instanceId\":\"service-%" PRId64
      "-pod-%d\",\"metricType\":\"HTTP_REQUEST\",\"metricName\":\"%s\",\"value\":%.3f,"
      "\"unit\":\"milliseconds\",\"tags\":{\"endpoint\":\"/api/v1/items\",\"method\":\"GET\","
      "\"statusCode\":\"%d\",\"region\":\"us-east-1\"}}",
      h, i, ts, key / 3, key / 3, static_cast<int>(h >> 60) % 3, kMetrics[key % 3], value,
      (h >> 56) % 50 == 0 ? 503 : 200);
  out->assign(buf, static_cast<size_t>(n));
}

uint64_t g_dedupe_max_ids = 0;  // --dedupe-max-ids

void RunCase(const Case& c, Outcome* out) {
  PipelineConfig config = ReferencePipelineConfig();
  config.keying = InputKeying::kSingleTask;
  config.dedupe.max_ids = g_dedupe_max_ids;
  if (c.rocksdb) config.store = StoreType::kRocksDb;
  absl::StatusOr<Topology> topology = BuildMetricsTopology(config);
  if (!topology.ok()) {
    std::snprintf(out->error, sizeof(out->error), "%s", topology.status().ToString().c_str());
    return;
  }
  constexpr size_t kChunk = 8'192;
  constexpr int64_t kCommitEvery = 10'000;
  std::vector<std::string> chunk(kChunk);
  for (std::string& s : chunk) s.reserve(400);
  const std::filesystem::path state_dir =
      std::filesystem::temp_directory_path() / ("sm-cardinality-" + std::to_string(getpid()));
  std::filesystem::remove_all(state_dir);
  CountingCollector collector;
  TaskConfig tc;
  const int64_t wall = kT0 + c.seconds * 1'000 + 60'000;  // just after the input
  tc.wall_clock = [wall] { return wall; };
  tc.state_dir = state_dir.string();
  if (c.rocksdb) tc.rocksdb = RocksDbResources::Create(RocksDbBudget{});
  tc.cache_budget = std::make_shared<CacheBudget>(512ull << 20);  // state.cache_max_bytes
  for (size_t j = 0; j < kChunk; ++j) AppendEvent(c, 0, &chunk[j]);  // its pages, before
  out->rss_before = StatusBytes("VmRSS");
  absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(*topology, tc, &collector);
  if (!task.ok()) {
    std::snprintf(out->error, sizeof(out->error), "%s", task.status().ToString().c_str());
    return;
  }
  SourceRecord record;
  record.topic = config.input_topic;
  Clock::duration total{}, emitting{};
  for (int64_t base = 0; base < c.events; base += kChunk) {
    const int64_t n = std::min<int64_t>(kChunk, c.events - base);
    for (int64_t j = 0; j < n; ++j) AppendEvent(c, base + j, &chunk[j]);
    const auto chunk_start = Clock::now();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j;
      record.offset = i;
      record.value = chunk[j];
      const uint64_t before = collector.records;
      const auto t = Clock::now();
      absl::Status s = (*task)->Process(record);
      if (collector.records != before) emitting += Clock::now() - t;
      if (s.ok() && (i + 1) % kCommitEvery == 0) s = (*task)->Commit();
      if (!s.ok()) {
        std::snprintf(out->error, sizeof(out->error), "%s", s.ToString().c_str());
        return;
      }
    }
    total += Clock::now() - chunk_start;
  }
  auto* aggregate = (*task)->FindProcessor<WindowedAggregateProcessor>();
  out->live_panes = aggregate->live_panes();
  out->live_keys = aggregate->live_keys();
  const auto end_start = Clock::now();
  if (absl::Status s = (*task)->EndOfInput(); !s.ok()) {
    std::snprintf(out->error, sizeof(out->error), "%s", s.ToString().c_str());
    return;
  }
  const auto end_time = Clock::now() - end_start;
  total += end_time;
  emitting += end_time;
  out->seconds = std::chrono::duration<double>(total).count();
  out->emit_seconds = std::chrono::duration<double>(emitting).count();
  out->results = collector.records;
  out->processed = (*task)->counters().records_processed;
  out->peak_rss = StatusBytes("VmHWM");
  out->ok = true;
  task->reset();
  std::filesystem::remove_all(state_dir);
}

bool ParseCase(std::string_view s, Case* c) {
  int64_t v[3];
  for (int i = 0; i < 3; ++i) {
    const size_t colon = s.find(':');
    const std::string part(s.substr(0, colon));
    char* end = nullptr;
    v[i] = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || v[i] <= 0) return false;
    if (colon == std::string_view::npos) {
      if (i < 2) return false;
      s = {};
    } else {
      s.remove_prefix(colon + 1);
    }
  }
  *c = Case{v[0], v[1], v[2], false};
  if (s == "rocksdb") {
    c->rocksdb = true;
  } else if (!s.empty() && s != "memory") {
    return false;
  }
  return true;
}

std::string Group(double v) {  // 1234567 -> "1,234,567"
  std::string digits = std::to_string(static_cast<int64_t>(std::llround(v)));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

}  // namespace
}  // namespace streammetrics

int main(int argc, char** argv) {
  using namespace streammetrics;
  std::vector<Case> cases;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    Case c;
    if (arg == "--case" && i + 1 < argc && ParseCase(argv[i + 1], &c)) {
      cases.push_back(c);
      ++i;
    } else if (arg == "--dedupe-max-ids" && i + 1 < argc) {
      g_dedupe_max_ids = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: cardinality_bench [--case keys:events:seconds[:rocksdb]]... "
                   "[--dedupe-max-ids N]\n");
      return 2;
    }
  }
  if (cases.empty()) {
    for (int64_t keys : {18, 1'000, 30'000, 1'000'000}) cases.push_back({keys, 1'000'000, 600, false});
  }
  std::printf("| keys | events | seconds | store | events/s | results | ns/result | peak RSS | "
              "B/key | live panes | live keys |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::fflush(stdout);
  for (const Case& c : cases) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    const pid_t child = fork();
    if (child == 0) {
      close(fds[0]);
      Outcome o;
      RunCase(c, &o);
      const ssize_t ignored = write(fds[1], &o, sizeof(o));
      (void)ignored;
      _exit(0);
    }
    close(fds[1]);
    Outcome o;
    if (read(fds[0], &o, sizeof(o)) != static_cast<ssize_t>(sizeof(o))) {
      std::snprintf(o.error, sizeof(o.error), "the child died");
    }
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (!o.ok) {
      std::printf("| %s | %s | %" PRId64 " | %s | failed: %s |\n", Group(c.keys).c_str(),
                  Group(c.events).c_str(), c.seconds, c.rocksdb ? "rocksdb" : "memory", o.error);
      continue;
    }
    const double mib = 1024.0 * 1024.0;
    std::printf("| %s | %s | %" PRId64 " | %s | %sK | %s | %s | %.0f MiB | %s | %s | %s |\n",
                Group(c.keys).c_str(), Group(c.events).c_str(), c.seconds,
                c.rocksdb ? "rocksdb" : "memory",
                Group(static_cast<double>(c.events) / o.seconds / 1000.0).c_str(),
                Group(static_cast<double>(o.results)).c_str(),
                Group(o.results ? o.emit_seconds * 1e9 / static_cast<double>(o.results) : 0).c_str(),
                static_cast<double>(o.peak_rss) / mib,
                Group(static_cast<double>(o.peak_rss - o.rss_before) / static_cast<double>(c.keys))
                    .c_str(),
                Group(static_cast<double>(o.live_panes)).c_str(),
                Group(static_cast<double>(o.live_keys)).c_str());
    std::fflush(stdout);
  }
  return 0;
}
