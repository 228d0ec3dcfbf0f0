// The dev broker: librdkafka's mock cluster (DESIGN.md, "The dev broker"), serving the
// Kafka protocol on loopback for this process and others (`streammetrics broker`,
// `bootstrap.servers: embedded`, integration tests). Its measured limits — aborted
// transactional records visible to read_committed consumers, transactional offsets
// dropped, no fencing, no compaction, 100,000 messages / 5 MiB kept per partition — are
// what the engine's own recovery is built not to depend on.
//
// Thread-safe as librdkafka's mock API is: create topics and inject faults from any
// thread.
#ifndef STREAMMETRICS_ENGINE_KAFKA_DEV_BROKER_H_
#define STREAMMETRICS_ENGINE_KAFKA_DEV_BROKER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streammetrics::kafka {

class DevBroker {
 public:
  // A cluster of `brokers` brokers (ids 1..brokers) on loopback, ephemeral ports.
  static absl::StatusOr<std::unique_ptr<DevBroker>> Start(int brokers = 3);
  ~DevBroker();
  DevBroker(const DevBroker&) = delete;
  DevBroker& operator=(const DevBroker&) = delete;

  // "127.0.0.1:port,..." for clients.
  const std::string& bootstrap_servers() const { return bootstrap_; }
  // Creates `name` with `partitions` partitions (replication 1). A topic that exists
  // already is an error ("Topic already exists"), whatever its partitions.
  absl::Status CreateTopic(std::string_view name, int partitions);
  // reference/001's topics: metrics-events 6 partitions; metrics-aggregated-1m, -5m,
  // -1m-10s and metrics-dead-letter 3 each.
  absl::Status CreateReferenceTopics();
  // The partitions of reference/001's topic `name`, or 0 when it is not one of them.
  static int ReferencePartitions(std::string_view name);
  // reference/001's topics with their partitions (what CreateReferenceTopics makes here),
  // for making them on another broker.
  static std::vector<std::pair<std::string, int>> ReferenceTopics();
  // metrics-events' partitions (reference/001): what `streammetrics broker` and the
  // embedded broker give every topic a config names that reference/001 does not.
  static constexpr int kInputPartitions = 6;
  // Fault injection: a broker stops answering / answers again.
  absl::Status SetBrokerDown(int broker_id);
  absl::Status SetBrokerUp(int broker_id);
  // Fault injection: the next `count` requests of Kafka API `api_key` (0 Produce,
  // 26 EndTxn, ...) fail with librdkafka error code `error` (rd_kafka_resp_err_t).
  void FailRequests(int16_t api_key, int count, int error);
  // Fault injection: broker `broker_id` answers its next request of `api_key` after
  // `rtt_ms` (a slow broker).
  void DelayNextRequest(int broker_id, int16_t api_key, int rtt_ms);
  // Which broker coordinates `key` (key_type "transaction": a transactional id; "group":
  // a group id).
  absl::Status SetCoordinator(std::string_view key_type, std::string_view key, int broker_id);
  // Makes `broker_id` the leader of `topic` [partition]; -1: no leader, as while a
  // real cluster elects one after losing a broker.
  absl::Status SetLeader(std::string_view topic, int32_t partition, int broker_id);

 private:
  struct Impl;
  explicit DevBroker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string bootstrap_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_DEV_BROKER_H_
