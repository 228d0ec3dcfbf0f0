// Changelogs and exact recovery (statestore/changelog.h, statestore/logged_stores.h,
// engine/task.h): commit markers, restore to the last complete commit, the staged
// changelogging stores, and fault injection at every step of a commit against an
// in-memory transactional log (engine/in_memory_log.h) — no broker needed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "apps/event_generator.h"
#include "engine/in_memory_log.h"
#include "engine/task.h"
#include "operators/strings.h"
#include "operators/windowed_aggregate.h"
#include "statestore/cache_budget.h"
#include "statestore/changelog.h"
#include "statestore/in_memory_stores.h"
#include "statestore/logged_stores.h"
#include "statestore/rocksdb_stores.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            StrCat("sm_changelog_", ::getpid(), "_", counter++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------
// Commit markers and RestoreFromChangelog.

TEST(CommitMarker, RoundTripsAndRejectsCorruption) {
  CommitMarker m{.incarnation = 0xfeed, .sequence = 42,
                 .offsets = {{"a", 0, 17}, {"metrics-events", 5, 1'000'000'000'000}}};
  absl::StatusOr<CommitMarker> back = CommitMarker::Decode(m.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, m);
  std::string bytes = m.Encode();
  EXPECT_EQ(CommitMarker::Decode(bytes.substr(0, bytes.size() - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(CommitMarker::Decode(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  bytes[0] = 9;
  EXPECT_EQ(std::string(CommitMarker::Decode(bytes).status().message()),
            "changelog: unreadable commit marker: unknown version");
}

// Writes changelog records straight to a log, as a task would.
class LogWriter {
 public:
  explicit LogWriter(InMemoryLog* log) : log_(log) {}
  void Put(uint64_t inc, uint64_t seq, std::string key, std::string value) {
    log_->changelog_writer()->Append(
        "s", ChangeRecord{.type = ChangeType::kPut, .key = key, .value = value,
                          .incarnation = inc, .sequence = seq});
  }
  void Marker(uint64_t inc, uint64_t seq, int64_t offset) {
    std::string m = CommitMarker{.incarnation = inc, .sequence = seq,
                                 .offsets = {{"in", 0, offset}}}
                        .Encode();
    log_->changelog_writer()->Append(
        "s", ChangeRecord{.type = ChangeType::kCommit, .value = m, .incarnation = inc,
                          .sequence = seq});
  }

 private:
  InMemoryLog* log_;
};

// Replays "s" and returns what was applied, "key=value" in order.
std::vector<std::string> Replay(InMemoryLog& log, uint64_t max_sequence, RestoreStats* stats,
                                int64_t from = 0) {
  std::vector<std::string> applied;
  absl::StatusOr<RestoreStats> s = RestoreFromChangelog(
      *log.changelog_reader(), "s", from, max_sequence,
      [&](std::span<const ChangeRecord> commit) {
        for (const ChangeRecord& c : commit) applied.push_back(StrCat(c.key, "=", c.value));
        return absl::OkStatus();
      });
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) *stats = *s;
  return applied;
}

// Proves only changes followed by their attempt's marker are applied: a commit that
// never finished (no marker) and records of a dead incarnation are discarded, even where
// the log shows them (as the dev broker shows aborted transactions).
TEST(RestoreFromChangelog, AppliesOnlyCommittedAttempts) {
  InMemoryLog log(InMemoryLog::Visibility::kShowsUncommitted);
  LogWriter w(&log);
  w.Put(1, 1, "a", "1");
  w.Put(1, 1, "b", "1");
  w.Marker(1, 1, 10);
  w.Put(1, 2, "a", "2-lost");  // incarnation 1 crashed in commit 2
  w.Put(7, 2, "a", "2");       // incarnation 7 redid commit 2
  w.Marker(7, 2, 20);
  w.Put(7, 3, "c", "3-unfinished");
  RestoreStats stats;
  EXPECT_THAT(Replay(log, UINT64_MAX, &stats), ElementsAre("a=1", "b=1", "a=2"));
  EXPECT_EQ(stats.records_applied, 3u);
  EXPECT_EQ(stats.records_discarded, 2u);
  EXPECT_EQ(stats.commits, 2u);
  EXPECT_EQ(stats.end_offset, 7);
  ASSERT_TRUE(stats.last_marker.has_value());
  EXPECT_EQ(stats.last_marker->sequence, 2u);
  EXPECT_EQ(stats.last_marker->offsets[0].next_offset, 20);
}

// Proves a commit whose marker is visible but that a restarted task redid (because
// another store of the task never showed it) is superseded by the redo, and that
// max_sequence stops a restore before a commit not every store saw.
TEST(RestoreFromChangelog, RedoneCommitSupersedesTheFirstAndMaxSequenceBounds) {
  InMemoryLog log(InMemoryLog::Visibility::kShowsUncommitted);
  LogWriter w(&log);
  w.Put(1, 1, "a", "1");
  w.Marker(1, 1, 10);
  w.Put(1, 2, "a", "2-first");
  w.Put(1, 2, "x", "only-in-first");
  w.Marker(1, 2, 20);
  RestoreStats stats;
  EXPECT_THAT(Replay(log, 1, &stats), ElementsAre("a=1"));  // the task resumes after 1
  EXPECT_EQ(stats.last_marker->sequence, 1u);
  EXPECT_EQ(stats.records_discarded, 2u);

  w.Put(9, 2, "a", "2-redo");
  w.Marker(9, 2, 20);
  EXPECT_THAT(Replay(log, UINT64_MAX, &stats), ElementsAre("a=1", "a=2-redo"));
  EXPECT_EQ(stats.last_marker->incarnation, 9u);
  EXPECT_EQ(stats.records_discarded, 2u);
}

TEST(RestoreFromChangelog, CorruptMarkerIsDataLossNamingTheOffset) {
  InMemoryLog log;
  log.changelog_writer()->Append("s", ChangeRecord{.type = ChangeType::kCommit, .value = "?"});
  log.collector()->Flush().IgnoreError();
  absl::StatusOr<RestoreStats> s = RestoreFromChangelog(
      *log.changelog_reader(), "s", 0, UINT64_MAX,
      [](std::span<const ChangeRecord>) { return absl::OkStatus(); });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(std::string(s.status().message()),
            "changelog of s at offset 0: changelog: unreadable commit marker: unknown version");
}

// ---------------------------------------------------------------------------------
// The staged changelogging stores.

std::string KvContents(const KeyValueStore& store) {
  std::string out;
  EXPECT_TRUE(store
                  .Range("", "",
                         [&](std::string_view k, std::string_view v) {
                           out += StrCat(k, "=", v, ";");
                           return absl::OkStatus();
                         })
                  .ok());
  return out;
}

std::string WindowContents(const WindowStore& store) {
  std::string out;
  EXPECT_TRUE(store
                  .FetchAll(INT64_MIN, INT64_MAX,
                            [&](std::string_view k, int64_t start, std::string_view v) {
                              out += StrCat(k, "@", start, "=", v, ";");
                              return absl::OkStatus();
                            })
                  .ok());
  return out;
}

// Proves a logged key-value store's reads merge staged changes over the local store
// (overwrites, deletes, new keys on both sides of local ones), that the local store
// sees nothing until ApplyStaged, and that a discarded commit leaves no trace.
TEST(LoggedStores, KeyValueReadsMergeStagedOverLocalAndLocalWaitsForTheCommit) {
  InMemoryLog log;
  CommitAttempt attempt{.incarnation = 3, .sequence = 1};
  auto local_owned = NewInMemoryKeyValueStore("kv");
  KeyValueStore* local = local_owned.get();
  ASSERT_TRUE(local->Put("b", "local-b").ok());
  ASSERT_TRUE(local->Put("d", "local-d").ok());
  ASSERT_TRUE(local->Put("f", "local-f").ok());
  auto store = NewLoggedKeyValueStore(std::move(local_owned), log.changelog_writer(), &attempt);
  ASSERT_TRUE(store->Put("a", "new-a").ok());
  ASSERT_TRUE(store->Put("d", "new-d").ok());
  ASSERT_TRUE(store->Delete("f").ok());
  ASSERT_TRUE(store->Put("g", "new-g").ok());
  EXPECT_EQ(KvContents(*store), "a=new-a;b=local-b;d=new-d;g=new-g;");
  std::string v;
  EXPECT_FALSE(*store->Get("f", &v));
  EXPECT_TRUE(*store->Get("d", &v));
  EXPECT_EQ(v, "new-d");
  std::string some;
  ASSERT_TRUE(store
                  ->Range("b", "e",
                          [&](std::string_view k, std::string_view) {
                            some += k;
                            return absl::OkStatus();
                          })
                  .ok());
  EXPECT_EQ(some, "bd");
  EXPECT_EQ(KvContents(*local), "b=local-b;d=local-d;f=local-f;");

  LoggedStore* logged = AsLoggedStore(store.get());
  ASSERT_NE(logged, nullptr);
  EXPECT_EQ(logged->changes_logged(), 4u);
  ASSERT_TRUE(logged->ApplyStaged().ok());
  EXPECT_EQ(KvContents(*local), "a=new-a;b=local-b;d=new-d;g=new-g;");

  ASSERT_TRUE(store->Put("b", "never").ok());
  logged->DiscardStaged();
  EXPECT_EQ(KvContents(*store), "a=new-a;b=local-b;d=new-d;g=new-g;");
  EXPECT_EQ(KvContents(*local), "a=new-a;b=local-b;d=new-d;g=new-g;");

  // The changelog holds every change in order, tagged with the attempt.
  log.collector()->Flush().IgnoreError();
  std::vector<std::string> changes;
  ASSERT_TRUE(log.changelog_reader()
                  ->Read("kv", 0,
                         [&](int64_t, const ChangeRecord& c) {
                           changes.push_back(StrCat(static_cast<int>(c.type), ":", c.key, "=",
                                                    c.value, "@", c.incarnation, "/",
                                                    c.sequence));
                           return absl::OkStatus();
                         })
                  .ok());
  EXPECT_THAT(changes, ElementsAre("1:a=new-a@3/1", "1:d=new-d@3/1", "2:f=@3/1",
                                   "1:g=new-g@3/1", "1:b=never@3/1"));
}

// Proves the window store's merge honours a staged DeleteBefore (local windows before it
// vanish, a later Put before it survives), per-key FetchRange, and applies in order.
TEST(LoggedStores, WindowReadsMergeStagedChangesAndDeleteBefore) {
  InMemoryLog log;
  CommitAttempt attempt{.incarnation = 1, .sequence = 1};
  auto local_owned = NewInMemoryWindowStore("w");
  WindowStore* local = local_owned.get();
  ASSERT_TRUE(local->Put("k", 10, "old10").ok());
  ASSERT_TRUE(local->Put("k", 20, "old20").ok());
  ASSERT_TRUE(local->Put("j", 30, "old30").ok());
  auto store = NewLoggedWindowStore(std::move(local_owned), log.changelog_writer(), &attempt);
  ASSERT_TRUE(store->Put("k", 15, "new15").ok());
  ASSERT_TRUE(store->DeleteBefore(20).ok());  // drops local 10 and staged 15
  ASSERT_TRUE(store->Put("k", 5, "late5").ok());
  ASSERT_TRUE(store->Put("j", 30, "new30").ok());
  ASSERT_TRUE(store->Put("k", 40, "new40").ok());
  EXPECT_EQ(WindowContents(*store), "k@5=late5;k@20=old20;j@30=new30;k@40=new40;");
  std::string range;
  ASSERT_TRUE(store
                  ->FetchRange("k", 0, 41,
                               [&](int64_t start, std::string_view v) {
                                 range += StrCat(start, "=", v, ";");
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(range, "5=late5;20=old20;40=new40;");
  std::string v;
  EXPECT_FALSE(*store->Fetch("k", 10, &v));
  EXPECT_EQ(WindowContents(*local), "k@10=old10;k@20=old20;j@30=old30;");
  ASSERT_TRUE(AsLoggedStore(store.get())->ApplyStaged().ok());
  EXPECT_EQ(WindowContents(*local), "k@5=late5;k@20=old20;j@30=new30;k@40=new40;");
}

// The harness itself: a RocksDB store closed as crashed keeps what it flushed and loses
// the rest (no WAL), which is what the fault-injection tests below rely on.
TEST(LoggedStores, RocksDbClosedAsCrashedLosesExactlyTheUnflushedWrites) {
  TempDir dir;
  auto resources = RocksDbResources::Create({});
  {
    auto kv = OpenRocksDbKeyValueStore("kv", dir.str(), resources);
    ASSERT_TRUE(kv.ok()) << kv.status();
    ASSERT_TRUE((*kv)->Put("flushed", "1").ok());
    ASSERT_TRUE((*kv)->Flush().ok());
    ASSERT_TRUE((*kv)->Put("unflushed", "2").ok());
    ASSERT_TRUE(CloseRocksDbStoreAsCrashed(kv->get()).ok());
  }
  auto kv = OpenRocksDbKeyValueStore("kv", dir.str(), resources);
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(KvContents(**kv), "flushed=1;");
}

// ---------------------------------------------------------------------------------
// Tasks: exact recovery at every step of a commit.

constexpr int64_t kWallClock = 1'707'300'000'000;

struct Fault {
  int attempt;  // the n-th commit attempt of the run, from 1
  CommitStep step;
};

struct RunOptions {
  StoreType store = StoreType::kRocksDb;
  InMemoryLog::Visibility visibility = InMemoryLog::Visibility::kReadCommitted;
  std::vector<Fault> faults;
  uint64_t checkpoint_every_changes = 300;
  size_t commit_every = 500;
  // After these commit attempts succeed, the task is closed cleanly and created again.
  std::vector<int> clean_restarts;
  // Called with the task's state directory before each re-creation.
  std::function<void(const fs::path&)> damage;
  std::shared_ptr<CacheBudget> cache_budget;
  // The state dir starts with the checkpointed state of a run over another log (as a
  // run of the in-process dev broker leaves for the next, whose broker is new).
  bool stale_state = false;
};

struct RunResult {
  std::vector<std::string> outputs;  // what a read_committed consumer would read
  TaskRestoreReport first_restore;
  std::vector<TaskRestoreReport> restores;  // one per task created after the first
  int crashes = 0;
  int clean_restarts = 0;
  size_t max_evicted_panes = 0;  // seen at commits
  std::vector<size_t> changelog_sizes;  // at each re-creation: aggregate, dedupe
};

class RecoveryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    GeneratorOptions g;
    g.seed = 11;
    g.events_per_second = 100;  // 10K events over ~100 s: windows close during the run
    g.duplicate_fraction = 0.02;
    EventGenerator generator(g);
    events_ = new std::vector<std::string>(10'000);
    for (std::string& e : *events_) generator.Next(&e);
  }
  static void TearDownTestSuite() { delete events_; }

  // Runs the reference pipeline over the events with commits at fixed offsets; each
  // fault fails its commit attempt at its step, the task is ended as a kill -9 ends it,
  // the open transaction aborted, and a new task created on the same log and state dir
  // resumes from its restored offsets.
  RunResult Run(const RunOptions& o) {
    TempDir dir;
    PipelineConfig config = ReferencePipelineConfig();
    config.keying = InputKeying::kSingleTask;
    config.store = o.store;
    absl::StatusOr<Topology> topology = BuildMetricsTopology(config);
    EXPECT_TRUE(topology.ok()) << topology.status();
    InMemoryLog log(o.visibility);
    RunResult result;
    int attempt = 0;
    std::vector<bool> fired(o.faults.size(), false);

    TaskConfig tc;
    tc.wall_clock = [] { return kWallClock; };
    tc.state_dir = (dir.path() / TaskId(0)).string();
    tc.changelog = log.changelog_writer();
    tc.changelog_reader = log.changelog_reader();
    tc.checkpoint_every_changes = o.checkpoint_every_changes;
    tc.cache_budget = o.cache_budget;
    tc.fault_injector = [&](CommitStep step) -> absl::Status {
      if (step == CommitStep::kProcessorsFlushed) ++attempt;
      for (size_t i = 0; i < o.faults.size(); ++i) {
        if (!fired[i] && o.faults[i].attempt == attempt && o.faults[i].step == step) {
          fired[i] = true;
          return absl::AbortedError("injected");
        }
      }
      return absl::OkStatus();
    };

    if (o.stale_state) {
      InMemoryLog other(o.visibility);
      TaskConfig before = tc;
      before.fault_injector = nullptr;
      before.changelog = other.changelog_writer();
      before.changelog_reader = other.changelog_reader();
      absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(*topology, before, other.collector());
      EXPECT_TRUE(task.ok()) << task.status();
      if (!task.ok()) return result;
      for (int64_t i = 0; i < 3'000; ++i) {
        SourceRecord r{.topic = "metrics-events", .partition = 0, .offset = i,
                       .timestamp_ms = kWallClock, .value = (*events_)[(i + 5'000) % events_->size()]};
        EXPECT_TRUE((*task)->Process(r).ok());
        if ((i + 1) % o.commit_every == 0) {
          EXPECT_TRUE((*task)->Commit().ok());
        }
      }
      EXPECT_TRUE((*task)->Close().ok());
    }

    uint64_t committed_before_crash = 0;
    size_t aborted_from = 0;
    for (bool first = true;; first = false) {
      absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(*topology, tc, log.collector());
      EXPECT_TRUE(task.ok()) << task.status();
      if (!task.ok()) return result;
      Task& t = **task;
      if (first) result.first_restore = t.restore_report();
      if (!first) {
        result.restores.push_back(t.restore_report());
        result.changelog_sizes.push_back(log.ChangelogSize("aggregate-store"));
        // The dev broker shows the crashed attempt's outputs; they count as committed
        // exactly when restore found that attempt's markers in every changelog.
        if (committed_before_crash != UINT64_MAX &&
            t.restore_report().last_sequence > committed_before_crash) {
          log.TreatAsCommittedSince(aborted_from);
        }
      }
      int64_t next = 0;
      for (const InputOffset& off : t.committed_offsets()) {
        if (off.topic == "metrics-events") next = off.next_offset;
      }
      absl::Status status;
      for (int64_t i = next; i < static_cast<int64_t>(events_->size()) && status.ok(); ++i) {
        SourceRecord r{.topic = "metrics-events", .partition = 0, .offset = i,
                       .timestamp_ms = kWallClock, .value = (*events_)[i]};
        status = t.Process(r);
        if (status.ok() && (i + 1) % o.commit_every == 0) {
          status = t.Commit();
          if (auto* agg = Aggregate(t)) {
            result.max_evicted_panes = std::max(result.max_evicted_panes, agg->evicted_panes());
          }
          if (status.ok() && std::find(o.clean_restarts.begin(), o.clean_restarts.end(),
                                       attempt) != o.clean_restarts.end()) {
            status = absl::CancelledError("clean restart");
          }
        }
      }
      if (status.code() == absl::StatusCode::kCancelled) {
        EXPECT_TRUE(t.Close().ok());
        task->reset();
        ++result.clean_restarts;
        if (o.damage) o.damage(tc.state_dir);
        committed_before_crash = UINT64_MAX;
        continue;
      }
      if (status.ok()) status = t.EndOfInput();
      if (status.ok()) {
        EXPECT_TRUE(t.Close().ok());
        break;
      }
      EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
      ++result.crashes;
      committed_before_crash = t.last_committed_sequence();
      aborted_from = log.open_transaction_start();
      t.CloseAsCrashed();
      task->reset();
      log.AbortOpenTransaction();
    }
    for (const auto& out : log.Outputs()) {
      if (!out.aborted) result.outputs.push_back(Describe(out.record));
    }
    return result;
  }

  static const WindowedAggregateProcessor* Aggregate(Task& t) { return t.FindProcessor<WindowedAggregateProcessor>(); }

  static std::string Describe(const OutputRecord& r) {
    std::string s = StrCat(r.topic, "|", r.key, "|", r.value);
    for (const auto& [k, v] : r.headers) s += StrCat("|", k, "=", v);
    return s;
  }

  static std::vector<std::string>* events_;
};

std::vector<std::string>* RecoveryTest::events_ = nullptr;

void ExpectSameOutputs(const RunResult& expected, const RunResult& got) {
  ASSERT_EQ(expected.outputs.size(), got.outputs.size());
  for (size_t i = 0; i < expected.outputs.size(); ++i) {
    ASSERT_EQ(expected.outputs[i], got.outputs[i]) << "output " << i;
  }
}

struct StepCase {
  CommitStep step;
  const char* name;
};
const StepCase kSteps[] = {
    {CommitStep::kProcessorsFlushed, "processors flushed"},
    {CommitStep::kMarkersAppended, "markers appended"},
    {CommitStep::kCollectorCommitted, "transaction committed"},
    {CommitStep::kFirstStoreApplied, "first store applied"},
    {CommitStep::kStoresApplied, "stores applied"},
    {CommitStep::kCheckpointFlushed, "checkpoint flushed"},
};

// Proves exact recovery at every step of a commit, for RocksDB and in-memory stores and
// for both visibilities of an unfinished transaction: a task failed at that step and
// ended as by kill -9, then restored from the changelogs (RocksDB: from the local
// checkpoint plus the changelog tail), sends exactly the records — every window result
// to the byte, every dead letter, duplicates still recognised — that one uninterrupted
// run sends. Three crashes per run, one of them in the first commit.
TEST_F(RecoveryTest, CrashAtEveryCommitStepRecoversExactly) {
  for (StoreType store : {StoreType::kRocksDb, StoreType::kInMemory}) {
    for (auto visibility : {InMemoryLog::Visibility::kReadCommitted,
                            InMemoryLog::Visibility::kShowsUncommitted}) {
      RunOptions base{.store = store, .visibility = visibility};
      RunResult expected = Run(base);
      ASSERT_GT(expected.outputs.size(), 300u);
      for (const StepCase& step : kSteps) {
        SCOPED_TRACE(StrCat(store == StoreType::kRocksDb ? "rocksdb" : "memory", ", ",
                            visibility == InMemoryLog::Visibility::kReadCommitted
                                ? "read_committed"
                                : "shows uncommitted",
                            ", crash at: ", step.name));
        RunOptions o = base;
        // Checkpoint at every commit when the checkpoint itself is the step under test.
        if (step.step == CommitStep::kCheckpointFlushed) o.checkpoint_every_changes = 1;
        o.faults = {{1, step.step}, {8, step.step}, {15, step.step}};
        RunResult got = Run(o);
        const bool durable_only = step.step == CommitStep::kCheckpointFlushed &&
                                  store == StoreType::kInMemory;
        EXPECT_EQ(got.crashes, durable_only ? 0 : 3);
        ExpectSameOutputs(expected, got);
      }
    }
  }
}

const StoreRestoreReport* Find(const TaskRestoreReport& r, std::string_view store) {
  for (const StoreRestoreReport& s : r.stores) {
    if (s.store == store) return &s;
  }
  return nullptr;
}

// Proves a clean shutdown writes a checkpoint that makes the restart replay nothing, and
// that a crash replays only the changelog tail after the last checkpoint — exactly the
// committed changes written since — instead of wiping the store; results stay exact.
TEST_F(RecoveryTest, CleanRestartReplaysNothingAndACrashOnlyTheTail) {
  RunResult expected = Run({});
  RunOptions o;
  o.checkpoint_every_changes = 1'000'000;  // checkpoints only at clean shutdowns
  o.clean_restarts = {4};
  o.faults = {{9, CommitStep::kStoresApplied}};
  RunResult got = Run(o);
  ASSERT_EQ(got.clean_restarts, 1);
  ASSERT_EQ(got.crashes, 1);
  ExpectSameOutputs(expected, got);
  ASSERT_EQ(got.restores.size(), 2u);

  // The clean restart: positioned at the end of each changelog, nothing applied.
  const StoreRestoreReport* clean = Find(got.restores[0], "aggregate-store");
  ASSERT_NE(clean, nullptr);
  EXPECT_EQ(clean->from_offset, static_cast<int64_t>(got.changelog_sizes[0]));
  EXPECT_EQ(clean->stats.records_applied, 0u);
  EXPECT_EQ(clean->stats.commits, 0u);
  EXPECT_EQ(got.restores[0].last_sequence, 4u);
  const StoreRestoreReport* clean_dd = Find(got.restores[0], "dedupe-store");
  ASSERT_NE(clean_dd, nullptr);
  EXPECT_EQ(clean_dd->stats.records_applied, 0u);

  // The crash in commit 9 after its transaction committed: from the same checkpoint, the
  // tail holds commits 5..9, every change of which is applied (none discarded).
  const StoreRestoreReport* tail = Find(got.restores[1], "aggregate-store");
  ASSERT_NE(tail, nullptr);
  EXPECT_EQ(tail->from_offset, clean->from_offset);
  EXPECT_EQ(tail->stats.commits, 5u);
  EXPECT_EQ(tail->stats.records_discarded, 0u);
  EXPECT_EQ(tail->stats.records_applied,
            got.changelog_sizes[1] - static_cast<size_t>(tail->from_offset) - 5);
  EXPECT_GT(tail->stats.records_applied, 100u);
  EXPECT_EQ(got.restores[1].last_sequence, 9u);
  EXPECT_EQ(got.restores[1].rebuilt_because, "");
}

// Proves a corrupt local store is detected (DataLoss), wiped and rebuilt from the
// changelogs to the same values: the run's results equal an uninterrupted run's.
TEST_F(RecoveryTest, CorruptLocalStoreIsRebuiltFromTheChangelog) {
  RunResult expected = Run({});
  RunOptions o;
  o.clean_restarts = {6};
  o.damage = [](const fs::path& state_dir) {
    int corrupted = 0;
    for (const auto& e : fs::directory_iterator(state_dir / "aggregate-store")) {
      if (e.path().extension() != ".sst") continue;
      const auto size = fs::file_size(e.path());
      std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << std::string(size, 'Z');
      ++corrupted;
    }
    EXPECT_GT(corrupted, 0);
  };
  RunResult got = Run(o);
  ASSERT_EQ(got.restores.size(), 1u);
  EXPECT_THAT(got.restores[0].rebuilt_because, ::testing::HasSubstr("aggregate-store"));
  for (const StoreRestoreReport& s : got.restores[0].stores) {
    EXPECT_EQ(s.from_offset, 0) << s.store;
    EXPECT_GT(s.stats.records_applied, 0u) << s.store;
  }
  ExpectSameOutputs(expected, got);
}

// Proves a state dir whose checkpoint lies beyond the end of the changelogs — state from
// another cluster or from before the topics were recreated; every run of the in-process
// dev broker leaves one for the next — is wiped and rebuilt instead of trusted: without
// the check the task resumed at the old run's input offsets (skipping the new input's
// first 3,000 records) with the old run's windows and ids. The results equal a run from
// an empty state dir, for both kinds of store.
TEST_F(RecoveryTest, StateFromAnotherChangelogIsRebuilt) {
  for (StoreType store : {StoreType::kRocksDb, StoreType::kInMemory}) {
    SCOPED_TRACE(store == StoreType::kRocksDb ? "rocksdb" : "memory");
    RunResult expected = Run({.store = store});
    RunResult got = Run({.store = store, .stale_state = true});
    if (store == StoreType::kRocksDb) {
      EXPECT_THAT(got.first_restore.rebuilt_because,
                  ::testing::HasSubstr("the local state is not from this changelog"));
    } else {
      EXPECT_EQ(got.first_restore.rebuilt_because, "");  // nothing local to distrust
    }
    EXPECT_EQ(got.first_restore.last_sequence, 0u);
    for (const StoreRestoreReport& s : got.first_restore.stores) {
      EXPECT_EQ(s.from_offset, 0) << s.store;
      EXPECT_EQ(s.stats.records_applied, 0u) << s.store;
    }
    ExpectSameOutputs(expected, got);
  }
}

// Proves a store whose local files are gone is restored from the start of its changelog
// (the checkpoint's position for it is ignored) to the same values.
TEST_F(RecoveryTest, MissingLocalStoreIsRestoredFromTheStart) {
  RunResult expected = Run({});
  RunOptions o;
  o.clean_restarts = {6};
  o.damage = [](const fs::path& state_dir) { fs::remove_all(state_dir / "dedupe-store"); };
  RunResult got = Run(o);
  ASSERT_EQ(got.restores.size(), 1u);
  const StoreRestoreReport* dd = Find(got.restores[0], "dedupe-store");
  const StoreRestoreReport* agg = Find(got.restores[0], "aggregate-store");
  ASSERT_NE(dd, nullptr);
  ASSERT_NE(agg, nullptr);
  EXPECT_EQ(dd->from_offset, 0);
  EXPECT_GT(dd->stats.records_applied, 0u);
  EXPECT_GT(agg->from_offset, 0);
  EXPECT_EQ(agg->stats.records_applied, 0u);
  ExpectSameOutputs(expected, got);
}

// Proves the cache budget evicts compacted panes to the store and reads them back at
// window close without changing a byte of any result, that panes still taking records
// stay, and that every byte charged is released when the task closes.
TEST_F(RecoveryTest, CacheBudgetEvictsPanesWithoutChangingResults) {
  for (StoreType store : {StoreType::kRocksDb, StoreType::kInMemory}) {
    SCOPED_TRACE(store == StoreType::kRocksDb ? "rocksdb" : "memory");
    RunResult expected = Run({.store = store});
    EXPECT_EQ(expected.max_evicted_panes, 0u);
    auto budget = std::make_shared<CacheBudget>(0);  // evict whatever can be
    RunOptions o{.store = store, .cache_budget = budget};
    o.faults = {{8, CommitStep::kStoresApplied}};  // and across a crash
    RunResult got = Run(o);
    EXPECT_GT(got.max_evicted_panes, 50u);
    ExpectSameOutputs(expected, got);
    EXPECT_EQ(budget->used(), 0);
  }
}

}  // namespace
}  // namespace streammetrics
