// The Kafka runtime: a topology run as a Kafka Streams application. One process is one
// instance of the application (`application.id` = consumer group = prefix of the
// internal topics); it runs N stream threads, each with one consumer (cooperative-
// sticky member of the group), one producer (transactional under exactly_once_v2, id
// <application.id>-<instance>-<thread>) and the tasks of its assigned partitions (one
// task per input partition, stores under <state_dir>/<task id>).
//
// A thread's loop: poll → process records per task in offset order → wall-clock
// punctuation (idle windows) every 100 ms → every commit_interval_ms commit all its
// tasks at once: PrepareCommit of each task (changes and markers to the changelogs),
// one transaction with the outputs, changelogs and the tasks' input offsets, then
// CompleteCommit (staged changes to the local stores, checkpoints). A failed commit
// aborts the transaction and rebuilds every task of the thread from its changelogs to
// its last commit, resuming input at the commit markers' offsets — which is exact even
// on the dev broker, which drops transactional offsets and shows aborted records.
//
// Rebalances (cooperative): newly assigned partitions are assigned paused; the thread's
// loop — not the rebalance callback, which must return soon — makes their tasks one at a
// time between polls, restoring their stores (progress logged; what a retry may cure is
// retried with backoff for up to 10 minutes), then seeks each to its restored offset and
// resumes it. Revoked partitions are committed (all of the thread's tasks) and their
// tasks closed cleanly (checkpoint); lost ones are closed without a commit.
//
// Threads: Start() spawns them; Stop() asks them to finish the current batch, commit,
// checkpoint and leave the group; Join() waits. Counters are readable from any thread.
#ifndef STREAMMETRICS_ENGINE_KAFKA_RUNTIME_H_
#define STREAMMETRICS_ENGINE_KAFKA_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kafka/process_id.h"
#include "engine/kafka/producer.h"
#include "statestore/cache_budget.h"
#include "statestore/rocksdb_stores.h"
#include "topology/topology.h"

namespace streammetrics::kafka {

class DevBroker;

// A task: sub-topology and partition (of the topic the sub-topology reads).
struct TaskKey {
  int sub = 0;
  int32_t partition = 0;
  friend auto operator<=>(const TaskKey&, const TaskKey&) = default;
};

enum class ProcessingGuarantee {
  // Outputs, changelogs, markers and input offsets in one transaction per commit.
  kExactlyOnceV2,
  // No transactions: outputs and changelogs flushed, then offsets committed. State is
  // still restored exactly (commit markers); outputs may repeat after a crash.
  kAtLeastOnce,
};

// The prefetch settings of the stream threads' consumers (runtime.cc says why: bounded in
// bytes only, 32 MiB a thread, a stopped fetch retried after 10 ms); `kafka:` settings
// override them.
Properties StreamThreadPrefetch();

struct RuntimeOptions {
  std::string application_id = "streammetrics";
  // librdkafka properties for every client (bootstrap.servers, session.timeout.ms, ...).
  Properties kafka;
  ProcessingGuarantee guarantee = ProcessingGuarantee::kExactlyOnceV2;
  int threads = 1;
  int64_t commit_interval_ms = 100;
  // Task stores live under <state_dir>/<task id>; required with RocksDB stores.
  std::string state_dir;
  // Distinguishes this instance's transactional ids (<application id>-<instance id>-<thread>)
  // from other instances'. Empty: the process id kept in state_dir (engine/kafka/process_id.h),
  // made there the first time — unique per state directory, stable across restarts.
  std::string instance_id;
  std::shared_ptr<RocksDbResources> rocksdb;
  std::shared_ptr<CacheBudget> cache_budget;
  uint64_t checkpoint_every_changes = 100'000;
  // A thread whose tasks have had nothing to commit for this long commits anyway, writing
  // fresh commit markers (same offsets): window stores' changelogs delete by time (their
  // retention: the store's plus a day), and a task whose markers had all expired could
  // not tell where its input stands. Default: an hour.
  int64_t marker_refresh_ms = 3'600'000;
  // The dev broker in this process, if any: internal topics are created on it (its
  // protocol has no CreateTopics).
  DevBroker* embedded_broker = nullptr;
  std::string dead_letter_topic = "metrics-dead-letter";
  // A bounded run (`streammetrics run --until-end`): every input partition is read up to
  // its end offset as of Start() (records produced since are left for a later run); a
  // task that reaches it finishes its input — every open window closes, as at the end
  // of a file in `process` — and once every task of the instance has finished (and it
  // holds them all, or the group has not moved a partition for 3 s) the runtime commits
  // and stops by itself: finished() turns true, Join() returns. Tasks of a repartition
  // topic finish when every upstream task has reached its end (operators/repartition.h).
  bool until_end = false;
  // Repartition topics keep every record (retention.ms=-1): what the downstream tasks
  // have committed is deleted from them (DeleteRecords up to the committed offsets) this
  // often, as Kafka Streams' repartition.purge.interval.ms. 0: never. Not on the dev
  // broker, which has no DeleteRecords.
  int64_t repartition_purge_interval_ms = 30'000;
};

// Counters of the whole instance, summed over threads; updated at each commit.
struct RuntimeCounters {
  uint64_t records_read = 0;
  uint64_t records_processed = 0;
  uint64_t windows_emitted = 0;
  uint64_t dead_letters = 0;
  uint64_t duplicates = 0;
  uint64_t dedupe_ids_evicted = 0;  // forgotten before their time: dedupe.max_ids reached
  uint64_t late_dropped = 0;         // late for every window definition: dropped
  uint64_t late_window_updates = 0;  // (record, window definition) pairs skipped as late
  uint64_t commits = 0;
  uint64_t rebuilds = 0;  // task rebuilds after failed commits
  int tasks = 0;
  // Sum over the instance's tasks of their last committed input offset: the input
  // records whose processing is committed (when every partition is assigned here).
  int64_t committed_input = 0;
  // Input records of the instance's partitions not yet committed: each partition's high
  // watermark as of its consumer's last fetch (no broker round trip) minus its committed
  // offset (its first offset when nothing is committed yet). 0 before the first fetch.
  int64_t input_lag = 0;
  // Milliseconds, summed over the stream threads, spent other than processing: waiting
  // in the consumer's poll with nothing queued (a thread that keeps up mostly waits; one
  // with a backlog should not), in commits, in rebalance callbacks and making assigned
  // partitions' tasks (restores; a revocation's commit counts in both). Published at commits and rebalances.
  uint64_t input_wait_ms = 0;
  uint64_t commit_ms = 0;
  uint64_t rebalance_ms = 0;

