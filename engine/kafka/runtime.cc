#include "engine/kafka/runtime.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <mutex>
#include <pthread.h>
#include <set>

#include "engine/kafka/changelog_reader.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/process_id.h"
#include "engine/kafka/kafka_common.h"
#include "engine/log.h"
#include "engine/task.h"
#include "operators/strings.h"

namespace streammetrics::kafka {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Commits in a row that fail on a record the broker refuses (too large, say) before a
// stream thread gives up: a few, as the first may meet a limit a rebuild's smaller redo
// passes (a commit's changes sent at once).
constexpr int kRefusedCommitLimit = 5;

// How long a task's restore may keep failing on what a retry may cure (the broker
// unreachable, say) before its stream thread gives up and fails: as long as an outage a
// running task rides out (its commits retried meanwhile), bounded so that a broker that
// never comes back ends the run with the error instead of a silent wait.
constexpr int64_t kRestoreGiveUpMs = 10 * 60'000;

// How long a task whose changelogs hold no commit while its group committed offsets is
// looked at again before its thread refuses to go on (RestoreDue).
constexpr int64_t kRefuseAfterMs = 30'000;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

int64_t ElapsedMs(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// Counts what a task's producer face was given, so a thread knows whether a commit has
// anything to commit.
class CountingTaskProducer final : public RecordCollector, public ChangelogWriter {
 public:
  CountingTaskProducer(Producer* producer, std::string application_id, int32_t partition)
      : inner_(producer, std::move(application_id), partition) {}
  void Send(std::string_view topic, std::string_view key, std::string_view value,
            int64_t timestamp_ms, std::span<const Header> headers) override {
    ++sent_;
    inner_.Send(topic, key, value, timestamp_ms, headers);
  }
  void SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                       std::string_view value, int64_t timestamp_ms) override {
    ++sent_;
    inner_.SendToPartition(topic, partition, key, value, timestamp_ms);
  }
  void Append(std::string_view store, const ChangeRecord& record) override {
    ++sent_;
    inner_.Append(store, record);
  }
  absl::Status Flush() override { return inner_.Flush(); }
  int64_t EndOffset(std::string_view store) const override { return inner_.EndOffset(store); }
  uint64_t sent() const { return sent_; }

 private:
  TaskProducer inner_;
  uint64_t sent_ = 0;
};

void AddTaskCounters(const TaskCounters& t, RuntimeCounters* c) {
  c->records_read += t.records_read;
  c->records_processed += t.records_processed;
  c->windows_emitted += t.windows_emitted;
  c->duplicates += t.duplicates_dropped;
  c->dedupe_ids_evicted += t.dedupe_ids_evicted;
  c->late_dropped += t.late_dropped;
  c->late_window_updates += t.late_window_updates;
  for (uint64_t d : t.dead_letters) c->dead_letters += d;
}

}  // namespace

class Runtime::Thread {
 public:
  Thread(Runtime* runtime, int index) : rt_(runtime), index_(index) {}
  ~Thread() {
    if (thread_.joinable()) thread_.join();
  }

  void Start() {
    thread_ = std::thread([this] {
      // "sm:stream-<i>" in top -H, perf and /proc (librdkafka's are "rdk:...").
      pthread_setname_np(pthread_self(), StrCat("sm:stream-", index_).substr(0, 15).c_str());
      absl::Status s = Run();
      if (!s.ok()) {
        Log(LogLevel::kError, StrCat("stream thread ", index_, " failed: ", s.message(),
                                     "; stopping the other threads"));
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        status_ = s;
      }
      if (!s.ok()) {
        rt_->failed_.store(true);
        rt_->stop_.store(true);
      }
    });
  }
  absl::Status Join() {
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  RuntimeCounters counters() const {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_;
  }
  uint64_t consumed() const { return consumed_.load(std::memory_order_relaxed); }
  // A bounded run: every task of the thread has finished its input (none restoring),
  // how many it holds, and when (ms, steady clock) its assignment last changed.
  bool bounded_done() const { return bounded_done_.load(); }
  int finished_tasks() const { return finished_tasks_.load(); }
  int64_t last_rebalance_ms() const { return last_rebalance_ms_.load(); }

 private:
  struct TaskEntry {
    std::unique_ptr<CountingTaskProducer> out;
    std::unique_ptr<ChangelogReader> reader;
    std::unique_ptr<Task> task;
    uint64_t sent_at_commit = 0;
    uint64_t read_at_commit = 0;
    uint64_t windows_at_commit = 0;
    // A bounded run: the next offset of the task's input partition (-1: not known yet),
    // and whether the task has finished its input (Task::FinishInput).
    int64_t position = -1;
    bool finished = false;
  };

  const RuntimeOptions& options() const { return rt_->options_; }
  bool eos() const { return options().guarantee == ProcessingGuarantee::kExactlyOnceV2; }
  std::string TransactionalId() const {
    return StrCat(options().application_id, "-", options().instance_id, "-", index_);
  }

  absl::Status Run();
  absl::Status Setup();
  absl::Status NewProducer();
  absl::Status ProcessMessage(const rd_kafka_message_t* m);
  absl::Status CommitAll(bool force);
  absl::Status CommitTasks(bool force);  // CommitAll's work; CommitAll times it, publishes counters
  bool WindowsSinceCommit() const {
    for (const auto& [p, e] : tasks_) {
      if (e.task->counters().windows_emitted != e.windows_at_commit) return true;
    }
    return false;
  }
  absl::Status RebuildTasks(const absl::Status& why);
  // After a commit, every repartition_purge_interval_ms: deletes (DeleteRecords) what the
  // thread's repartition tasks have committed from their partitions. Asynchronous: the
  // answers are read at the next purge and failures logged.
  void PurgeRepartitionTopics();
  // A bounded run: finishes the input of the tasks that reached their end (a source task
  // at its partition's end offset, a repartition one once it signalled), pauses their
  // partitions, updates bounded_done_.
  absl::Status FinishBoundedTasks();
  bool ReadsInput(TaskKey key) const { return TopicOf(key) == rt_->source_topic_; }
  // The bounded run's [low, high) of the task's partition as of Start().
  std::pair<int64_t, int64_t> Bounds(TaskKey key) const {
    return rt_->bounds_[key.sub][key.partition];
  }
  // Drops the producer's held records and aborts the open transaction, if any; when the
  // abort fails (fenced, fatal), a new producer (retried while the broker is away).
  absl::Status AbortTransaction();
  absl::StatusOr<int64_t> CreateTask(TaskKey key);
  // Partitions assigned whose tasks are not made yet: paused, restored by the loop
  // (RestoreDue), never inside a rebalance callback.
  void AddRestoring(rd_kafka_topic_partition_list_t* parts);
  void AddRestoring(const std::vector<TaskKey>& keys);
  void PauseOrResume(const std::vector<TaskKey>& keys, bool pause);
  // Makes the task of one partition whose restore is due, seeks its input to the restored
  // commit and resumes it; what a retry may cure (the broker away, a store another thread
  // still holds) is retried with backoff while the loop goes on — up to
  // kRestoreGiveUpMs of failing, then the thread fails with the error.
  absl::Status RestoreDue();
  // The group's committed offset of `partition` (INVALID: none).
  absl::StatusOr<int64_t> GroupOffset(TaskKey key);
  // What a retry may cure (Unavailable, Aborted, DeadlineExceeded) is retried with
  // backoff (*backoff_ms, doubled up to 5 s) until the thread is stopped; true: retry.
  bool ShouldRetry(const absl::Status& s, std::string_view what, int64_t* backoff_ms);
  void CloseTask(TaskKey key);
  absl::Status Seek(const std::map<TaskKey, int64_t>& offsets);
  const std::string& TopicOf(TaskKey key) const { return rt_->sub_topics_[key.sub]; }
  // The task of a topic's partition (the sub-topology reading the topic).
  TaskKey KeyOf(const char* topic, int32_t partition) const {
    return TaskKey{rt_->SubtopologyOf(topic), partition};
  }
  void OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts);
  void PublishCounters();
  // refused_at_: where each task's input was when a commit was refused.
  void RecordRefusedPositions();
  // The last commit reached every partition's position of the last refused one.
  bool PassedRefusedCommit() const;
  // Results of offset commits (at_least_once; asynchronous between rebalances): a
  // failure is logged, nothing else — the commit markers hold the same offsets.
  static void OffsetCommitCallback(rd_kafka_t*, rd_kafka_resp_err_t err,
                                   rd_kafka_topic_partition_list_t*, void* opaque) {
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    auto* self = static_cast<Thread*>(opaque);
    LogEvery(StrCat("commit-offsets-", self->index_), 10'000, LogLevel::kWarning,
             StrCat("thread ", self->index_, ": commit offsets: ", rd_kafka_err2str(err),
                    " (the commit markers hold them)"));
  }
  static void RebalanceCallback(rd_kafka_t*, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<Thread*>(opaque);
    const auto started = Clock::now();
    self->OnRebalance(err, parts);
    self->rebalance_time_ += Clock::now() - started;
    self->PublishCounters();  // with the callback's own time
  }

