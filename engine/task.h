// A task: one instance of a topology for one input partition, with its own processors
// and stores. Driven by one thread; nothing here is thread-safe.
//
// Lifecycle (checked: a call in the wrong state returns FailedPrecondition):
//
//   Create() --> Running --Close()--> Closed
//                   |                   ^
//                   +--a commit fails--> Failed --Close()/CloseAsCrashed()
//
// In Running: Process() per input record, in offset order; Commit() at each commit
// interval; PunctuateWallClock() from the thread loop; EndOfInput() when a bounded input
// ends. A failed commit leaves the task Failed: its in-memory state is ahead of what was
// committed, so the caller closes it and creates it again, which restores the state of
// the last successful commit (Kafka Streams' "task corrupted").
//
// Changelogs. With TaskConfig::changelog set, every store is wrapped in the changelogging
// layer (statestore/logged_stores.h) and Create() first restores each store from its
// changelog — from the local checkpoint for RocksDB stores, from the start for in-memory
// ones — to the task's last complete commit, then resumes input at that commit's offsets
// (committed_offsets()). A commit then runs:
//   1. processors flush in topological order (changes staged and appended to changelogs);
//   2. a commit marker {incarnation, sequence, input offsets} to every changelog;
//   3. the collector's flush — under exactly-once the transaction commit that makes
//      outputs, changelog records and markers visible at once;
//   4. the staged changes reach the local stores;
//   5. every checkpoint_every_changes changes: RocksDB stores flush their memtables and
//      the checkpoint file (<state_dir>/.checkpoint) records each store's changelog
//      position. A clean Close() writes one too, so a clean restart replays nothing and
//      a crash replays only the changes since the last checkpoint.
// A local store that is corrupt (DataLoss when opened or read) is wiped and rebuilt from
// its changelog; restore_report() says what restore did.
//
// Without changelogs, a commit flushes processors, then every store (the local store is
// the only copy), then the collector.
#ifndef STREAMMETRICS_ENGINE_TASK_H_
#define STREAMMETRICS_ENGINE_TASK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "operators/strings.h"
#include "absl/status/statusor.h"
#include "engine/record_collector.h"
#include "operators/processor.h"
#include "statestore/cache_budget.h"
#include "statestore/changelog.h"
#include "statestore/logged_stores.h"
#include "statestore/rocksdb_stores.h"
#include "statestore/state_store.h"
#include "topology/topology.h"

