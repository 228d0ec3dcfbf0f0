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

 private:
  struct TaskEntry {
    std::unique_ptr<CountingTaskProducer> out;
    std::unique_ptr<ChangelogReader> reader;
    std::unique_ptr<Task> task;
    uint64_t sent_at_commit = 0;
    uint64_t read_at_commit = 0;
    uint64_t windows_at_commit = 0;
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
  absl::StatusOr<int64_t> CreateTask(int32_t partition);
  // CreateTask, retried while what fails may pass (the broker unreachable; a store still
  // locked by the thread that had the partition and has not yet let it go).
  absl::StatusOr<int64_t> CreateTaskRetrying(int32_t partition);
  // What a retry may cure (Unavailable, Aborted, DeadlineExceeded) is retried with
  // backoff (*backoff_ms, doubled up to 5 s) until the thread is stopped; true: retry.
  bool ShouldRetry(const absl::Status& s, std::string_view what, int64_t* backoff_ms);
  void CloseTask(int32_t partition);
  absl::Status Seek(const std::map<int32_t, int64_t>& offsets);
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
  std::atomic<uint64_t> consumed_{0};  // messages taken from the consumer, live
  RuntimeCounters retired_;   // counters of closed tasks; thread-local

  KafkaHandle consumer_;
  std::unique_ptr<Producer> producer_;
  std::unique_ptr<KafkaChangelogReader> reader_;
  std::map<int32_t, TaskEntry> tasks_;
  bool in_transaction_ = false;
  bool closing_ = false;
  // The tasks' wall clock (validation's bounds, wall-clock punctuation): read once per
  // batch of records, not once per record (a clock read costs ~30 ns on a VM's clock).
  int64_t wall_ms_ = NowMs();
  bool assigned_once_ = false;  // the group gave this consumer an assignment (maybe empty)
  absl::Status rebalance_error_;
  uint64_t commits_ = 0;
  uint64_t rebuilds_ = 0;
  // Commits failed in a row on a record the broker refuses as it is (FailedPrecondition):
  // at kRefusedCommitLimit the thread stops. Not reset by a commit of less than the
  // last refused one had read (refused_at_, by partition): after a rebuild the first
  // commit may hold a record or two, which passes, and the next fails again.
  int refused_commits_ = 0;
  std::map<int32_t, int64_t> refused_at_;
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
      NewGroupConsumer(options().application_id, props, &RebalanceCallback, this, {rt_->source_topic_},
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

absl::StatusOr<int64_t> Runtime::Thread::CreateTask(int32_t partition) {
  const auto started = Clock::now();
  TaskEntry entry;
  entry.out = std::make_unique<CountingTaskProducer>(producer_.get(), options().application_id,
                                                     partition);
  entry.reader = reader_->ForPartition(partition);
  TaskConfig tc;
  tc.application_id = options().application_id;
  tc.partition = partition;
  tc.dead_letter_topic = options().dead_letter_topic;
  tc.dead_letter_max_bytes = MaxMessageBytes(options().kafka);
  if (!options().state_dir.empty()) tc.state_dir = StrCat(options().state_dir, "/", TaskId(partition));
  tc.rocksdb = options().rocksdb;
  tc.cache_budget = options().cache_budget;
  tc.changelog = entry.out.get();
  tc.changelog_reader = entry.reader.get();
  tc.checkpoint_every_changes = options().checkpoint_every_changes;
  tc.wall_clock = [this] { return wall_ms_; };
  absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(rt_->topology_, tc, entry.out.get());
  if (!task.ok()) {
    return absl::Status(task.status().code(),
                        StrCat("task ", TaskId(partition), ": ", task.status().message()));
  }
  entry.task = *std::move(task);
  // With stores, the commit markers are the only position that matches the state: no
  // marker means no commit, so the input starts at its beginning. Without stores, the
  // group's committed offset (INVALID: use it, or auto.offset.reset).
  int64_t next = rt_->topology_.stores().empty() ? RD_KAFKA_OFFSET_INVALID
                                                 : RD_KAFKA_OFFSET_BEGINNING;
  for (const InputOffset& o : entry.task->committed_offsets()) {
    if (o.topic == rt_->source_topic_ && o.partition == partition) next = o.next_offset;
  }
  const TaskRestoreReport& report = entry.task->restore_report();
  uint64_t applied = 0, discarded = 0;
  for (const StoreRestoreReport& r : report.stores) {
    applied += r.stats.records_applied;
    discarded += r.stats.records_discarded;
  }
  Log(LogLevel::kInfo,
      StrCat("task ", TaskId(partition), " restored in ", ElapsedMs(started), " ms: ", applied,
             " changes applied, ", discarded, " discarded, commit ", report.last_sequence,
             next >= 0 ? StrCat(", resuming at offset ", next)
                       : std::string(next == RD_KAFKA_OFFSET_BEGINNING ? ", from the start"
                                                                       : ", from the group's offset"),
             report.rebuilt_because.empty() ? std::string()
                                            : StrCat(" (rebuilt: ", report.rebuilt_because, ")")));
  tasks_[partition] = std::move(entry);
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

absl::StatusOr<int64_t> Runtime::Thread::CreateTaskRetrying(int32_t partition) {
  int64_t backoff_ms = 100;
  absl::StatusOr<int64_t> next;
  do {
    next = CreateTask(partition);
  } while (ShouldRetry(next.status(), "restore", &backoff_ms));
  return next;
}

void Runtime::Thread::CloseTask(int32_t partition) {
  auto it = tasks_.find(partition);
  if (it == tasks_.end()) return;
  AddTaskCounters(it->second.task->counters(), &retired_);
  if (absl::Status s = it->second.task->Close(); !s.ok()) {
    Log(LogLevel::kWarning, StrCat("task ", TaskId(partition), ": close: ", s.message()));
  }
  tasks_.erase(it);
}

absl::Status Runtime::Thread::Seek(const std::map<int32_t, int64_t>& offsets) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(offsets.size());
  bool any = false;
  for (const auto& [partition, offset] : offsets) {
    // Regression: BEGINNING (a task with no commit yet) was skipped, so such a task went on
    // from where its failed attempt had read, losing those records.
    if (offset < 0 && offset != RD_KAFKA_OFFSET_BEGINNING) continue;
    rd_kafka_topic_partition_list_add(list, rt_->source_topic_.c_str(), partition)->offset = offset;
    any = true;
  }
  absl::Status s;
  if (any) {
    rd_kafka_error_t* error = rd_kafka_seek_partitions(consumer_.get(), list, 10'000);
    s = KafkaStatus("seek", error);
  }
  rd_kafka_topic_partition_list_destroy(list);
  return s;
}

void Runtime::Thread::OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
  rd_kafka_t* rk = consumer_.get();
  const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    assigned_once_ = true;
    std::string names;
    for (int i = 0; i < parts->cnt; ++i) {
      rd_kafka_topic_partition_t& p = parts->elems[i];
      if (!rebalance_error_.ok()) break;
      absl::StatusOr<int64_t> next = CreateTaskRetrying(p.partition);
      if (!next.ok()) {
        rebalance_error_ = next.status();
        break;
      }
      p.offset = *next;  // the commit marker's offset; INVALID: the group's, or earliest
      names += StrCat(names.empty() ? "" : ",", p.partition);
    }
    Log(LogLevel::kInfo, StrCat("thread ", index_, ": assigned partitions [", names, "]"));
    PublishCounters();
    if (cooperative) {
      rebalance_error_.Update(KafkaStatus("incremental assign", rd_kafka_incremental_assign(rk, parts)));
    } else {
      rebalance_error_.Update(KafkaStatus("assign", rd_kafka_assign(rk, parts)));
    }
    return;
  }
  // Revoked: commit what the thread has, then close those tasks cleanly. Lost (the
  // session expired, others may own them now): no commit; the tasks close as failed,
  // without a checkpoint.
  const bool lost = rd_kafka_assignment_lost(rk);
  if (!closing_ && !lost && rebalance_error_.ok()) rebalance_error_.Update(CommitAll(true));
  std::string names;
  for (int i = 0; i < parts->cnt; ++i) {
    auto it = tasks_.find(parts->elems[i].partition);
    if (lost && it != tasks_.end()) it->second.task->AbortCommit(absl::AbortedError("lost")).IgnoreError();
    CloseTask(parts->elems[i].partition);
    names += StrCat(names.empty() ? "" : ",", parts->elems[i].partition);
  }
  Log(LogLevel::kInfo, StrCat("thread ", index_, lost ? ": lost partitions [" : ": revoked partitions [",
                              names, "]"));
  PublishCounters();
  if (cooperative) {
    KafkaStatus("incremental unassign", rd_kafka_incremental_unassign(rk, parts)).IgnoreError();
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

absl::Status Runtime::Thread::ProcessMessage(const rd_kafka_message_t* m) {
  auto it = tasks_.find(m->partition);
  if (it == tasks_.end()) return absl::OkStatus();  // not ours (any more)
  if (eos() && !in_transaction_) {
    if (absl::Status s = producer_->BeginTransaction(); !s.ok()) return s;
    in_transaction_ = true;
  }
  rd_kafka_timestamp_type_t type;
  const int64_t ts = rd_kafka_message_timestamp(m, &type);
  SourceRecord record;
  record.topic = rt_->source_topic_;
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
      if (o.topic == rt_->source_topic_) offsets.push_back(std::move(o));
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
  if (refused_commits_ > 0 && PassedRefusedCommit()) {
    refused_commits_ = 0;
    refused_at_.clear();
  }
  return absl::OkStatus();
}

absl::Status Runtime::Thread::RebuildTasks(const absl::Status& why) {
  ++rebuilds_;
  producer_->DropHeld();  // a failed commit's changes: the tasks restart from the last commit
  LogEvery(StrCat("rebuild-", index_), 5'000, LogLevel::kWarning,
           StrCat("thread ", index_, ": commit failed (", why.message(),
                  "); rebuilding its tasks from their changelogs"));
  std::vector<int32_t> partitions;
  const bool refused = absl::IsFailedPrecondition(why);
  if (refused) RecordRefusedPositions();
  for (auto& [p, e] : tasks_) {
    e.task->AbortCommit(why).IgnoreError();  // failed: closes without a checkpoint
    partitions.push_back(p);
  }
  for (int32_t p : partitions) CloseTask(p);
  int64_t backoff_ms = 100;
  auto retry = [&](const absl::Status& s, std::string_view what) {
    return ShouldRetry(s, what, &backoff_ms);
  };
  if (eos() && in_transaction_) {
    in_transaction_ = false;
    if (!producer_->AbortTransaction().ok()) {
      absl::Status s;
      do {
        s = NewProducer();  // fenced or fatal: a new producer, a new epoch
      } while (retry(s, "new producer"));
      if (!s.ok()) return s;
    }
  }
  std::map<int32_t, int64_t> offsets;
  for (int32_t p : partitions) {
    absl::StatusOr<int64_t> next = CreateTask(p);
    if (absl::IsUnavailable(next.status()) &&
        std::string(next.status().message()).find("lock") != std::string::npos) {
      // Another thread of this process holds the partition's stores: a rebalance moved it
      // there while this thread was failing; the consumer's next callback says so.
      Log(LogLevel::kInfo, StrCat("thread ", index_, ": partition ", p,
                                  " is now another thread's; not rebuilt here"));
      continue;
    }
    if (!next.ok()) next = CreateTaskRetrying(p);
    if (!next.ok()) return next.status();
    offsets[p] = *next;
  }
  // A partition with no commit yet restarts from its start.
  for (auto& [p, offset] : offsets) {
    if (offset < 0) offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  absl::Status s = Seek(offsets);
  PublishCounters();
  Log(LogLevel::kInfo, StrCat("thread ", index_, ": rebuilt ", partitions.size(), " task(s)",
                              s.ok() ? std::string() : StrCat("; seek: ", s.message())));
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
  return s;
}

void Runtime::Thread::RecordRefusedPositions() {
  refused_at_.clear();
  if (tasks_.empty()) return;
  // The consumer's positions: past the last record it handed over, all processed here
  // (on a failed record the rest of its batch was not, which only asks for more).
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(tasks_.size());
  for (const auto& [p, e] : tasks_) rd_kafka_topic_partition_list_add(list, rt_->source_topic_.c_str(), p);
  if (rd_kafka_position(consumer_.get(), list) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < list->cnt; ++i) {
      refused_at_[list->elems[i].partition] = list->elems[i].offset >= 0 ? list->elems[i].offset : -1;
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
      if (o.topic == rt_->source_topic_) committed = o.next_offset;
    }
    if (committed < at) return false;
  }
  return true;
}

void Runtime::Thread::PublishCounters() {
  RuntimeCounters c = retired_;
  for (auto& [p, e] : tasks_) {
    int64_t committed = -1;
    for (const InputOffset& o : e.task->committed_offsets()) {
      if (o.topic == rt_->source_topic_ && o.partition == p) committed = o.next_offset;
      if (o.topic == rt_->source_topic_) c.committed_input += o.next_offset;
    }
    // The watermarks the consumer's fetches brought (cached, thread-safe, no request).
    int64_t low = -1, high = -1;
    if (rd_kafka_get_watermark_offsets(consumer_.get(), rt_->source_topic_.c_str(), p, &low,
                                       &high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        high >= 0) {
      const int64_t from = committed >= 0 ? committed : std::max<int64_t>(low, 0);
      c.input_lag += std::max<int64_t>(0, high - from);
    }
    AddTaskCounters(e.task->counters(), &c);
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
      } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
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
      if (absl::Status s = CommitAll(false); !s.ok()) {
        status = s;
        break;
      }
    }
  }
  // Shutdown: the current batch is done; commit, checkpoint, leave the group.
  closing_ = true;
  if (status.ok()) status = CommitAll(true);
  std::vector<int32_t> partitions;
  for (auto& [p, e] : tasks_) partitions.push_back(p);
  if (!status.ok()) {
    for (auto& [p, e] : tasks_) e.task->AbortCommit(status).IgnoreError();
  }
  for (int32_t p : partitions) CloseTask(p);
  PublishCounters();
  if (eos() && in_transaction_) producer_->AbortTransaction().IgnoreError();
  rd_kafka_consumer_close(consumer_.get());
  if (!assigned_once_) {
    // librdkafka before 2.3.0 (Debian 12 has 2.0.2) asserts when a cooperative-sticky
    // consumer whose group join got as far as the protocol but not the first assignment
    // is destroyed (librdkafka #4312): this one is closed (it left the group) and let go
    // of instead. Only a thread stopped during its first join gets here.
    Log(LogLevel::kInfo, StrCat("thread ", index_, ": stopped before its first assignment"));
    static_cast<void>(consumer_.release());
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
    return absl::InvalidArgumentError("runtime: the topology must read exactly one topic");
  }
  if (options.threads < 1) return absl::InvalidArgumentError("runtime: threads must be >= 1");
  if (options.commit_interval_ms < 1) {
    return absl::InvalidArgumentError("runtime: commit interval must be >= 1 ms");
  }
  for (const StoreDef& def : topology.stores()) {
    if (def.type == StoreType::kRocksDb && options.state_dir.empty()) {
      return absl::InvalidArgumentError("runtime: RocksDB stores need a state directory");
    }
  }
  std::unique_ptr<Runtime> rt(new Runtime(topology, std::move(options)));
  rt->source_topic_ = sources[0];
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
  for (const std::string& t : outputs) {
    if (!topics.contains(t)) {
      return absl::FailedPreconditionError(StrCat("output topic ", t, " does not exist"));
    }
  }
  bool created = false;
  for (const StoreDef& def : topology_.stores()) {
    const std::string name = ChangelogTopic(options_.application_id, def.name);
    auto it = topics.find(name);
    if (it != topics.end()) {
      if (it->second != source_partitions_) {
        return absl::FailedPreconditionError(
            StrCat("changelog topic ", name, " has ", it->second, " partitions, ",
                   source_topic_, " has ", source_partitions_,
                   ": they must match (delete the changelog and reset the application)"));
      }
      continue;
    }
    if (options_.embedded_broker != nullptr) {
      if (absl::Status s = options_.embedded_broker->CreateTopic(name, source_partitions_); !s.ok()) {
        return s;
      }
      created = true;
      continue;
    }
    // A real broker: CreateTopics, compacted (the dev broker's protocol has none; its
    // `streammetrics broker` creates the internal topics up front).
    rd_kafka_NewTopic_t* nt = nullptr;
    char err[256];
    nt = rd_kafka_NewTopic_new(name.c_str(), source_partitions_, -1, err, sizeof(err));
    if (nt == nullptr) return absl::InvalidArgumentError(StrCat("changelog topic ", name, ": ", err));
    // Window stores' changelogs also delete by time (their old panes get no tombstones):
    // the store's retention plus a day, as Kafka Streams'
    // windowstore.changelog.additional.retention.ms.
    if (def.kind == StoreKind::kWindow && def.retention_ms > 0) {
      rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact,delete");
      rd_kafka_NewTopic_set_config(nt, "retention.ms",
                                   StrCat(def.retention_ms + 24 * 3'600'000LL).c_str());
    } else {
      rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
    }
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk->get());
    rd_kafka_CreateTopics(rk->get(), &nt, 1, nullptr, q);
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30'000);
    absl::Status s;
    if (ev == nullptr) {
      s = absl::FailedPreconditionError(
          StrCat("changelog topic ", name, " does not exist and the broker did not create it; ",
                 "create it with ", source_partitions_, " partitions"));
    } else {
      const rd_kafka_CreateTopics_result_t* res = rd_kafka_event_CreateTopics_result(ev);
      size_t n = 0;
      const rd_kafka_topic_result_t** results =
          res != nullptr ? rd_kafka_CreateTopics_result_topics(res, &n) : nullptr;
      if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        s = KafkaStatus(StrCat("create changelog topic ", name), rd_kafka_event_error(ev));
      } else if (n == 1 && rd_kafka_topic_result_error(results[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
                 rd_kafka_topic_result_error(results[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        s = KafkaStatus(StrCat("create changelog topic ", name),
                        rd_kafka_topic_result_error(results[0]));
      }
      rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    if (!s.ok()) return s;
    created = true;
  }
  if (created) Log(LogLevel::kInfo, "created the changelog topics");
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

static_assert(sizeof(RuntimeCounters) == 15 * sizeof(uint64_t),
              "a new counter: sum it in RuntimeCounters::operator+=");
RuntimeCounters& RuntimeCounters::operator+=(const RuntimeCounters& c) {
  records_read += c.records_read;
  records_processed += c.records_processed;
  windows_emitted += c.windows_emitted;
  dead_letters += c.dead_letters;
  duplicates += c.duplicates;
  dedupe_ids_evicted += c.dedupe_ids_evicted;
  late_dropped += c.late_dropped;
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