  // Field by field (the instance's counters are its threads' summed).
  RuntimeCounters& operator+=(const RuntimeCounters& c);
};

class Runtime {
 public:
  // Checks the topology (one source topic) and the options.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const Topology& topology,
                                                         RuntimeOptions options);
  ~Runtime();

  // Checks the source topic and output topics exist, creates the changelog topics
  // (partitions = the source topic's; compacted) or checks them, then starts the
  // threads. FailedPrecondition naming the topic when one is missing or mis-partitioned.
  absl::Status Start();
  // Asks every thread to commit, close its tasks and leave the group. Returns at once.
  void Stop();
  // Waits for the threads; the first thread failure, if any.
  absl::Status Join();
  // A stream thread failed (what retries cannot cure: a record the broker refuses
  // commit after commit, a store that cannot be opened): it stops the runtime as Stop()
  // does — the other threads commit and close — and Join() returns its error (as Kafka
  // Streams' default SHUTDOWN_CLIENT does). Live; `run` exits on it.
  bool failed() const { return failed_.load(); }
  // A bounded run (RuntimeOptions::until_end) has read its input to the end and is
  // stopping; Join() returns once its last commit is done.
  bool finished() const { return finished_.load(); }
  // What the stream threads' consumers are created with (client.id aside): prefetch
  // bounds, on the dev broker — in this process or another's, known after Start() —
  // short fetch waits and sessions, then `kafka:` (whose values win).
  Properties ConsumerProperties() const;
  RuntimeCounters counters() const;
  // Messages the stream threads have taken from their consumers (records re-read after
  // a rebuild count again; partition ends and errors count too). Live, not per commit:
  // for a producer in the same process that must not outrun the engine.
  uint64_t consumed() const;

 private:
  class Thread;
  Runtime(const Topology& topology, RuntimeOptions options);
  absl::Status EnsureTopics();

  const Topology& topology_;
  RuntimeOptions options_;
  std::string source_topic_;  // the input
  std::vector<std::string> sub_topics_;  // by sub-topology: the topic it reads
  int SubtopologyOf(std::string_view topic) const {
    for (size_t i = 0; i < sub_topics_.size(); ++i) {
      if (sub_topics_[i] == topic) return static_cast<int>(i);
    }
    return -1;
  }
  int32_t source_partitions_ = 0;
  std::vector<std::string> written_topics_;  // outputs, dead letters, changelogs
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<bool> finished_{false};
  // A bounded run, by sub-topology and partition of the topic it reads: [low, high)
  // offsets at Start() — the input's end; a repartition topic's start of this run.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> bounds_;
  // A bounded run's thread is done: stop everything once all are (Thread::Run).
  void MaybeFinishBoundedRun();
  bool on_dev_broker_ = false;  // set by EnsureTopics, before the threads start
  // Held while the instance is its state directory's (its process id comes from there).
  std::unique_ptr<StateDirectoryLock> state_lock_;
  std::vector<std::unique_ptr<Thread>> threads_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_RUNTIME_H_
