// The YAML configuration of the streammetrics binary. Every key, its meaning and its
// default are documented in docs/CONFIGURATION.md; a key this parser does not know is
// an error naming it (a typo must not silently fall back to a default).
#ifndef STREAMMETRICS_APPS_CONFIG_H_
#define STREAMMETRICS_APPS_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "apps/input_reader.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics {

// An external sink's runner (sinks.postgres, sinks.redis): part of `run` when enabled,
// or alone with `streammetrics sink`.
struct SinkConfig {
  bool enabled = false;
  std::string url;                  // Postgres: a libpq connection string; Redis: host:port
  std::vector<std::string> topics;  // empty: every window's topic
  int64_t batch_size = 5'000;
  int64_t flush_interval_ms = 200;
  std::string group;  // empty: <application.id>-sink-<name>
  int connections = 3;  // Postgres: connections a batch is spread over (by partition)
};

struct AppConfig {
  PipelineConfig pipeline;
  // input.framing; nullopt: the format's own (InputFramingOf).
  std::optional<InputFraming> input_framing;
  // Offline mode (`process`, `demo`): commit after this many input records.
  uint64_t commit_every_records = 10'000;
  // The operators' in-memory state (window panes) beyond which compacted panes are
  // evicted to their stores, for the whole process. 0: unbounded.
  uint64_t state_cache_max_bytes = 512ull << 20;
  // RocksDB's shared block cache (memtables included) and the part memtables may use,
  // for every RocksDB store of the process (statestore/rocksdb_stores.h).
  uint64_t rocksdb_cache_bytes = 256ull << 20;
  uint64_t rocksdb_write_buffer_bytes = 64ull << 20;
  // The Kafka runtime (`run`).
  bool exactly_once = true;       // processing.guarantee
  int threads = 0;                // processing.threads; 0: one per core
  int64_t commit_interval_ms = 100;
  int64_t marker_refresh_ms = 3'600'000;  // processing.marker_refresh
  std::string state_dir = "/tmp/streammetrics";  // state.dir
  SinkConfig postgres;  // sinks.postgres
  SinkConfig redis;     // sinks.redis (url: host:port)
  // librdkafka properties for the Kafka runtime, passed through verbatim.
  std::vector<std::pair<std::string, std::string>> kafka;
};

// input.framing as given, else the input format's natural framing: lines for JSON,
// delimited for protobuf.
InputFraming InputFramingOf(const AppConfig& config);

// The kafka.bootstrap.servers value, or "embedded" (the default: the dev broker in this
// process).
std::string BootstrapServers(const AppConfig& config);

// Every Kafka topic the config names, each once, in this order: the input topic, the
// windows' topics, the dead-letter topic, the sinks' topics (internal topics — changelogs
// — are not named in a config: the topology knows them).
std::vector<std::string> NamedTopics(const AppConfig& config);

// "250ms", "10s", "1m", "2h", "1d" or a plain integer (milliseconds). OutOfRange when it
// does not fit in int64 milliseconds, InvalidArgument when it is not a duration.
absl::StatusOr<int64_t> ParseDuration(std::string_view text);

// Ranges of the config's numbers (docs/CONFIGURATION.md lists each key's). Durations are
// at most kMaxDurationMs (operators/windows.h: 36,500 days) unless said otherwise.
// Intervals of the runtime's loops (commit_interval, flush_interval): at most an hour.
inline constexpr int64_t kMaxIntervalMs = 3'600'000;
// input.max_document_bytes: 1 GiB (a protobuf message is at most 2 GiB).
inline constexpr int64_t kMaxDocumentBytes = int64_t{1} << 30;
// Counts (dedupe.max_ids, processing.commit_every_records).
inline constexpr int64_t kMaxCount = 1'000'000'000'000;
// Memory sizes (state.*_bytes): 1 PiB.
inline constexpr int64_t kMaxMemoryBytes = int64_t{1} << 50;
inline constexpr size_t kMaxGroupByDimensions = 16;
// application.id prefixes internal topics, whose names Kafka caps at 249 characters.
inline constexpr size_t kMaxApplicationIdLength = 200;
// A parsed document may hold at most this many nodes, aliases expanded.
inline constexpr size_t kMaxConfigNodes = 100'000;

// OK for a legal Kafka topic name: 1 to 249 characters of [a-zA-Z0-9._-], not "." or
// ".."; else InvalidArgument saying why.
absl::Status CheckTopicName(std::string_view topic);

// `run`'s state directory: OK when it is a directory or can be made one (its nearest
// existing ancestor is a directory); else FailedPrecondition naming state.dir.
absl::Status CheckStateDir(const std::string& dir);

// InvalidArgument naming the key ("aggregate.windows[1].size: ...") on any error.
absl::StatusOr<AppConfig> ParseConfig(std::string_view yaml);
absl::StatusOr<AppConfig> LoadConfigFile(const std::string& path);

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_CONFIG_H_
