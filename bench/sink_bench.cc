// Rows per second into the Postgres and the Redis sinks on this machine, by batch size.
// Postgres: a PostgreSQL 15
// started for the run (tests/postgres_server.h: loopback, fsync off — the disk is not
// what is measured), records applied through PostgresSink::Apply as the runner does
// (one transaction per batch: position lock, COPY, upsert, position update). Two passes
// per batch size: all new keys (inserts), then the same keys again with newer values
// (updates). Redis: a redis-server as the tests start it (append-only file, fsync every second),
// records applied through RedisSink::Apply (one Lua script per batch: epoch check, per
// record the history sorted set, its trim and TTL, the latest key; positions). The
// aggregate JSON is built before the clock starts.
//
//   build/bench/sink_bench [--rows N] [--sink postgres|redis|both] [--partitions P (3)] [--batch N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/postgres/postgres_sink.h"
#include "operators/strings.h"
#include "engine/redis/redis_sink.h"
#include "tests/postgres_server.h"
#include "tests/redis_server.h"

namespace streammetrics {
namespace {

// 2,000 keys (50 services × 40 metrics), one result per key per window: in order, every
// key's next window, as an engine emits them (a batch holds each key at most once).
std::string Row(int i, int version) {
  const int64_t start = 60'000LL * (i / 2'000);
  return StrCat("{\"serviceId\":\"service-", i % 50, "\",\"metricName\":\"metric-", i / 50 % 40,
                "\",\"window\":\"1m\",\"windowStart\":", start, ",\"windowEnd\":", start + 60'000,
                ",\"count\":", 100 + version, ",\"sum\":", 1234.5 + version,
                ",\"avg\":12.345,\"min\":0.5,\"max\":99.5,\"p50\":10.25,\"p95\":45.5,\"p99\":88.75,"
                "\"rate\":1.6666666666666667,\"tags\":{\"region\":\"eu-west-1\"}}");
}

int partitions = 3;  // --partitions: the aggregate topics have 3 (reference/001)
std::vector<int> batches = {100, 1'000, 5'000, 20'000};  // --batch N: only N

// Applies `passes` (record values) through `sink` in batches of `batch`, records spread
// over `partitions` partitions by service (as the engine keys them), each pass timed and
// printed; false on a failure.
bool Measure(Sink& sink, const char* what, const char* unit, int batch,
             const std::vector<std::pair<const char*, const std::vector<std::string>*>>& passes) {
  const std::string topic = "metrics-aggregated-1m";
  std::vector<TopicPartition> parts;
  for (int p = 0; p < partitions; ++p) parts.push_back({topic, p});
  if (!sink.Open().ok() || !sink.Acquire(parts).ok()) return false;
  std::vector<int64_t> offsets(partitions, 0);
  for (const auto& [pass_name, values] : passes) {
    std::vector<SinkRecord> records;
    for (size_t i = 0; i < values->size(); ++i) {
      const int p = static_cast<int>(i % 50 % partitions);  // Row(i)'s service, i % 50
      records.push_back({topic, p, offsets[p]++, "k", (*values)[i]});
    }
    const auto start = std::chrono::steady_clock::now();
    for (size_t at = 0; at < records.size(); at += batch) {
      const size_t n = std::min<size_t>(batch, records.size() - at);
      absl::Status s = sink.Apply(std::span<const SinkRecord>(records).subspan(at, n), {});
      if (!s.ok()) {
        std::fprintf(stderr, "apply: %s\n", std::string(s.message()).c_str());
        return false;
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s sink, %d partitions, batch %6d, %s: %zu %s in %.2f s = %.0f %s/s\n", what,
                partitions, batch, pass_name, records.size(), unit, secs,
                static_cast<double>(records.size()) / secs, unit);
    std::fflush(stdout);
  }
  return true;
}

int RunPostgres(const std::vector<std::string>& inserts, const std::vector<std::string>& updates);
int RunRedis(const std::vector<std::string>& inserts, const std::vector<std::string>& updates);

int Main(int argc, char** argv) {
  int rows = 200'000;
  std::string which = "both";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rows") == 0) rows = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--sink") == 0) which = argv[i + 1];
    if (std::strcmp(argv[i], "--batch") == 0) batches = {std::max(1, std::atoi(argv[i + 1]))};
    if (std::strcmp(argv[i], "--partitions") == 0) partitions = std::max(1, std::atoi(argv[i + 1]));
  }
  std::vector<std::string> inserts, updates;
  for (int i = 0; i < rows; ++i) {
    inserts.push_back(Row(i, 0));
    updates.push_back(Row(i, 1));
  }
  if (which == "both" || which == "postgres") {
    if (RunPostgres(inserts, updates) != 0) return 1;
  }
  if (which == "both" || which == "redis") return RunRedis(inserts, updates);
  return 0;
}

int RunPostgres(const std::vector<std::string>& inserts, const std::vector<std::string>& updates) {
  auto server = testing::PostgresServer::Create();
  if (!server.ok()) {
    std::fprintf(stderr, "postgres: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  int db = 0;
  for (int batch : batches) {
    const std::string name = StrCat("bench", ++db);
    if (!(*server)->CreateDatabase(name).ok()) return 1;
    PostgresSink sink(PostgresSinkOptions{.dsn = (*server)->Dsn(name)});
    if (!Measure(sink, "postgres", "rows", batch, {{"inserts", &inserts}, {"updates", &updates}})) {
      return 1;
    }
  }
  return 0;
}

int RunRedis(const std::vector<std::string>& inserts, const std::vector<std::string>& updates) {
  for (int batch : batches) {
    // A fresh server per batch size (as Postgres gets a fresh database): the append-only
    // file and its rewrites start from the same state for each.
    auto redis = testing::RedisServer::Create();
    if (!redis.ok()) {
      std::fprintf(stderr, "redis: %s\n", std::string(redis.status().message()).c_str());
      return 1;
    }
    RedisSinkOptions ro;
    ro.port = (*redis)->port();
    ro.sink_name = "bench";
    RedisSink sink(ro);
    if (!Measure(sink, "redis", "keys", batch,
                 {{"new windows", &inserts}, {"same windows again", &updates}})) {
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace streammetrics

int main(int argc, char** argv) { return streammetrics::Main(argc, argv); }
