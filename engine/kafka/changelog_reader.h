// Reads tasks' changelogs from Kafka for restore: a consumer of its own (never joins a
// group), read_committed, assigned to <application.id>-<store>-changelog at a task's
// partition while it reads. Read() reads to the high watermark as of the call, waiting
// for a transaction still open there to end (a read_committed end — the last stable
// offset — stops short of it: KAFKA-10167); LastMarker() reads backwards from the high
// watermark in growing chunks. isolation.level, enable.partition.eof, enable.auto.commit
// and group.id are the reader's own: properties that set them are overridden.
// One per stream thread; ForPartition() gives each task its ChangelogReader face.
#ifndef STREAMMETRICS_ENGINE_KAFKA_CHANGELOG_READER_H_
#define STREAMMETRICS_ENGINE_KAFKA_CHANGELOG_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "statestore/changelog.h"

namespace streammetrics::kafka {

class KafkaChangelogReader {
 public:
  static absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> Create(
      std::vector<std::pair<std::string, std::string>> properties, std::string application_id,
      int timeout_ms = 60'000);
  ~KafkaChangelogReader();

  absl::StatusOr<int64_t> Read(std::string_view store, int32_t partition, int64_t from,
                               const ChangelogReader::Visitor& fn);
  absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view store,
                                                         int32_t partition, int64_t from);
  // The ChangelogReader of the task of `partition`; must not outlive this reader.
  std::unique_ptr<ChangelogReader> ForPartition(int32_t partition);

 private:
  struct Impl;
  explicit KafkaChangelogReader(std::unique_ptr<Impl> impl);
  // Reads [from, to) (to < 0: to the end); returns the end offset reached.
  absl::StatusOr<int64_t> ReadRange(const std::string& topic, int32_t partition, int64_t from,
                                    int64_t to, const ChangelogReader::Visitor& fn);
  absl::StatusOr<std::pair<int64_t, int64_t>> Watermarks(const std::string& topic,
                                                         int32_t partition);
  std::unique_ptr<Impl> impl_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_CHANGELOG_READER_H_
