// Where a task's output records go: Kafka (engine/kafka, later), or memory for the test
// driver and offline mode.
#ifndef STREAMMETRICS_ENGINE_RECORD_COLLECTOR_H_
#define STREAMMETRICS_ENGINE_RECORD_COLLECTOR_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"

namespace streammetrics {

struct Header {
  std::string_view key;
  std::string_view value;
};

class RecordCollector {
 public:
  virtual ~RecordCollector() = default;
  // Queues a record; copies everything it keeps. Failures surface in Flush().
  virtual void Send(std::string_view topic, std::string_view key, std::string_view value,
                    int64_t timestamp_ms, std::span<const Header> headers) = 0;
  // The same to one partition (Send picks it from the key). In memory: Send.
  virtual void SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                               std::string_view value, int64_t timestamp_ms) {
    (void)partition;
    Send(topic, key, value, timestamp_ms, {});
  }
  // At commit: returns once every queued record is acknowledged, or the first failure.
  virtual absl::Status Flush() = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_RECORD_COLLECTOR_H_