  Runtime* rt_;
  int index_;
  std::thread thread_;
  mutable std::mutex mu_;
  absl::Status status_;
  RuntimeCounters counters_;  // guarded by mu_
  uint64_t evicted_logged_ = 0;  // dedupe evictions as of the last warning
  uint64_t key_mismatches_logged_ = 0;  // key_mismatch dead letters, likewise
  std::atomic<uint64_t> consumed_{0};  // messages taken from the consumer, live
  std::atomic<bool> bounded_done_{false};
  std::atomic<int> finished_tasks_{0};
  std::atomic<int64_t> last_rebalance_ms_{0};
  RuntimeCounters retired_;   // counters of closed tasks; thread-local

  KafkaHandle consumer_;
  std::unique_ptr<Producer> producer_;
  std::unique_ptr<KafkaChangelogReader> reader_;
  // DeleteRecords answers (PurgeRepartitionTopics); destroyed before the consumer.
  std::unique_ptr<rd_kafka_queue_t, decltype(&rd_kafka_queue_destroy)> purge_results_{nullptr, &rd_kafka_queue_destroy};
  Clock::time_point last_purge_ = Clock::now();
  std::map<TaskKey, int64_t> purged_;  // the offset each partition was purged up to
  std::map<TaskKey, TaskEntry> tasks_;
  rd_kafka_topic_t* last_rkt_ = nullptr;  // ProcessMessage's topic of the last record
  int last_sub_ = -1;
  bool in_transaction_ = false;
  bool closing_ = false;
  // The tasks' wall clock (validation's bounds, wall-clock punctuation): read once per
  // batch of records, not once per record (a clock read costs ~30 ns on a VM's clock).
  int64_t wall_ms_ = NowMs();
  bool assigned_once_ = false;  // the group gave this consumer an assignment (maybe empty)
  absl::Status rebalance_error_;
  struct Restoring {
    Clock::time_point next_attempt;
    // Held back until the group's next rebalance (or next_attempt): the group no longer
    // knew this member at a commit, so the partition may be another's after the rejoin.
    bool awaiting_rejoin = false;
    Clock::time_point failing_since{};  // {}: not failing
    int64_t backoff_ms = 100;
  };
  std::map<TaskKey, Restoring> restoring_;
  uint64_t commits_ = 0;
  Clock::time_point last_committed_ = Clock::now();  // the last commit that wrote markers
  uint64_t rebuilds_ = 0;
  // Commits failed in a row on a record the broker refuses as it is (FailedPrecondition):
  // at kRefusedCommitLimit the thread stops. Not reset by a commit of less than the
  // last refused one had read (refused_at_, by partition): after a rebuild the first
  // commit may hold a record or two, which passes, and the next fails again.
  int refused_commits_ = 0;
  std::map<TaskKey, int64_t> refused_at_;
  // Where the thread's time went besides processing (RuntimeCounters).
  Clock::duration input_wait_{};     // in the poll on an empty queue, callbacks excepted
  Clock::duration commit_time_{};
  Clock::duration rebalance_time_{};  // in rebalance callbacks (task creation, restore)
};

absl::Status Runtime::Thread::NewProducer() {
  producer_.reset();
  ProducerOptions po{.properties = options().kafka};
  if (eos()) po.transactional_id = TransactionalId();
  absl::StatusOr<std::unique_ptr<Producer>> p = Producer::Create(po);
  if (!p.ok()) return p.status();
  producer_ = *std::move(p);
  in_transaction_ = false;
  // Not fatal: without the metadata the first records of each topic only wait longer.
  if (absl::Status s = producer_->WarmUp(rt_->written_topics_); !s.ok()) {
    Log(LogLevel::kWarning, StrCat("thread ", index_, ": producer warm-up: ", s.message()));
  }
  // Under exactly-once every record is visible at the commit: held until it, and queued
  // with the commit's changes (fewer rounds of partition registration, Producer::Hold).
  if (eos()) producer_->HoldAlways();
  return absl::OkStatus();
}

