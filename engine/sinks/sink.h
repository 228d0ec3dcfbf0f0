// External sinks (Postgres, Redis) fed by a sink runner from the aggregate topics, with
// exactly-once effects and no distributed transaction: a sink stores, in the same
// database transaction as the rows, the position (topic, partition, next offset) it has
// applied and the fencing epoch of the runner that applied it (DESIGN.md, "Exactly-once,
// end to end"). A runner takes an epoch at start (Fence); every later batch of an older
// epoch is refused, and records at or below a stored position are skipped, so a batch is
// never applied twice and an older value never overwrites a newer one.
#ifndef STREAMMETRICS_ENGINE_SINKS_SINK_H_
#define STREAMMETRICS_ENGINE_SINKS_SINK_H_

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "operators/strings.h"

namespace streammetrics {

// One record of an aggregate topic, as consumed.
struct SinkRecord {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string_view key;
  std::string_view value;
};

// A partition of an aggregate topic.
struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  bool operator==(const TopicPartition&) const = default;
  auto operator<=>(const TopicPartition&) const = default;
};

// The distinct partitions of a batch, in first-seen order, and each record's index among
// them — found by comparing views (a batch has a few partitions), no string per record.
class BatchPartitions {
 public:
  explicit BatchPartitions(std::span<const SinkRecord> batch) {
    for (const SinkRecord& r : batch) {
      if (Find(r) == kNone) parts_.push_back({std::string(r.topic), r.partition});
    }
  }
  size_t size() const { return parts_.size(); }
  const TopicPartition& operator[](size_t i) const { return parts_[i]; }
  // The index of `r`'s partition (it is in the batch given to the constructor).
  size_t IndexOf(const SinkRecord& r) const { return Find(r); }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  size_t Find(const SinkRecord& r) const {
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (parts_[i].partition == r.partition && parts_[i].topic == r.topic) return i;
    }
    return kNone;
  }
  std::vector<TopicPartition> parts_;
};

// Where a sink's applied input of a partition ends (the next offset to read), and the
// fencing epoch its owner holds.
struct SinkPosition {
  TopicPartition tp;
  int64_t next_offset = 0;
  int64_t epoch = 0;
  bool operator==(const SinkPosition&) const = default;
};

// A record a sink will not store, and why (it goes to the dead-letter topic).
struct RejectedRecord {
  SinkRecord record;
  std::string reason;
};

// Called inside a batch's transaction, before it commits, with the records the sink
// refused: a failure rolls the batch back (the dead letters must be durable first).
using RejectHandler = std::function<absl::Status(std::span<const RejectedRecord>)>;

// One runner's connection to a sink. Ownership is per partition: Acquire fences the
// partitions (a new epoch each; an older owner's later batches of them are refused).
class Sink {
 public:
  virtual ~Sink() = default;
  // Connects and creates what the sink needs (schema, tables) if missing.
  virtual absl::Status Open() = 0;
  // Takes `partitions` over from any other runner: their positions, with new epochs.
  virtual absl::StatusOr<std::vector<SinkPosition>> Acquire(std::span<const TopicPartition> partitions) = 0;
  // Forgets partitions (revoked); their later records are not applied.
  void Release(std::span<const TopicPartition> partitions) {
    for (const TopicPartition& tp : partitions) epochs_.erase(tp);
  }
  // True while this runner holds `tp` (acquired and not fenced since).
  bool Owns(const TopicPartition& tp) const { return epochs_.contains(tp); }
  // Applies `batch` (records in offset order per partition, of owned partitions)
  // atomically with the positions it reaches. Records at or below a stored position are
  // skipped. Records the sink refuses go to `on_rejected` (inside the transaction) and
  // the rest are applied. Errors: FailedPrecondition: some partition was fenced by a
  // newer owner (it is no longer owned; nothing of the batch was applied); Unavailable:
  // the database is unreachable or failed (retry the batch later).
  virtual absl::Status Apply(std::span<const SinkRecord> batch, const RejectHandler& on_rejected) = 0;
  // The stored positions of owned partitions (for seeking back after a failed batch).
  virtual absl::StatusOr<std::vector<SinkPosition>> Positions() = 0;
  virtual std::string name() const = 0;

 protected:
  // FailedPrecondition naming the first of `parts` this runner does not own.
  absl::Status CheckOwned(const BatchPartitions& parts) const {
    for (size_t i = 0; i < parts.size(); ++i) {
      if (!Owns(parts[i])) {
        return absl::FailedPreconditionError(StrCat(name(), ": ", parts[i].topic, "[", parts[i].partition,
                                                    "] is not this runner's"));
      }
    }
    return absl::OkStatus();
  }

  // Owned partitions and the fencing epoch this runner holds for each (set by Acquire,
  // dropped by Release and when a batch finds a partition fenced).
  std::map<TopicPartition, int64_t> epochs_;
};

// An aggregate result (DESIGN.md's output format) as sinks store it.
struct AggregateRow {
  std::string service_id;
  std::string metric_name;
  std::string window;  // its name: 1m, 5m, 1m-10s
  int64_t window_start_ms = 0;
  int64_t window_end_ms = 0;
  int64_t count = 0;
  double sum = 0, avg = 0, min = 0, max = 0, rate = 0;
  std::optional<double> p50, p95, p99;
  std::string tags_json = "{}";  // the result's tags object, as JSON
};

// Parses an aggregate topic's record value; InvalidArgument naming what is wrong.
absl::Status ParseAggregateRow(std::string_view json, AggregateRow* row);

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_SINKS_SINK_H_
