// Reads a task's changelogs from Kafka for restore: a consumer of its own (no group),
// read_committed, assigned to <application.id>-<store>-changelog at the task's
// partition. Read() stops at the end as of the call (partition EOF at the last stable
// offset); LastMarker() reads backwards from the end in growing chunks.
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

class KafkaChangelogReader final : public ChangelogReader {
 public:
  static absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> Create(
      std::vector<std::pair<std::string, std::string>> properties, std::string application_id,
      int32_t partition, int timeout_ms = 60'000);
  ~KafkaChangelogReader() override;

  absl::StatusOr<int64_t> Read(std::string_view store, int64_t from,
                               const Visitor& fn) override;
  absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view store,
                                                         int64_t from) override;

 private:
  struct Impl;
  explicit KafkaChangelogReader(std::unique_ptr<Impl> impl);
  // Reads [from, to) (to < 0: to the end); returns the end offset reached.
  absl::StatusOr<int64_t> ReadRange(const std::string& topic, int64_t from, int64_t to,
                                    const Visitor& fn);
  absl::StatusOr<std::pair<int64_t, int64_t>> Watermarks(const std::string& topic);
  std::unique_ptr<Impl> impl_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_CHANGELOG_READER_H_
