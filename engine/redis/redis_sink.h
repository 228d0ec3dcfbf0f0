// The Redis sink (hiredis only here): the hot path of the last hour (reference/001).
//   metrics:{serviceId}:{metricName}:{window}          → the newest window's aggregate
//                                                         (the result's JSON), TTL 3600 s
//   metrics:{serviceId}:{metricName}:{window}:history  → sorted set of the windows that
//                                                         start within the hour before the
//                                                         newest one (score: window start,
//                                                         member: the JSON), TTL 3600 s
//   streammetrics:sink:{name}:positions / :epochs       → hashes "topic:partition" → next
//                                                         offset / fencing epoch
// A result with tags has them at the end of both keys (…:{window}:{tags JSON}).
// A batch is one Lua script, atomic in Redis: it checks the epochs of the batch's
// partitions (a newer one: fenced, nothing written; a position past the batch's start: a
// retry of an applied batch, the runner drops what is below it and sends the rest), writes
// the records grouped by key (an older window never replaces a newer one as the latest)
// and moves the positions. Keys are passed as arguments, so this is for a single Redis
// (or one shard), not Redis Cluster.
#ifndef STREAMMETRICS_ENGINE_REDIS_REDIS_SINK_H_
#define STREAMMETRICS_ENGINE_REDIS_REDIS_SINK_H_

#include <map>
#include <memory>
#include <string>

#include "engine/sinks/sink.h"

namespace streammetrics {

struct RedisSinkOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string sink_name = "redis";
  int64_t ttl_s = 3'600;
  int64_t history_ms = 3'600'000;  // windows kept per key, back from the newest
  int timeout_ms = 5'000;
};

// "host:port" (or "redis://host:port") into options; InvalidArgument otherwise.
absl::Status ParseRedisUrl(std::string_view url, RedisSinkOptions* options);

class RedisSink final : public Sink {
 public:
  explicit RedisSink(RedisSinkOptions options);
  ~RedisSink() override;

  absl::Status Open() override;
  absl::StatusOr<std::vector<SinkPosition>> Acquire(std::span<const TopicPartition> partitions) override;
  absl::Status Apply(std::span<const SinkRecord> batch, const RejectHandler& on_rejected) override;
  absl::StatusOr<std::vector<SinkPosition>> Positions() override;
  std::string name() const override { return "redis"; }

 private:
  struct Conn;
  absl::Status Connect();

  RedisSinkOptions options_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_REDIS_REDIS_SINK_H_
