// Runs a topology in-process, without a broker: the TopologyTestDriver of Kafka Streams,
// and the runtime of offline mode (`streammetrics process`).
//
// One task (partition 0) processes every piped record in order. Outputs, dead letters
// included, are collected in memory per topic until read. The wall clock is the
// driver's own: it starts at Options::wall_clock_ms and moves only by
// AdvanceWallClock(), so tests are deterministic. A topology with repartitions runs as
// one task per sub-topology (all partition 0), the repartition topics' records handed
// from one to the next in memory.
#ifndef STREAMMETRICS_ENGINE_TOPOLOGY_TEST_DRIVER_H_
#define STREAMMETRICS_ENGINE_TOPOLOGY_TEST_DRIVER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/record_collector.h"
#include "engine/task.h"
#include "topology/topology.h"

namespace streammetrics {

struct OutputRecord {
  std::string topic;
  std::string key;
  std::string value;
  int64_t timestamp_ms = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  int32_t partition = 0;  // where a broker put it (0 in the driver)

  // The value of header `name`, or nullopt.
  std::optional<std::string> Header(std::string_view name) const;
};

class TopologyTestDriver {
 public:
  struct Options {
    std::string application_id = "streammetrics-test";
    std::string dead_letter_topic = "metrics-dead-letter";
    // TaskConfig::dead_letter_max_bytes.
    int64_t dead_letter_max_bytes = 1'000'000;
    // Initial wall clock; nullopt = the system clock at creation.
    std::optional<int64_t> wall_clock_ms;
    // Commit after every N piped records (0: only on Commit()/EndOfInput()).
    uint64_t commit_every_records = 0;
    // The task's state directory, for topologies with RocksDB stores.
    std::string state_dir;
    // The operators' cache budget (TaskConfig::cache_budget); null: unbounded.
    std::shared_ptr<CacheBudget> cache_budget;
    // RocksDB's shared memory (TaskConfig::rocksdb); null: RocksDbBudget's defaults.
    std::shared_ptr<RocksDbResources> rocksdb;
    // TaskConfig::input_partitions: the upstream partitions a repartition source merges
    // (records piped to a repartition topic may name any of them).
    int32_t input_partitions = 1;
  };

  static absl::StatusOr<std::unique_ptr<TopologyTestDriver>> Create(const Topology& topology,
                                                                    Options options);
  static absl::StatusOr<std::unique_ptr<TopologyTestDriver>> Create(const Topology& topology) {
    return Create(topology, Options{});
  }
  ~TopologyTestDriver();

  // Processes one record from `topic` (offsets count up per topic from 0). The record
  // timestamp defaults to the driver's wall clock.
  absl::Status PipeInput(std::string_view topic, std::string_view key, std::string_view value,
                         std::optional<int64_t> timestamp_ms = std::nullopt);
  // Reads one record from `topic` without processing it: it takes the next offset, counts
  // as read and is dead-lettered as it is (Task::DeadLetterUnprocessed), e.g. offline input
  // too large to hand to the topology; `truncated`: its dlq.truncated header, if cut.
  absl::Status PipeUnprocessed(std::string_view topic, std::string_view key,
                               std::string_view value, DeadLetterReason reason,
                               std::string_view error, std::string_view truncated = {},
                               std::optional<int64_t> timestamp_ms = std::nullopt);
  // Moves the wall clock forward and runs the wall-clock punctuators that are due.
  absl::Status AdvanceWallClock(int64_t delta_ms);
  absl::Status Commit();
  // Input is over: closes every open window, then commits.
  absl::Status EndOfInput();

  // Takes the records sent to `topic` so far, in send order.
  std::vector<OutputRecord> ReadOutput(std::string_view topic);
  // Takes every record sent so far, all topics, in send order.
  std::vector<OutputRecord> ReadAll();

  StateStore* GetStateStore(std::string_view name);
  // Summed over the tasks (one per sub-topology).
  const TaskCounters& counters() const;
  // The first processor of type P of the tasks (Task::FindProcessor), or nullptr.
  template <typename P>
  P* FindProcessor() {
    for (auto& t : tasks_) {
      if (P* p = t->FindProcessor<P>()) return p;
    }
    return nullptr;
  }
  int64_t wall_clock_ms() const { return *wall_clock_; }

 private:
  // The next record of `topic` (offsets count up from 0) and the sub-topology reading it.
  SourceRecord NextRecord(std::string_view topic, std::string_view key, std::string_view value,
                          std::optional<int64_t> timestamp_ms, int* sub);
  // Counts a piped record: commits every Options::commit_every_records.
  absl::Status CountRecord();
  class Collector;
  TopologyTestDriver() = default;

  std::shared_ptr<int64_t> wall_clock_;
  std::unique_ptr<Collector> collector_;
  // One task per sub-topology, partition 0; records sent to a repartition topic go to
  // the task that reads it, in send order, once the call that sent them is done.
  std::vector<std::unique_ptr<Task>> tasks_;
  absl::Status Drain();
  mutable TaskCounters summed_;
  Options options_;
  StringMap<int64_t> next_offset_;
  StringMap<int> source_sub_;  // input topic -> the sub-topology reading it
  uint64_t since_commit_ = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_TOPOLOGY_TEST_DRIVER_H_
