// Topic administration on a real Kafka (the dev broker's protocol has no CreateTopics:
// DevBroker::CreateTopic creates its topics).
#ifndef STREAMMETRICS_ENGINE_KAFKA_ADMIN_H_
#define STREAMMETRICS_ENGINE_KAFKA_ADMIN_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kafka/producer.h"  // Properties

namespace streammetrics::kafka {

struct TopicSpec {
  std::string name;
  int partitions = 1;
  int replication_factor = -1;  // -1: the broker's default.replication.factor
  std::vector<std::pair<std::string, std::string>> configs;  // cleanup.policy, retention.ms, ...
};

// Creates every topic of `topics` that does not exist yet (one CreateTopics request) and
// waits until the cluster's metadata shows each with its partitions. A topic that exists
// is left as it is, whatever its partitions and configs. Unavailable when the broker does
// not answer within `timeout_ms`; the broker's error for a topic it refuses.
absl::Status CreateTopics(const Properties& properties, const std::vector<TopicSpec>& topics,
                          int timeout_ms = 30'000);

// Every topic in the cluster's metadata, with its partition count (any broker, the dev
// broker included). Unavailable when no metadata came within `timeout_ms`.
absl::StatusOr<std::map<std::string, int>> TopicPartitions(const Properties& properties,
                                                           int timeout_ms = 10'000);

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_ADMIN_H_
