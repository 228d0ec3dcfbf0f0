// Reads whole topics as a read_committed consumer would, to the end as of the call: for
// tests, tools and the live view of `streammetrics run`.
#ifndef STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_
#define STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_

#include <cstdint>
#include <climits>
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

// Replays records of a topic into another, as they were: dead letters back to where they
// came from once what refused them is fixed (reference/003's replay by time range and
// filter). Reads `from` (read_committed, all partitions, from the first record at or
// after `since_ms` to the end as of the call), keeps the records that pass the filters
// and produces each one's key and value, with its original timestamp and without the
// dlq.* headers, to `to` — empty: the topic its dlq.topic header names (where a dead
// letter came from: the input topic, or an aggregate topic for a sink's). Records are
// partitioned by key, as the engine's input is. Memory: at most `flush_every` records
// queued in the producer.
struct ReplayOptions {
  std::string from;
  std::string to;                    // empty: each record's dlq.topic
  std::vector<std::string> reasons;  // dlq.reason values to keep; empty: all
  int64_t since_ms = INT64_MIN;      // record timestamps (the dead letter's own), inclusive
  int64_t until_ms = INT64_MAX;      // exclusive
  bool dry_run = false;              // count, produce nothing
  int64_t flush_every = 10'000;
  int timeout_ms = 30'000;  // per call to the broker, and the longest silence while reading
};

struct ReplayStats {
  int64_t read = 0;
  int64_t replayed = 0;
  int64_t filtered = 0;  // outside the time range or of another reason
  int64_t empty = 0;     // dead letters with nothing to replay (dlq.offset -1: a punctuator's)
  int64_t truncated = 0;  // dead letters cut to fit (dlq.truncated): not the original record
  std::vector<std::pair<std::string, int64_t>> by_topic;  // replayed, per destination
};

// InvalidArgument for a record with no destination (no `to` and no dlq.topic), before
// anything is produced for it; NotFound when `from` does not exist.
absl::StatusOr<ReplayStats> ReplayTopic(const Properties& properties, const ReplayOptions& options);

// Follows a topic from its end (or start) and hands out what arrives: for a live view.
class TopicFollower {
 public:
  static absl::StatusOr<std::unique_ptr<TopicFollower>> Create(const Properties& properties,
                                                               const std::string& topic,
                                                               bool from_start);
  ~TopicFollower();
  // Records that arrived within timeout_ms (at most max_records).
  std::vector<OutputRecord> Poll(int timeout_ms, size_t max_records = 10'000);

 private:
  struct Impl;
  explicit TopicFollower(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_TOPIC_READER_H_
