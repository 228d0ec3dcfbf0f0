// Reads whole topics as a read_committed consumer would, to the end as of the call: for
// tests, tools and the live view of `streammetrics run`.
#ifndef STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_
#define STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kafka/producer.h"
#include "engine/topology_test_driver.h"

namespace streammetrics::kafka {

struct ReadOptions {
  int timeout_ms = 30'000;
};

// Every record of every partition of `topic` up to its end now; per partition in offset
// order, partitions one after another. NotFound when the topic does not exist.
absl::StatusOr<std::vector<OutputRecord>> ReadTopic(const Properties& properties,
                                                    const std::string& topic,
                                                    ReadOptions options = {});

// Follows a topic from its end (or start) and hands out what arrives: for a live view.
class TopicFollower {
 public:
  static absl::StatusOr<std::unique_ptr<TopicFollower>> Create(const Properties& properties,
                                                               const std::string& topic,
                                                               bool from_start);
  ~TopicFollower();
  // Records that arrived within timeout_ms (at most max_records).
  std::vector<OutputRecord> Poll(int timeout_ms, size_t max_records = 10'000);
  // Sum of the end offsets of `topic`'s partitions (any topic), through this client.
  absl::StatusOr<int64_t> EndOffsets(const std::string& topic);

 private:
  struct Impl;
  explicit TopicFollower(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_
