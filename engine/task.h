// A task: one instance of a topology for one input partition, with its own processors
// and stores. Driven by one thread; nothing here is thread-safe.
//
// Lifecycle (checked: a call in the wrong state returns FailedPrecondition):
//
//   Create() --> Running --Close()--> Closed
//
// In Running: Process() per input record, in offset order; Commit() at each commit
// interval (processors flush in topological order, then stores, then the collector);
// PunctuateWallClock() from the thread loop; EndOfInput() when a bounded input ends.
#ifndef STREAMMETRICS_ENGINE_TASK_H_
#define STREAMMETRICS_ENGINE_TASK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "operators/strings.h"
#include "absl/status/statusor.h"
#include "engine/record_collector.h"
#include "operators/processor.h"
#include "statestore/rocksdb_stores.h"
#include "statestore/state_store.h"
#include "topology/topology.h"

namespace streammetrics {

struct TaskConfig {
  std::string application_id = "streammetrics";
  int32_t partition = 0;
  std::string dead_letter_topic = "metrics-dead-letter";
  // The wall clock (ms since epoch). Default: the system clock.
  std::function<int64_t()> wall_clock;
  // Where this task's RocksDB stores live (<state.dir>/<application.id>/<task id>), one
  // directory per store. Required when the topology has RocksDB stores.
  std::string state_dir;
  // Shared by every RocksDB store of the process; created on demand when null.
  std::shared_ptr<RocksDbResources> rocksdb;
};

// Kafka Streams' task id: "<subtopology>_<partition>" (one subtopology for now).
std::string TaskId(int32_t partition);

class Task final : public ProcessorContext {
 public:
  // Instantiates the topology: creates stores and processors, wires and inits them.
  // `collector` must outlive the task.
  static absl::StatusOr<std::unique_ptr<Task>> Create(const Topology& topology, TaskConfig config,
                                                      RecordCollector* collector);
  ~Task() override;

  // Routes one input record to the source of its topic. Bad records are dead-lettered
  // and return OK; a non-OK status means the task cannot go on (store failure).
  absl::Status Process(const SourceRecord& record);
  absl::Status Commit();
  absl::Status PunctuateWallClock();
  absl::Status EndOfInput();
  absl::Status Close();

  // ProcessorContext.
  std::string_view application_id() const override { return config_.application_id; }
  int32_t partition() const override { return config_.partition; }
  int64_t stream_time_ms() const override { return stream_time_; }
  void ObserveEventTime(int64_t timestamp_ms) override;
  int64_t wall_clock_ms() const override { return config_.wall_clock(); }
  // Outside Process() (a punctuator, Flush, EndOfInput) there is no input record: an empty
  // one with offset -1 stands in, so a dead letter sent from there carries no bytes but
  // still reaches the dead-letter topic with its reason and error.
  const SourceRecord& source_record() const override {
    return current_ != nullptr ? *current_ : kNoRecord;
  }
  StateStore* GetStateStore(std::string_view name) override;
  void DeadLetter(DeadLetterReason reason, std::string_view error) override;
  void Send(std::string_view topic, std::string_view key, std::string_view value,
            int64_t timestamp_ms) override;
  void Schedule(PunctuationType type, int64_t interval_ms, Punctuator* punctuator) override;
  TaskCounters& counters() override { return counters_; }
  const TaskCounters& counters() const { return counters_; }

 private:
  enum class State { kRunning, kClosed };
  struct Scheduled {
    PunctuationType type;
    int64_t interval_ms;
    int64_t next_ms;  // INT64_MIN: not yet anchored
    Punctuator* punctuator;
  };

  Task(TaskConfig config, RecordCollector* collector);
  absl::StatusOr<std::unique_ptr<StateStore>> OpenStore(const StoreDef& def);
  absl::Status CheckRunning() const;
  absl::Status RunPunctuators(PunctuationType type, int64_t now);

  TaskConfig config_;
  RecordCollector* collector_;
  State state_ = State::kRunning;
  std::vector<std::unique_ptr<ProcessorBase>> processors_;  // topological order
  StringMap<RawSource*> sources_;  // by topic
  StringMap<std::unique_ptr<StateStore>> stores_;
  std::vector<Scheduled> scheduled_;
  int64_t stream_time_ = INT64_MIN;
  int64_t next_stream_punctuation_ = INT64_MAX;
  static inline const SourceRecord kNoRecord{};
  const SourceRecord* current_ = nullptr;
  TaskCounters counters_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_TASK_H_
