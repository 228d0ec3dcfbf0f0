// Rows per second into the Postgres sink on this machine, by batch size: a PostgreSQL 15
// started for the run (tests/postgres_server.h: loopback, fsync off — the disk is not
// what is measured), records applied through PostgresSink::Apply as the runner does
// (one transaction per batch: position lock, COPY, upsert, position update). Two passes
// per batch size: all new keys (inserts), then the same keys again with newer values
// (updates). The aggregate JSON is built before the clock starts.
//
//   build/bench/sink_bench [--rows N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/postgres/postgres_sink.h"
#include "operators/strings.h"
#include "tests/postgres_server.h"

namespace streammetrics {
namespace {

std::string Row(int i, int version) {
  const int64_t start = 60'000LL * (i / 48);
  return StrCat("{\"serviceId\":\"service-", i % 8, "\",\"metricName\":\"metric-", i / 8 % 6,
                "\",\"window\":\"1m\",\"windowStart\":", start, ",\"windowEnd\":", start + 60'000,
                ",\"count\":", 100 + version, ",\"sum\":", 1234.5 + version,
                ",\"avg\":12.345,\"min\":0.5,\"max\":99.5,\"p50\":10.25,\"p95\":45.5,\"p99\":88.75,"
                "\"rate\":1.6666666666666667,\"tags\":{\"region\":\"eu-west-1\"}}");
}

int Main(int argc, char** argv) {
  int rows = 200'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rows") == 0) rows = std::atoi(argv[i + 1]);
  }
  auto server = testing::PostgresServer::Create();
  if (!server.ok()) {
    std::fprintf(stderr, "postgres: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::vector<std::string> inserts, updates;
  for (int i = 0; i < rows; ++i) {
    inserts.push_back(Row(i, 0));
    updates.push_back(Row(i, 1));
  }
  const std::string topic = "metrics-aggregated-1m";
  int db = 0;
  for (int batch : {100, 1'000, 5'000, 20'000}) {
    const std::string name = StrCat("bench", ++db);
    if (!(*server)->CreateDatabase(name).ok()) return 1;
    PostgresSink sink(PostgresSinkOptions{.dsn = (*server)->Dsn(name)});
    const std::vector<TopicPartition> parts = {{topic, 0}};
    if (!sink.Open().ok() || !sink.Acquire(parts).ok()) return 1;
    int64_t offset = 0;
    for (const std::vector<std::string>* pass : {&inserts, &updates}) {
      std::vector<SinkRecord> records;
      for (const std::string& v : *pass) records.push_back({topic, 0, offset++, "k", v});
      const auto start = std::chrono::steady_clock::now();
      for (size_t at = 0; at < records.size(); at += batch) {
        const size_t n = std::min<size_t>(batch, records.size() - at);
        absl::Status s = sink.Apply(std::span<const SinkRecord>(records).subspan(at, n), {});
        if (!s.ok()) {
          std::fprintf(stderr, "apply: %s\n", std::string(s.message()).c_str());
          return 1;
        }
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("postgres sink, batch %6d, %s: %d rows in %.2f s = %.0f rows/s\n", batch,
                  pass == &inserts ? "inserts" : "updates", rows, secs, rows / secs);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace streammetrics

int main(int argc, char** argv) { return streammetrics::Main(argc, argv); }