absl::Status Runtime::Thread::Setup() {
  if (absl::Status s = NewProducer(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> reader =
      KafkaChangelogReader::Create(options().kafka, options().application_id);
  if (!reader.ok()) return reader.status();
  reader_ = *std::move(reader);

  Properties props = rt_->ConsumerProperties();
  props.emplace_back("client.id", TransactionalId());
  absl::StatusOr<KafkaHandle> consumer =
      NewGroupConsumer(options().application_id, props, &RebalanceCallback, this, rt_->sub_topics_,
                       &OffsetCommitCallback);
  if (!consumer.ok()) return consumer.status();
  consumer_ = *std::move(consumer);
  return absl::OkStatus();
}

Properties Runtime::ConsumerProperties() const {
  Properties props = {{"partition.assignment.strategy", "cooperative-sticky"}};
  // The prefetch bound is in bytes only. librdkafka checks a partition's thresholds on
  // the queue its records are forwarded to — the consumer's, shared by all of the
  // thread's partitions — so when queued.min.messages (100,000 by default) records are
  // queued every partition stops fetching at once, and looks again only after
  // fetch.queue.backoff.ms (1 s by default). The count never binds; the bytes bound is
  // 32 MiB of records per thread (~80,000 of the benchmark's ~410-byte events, ~0.2 s of
  // a thread's work), and a stopped partition looks again after 10 ms, so the queue is
  // refilled as soon as it falls below the bound (docs/SEMANTICS.md, "Prefetch"). All
  // three can be overridden in `kafka:`.
  for (auto& p : StreamThreadPrefetch()) props.push_back(std::move(p));
  // The dev broker answers a fetch that finds no new record only after its full
  // fetch.wait.max.ms (500 ms by default), even when records arrive meanwhile — a
  // Kafka broker answers as they arrive. In process, wait at most 10 ms: sustained
  // throughput through it rose from ~150K to ~400K events/s and results' latency fell
  // from p50 ~110 ms (100 ms waits) to ~40 ms (bench/kafka_bench), for more CPU spent
  // in the dev broker on empty fetches (a 20K events/s run: ~0.5 instead of ~0.25 cores).
  //
  // The dev broker completes a rebalance only once every member has rejoined or its
  // session has timed out, and a member that joins while the first generation forms
  // sometimes is not seen rejoining: the group then waits out session.timeout.ms (45 s
  // by default) with the new member unassigned and its partitions unread — the main
  // job read 0 events/s for 45 s and more in ~1 start of 7. With 6 s (as the tests
  // use) such a start recovers in seconds. Kafka's own rebalances need no such bound.
  //
  // The same for the dev broker of another process (`streammetrics broker`), known by
  // its cluster id (EnsureTopics): before, its users had to know to set these.
  if (on_dev_broker_) {
    for (auto& p : DevBrokerConsumerDefaults()) props.push_back(std::move(p));
  }
  for (const auto& p : options_.kafka) props.push_back(p);  // the last of a key wins
  // Partition ends: a task that has read nothing is idle only once it found nothing to
  // read (operators/repartition.h); a bounded run's ends past control records.
  props.emplace_back("enable.partition.eof", "true");
  return props;
}

Properties StreamThreadPrefetch() {
  return {{"queued.min.messages", "10000000"},
          {"queued.max.messages.kbytes", "32768"},
          {"fetch.queue.backoff.ms", "10"}};
}

namespace {

// The producer's message.max.bytes (librdkafka's default: 1,000,000), the last setting
// winning as in librdkafka; what is not a positive number is the default.
int64_t MaxMessageBytes(const Properties& kafka) {
  int64_t bytes = 1'000'000;
  for (const auto& [k, v] : kafka) {
    int64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (k == "message.max.bytes" && ec == std::errc() && end == v.data() + v.size() && n > 0) bytes = n;
  }
  return bytes;
}

}  // namespace

absl::StatusOr<int64_t> Runtime::Thread::CreateTask(TaskKey key) {
  const auto started = Clock::now();
  const int32_t partition = key.partition;
  const std::string id = TaskId(key.sub, partition);
  TaskEntry entry;
  entry.out = std::make_unique<CountingTaskProducer>(producer_.get(), options().application_id,
                                                     partition);
  entry.reader = reader_->ForPartition(partition);
  TaskConfig tc;
  tc.application_id = options().application_id;
  tc.subtopology = key.sub;
  tc.partition = partition;
  tc.input_partitions = rt_->source_partitions_;
  tc.dead_letter_topic = options().dead_letter_topic;
  tc.dead_letter_max_bytes = MaxMessageBytes(options().kafka);
  if (!options().state_dir.empty()) tc.state_dir = StrCat(options().state_dir, "/", id);
  tc.rocksdb = options().rocksdb;
  tc.cache_budget = options().cache_budget;
  tc.changelog = entry.out.get();
  tc.changelog_reader = entry.reader.get();
  tc.checkpoint_every_changes = options().checkpoint_every_changes;
  tc.wall_clock = [this] { return wall_ms_; };
  tc.input_end_reported = true;  // partition EOF events (ConsumerProperties)
  if (options().until_end) {
    BoundedInput bounded;
    for (const auto& [low, high] : rt_->bounds_[0]) bounded.input_end.push_back(high);
    bounded.written_from = Bounds(key).second;
    tc.bounded = std::move(bounded);
  }
  absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(rt_->topology_, tc, entry.out.get());
  if (!task.ok()) {
    return absl::Status(task.status().code(),
                        StrCat("task ", id, ": ", task.status().message()));
  }
  entry.task = *std::move(task);
  // With stores, the commit markers are the only position that matches the state: no
  // marker means no commit, so the input starts at its beginning. Without stores, the
  // group's committed offset (INVALID: use it, or auto.offset.reset).
  int64_t next = !rt_->topology_.HasStores(key.sub) ? RD_KAFKA_OFFSET_INVALID
                                                    : RD_KAFKA_OFFSET_BEGINNING;
  for (const InputOffset& o : entry.task->committed_offsets()) {
    if (o.topic == TopicOf(key) && o.partition == partition) next = o.next_offset;
  }
  const TaskRestoreReport& report = entry.task->restore_report();
  uint64_t applied = 0, discarded = 0;
  for (const StoreRestoreReport& r : report.stores) {
    applied += r.stats.records_applied;
    discarded += r.stats.records_discarded;
  }
  Log(LogLevel::kInfo,
      StrCat("task ", id, " restored in ", ElapsedMs(started), " ms: ", applied,
             " changes applied, ", discarded, " discarded, commit ", report.last_sequence,
             next >= 0 ? StrCat(", resuming at offset ", next)
                       : std::string(next == RD_KAFKA_OFFSET_BEGINNING ? ", from the start"
                                                                       : ", from the group's offset"),
             report.rebuilt_because.empty() ? std::string()
                                            : StrCat(" (rebuilt: ", report.rebuilt_because, ")")));
  tasks_[key] = std::move(entry);
  return next;
}

bool Runtime::Thread::ShouldRetry(const absl::Status& s, std::string_view what,
                                  int64_t* backoff_ms) {
  if (s.ok() || rt_->stop_.load()) return false;
  if (!absl::IsUnavailable(s) && !absl::IsAborted(s) && !absl::IsDeadlineExceeded(s)) {
    return false;
  }
  LogEvery(StrCat("retry-", index_, what), 10'000, LogLevel::kWarning,
           StrCat("thread ", index_, ": ", what, ": ", s.message(), "; retrying"));
  std::this_thread::sleep_for(std::chrono::milliseconds(*backoff_ms));
  *backoff_ms = std::min<int64_t>(*backoff_ms * 2, 5'000);
  return true;
}

void Runtime::Thread::PauseOrResume(const std::vector<TaskKey>& keys, bool pause) {
  if (keys.empty()) return;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(keys.size());
  for (TaskKey k : keys) rd_kafka_topic_partition_list_add(list, TopicOf(k).c_str(), k.partition);
  if (pause) {
    rd_kafka_pause_partitions(consumer_.get(), list);
  } else {
    rd_kafka_resume_partitions(consumer_.get(), list);
  }
  rd_kafka_topic_partition_list_destroy(list);
}

void Runtime::Thread::AddRestoring(const std::vector<TaskKey>& keys) {
  for (TaskKey k : keys) restoring_[k] = Restoring{.next_attempt = Clock::now()};
  PauseOrResume(keys, /*pause=*/true);
}

void Runtime::Thread::AddRestoring(rd_kafka_topic_partition_list_t* parts) {
  std::vector<TaskKey> keys;
  for (int i = 0; i < parts->cnt; ++i) keys.push_back(KeyOf(parts->elems[i].topic, parts->elems[i].partition));
  AddRestoring(keys);
}

absl::StatusOr<int64_t> Runtime::Thread::GroupOffset(TaskKey key) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, TopicOf(key).c_str(), key.partition);
  absl::Status s = KafkaStatus("committed offset", rd_kafka_committed(consumer_.get(), list, 10'000));
  const int64_t offset = list->elems[0].offset;
  if (s.ok()) s = KafkaStatus("committed offset", list->elems[0].err);
  rd_kafka_topic_partition_list_destroy(list);
  if (!s.ok()) return s;
  return offset;
}

absl::Status Runtime::Thread::RestoreDue() {
  const auto now = Clock::now();
  for (auto it = restoring_.begin(); it != restoring_.end(); ++it) {
    const TaskKey p = it->first;
    const std::string id = TaskId(p.sub, p.partition);
    Restoring& r = it->second;
    if (r.next_attempt > now) continue;
    absl::StatusOr<int64_t> next = CreateTask(p);
    if (next.ok()) {
      // With stores and no commit in their changelogs, the group must have none either:
      // its offsets without the state they go with mean the changelogs were deleted or
      // recreated (or their markers expired) — starting over would emit every result again.
      if (*next == RD_KAFKA_OFFSET_BEGINNING) {
        absl::StatusOr<int64_t> committed = GroupOffset(p);
        if (committed.ok() && *committed >= 0) {
          // What each changelog showed, for the log: [from, end) and the markers in it.
          std::string shown;
          for (const StoreRestoreReport& r : tasks_.at(p).task->restore_report().stores) {
            StrAppend(&shown, shown.empty() ? "" : ", ", r.store, " [", r.from_offset, ", ",
                      r.stats.end_offset, "): ", r.stats.commits, " markers");
          }
          tasks_.at(p).task->AbortCommit(absl::AbortedError("refused")).IgnoreError();
          CloseTask(p);
          // Looked at again for a while before the thread gives up: right after a leader
          // moved, a changelog's new leader may not show all of it yet.
          Restoring& again = it->second;
          if (again.failing_since == Clock::time_point{}) again.failing_since = now;
          if (now - again.failing_since < std::chrono::milliseconds(kRefuseAfterMs)) {
            LogEvery(StrCat("no-commit-", index_), 10'000, LogLevel::kWarning,
                     StrCat("thread ", index_, ": task ", id, ": its changelogs hold no "
                            "commit but the group committed offset ", *committed,
                            " (", shown, "); looking again"));
            again.next_attempt = now + std::chrono::seconds(1);
            return absl::OkStatus();
          }
          restoring_.erase(p);
          return absl::FailedPreconditionError(StrCat(
              "task ", id, ": its changelogs hold no commit, but the consumer group ",
              options().application_id, " committed ", TopicOf(p), " [", p.partition,
              "] up to offset ", *committed, " (", shown, ")",
              ": the changelog topics were deleted or recreated, or their commit markers "
              "expired, while the group's offsets remained. Rather than process the input "
              "again from its start (every result again), the thread stops. To start the "
              "application over, delete its changelog topics and state dir and reset the "
              "group's offsets (kafka-consumer-groups --reset-offsets)"));
        }
      }
      restoring_.erase(it);
      // The input from the restored commit's offsets; without stores (INVALID), from the
      // group's committed offset; with stores and no commit yet, from the start.
      int64_t from = *next;
      if (from == RD_KAFKA_OFFSET_INVALID) {
        absl::StatusOr<int64_t> committed = GroupOffset(p);
        if (!committed.ok()) {
          CloseTask(p);
          restoring_[p] = Restoring{.next_attempt = Clock::now() + std::chrono::milliseconds(500)};
          return absl::OkStatus();  // tried again, with the restore
        }
        from = *committed;
      }
      if (options().until_end) {
        // Where the input resumes; from the start: the partition's first offset.
        tasks_.at(p).position = from >= 0 ? from : Bounds(p).first;
      }
      if (absl::Status s = Seek({{p, from < 0 ? RD_KAFKA_OFFSET_BEGINNING : from}}); !s.ok()) {
        return s;  // the partition is assigned and paused: only a bug fails here
      }
      PauseOrResume({p}, /*pause=*/false);
      PublishCounters();
      return absl::OkStatus();  // one task a turn: the loop polls between restores
    }
    const absl::Status& s = next.status();
    const bool retriable = absl::IsUnavailable(s) || absl::IsAborted(s) || absl::IsDeadlineExceeded(s);
    if (r.failing_since == Clock::time_point{}) r.failing_since = now;
    if (!retriable || now - r.failing_since > std::chrono::milliseconds(kRestoreGiveUpMs)) {
      return absl::Status(s.code(), StrCat(s.message(), retriable ? StrCat(" (restore failing for ", kRestoreGiveUpMs / 1000, " s)") : ""));
    }
    LogEvery(StrCat("retry-restore-", index_), 10'000, LogLevel::kWarning,
             StrCat("thread ", index_, ": restore of task ", id, ": ", s.message(),
                    "; retrying"));
    r.next_attempt = now + std::chrono::milliseconds(r.backoff_ms);
    r.backoff_ms = std::min<int64_t>(r.backoff_ms * 2, 5'000);
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

void Runtime::Thread::CloseTask(TaskKey key) {
  auto it = tasks_.find(key);
  if (it == tasks_.end()) return;
  AddTaskCounters(it->second.task->counters(), &retired_);
  if (absl::Status s = it->second.task->Close(); !s.ok()) {
    Log(LogLevel::kWarning, StrCat("task ", TaskId(key.sub, key.partition), ": close: ", s.message()));
  }
  tasks_.erase(it);
}

absl::Status Runtime::Thread::Seek(const std::map<TaskKey, int64_t>& offsets) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(offsets.size());
  bool any = false;
  for (const auto& [key, offset] : offsets) {
    // Regression: BEGINNING (a task with no commit yet) was skipped, so such a task went on
    // from where its failed attempt had read, losing those records.
    if (offset < 0 && offset != RD_KAFKA_OFFSET_BEGINNING) continue;
    rd_kafka_topic_partition_list_add(list, TopicOf(key).c_str(), key.partition)->offset = offset;
    any = true;
  }
  absl::Status s;
  if (any) {
    // Asynchronous (timeout 0): the seek is queued ahead of anything else asked of the
    // partition (a resume), and records fetched before it are discarded. (A waiting seek
    // of librdkafka 2.0.2 waits microseconds, not the milliseconds passed, and fails.)
    rd_kafka_error_t* error = rd_kafka_seek_partitions(consumer_.get(), list, 0);
    s = KafkaStatus("seek", error);
    for (int i = 0; s.ok() && i < list->cnt; ++i) {
      if (list->elems[i].err == RD_KAFKA_RESP_ERR__IN_PROGRESS) continue;  // queued
      s = KafkaStatus(StrCat("seek partition ", list->elems[i].partition), list->elems[i].err);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  return s;
}

void Runtime::Thread::OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
  rd_kafka_t* rk = consumer_.get();
  // The group has had its say: restores held back for the rejoin go ahead (those of
  // partitions this rebalance takes away are dropped below).
  for (auto& [p, r] : restoring_) {
    if (!r.awaiting_rejoin) continue;
    r.awaiting_rejoin = false;
    r.next_attempt = Clock::now();
  }
  const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
  last_rebalance_ms_.store(SteadyMs());
  bounded_done_.store(false);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    assigned_once_ = true;
    std::string names;
    for (int i = 0; i < parts->cnt; ++i) {
      const TaskKey k = KeyOf(parts->elems[i].topic, parts->elems[i].partition);
      names += StrCat(names.empty() ? "" : ",", TaskId(k.sub, k.partition));
    }
    Log(LogLevel::kInfo, StrCat("thread ", index_, ": assigned tasks [", names, "]"));
    // Tasks are made — their stores restored — by the loop, not here: a restore may take
    // long, or wait for the broker, and a callback that does not return holds the poll
    // (max.poll.interval.ms) and everything else of the thread. The partitions are
    // assigned paused until their tasks are ready.
    if (cooperative) {
      rebalance_error_.Update(KafkaStatus("incremental assign", rd_kafka_incremental_assign(rk, parts)));
    } else {
      rebalance_error_.Update(KafkaStatus("assign", rd_kafka_assign(rk, parts)));
    }
    AddRestoring(parts);
    return;
  }
  // Revoked: commit what the thread has, then close those tasks cleanly. Lost (the
  // session expired, others may own them now): no commit; the tasks close as failed,
  // without a checkpoint, and nothing of the thread's work since its last commit may be
  // committed later: under exactly-once its open transaction (and the producer's held
  // records) has the lost tasks' outputs and changelog records, which the next commit
  // would publish beside the new owner's. The transaction is aborted, and the thread's
  // other tasks, whose uncommitted work went with it, are rebuilt to their last commit.
  const bool lost = rd_kafka_assignment_lost(rk);
  if (!closing_ && !lost && rebalance_error_.ok()) rebalance_error_.Update(CommitAll(true));
  std::string names;
  for (int i = 0; i < parts->cnt; ++i) {
    const TaskKey k = KeyOf(parts->elems[i].topic, parts->elems[i].partition);
    restoring_.erase(k);
    auto it = tasks_.find(k);
    if (lost && it != tasks_.end()) it->second.task->AbortCommit(absl::AbortedError("lost")).IgnoreError();
    CloseTask(k);
    names += StrCat(names.empty() ? "" : ",", TaskId(k.sub, k.partition));
  }
  Log(LogLevel::kInfo, StrCat("thread ", index_, lost ? ": lost tasks [" : ": revoked tasks [",
                              names, "]"));
  if (lost && eos() && rebalance_error_.ok()) {
    if (!tasks_.empty()) {
      rebalance_error_.Update(RebuildTasks(absl::AbortedError(
          StrCat("tasks [", names, "] lost: the open transaction is aborted"))));
    } else {
      rebalance_error_.Update(AbortTransaction());
    }
  }
  PublishCounters();
  if (cooperative) {
    KafkaStatus("incremental unassign", rd_kafka_incremental_unassign(rk, parts)).IgnoreError();
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

absl::Status Runtime::Thread::ProcessMessage(const rd_kafka_message_t* m) {
  if (m->rkt != last_rkt_) {  // records come in runs of one topic: one name lookup a run
    last_rkt_ = m->rkt;
    last_sub_ = rt_->SubtopologyOf(rd_kafka_topic_name(m->rkt));
  }
  if (last_sub_ < 0) return absl::OkStatus();
  auto it = tasks_.find(TaskKey{last_sub_, m->partition});
  if (it == tasks_.end()) return absl::OkStatus();  // not ours (any more)
  if (options().until_end) {
    // A bounded run reads each input partition up to its end as of the start; what was
    // fetched beyond it, or reaches a finished task, is left for a later run.
    TaskEntry& e = it->second;
    if (e.finished) return absl::OkStatus();
    if (ReadsInput(it->first)) {
      if (m->offset >= Bounds(it->first).second) {
        e.position = std::max(e.position, m->offset);
        return absl::OkStatus();
      }
      e.position = m->offset + 1;
    }
  }
  if (eos() && !in_transaction_) {
    if (absl::Status s = producer_->BeginTransaction(); !s.ok()) return s;
    in_transaction_ = true;
  }
  rd_kafka_timestamp_type_t type;
  const int64_t ts = rd_kafka_message_timestamp(m, &type);
  SourceRecord record;
  record.topic = rt_->sub_topics_[last_sub_];
  record.partition = m->partition;
  record.offset = m->offset;
  record.timestamp_ms = ts;
  record.key = std::string_view(static_cast<const char*>(m->key), m->key_len);
  record.value = std::string_view(static_cast<const char*>(m->payload), m->len);
  return it->second.task->Process(record);
}

absl::Status Runtime::Thread::CommitAll(bool force) {
  const auto started = Clock::now();
  absl::Status s = CommitTasks(force);
  commit_time_ += Clock::now() - started;
  if (s.ok()) PublishCounters();
  return s;
}

absl::Status Runtime::Thread::CommitTasks(bool force) {
  if (tasks_.empty()) return absl::OkStatus();
  bool dirty = false;
  for (auto& [p, e] : tasks_) {
    dirty |= e.out->sent() != e.sent_at_commit ||
             e.task->counters().records_read != e.read_at_commit;
  }
  if (!dirty && !force) return absl::OkStatus();
  if (eos() && !in_transaction_) {
    if (absl::Status s = producer_->BeginTransaction(); !s.ok()) return RebuildTasks(s);
    in_transaction_ = true;
  }
  const auto started = Clock::now();
  // PrepareCommit of every task with two producer flushes in all (a flush costs tens of
  // ms on the dev broker): changes, then markers. The tasks' changes are held and
  // queued at once (Producer::Hold): computed task after task, they reach librdkafka
  // over ~10 ms, which under exactly-once cost 2-4 rounds of partition registration
  // with the transaction (and librdkafka 2.0.2's main thread spun ~1 ms before each).
  std::vector<InputOffset> offsets;
  producer_->Hold();
  for (auto& [p, e] : tasks_) {
    if (absl::Status s = e.task->FlushForCommit(); !s.ok()) return RebuildTasks(s);
  }
  producer_->Release();
  if (absl::Status s = producer_->Flush(); !s.ok()) return RebuildTasks(s);
  for (auto& [p, e] : tasks_) {
    if (absl::Status s = e.task->AppendCommitMarkers(); !s.ok()) return RebuildTasks(s);
  }
  if (absl::Status s = producer_->Flush(); !s.ok()) return RebuildTasks(s);
  for (auto& [p, e] : tasks_) {
    if (absl::Status s = e.task->MarkersAcknowledged(); !s.ok()) return RebuildTasks(s);
    for (InputOffset& o : e.task->pending_offsets()) {
      if (o.topic == TopicOf(p)) offsets.push_back(std::move(o));
    }
  }
  const int64_t prepare_ms = ElapsedMs(started);
  if (prepare_ms > 2'000) {
    LogEvery(StrCat("slow-prepare-", index_), 10'000, LogLevel::kWarning,
             StrCat("thread ", index_, ": preparing a commit took ", prepare_ms, " ms"));
  }
  if (eos()) {
    absl::Status s = producer_->CommitTransaction({offsets, consumer_.get()});
    if (!s.ok()) return RebuildTasks(s);
    in_transaction_ = false;
  } else {
    if (absl::Status s = producer_->Flush(); !s.ok()) return RebuildTasks(s);
    if (!offsets.empty()) {
      rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(offsets.size());
      for (const InputOffset& o : offsets) {
        rd_kafka_topic_partition_list_add(list, o.topic.c_str(), o.partition)->offset = o.next_offset;
      }
      // Asynchronous but on a rebalance or at the close: the markers hold the same
      // offsets (a failed or late offset commit loses nothing; the group's offsets
      // matter to tasks without stores and to tools), so the stream thread need not
      // wait a round trip for it — nor, when the group is rebalancing, until the
      // coordinator answers (a synchronous commit then took 4.3 s in kafka_bench's
      // drain, the thread's input waiting behind it). Results of asynchronous commits
      // come back through the consumer's poll, which logs failures.
      absl::Status s = KafkaStatus("commit offsets", rd_kafka_commit(consumer_.get(), list, force ? 0 : 1));
      rd_kafka_topic_partition_list_destroy(list);
      // The markers hold the same offsets: a failed offset commit loses nothing. A failed
      // synchronous commit also reaches OffsetCommitCallback: one key, so it is logged once.
      if (!s.ok()) {
        LogEvery(StrCat("commit-offsets-", index_), 10'000, LogLevel::kWarning,
                 StrCat("thread ", index_, ": ", s.message(), " (the commit markers hold them)"));
      }
    }
  }
  for (auto& [p, e] : tasks_) {
    if (absl::Status s = e.task->CompleteCommit(); !s.ok()) return RebuildTasks(s);
    e.sent_at_commit = e.out->sent();
    e.read_at_commit = e.task->counters().records_read;
    e.windows_at_commit = e.task->counters().windows_emitted;
  }
  if (const int64_t took = ElapsedMs(started); took > 2'000) {
    LogEvery(StrCat("slow-commit-", index_), 10'000, LogLevel::kWarning,
             StrCat("thread ", index_, ": a commit took ", took, " ms"));
  }
  ++commits_;
  last_committed_ = Clock::now();
  PurgeRepartitionTopics();
  if (refused_commits_ > 0 && PassedRefusedCommit()) {
    refused_commits_ = 0;
    refused_at_.clear();
  }
  return absl::OkStatus();
}

void Runtime::Thread::PurgeRepartitionTopics() {
  const int64_t interval = options().repartition_purge_interval_ms;
  if (interval <= 0 || rt_->on_dev_broker_ || ElapsedMs(last_purge_) < interval) return;
  last_purge_ = Clock::now();
  if (purge_results_ == nullptr) purge_results_.reset(rd_kafka_queue_new(consumer_.get()));
  while (rd_kafka_event_t* ev = rd_kafka_queue_poll(purge_results_.get(), 0)) {
    absl::Status s = KafkaStatus("delete records", rd_kafka_event_error(ev));
    if (const rd_kafka_DeleteRecords_result_t* result = rd_kafka_event_DeleteRecords_result(ev);
        s.ok() && result != nullptr) {
      const rd_kafka_topic_partition_list_t* parts = rd_kafka_DeleteRecords_result_offsets(result);
      for (int i = 0; s.ok() && parts != nullptr && i < parts->cnt; ++i) {
        s = KafkaStatus(StrCat("delete records of ", parts->elems[i].topic, " [",
                               parts->elems[i].partition, "]"),
                        parts->elems[i].err);
      }
    }
    rd_kafka_event_destroy(ev);
    if (!s.ok()) {
      LogEvery(StrCat("purge-", index_), 60'000, LogLevel::kWarning,
               StrCat("thread ", index_, ": ", s.message(),
                      " (the repartition topic keeps those records until the next purge)"));
    }
  }
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(4);
  for (auto& [key, e] : tasks_) {
    if (ReadsInput(key)) continue;
    for (const InputOffset& o : e.task->committed_offsets()) {
      if (o.topic != TopicOf(key) || o.partition != key.partition) continue;
      int64_t& purged = purged_[key];
      if (o.next_offset <= purged) continue;
      purged = o.next_offset;
      rd_kafka_topic_partition_list_add(list, o.topic.c_str(), o.partition)->offset = o.next_offset;
    }
  }
  if (list->cnt > 0) {
    rd_kafka_DeleteRecords_t* del = rd_kafka_DeleteRecords_new(list);
    rd_kafka_DeleteRecords(consumer_.get(), &del, 1, nullptr, purge_results_.get());
    rd_kafka_DeleteRecords_destroy(del);
  }
  rd_kafka_topic_partition_list_destroy(list);
}

absl::Status Runtime::Thread::FinishBoundedTasks() {
  int finished = 0;
  std::vector<TaskKey> paused;
  for (auto& [key, e] : tasks_) {
    if (!e.finished) {
      const bool at_end = ReadsInput(key) ? e.position >= Bounds(key).second
                                          : e.task->input_end_signalled();
      if (!at_end) continue;
      if (eos() && !in_transaction_) {
        if (absl::Status s = producer_->BeginTransaction(); !s.ok()) return RebuildTasks(s);
        in_transaction_ = true;
      }
      if (absl::Status s = e.task->FinishInput(); !s.ok()) return RebuildTasks(s);
      e.finished = true;
      paused.push_back(key);
      Log(LogLevel::kInfo,
          StrCat("task ", TaskId(key.sub, key.partition), ": input ",
                 ReadsInput(key) ? StrCat("read to offset ", Bounds(key).second)
                                 : std::string("complete (every upstream task at its end)"),
                 ": its windows close (bounded run)"));
    }
    ++finished;
  }
  PauseOrResume(paused, /*pause=*/true);
  finished_tasks_.store(finished);
  bounded_done_.store(assigned_once_ && restoring_.empty() &&
                      finished == static_cast<int>(tasks_.size()));
  return absl::OkStatus();
}

void Runtime::MaybeFinishBoundedRun() {
  if (finished_.load() || stop_.load()) return;
  int finished = 0;
  int64_t last_rebalance = 0;
  for (const auto& t : threads_) {
    if (!t->bounded_done()) return;
    finished += t->finished_tasks();
    last_rebalance = std::max(last_rebalance, t->last_rebalance_ms());
  }
  // Every task of every sub-topology here and finished; or every task here finished and
  // the group quiet for 3 s — the other instances hold the rest (a partition moving
  // between two threads of this instance is in neither for a moment).
  const int all = static_cast<int>(sub_topics_.size()) * source_partitions_;
  if (finished < all && SteadyMs() - last_rebalance < 3'000) return;
  if (finished_.exchange(true)) return;
  Log(LogLevel::kInfo, StrCat("bounded run: ", finished, " of ", all,
                              " tasks here have read their input to its end as of the start; "
                              "committing and stopping"));
  stop_.store(true);
}

absl::Status Runtime::Thread::AbortTransaction() {
  producer_->DropHeld();
  if (!eos() || !in_transaction_) return absl::OkStatus();
  in_transaction_ = false;
  if (producer_->AbortTransaction().ok()) return absl::OkStatus();
  int64_t backoff_ms = 100;
  absl::Status s;
  do {
    s = NewProducer();  // fenced or fatal: a new producer, a new epoch
  } while (ShouldRetry(s, "new producer", &backoff_ms));
  return s;
}

absl::Status Runtime::Thread::RebuildTasks(const absl::Status& why) {
  ++rebuilds_;
  producer_->DropHeld();  // a failed commit's changes: the tasks restart from the last commit
  LogEvery(StrCat("rebuild-", index_), 5'000, LogLevel::kWarning,
           StrCat("thread ", index_, ": commit failed (", why.message(),
                  "); rebuilding its tasks from their changelogs"));
  std::vector<TaskKey> partitions;
  const bool refused = absl::IsFailedPrecondition(why);
  if (refused) RecordRefusedPositions();
  for (auto& [p, e] : tasks_) {
    e.task->AbortCommit(why).IgnoreError();  // failed: closes without a checkpoint
    partitions.push_back(p);
  }
  for (TaskKey p : partitions) CloseTask(p);
  if (absl::Status s = AbortTransaction(); !s.ok()) return s;
  // Restored again by the loop (RestoreDue), their input paused meanwhile.
  AddRestoring(partitions);
  if (LostGroupMembership(why)) {
    // As Kafka Streams does on a TaskMigratedException: nothing is restored until the
    // group has had its say. The consumer learns at its next heartbeat that it must
    // rejoin; the rebalance then takes the partitions that moved (their restores are
    // dropped) and releases the others (OnRebalance). Bounded by two heartbeat
    // intervals, for a member the group did keep.
    const std::string hb = LastSetting(options().kafka, "heartbeat.interval.ms");
    const int64_t wait_ms = 2 * (hb.empty() ? 3'000 : std::max<int64_t>(1, std::atoll(hb.c_str())));
    for (TaskKey p : partitions) {
      Restoring& r = restoring_[p];
      r.awaiting_rejoin = true;
      r.next_attempt = Clock::now() + std::chrono::milliseconds(wait_ms);
    }
    Log(LogLevel::kInfo, StrCat("thread ", index_, ": the group no longer knows this member; ",
                                "its tasks wait for the rejoin (at most ", wait_ms, " ms)"));
  }
  PublishCounters();
  Log(LogLevel::kInfo, StrCat("thread ", index_, ": rebuilding ", partitions.size(), " task(s)"));
  // A record the broker refuses as it is comes back with every redo of the work since
  // the last commit: without a bound the thread would rebuild for ever, its partitions
  // stuck. Transient failures (the broker away, a fenced producer) retry without one.
  if (refused) {
    ++refused_commits_;
  } else {
    refused_commits_ = 0;
    refused_at_.clear();
  }
  if (refused_commits_ >= kRefusedCommitLimit) {
    return absl::FailedPreconditionError(
        StrCat("thread ", index_, ": ", refused_commits_,
               " commits in a row failed on a record the broker refuses (", why.message(),
               "); stopping. Nothing since the last commit is acknowledged. Too large: raise "
               "the topics' max.message.bytes and the producer's message.max.bytes (kafka:)"));
  }
  return absl::OkStatus();
}

void Runtime::Thread::RecordRefusedPositions() {
  refused_at_.clear();
  if (tasks_.empty()) return;
  // The consumer's positions: past the last record it handed over, all processed here
  // (on a failed record the rest of its batch was not, which only asks for more).
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(tasks_.size());
  for (const auto& [p, e] : tasks_) rd_kafka_topic_partition_list_add(list, TopicOf(p).c_str(), p.partition);
  if (rd_kafka_position(consumer_.get(), list) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < list->cnt; ++i) {
      refused_at_[KeyOf(list->elems[i].topic, list->elems[i].partition)] =
          list->elems[i].offset >= 0 ? list->elems[i].offset : -1;
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
}

bool Runtime::Thread::PassedRefusedCommit() const {
  for (const auto& [p, at] : refused_at_) {
    auto it = tasks_.find(p);
    if (it == tasks_.end()) continue;  // not ours any more
    int64_t committed = -1;
    for (const InputOffset& o : it->second.task->committed_offsets()) {
      if (o.topic == TopicOf(p)) committed = o.next_offset;
    }
    if (committed < at) return false;
  }
  return true;
}

void Runtime::Thread::PublishCounters() {
  RuntimeCounters c = retired_;
  uint64_t key_mismatches = 0;
  for (auto& [p, e] : tasks_) {
    int64_t committed = -1;
    for (const InputOffset& o : e.task->committed_offsets()) {
      if (o.topic != TopicOf(p)) continue;
      if (o.partition == p.partition) committed = o.next_offset;
      // The input's records, not the repartition topics' (they are the same events).
      if (o.topic == rt_->source_topic_) c.committed_input += o.next_offset;
    }
    // The watermarks the consumer's fetches brought (cached, thread-safe, no request).
    // The input's only: a repartition topic's end counts the transactions' control
    // records, never read.
    int64_t low = -1, high = -1;
    if (TopicOf(p) == rt_->source_topic_ &&
        rd_kafka_get_watermark_offsets(consumer_.get(), TopicOf(p).c_str(), p.partition, &low,
                                       &high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        high >= 0) {
      const int64_t from = committed >= 0 ? committed : std::max<int64_t>(low, 0);
      c.input_lag += std::max<int64_t>(0, high - from);
    }
    AddTaskCounters(e.task->counters(), &c);
    key_mismatches += e.task->counters().dead_letters[static_cast<int>(DeadLetterReason::kKeyMismatch)];
  }
  if (key_mismatches > key_mismatches_logged_) {
    LogEvery(StrCat("key-mismatch-", index_), 60'000, LogLevel::kWarning,
             StrCat("thread ", index_, ": ", key_mismatches, " records whose key is not their "
                    "serviceId dead-lettered (key_mismatch) since the tasks started: "
                    "input.keyed_by_service is true, but a producer keys otherwise; set it to "
                    "false to re-key them instead"));
    key_mismatches_logged_ = key_mismatches;
  }
  c.commits = commits_;
  c.rebuilds = rebuilds_;
  const auto ms = [](Clock::duration d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  c.input_wait_ms = ms(input_wait_);
  c.commit_ms = ms(commit_time_);
  c.rebalance_ms = ms(rebalance_time_);
  c.tasks = static_cast<int>(tasks_.size());
  if (c.dedupe_ids_evicted > evicted_logged_) {
    LogEvery(StrCat("dedupe-evicted-", index_), 60'000, LogLevel::kWarning,
             StrCat("thread ", index_, ": dedupe has forgotten ", c.dedupe_ids_evicted,
                    " ids before their time (dedupe.max_ids reached): duplicates of them pass; "
                    "raise dedupe.max_ids or shorten dedupe.within"));
    evicted_logged_ = c.dedupe_ids_evicted;
  }
  std::lock_guard<std::mutex> lock(mu_);
  counters_ = c;
}

absl::Status Runtime::Thread::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;
  auto last_commit = Clock::now();
  auto last_punctuation = Clock::now();
  absl::Status status;
  // Records are taken from the consumer's queue in batches (one queue lock and one clock
  // read per batch, not per record: +5% events/s, bench/kafka_bench; rebalance callbacks
  // are served inside, and records of partitions re-positioned by them are dropped by
  // librdkafka). At least once a second a plain poll: what resets max.poll.interval.ms in
  // every librdkafka version.
  std::unique_ptr<rd_kafka_queue_t, decltype(&rd_kafka_queue_destroy)> queue(
      rd_kafka_queue_get_consumer(consumer_.get()), &rd_kafka_queue_destroy);
  constexpr size_t kBatch = 256;
  rd_kafka_message_t* batch[kBatch];
  auto last_poll = Clock::now();
  while (!rt_->stop_.load(std::memory_order_relaxed)) {
    // What is queued, without waiting (a batch call waits for a full batch or its
    // timeout); nothing queued: wait up to 20 ms for the next record.
    ssize_t n = 0;
    if (ElapsedMs(last_poll) < 1'000) n = rd_kafka_consume_batch_queue(queue.get(), 0, batch, kBatch);
    if (n <= 0) {
      last_poll = Clock::now();
      const Clock::duration rebalancing = rebalance_time_;
      batch[0] = rd_kafka_consumer_poll(consumer_.get(), 20);
      n = batch[0] != nullptr ? 1 : 0;
      input_wait_ += (Clock::now() - last_poll) - (rebalance_time_ - rebalancing);
    }
    wall_ms_ = NowMs();  // after the poll: a rebalance in it may have taken seconds
    bool drop = false;  // the rest of the batch: stale after a rebuild (tasks re-seeked)
    for (ssize_t i = 0; i < n; ++i) {
      rd_kafka_message_t* m = batch[i];
      if (drop || !status.ok() || !rebalance_error_.ok()) {
        rd_kafka_message_destroy(m);
        continue;
      }
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        absl::Status s = ProcessMessage(m);
        if (!s.ok()) {
          status = RebuildTasks(s);
          drop = true;
        }
      } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        // The partition's end (of what is committed, read_committed): past the control
        // records of transactional input, which are never handed over.
        auto it = m->rkt != nullptr ? tasks_.find(KeyOf(rd_kafka_topic_name(m->rkt), m->partition))
                                    : tasks_.end();
        if (it != tasks_.end()) {
          it->second.task->NoteInputEnd();
          if (options().until_end && ReadsInput(it->first)) {
            it->second.position = std::max(it->second.position, m->offset);
          }
        }
      } else {
        LogEvery(StrCat("consume-", index_), 10'000, LogLevel::kWarning,
                 StrCat("thread ", index_, ": consume: ", rd_kafka_message_errstr(m)));
      }
      rd_kafka_message_destroy(m);
    }
    if (n > 0) consumed_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    if (!rebalance_error_.ok()) {
      status = rebalance_error_;
      break;
    }
    if (!status.ok()) break;
    if (!restoring_.empty()) {
      const auto restore_started = Clock::now();
      status = RestoreDue();
      rebalance_time_ += Clock::now() - restore_started;
      if (!status.ok()) break;
    }
    if (options().until_end) {
      status = FinishBoundedTasks();
      if (!status.ok()) break;
      rt_->MaybeFinishBoundedRun();
    }
    if (ElapsedMs(last_punctuation) >= 100) {
      last_punctuation = Clock::now();
      for (auto& [p, e] : tasks_) {
        if (eos() && !in_transaction_) {
          if (absl::Status s = producer_->BeginTransaction(); !s.ok()) {
            status = s;
            break;
          }
          in_transaction_ = true;
        }
        if (absl::Status s = e.task->PunctuateWallClock(); !s.ok()) status = RebuildTasks(s);
      }
      if (!status.ok()) break;
    }
    // Window results are committed (made visible, under exactly-once) soon after they
    // are emitted, not up to a commit interval later: a closing window's results come
    // in one burst per window boundary, so this adds about one commit per boundary per
    // thread, and at most one per tenth of the interval (a fast catch-up closes windows
    // all the time). On Kafka a read_committed reader (the sinks, say) sees a result only
    // at its commit, so this takes up to an interval off its latency; the dev broker
    // shows uncommitted records, so kafka_bench cannot show it (p50 34 ms either way at
    // --commit-ms 1000). Only once the thread has caught up — this batch emptied the
    // consumer's queue: a thread working off a backlog closes windows all the time, and
    // its results wait behind the backlog anyway; there the early commits cost ~20 ms of
    // a stream thread's time each (flushes, transaction) and made up 3/4 of the commits
    // of a drain (kafka_bench: 80–111 → 22–45 commits; whole-process CPU per event −20%
    // in a quiet hour, within the noise in a noisier one).
    const int64_t since_commit = ElapsedMs(last_commit);
    if (since_commit >= options().commit_interval_ms ||
        (since_commit >= options().commit_interval_ms / 10 && n < static_cast<ssize_t>(kBatch) &&
         WindowsSinceCommit())) {
      last_commit = Clock::now();
      // A thread whose tasks had nothing new for marker_refresh_ms commits anyway: fresh
      // markers, the same offsets. Window stores' changelogs delete by time, and a task
      // whose markers have all expired would start its input over.
      const bool refresh = !tasks_.empty() && ElapsedMs(last_committed_) >= options().marker_refresh_ms;
      if (absl::Status s = CommitAll(refresh); !s.ok()) {
        status = s;
        break;
      }
    }
  }
  // Shutdown: the current batch is done; commit, checkpoint, leave the group.
  closing_ = true;
  if (status.ok()) status = CommitAll(true);
  std::vector<TaskKey> partitions;
  for (auto& [p, e] : tasks_) partitions.push_back(p);
  if (!status.ok()) {
    for (auto& [p, e] : tasks_) e.task->AbortCommit(status).IgnoreError();
  }
  for (TaskKey p : partitions) CloseTask(p);
  PublishCounters();
  if (eos() && in_transaction_) producer_->AbortTransaction().IgnoreError();
  rd_kafka_consumer_close(consumer_.get());
  // A consumer stopped during its first join is destroyed like any other: librdkafka
  // before 2.3.0 asserted there (#4312), and the runtime leaked it instead; 2.15.1 does not
  // (StopDuringTheFirstJoinEndsCleanly).
  if (!assigned_once_) {
    Log(LogLevel::kInfo, StrCat("thread ", index_, ": stopped before its first assignment"));
  }
  return status;
}

Runtime::Runtime(const Topology& topology, RuntimeOptions options)
    : topology_(topology), options_(std::move(options)) {}

Runtime::~Runtime() {
  Stop();
  Join().IgnoreError();
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const Topology& topology,
                                                         RuntimeOptions options) {
  std::vector<std::string> sources = topology.source_topics();
  if (sources.size() != 1) {
    return absl::InvalidArgumentError("runtime: the topology must read exactly one input topic");
  }
  if (options.threads < 1) return absl::InvalidArgumentError("runtime: threads must be >= 1");
  if (options.commit_interval_ms < 1) {
    return absl::InvalidArgumentError("runtime: commit interval must be >= 1 ms");
  }
  if (options.guarantee == ProcessingGuarantee::kExactlyOnceV2) {
    // A transaction spans a commit interval; the broker aborts one open longer than its
    // timeout, and the thread then rebuilds — every commit would.
    const std::string set = LastSetting(options.kafka, "transaction.timeout.ms");
    int64_t timeout_ms = kDefaultTransactionTimeoutMs;
    if (!set.empty()) {
      auto [end, ec] = std::from_chars(set.data(), set.data() + set.size(), timeout_ms);
      if (ec != std::errc() || end != set.data() + set.size()) timeout_ms = -1;
    }
    if (timeout_ms <= options.commit_interval_ms) {
      return absl::InvalidArgumentError(
          StrCat("kafka.transaction.timeout.ms (", set.empty() ? "default " : "", set.empty() ? StrCat(timeout_ms) : set,
                 ") must be a number of ms above processing.commit_interval (",
                 options.commit_interval_ms, " ms) under exactly_once_v2"));
    }
  }
  for (const StoreDef& def : topology.stores()) {
    if (def.type == StoreType::kRocksDb && options.state_dir.empty()) {
      return absl::InvalidArgumentError("runtime: RocksDB stores need a state directory");
    }
  }
  std::unique_ptr<StateDirectoryLock> state_lock;
  if (options.instance_id.empty()) {
    if (options.state_dir.empty()) {
      return absl::InvalidArgumentError(
          "runtime: an instance id or a state directory (which keeps the process id) is needed");
    }
    // The directory is this instance's alone, from here to its end.
    absl::StatusOr<std::unique_ptr<StateDirectoryLock>> lock =
        StateDirectoryLock::Acquire(options.state_dir);
    if (!lock.ok()) return lock.status();
    state_lock = *std::move(lock);
    absl::StatusOr<std::string> id = LoadOrCreateProcessId(options.state_dir);
    if (!id.ok()) return id.status();
    options.instance_id = *std::move(id);
  }
  std::unique_ptr<Runtime> rt(new Runtime(topology, std::move(options)));
  rt->state_lock_ = std::move(state_lock);
  rt->source_topic_ = sources[0];
  rt->sub_topics_.assign(std::max(1, topology.subtopologies()), "");
  for (const NodeDef& n : topology.nodes()) {
    if (n.kind == "source") rt->sub_topics_[n.subtopology] = Topology::TopicOf(n, rt->options_.application_id);
  }
  for (const std::string& t : rt->sub_topics_) {
    if (t.empty()) return absl::InvalidArgumentError("runtime: a sub-topology without a source");
  }
  return rt;
}

absl::Status Runtime::EnsureTopics() {
  Properties props = {{"log_level", "3"}};
  for (const auto& p : options_.kafka) props.push_back(p);
  absl::StatusOr<KafkaHandle> rk = NewClient(RD_KAFKA_CONSUMER, props);
  if (!rk.ok()) return rk.status();
  auto partitions_of = [&](std::map<std::string, int>* out) -> absl::Status {
    const struct rd_kafka_metadata* md = nullptr;
    absl::Status s = KafkaStatus("metadata", rd_kafka_metadata(rk->get(), 1, nullptr, &md, 30'000));
    if (!s.ok()) return s;
    out->clear();
    for (int i = 0; i < md->topic_cnt; ++i) {
      if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        (*out)[md->topics[i].topic] = md->topics[i].partition_cnt;
      }
    }
    rd_kafka_metadata_destroy(md);
    return absl::OkStatus();
  };
  std::map<std::string, int> topics;
  if (absl::Status s = partitions_of(&topics); !s.ok()) return s;
  // The metadata just fetched carries the cluster id: OnDevBroker does not wait.
  on_dev_broker_ = options_.embedded_broker != nullptr;
  if (!on_dev_broker_ && OnDevBroker(rk->get(), 5'000)) {
    on_dev_broker_ = true;
    Log(LogLevel::kInfo, "the broker is the dev broker (librdkafka's mock cluster): stream "
                         "threads' consumers use fetch.wait.max.ms 10, session.timeout.ms "
                         "6000 and heartbeat.interval.ms 500 unless kafka: sets them");
  }
  auto source = topics.find(source_topic_);
  if (source == topics.end()) {
    return absl::FailedPreconditionError(StrCat("topic ", source_topic_, " does not exist"));
  }
  source_partitions_ = source->second;
  std::set<std::string> outputs;
  for (const std::string& t : topology_.sink_topics()) outputs.insert(t);
  outputs.insert(options_.dead_letter_topic);
  written_topics_.assign(outputs.begin(), outputs.end());
  for (const StoreDef& def : topology_.stores()) {
    written_topics_.push_back(ChangelogTopic(options_.application_id, def.name));
  }
  const std::vector<std::string> repartition = topology_.internal_topics(options_.application_id);
  for (const std::string& t : repartition) written_topics_.push_back(t);
  for (const std::string& t : outputs) {
    if (!topics.contains(t)) {
      return absl::FailedPreconditionError(StrCat("output topic ", t, " does not exist"));
    }
  }
  bool created = false;
  // An internal topic: checked when it exists (as many partitions as the input: a task
  // per partition of each), else created — on the dev broker of this process directly
  // (its protocol has no CreateTopics; `streammetrics broker` creates them up front),
  // on a real broker with `configs` (`how` says what, for the error).
  auto ensure = [&](const std::string& what, const std::string& name, Properties configs,
                    std::string_view how) -> absl::Status {
    auto it = topics.find(name);
    if (it != topics.end()) {
      if (it->second == source_partitions_) return absl::OkStatus();
      return absl::FailedPreconditionError(
          StrCat(what, " topic ", name, " has ", it->second, " partitions, ", source_topic_,
                 " has ", source_partitions_, ": they must match (delete it and reset the application)"));
    }
    created = true;
    if (options_.embedded_broker != nullptr) {
      return options_.embedded_broker->CreateTopic(name, source_partitions_);
    }
    TopicSpec spec{.name = name, .partitions = source_partitions_, .configs = std::move(configs)};
    if (absl::Status s = CreateTopics(rk->get(), {spec}, 30'000); !s.ok()) {
      return absl::Status(s.code(), StrCat(what, " topic ", name, " does not exist and was not "
                                           "created (create it with ", source_partitions_,
                                           " partitions, ", how, "): ", s.message()));
    }
    return absl::OkStatus();
  };
  // Repartition topics delete by time only — never compacted (a key, a service, has many
  // records) — with infinite retention, as Kafka Streams creates them: a time retention
  // would lose what a stopped application had not read. (Kafka Streams also deletes what
  // downstream tasks committed, with DeleteRecords; not done here yet.)
  for (const std::string& name : repartition) {
    if (absl::Status s = ensure("repartition", name, {{"cleanup.policy", "delete"}, {"retention.ms", "-1"}},
                                "cleanup.policy=delete, retention.ms=-1");
        !s.ok()) {
      return s;
    }
  }
  for (const StoreDef& def : topology_.stores()) {
    // Compacted. Window stores' changelogs also delete by time (their old panes get no
    // tombstones): the store's retention plus a day, as Kafka Streams'
    // windowstore.changelog.additional.retention.ms.
    Properties configs = {{"cleanup.policy", "compact"}};
    if (def.kind == StoreKind::kWindow && def.retention_ms > 0) {
      configs = {{"cleanup.policy", "compact,delete"},
                 {"retention.ms", StrCat(def.retention_ms + 24 * 3'600'000LL)}};
    }
    if (absl::Status s = ensure("changelog", ChangelogTopic(options_.application_id, def.name),
                                std::move(configs), "compacted");
        !s.ok()) {
      return s;
    }
  }
  if (created) Log(LogLevel::kInfo, "created the internal (changelog, repartition) topics");
  if (options_.until_end) {
    // Where a bounded run ends: every input partition's high watermark now (records of
    // a transaction still open are read once it ends, EOF reached past its marker);
    // where each repartition partition's records of this run begin.
    bounds_.assign(sub_topics_.size(), {});
    for (size_t sub = 0; sub < sub_topics_.size(); ++sub) {
      for (int32_t p = 0; p < source_partitions_; ++p) {
        int64_t low = 0, high = 0;
        absl::Status s = KafkaStatus(
            StrCat("end offsets of ", sub_topics_[sub], " [", p, "]"),
            rd_kafka_query_watermark_offsets(rk->get(), sub_topics_[sub].c_str(), p, &low, &high, 30'000));
        if (!s.ok()) return s;
        bounds_[sub].emplace_back(low, high);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::Start() {
  if (!threads_.empty()) return absl::FailedPreconditionError("runtime: already started");
  if (absl::Status s = EnsureTopics(); !s.ok()) return s;
  for (int i = 0; i < options_.threads; ++i) {
    threads_.push_back(std::make_unique<Thread>(this, i));
  }
  for (auto& t : threads_) t->Start();
  Log(LogLevel::kInfo, StrCat("application ", options_.application_id, ": ", options_.threads,
                              " stream thread(s) on ", source_topic_, " (", source_partitions_,
                              " partitions), ",
                              options_.guarantee == ProcessingGuarantee::kExactlyOnceV2
                                  ? "exactly_once_v2"
                                  : "at_least_once"));
  return absl::OkStatus();
}

void Runtime::Stop() { stop_.store(true); }

absl::Status Runtime::Join() {
  absl::Status result;
  for (auto& t : threads_) result.Update(t->Join());
  return result;
}

uint64_t Runtime::consumed() const {
  uint64_t n = 0;
  for (const auto& t : threads_) n += t->consumed();
  return n;
}

static_assert(sizeof(RuntimeCounters) == 16 * sizeof(uint64_t),
              "a new counter: sum it in RuntimeCounters::operator+=");
RuntimeCounters& RuntimeCounters::operator+=(const RuntimeCounters& c) {
  records_read += c.records_read;
  records_processed += c.records_processed;
  windows_emitted += c.windows_emitted;
  dead_letters += c.dead_letters;
  duplicates += c.duplicates;
  dedupe_ids_evicted += c.dedupe_ids_evicted;
  late_dropped += c.late_dropped;
  late_window_updates += c.late_window_updates;
  commits += c.commits;
  rebuilds += c.rebuilds;
  tasks += c.tasks;
  committed_input += c.committed_input;
  input_lag += c.input_lag;
  input_wait_ms += c.input_wait_ms;
  commit_ms += c.commit_ms;
  rebalance_ms += c.rebalance_ms;
  return *this;
}

RuntimeCounters Runtime::counters() const {
  RuntimeCounters sum;
  for (const auto& t : threads_) sum += t->counters();
  return sum;
}

}  // namespace streammetrics::kafka