namespace streammetrics {

// The steps of a commit with changelogs, for fault injection (see Task).
enum class CommitStep {
  kProcessorsFlushed,   // changes staged and appended to the changelogs
  kMarkersAppended,     // commit markers appended and acknowledged
  kCollectorCommitted,  // the collector's flush (the transaction) succeeded
  kFirstStoreApplied,   // the first changelogged store got its staged changes
  kStoresApplied,       // every store did
  kCheckpointFlushed,   // RocksDB stores flushed, checkpoint file not yet written
};

struct TaskConfig {
  std::string application_id = "streammetrics";
  // The task is sub-topology `subtopology` of the topology (only its nodes and stores)
  // for `partition`; `input_partitions`: the input topic's partition count (and every
  // repartition topic's).
  int subtopology = 0;
  int32_t partition = 0;
  int32_t input_partitions = 1;
  std::string dead_letter_topic = "metrics-dead-letter";
  // The largest dead letter (key, value and headers) the collector can take: the Kafka
  // runtime passes its producer's message.max.bytes. A larger one is cut to fit — the
  // value's first bytes kept (then the key's, if the key alone is too large) — with a
  // header `dlq.truncated: key=<bytes>,value=<bytes>` giving the original sizes; replay
  // skips it. Without the cut the dead letter failed every commit of its task, again
  // after every rebuild. 0: no bound.
  int64_t dead_letter_max_bytes = 1'000'000;
  // The wall clock (ms since epoch). Default: the system clock.
  std::function<int64_t()> wall_clock;
  // Where this task's RocksDB stores live (<state.dir>/<application.id>/<task id>), one
  // directory per store. Required when the topology has RocksDB stores.
  std::string state_dir;
  // Shared by every RocksDB store of the process; created on demand when null.
  std::shared_ptr<RocksDbResources> rocksdb;
  // The process-wide budget of operator caches (statestore/cache_budget.h); null:
  // unbounded.
  std::shared_ptr<CacheBudget> cache_budget;
  // Changelogs (both or neither; must outlive the task). See the class comment.
  ChangelogWriter* changelog = nullptr;
  ChangelogReader* changelog_reader = nullptr;
  // Checkpoint after a commit once this many changes were logged since the last one.
  // Fewer: more frequent RocksDB flushes; more: a longer replay after a crash.
  // Default: 100,000.
  uint64_t checkpoint_every_changes = 100'000;
  // The runtime reports when its consumer reaches the end of the task's input partition
  // (NoteInputEnd); otherwise input_reached_end() is always true.
  bool input_end_reported = false;
  // A bounded run (ProcessorContext::bounded_input()); none: unbounded.
  std::optional<BoundedInput> bounded;
  // Fault injection for tests: called at each step of a commit with changelogs; a
  // non-OK status fails the commit at that step.
  std::function<absl::Status(CommitStep)> fault_injector;
};

// What Create() did to restore one store.
struct StoreRestoreReport {
  std::string store;
  int64_t from_offset = 0;  // the checkpoint's position, or 0
  RestoreStats stats;
};
struct TaskRestoreReport {
  std::vector<StoreRestoreReport> stores;
  uint64_t last_sequence = 0;  // the commit the task resumes after (0: none)
  // Non-empty when local state was wiped and rebuilt from the changelogs: why.
  std::string rebuilt_because;
};

// Kafka Streams' task id: "<subtopology>_<partition>".
std::string TaskId(int subtopology, int32_t partition);
inline std::string TaskId(int32_t partition) { return TaskId(0, partition); }

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
  // Reads `record` without processing it: counts it as read (and its offset as consumed)
  // and dead-letters it as it is with `reason` and `error`. For input that cannot reach
  // its source whole (offline input over the document limit, a cut frame). `truncated`,
  // when not empty, is the dead letter's dlq.truncated header: record.value is a cut of
  // the original, whose sizes it gives ("key=<bytes>,value=<bytes>").
  absl::Status DeadLetterUnprocessed(const SourceRecord& record, DeadLetterReason reason,
                                     std::string_view error, std::string_view truncated = {});
  absl::Status Commit();
  // Commit in two phases, for a stream thread that commits several tasks in one
  // transaction: PrepareCommit() (steps 1-2: processors flush, markers appended and
  // acknowledged), then the caller commits its transaction, then CompleteCommit()
  // (steps 4-5) — or AbortCommit() when the transaction failed, which fails the task.
  // With changelogs only.
  absl::Status PrepareCommit();
  // PrepareCommit in three steps, for a thread that commits many tasks with one producer:
  // FlushForCommit() of every task, one flush of the producer (every change
  // acknowledged), AppendCommitMarkers() of every task, one flush, then
  // MarkersAcknowledged() of every task. A flush failure is the caller's to report with
  // AbortCommit().
  absl::Status FlushForCommit();
  absl::Status AppendCommitMarkers();
  absl::Status MarkersAcknowledged();
  absl::Status CompleteCommit();
  absl::Status AbortCommit(absl::Status why);
  absl::Status PunctuateWallClock();
  // The input has ended: every processor's EndOfInput() (windows close), then a commit.
  absl::Status EndOfInput();
  // EndOfInput() without the commit, for a runtime that commits its tasks together.
  absl::Status FinishInput();
  // A processor signalled the end of a bounded run's input (SignalEndOfInput) and
  // FinishInput() has not run since.
  bool input_end_signalled() const { return input_end_signalled_; }
  absl::Status Close();
  // Fault injection: ends the task as a kill -9 would: no checkpoint, RocksDB stores
  // lose what they had not flushed, nothing else is written.
  void CloseAsCrashed();

  // The input offsets of the last successful commit (restored ones after Create()):
  // where input resumes. Empty before the first commit.
  std::vector<InputOffset> committed_offsets() const;
  // Between PrepareCommit and CompleteCommit: the input offsets being committed.
  std::vector<InputOffset> pending_offsets() const {
    return pending_commit_.has_value() ? pending_commit_->offsets : std::vector<InputOffset>{};
  }
  // The sequence of the last successful commit (restored or made); 0: none yet.
  uint64_t last_committed_sequence() const {
    return last_commit_.has_value() ? last_commit_->sequence : 0;
  }
  const TaskRestoreReport& restore_report() const { return restore_report_; }
  // The first processor of type P, or nullptr: introspection for tests and metrics.
  template <typename P>
  P* FindProcessor() {
    for (auto& p : processors_) {
      if (auto* found = dynamic_cast<P*>(p.get())) return found;
    }
    return nullptr;
  }

  // ProcessorContext.
  std::string_view application_id() const override { return config_.application_id; }
  int32_t partition() const override { return config_.partition; }
  int32_t input_partitions() const override { return config_.input_partitions; }
  bool watermarked() const override { return watermarked_; }
  const BoundedInput* bounded_input() const override {
    return config_.bounded.has_value() ? &*config_.bounded : nullptr;
  }
  void SignalEndOfInput() override { input_end_signalled_ = true; }
  bool input_reached_end() const override { return !config_.input_end_reported || input_reached_end_; }
  // The consumer reached the end of the task's input partition (TaskConfig::input_end_reported).
  void NoteInputEnd() { input_reached_end_ = true; }
  void SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                       std::string_view value, int64_t timestamp_ms) override;
  int64_t stream_time_ms() const override { return stream_time_; }
  void ObserveEventTime(int64_t timestamp_ms) override;
  absl::Status AdvanceStreamTime(int64_t timestamp_ms) override;
  int64_t wall_clock_ms() const override { return config_.wall_clock(); }
  // Outside Process() (a punctuator, Flush, EndOfInput) there is no input record: an empty
  // one with offset -1 stands in, so a dead letter sent from there carries no bytes but
  // still reaches the dead-letter topic with its reason and error.
  const SourceRecord& source_record() const override {
    return current_ != nullptr ? *current_ : kNoRecord;
  }
  const SourceRecord* ReplaceSourceRecord(const SourceRecord* record) override {
    return std::exchange(current_, record);
  }
  StateStore* GetStateStore(std::string_view name) override;
  void DeadLetter(DeadLetterReason reason, std::string_view error) override;
  void Send(std::string_view topic, std::string_view key, std::string_view value,
            int64_t timestamp_ms) override;
  void Schedule(PunctuationType type, int64_t interval_ms, Punctuator* punctuator) override;
  TaskCounters& counters() override { return counters_; }
  CacheBudget* cache_budget() override { return config_.cache_budget.get(); }
  const TaskCounters& counters() const { return counters_; }

 private:
  enum class State { kRunning, kFailed, kClosed };
  // DeadLetter with the original's sizes already known to be `truncated` (empty: the
  // source record is the original).
  void SendDeadLetter(DeadLetterReason reason, std::string_view error,
                      std::string_view truncated);
  struct Source {
    RawSource* node;
    int32_t partition = 0;
    int64_t next_offset = -1;  // -1: no record since the task started
  };
  struct Logged {
    LoggedStore* store;
    std::string name;
    bool durable;  // a RocksDB store: checkpointed
    // The changelog's end as the last restore read it: a checkpoint position at least
    // (the producer's acknowledged end knows only what it wrote itself — nothing, when
    // the producer is new, as after every restore).
    int64_t restored_end = 0;
  };
  struct Scheduled {
    PunctuationType type;
    int64_t interval_ms;
    int64_t next_ms;  // INT64_MIN: not yet anchored
    Punctuator* punctuator;
  };

  Task(TaskConfig config, RecordCollector* collector);
  static absl::StatusOr<std::unique_ptr<Task>> CreateOnce(const Topology& topology,
                                                          TaskConfig config,
                                                          RecordCollector* collector,
                                                          bool wipe_local_state);
  // Before the opens (on the creating thread): whether a durable store was on disk
  // already; the RocksDB resources, created if none were given.
  void NoteExisting(const StoreDef& def);
  // Opens the store itself (RocksDB or in memory); safe to run for several stores at
  // once (touches no member but reads config_).
  absl::StatusOr<std::unique_ptr<StateStore>> OpenLocalStore(const StoreDef& def);
  // The store behind its changelog, when the task has one (in topology order).
  std::unique_ptr<StateStore> WrapStore(const StoreDef& def, std::unique_ptr<StateStore> local);
  absl::Status RestoreFromChangelogs();
  absl::Status CommitWithChangelogs();
  absl::Status Checkpoint();
  absl::Status Fault(CommitStep step);
  absl::Status Fail(absl::Status s);
  CommitMarker NextMarker() const;
  absl::Status CheckRunning() const;
  absl::Status RunPunctuators(PunctuationType type, int64_t now);
  // Behind a repartition: every processor hears of a stream time not yet told (OnWatermark).
  absl::Status NotifyWatermark();

  TaskConfig config_;
  RecordCollector* collector_;
  State state_ = State::kRunning;
  std::vector<std::unique_ptr<ProcessorBase>> processors_;  // topological order
  StringMap<Source> sources_;  // by topic
  StringMap<std::unique_ptr<StateStore>> stores_;
  std::vector<Logged> logged_;
  std::vector<std::string> existed_before_open_;  // durable stores found on disk
  CommitAttempt attempt_;
  std::optional<CommitMarker> last_commit_;
  std::optional<CommitMarker> pending_commit_;  // between PrepareCommit and CompleteCommit
  uint64_t changes_at_checkpoint_ = 0;
  TaskRestoreReport restore_report_;
  std::vector<Scheduled> scheduled_;
  int64_t stream_time_ = INT64_MIN;
  bool watermarked_ = false;
  bool input_end_signalled_ = false;
  bool input_reached_end_ = false;
  int64_t notified_watermark_ = INT64_MIN;  // the last stream time given to OnWatermark
  int64_t next_stream_punctuation_ = INT64_MAX;
  static inline const SourceRecord kNoRecord{};
  const SourceRecord* current_ = nullptr;
  TaskCounters counters_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_TASK_H_
