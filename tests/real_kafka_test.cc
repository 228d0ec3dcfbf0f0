// The Kafka runtime end to end on a real Apache Kafka (4.x, KRaft; tests/real_kafka.h),
// where read_committed consumers see only committed transactions: every result must be
// there exactly once, none of an aborted transaction — what the dev broker cannot show.
// The fixture and its oracle: tests/runtime_fixture.h.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/kafka/admin.h"
#include "engine/kafka/changelog_reader.h"
#include "engine/kafka/kafka_common.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/runtime.h"
#include "operators/strings.h"
#include "tests/aggregate_results.h"
#include "tests/postgres_server.h"
#include "tests/real_kafka.h"
#include "tests/redis_server.h"
#include "tests/runtime_fixture.h"

namespace streammetrics::kafka {
namespace {

using streammetrics::testing::PostgresServer;
using streammetrics::testing::RealKafka;
using streammetrics::testing::RedisServer;

// Tests share the suite's broker: each names its topics and application id after itself
// (and the process, for repeated runs).
class RealKafkaTest : public RuntimeTestBase {
 protected:
  void SetUp() override {
    absl::StatusOr<RealKafka*> kafka = RealKafka::Shared();
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *kafka;
    SetUpRuntime(StrCat("-", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
                        ::getpid()));
  }
  std::string Bootstrap() const override { return kafka_->bootstrap_servers(); }
  absl::Status CreateTopic(const std::string& name, int partitions) override {
    return CreateTopics({{"bootstrap.servers", Bootstrap()}},
                        {{.name = name, .partitions = partitions}});
  }

  RealKafka* kafka_ = nullptr;
};

// Proves the runtime on a real broker: the group's members get every partition, the
// changelog topics are created (compacted), each partition is processed in offset order
// and committed exactly once — every closed window's result is in the result topics
// once, equal to the offline oracle's; every invalid and late event is a dead letter.
TEST_F(RealKafkaTest, EndToEndResultsAreExactlyTheOracles) { RunOnceThenCompare(); }

// Proves the default, repartitioned pipeline on a real broker as a bounded run
// (`run --until-end`): unkeyed input, its repartition topic created by the runtime, every
// window exactly the oracle's (which sees the whole input at once), the runtime stopping
// by itself — and the repartition topic purged: what the downstream tasks committed is
// deleted from every partition (DeleteRecords; here after every commit).
TEST_F(RealKafkaTest, ARepartitionedBoundedRunIsExactAndPurgesTheRepartitionTopic) {
  UseTheRepartitionWithUnkeyedInput();
  const int kEvents = 20'000;
  Produce(kEvents, 51, InputStartMs());
  TaskCounters want;
  const std::vector<OutputRecord> oracle = Oracle(&want, /*end_of_input=*/true);
  ASSERT_GT(want.duplicates_dropped, 0u);
  RuntimeOptions o = Options("a");
  o.until_end = true;
  o.repartition_purge_interval_ms = 1;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*topology_, o);
  ASSERT_TRUE(rt.ok()) << rt.status();
  ASSERT_TRUE((*rt)->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return (*rt)->finished(); }, 180'000));
  ASSERT_TRUE((*rt)->Join().ok());
  EXPECT_EQ((*rt)->counters().duplicates, want.duplicates_dropped);
  ExpectMatchesOracle(oracle, /*last_result_wins=*/false);
  const std::vector<std::string> internal = topology_->internal_topics(app_id_);
  ASSERT_EQ(internal.size(), 1u);
  absl::StatusOr<KafkaHandle> client = NewClient(RD_KAFKA_CONSUMER, Props());
  ASSERT_TRUE(client.ok()) << client.status();
  for (int32_t p = 0; p < 6; ++p) {
    int64_t low = -1, high = -1;
    ASSERT_EQ(rd_kafka_query_watermark_offsets(client->get(), internal[0].c_str(), p, &low, &high, 10'000),
              RD_KAFKA_RESP_ERR_NO_ERROR);
    EXPECT_GT(low, 0) << "partition " << p << " of " << internal[0] << ": nothing purged (high " << high << ")";
  }
}

// Proves unkeyed input through the repartition on a real broker, unbounded: every
// window exact, duplicates across partitions removed, nothing late (every partition has
// input: none may count as idle before its first records arrive).
TEST_F(RealKafkaTest, UnkeyedInputThroughTheRepartitionIsExact) {
  UseTheRepartitionWithUnkeyedInput();
  const int kEvents = 20'000;
  const int64_t start = InputStartMs();
  Produce(kEvents, 53, start);
  ProduceClosers(start + 10 * 60'000);
  TaskCounters want;
  const std::vector<OutputRecord> oracle = Oracle(&want);
  ASSERT_GT(want.duplicates_dropped, 0u);
  RuntimeCounters got;
  ASSERT_TRUE(RunUntilCommitted(Options("a"), kEvents + 6, &got).ok());
  EXPECT_EQ(got.late_window_updates, 0u);
  EXPECT_EQ(got.duplicates, want.duplicates_dropped);
  ExpectMatchesOracle(oracle, /*last_result_wins=*/false);
}

// Tests that stop or kill brokers have a cluster of their own.
class RealKafkaOwnClusterTest : public RealKafkaTest {
 protected:
  virtual int Nodes() const { return 1; }
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RealKafka>> kafka = RealKafka::Start(Nodes());
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    own_ = *std::move(kafka);
    kafka_ = own_.get();
    SetUpRuntime("");
  }

  // Runs an instance while 20,000 events arrive (1,000/s; the producer's records wait in
  // it while a broker is away, its last flush up to 2 min); once 3,000 are committed,
  // node `node` is killed with SIGKILL and, if `restart_after_s` >= 0, restarted that
  // many seconds later. Then every event must be committed, the instance stop cleanly and
  // every result be there exactly once, equal to the oracle's. The instance's counters.
  RuntimeCounters KillANodeMidRunThenCompare(int node, int restart_after_s) {
    const int kEvents = 20'000;
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*topology_, Options("a"));
    EXPECT_TRUE(rt.ok()) << rt.status();
    if (!rt.ok() || !(*rt)->Start().ok()) return {};
    std::thread producer([&] {
      Produce(kEvents, 11, InputStartMs(), /*pace_per_s=*/1'000, false, /*flush_timeout_ms=*/120'000);
    });
    streammetrics::testing::JoinOnExit joiner{producer};
    EXPECT_TRUE(WaitFor([&] { return (*rt)->counters().committed_input > 3'000; }, 60'000));
    EXPECT_TRUE(kafka_->Kill(node).ok());
    if (restart_after_s >= 0) {
      std::this_thread::sleep_for(std::chrono::seconds(restart_after_s));
      absl::Status restarted = kafka_->Restart(node);
      EXPECT_TRUE(restarted.ok()) << restarted;
    }
    producer.join();
    EXPECT_TRUE(WaitFor([&] { return (*rt)->counters().committed_input == kEvents; }, 180'000))
        << (*rt)->counters().committed_input;
    (*rt)->Stop();
    EXPECT_TRUE((*rt)->Join().ok());
    ExpectMatchesOracle(Oracle(), /*last_result_wins=*/false);
    return (*rt)->counters();
  }

  std::unique_ptr<RealKafka> own_;
};

// Proves a broker crash loses nothing and doubles nothing: while input arrives and the
// runtime commits, the broker is killed with SIGKILL and restarted 5 s later on its data
// (~10 s down in all: commits fail, the threads rebuild their tasks and retry their
// restores until it is back). Every result is then there exactly once, equal to the
// oracle's.
TEST_F(RealKafkaOwnClusterTest, BrokerKillNineAndRestartLosesNothing) {
  const RuntimeCounters counters = KillANodeMidRunThenCompare(1, /*restart_after_s=*/5);
  EXPECT_GE(counters.rebuilds, 1u);
}

// A cluster of three nodes (each broker and controller; replication 3, min.insync 2).
class RealKafkaThreeNodesTest : public RealKafkaOwnClusterTest {
 protected:
  int Nodes() const override { return 3; }
};

// Proves a lost broker of three changes nothing but leaders: while input arrives and the
// runtime commits, node 2 — a controller, the leader of a third of every topic's
// partitions, maybe a coordinator — is killed with SIGKILL and stays down; its partitions'
// leadership moves to the replicas (topics, changelogs and the transaction and offset
// logs have 3 replicas, 2 in sync suffice). Commits in flight fail (flush timed out, a
// coordinator gone, the group's session lost), the tasks are rebuilt from changelogs
// whose leaders are still being elected (librdkafka answers _UNKNOWN_PARTITION then: an
// error to retry, not an absent changelog — which made restores find no commit and the
// runtime refuse to go on) and the runtime goes on; every result is there exactly once,
// equal to the oracle's.
TEST_F(RealKafkaThreeNodesTest, ALostBrokerOfThreeLosesNothing) {
  KillANodeMidRunThenCompare(2, /*restart_after_s=*/-1);
}

using streammetrics::testing::Spawn;

// Proves crash recovery of the binary under exactly_once_v2 on Kafka: `streammetrics run`
// is killed with SIGKILL three times while input keeps arriving and restarted on its
// state dir (a new process: a new transactional id, so each killed run's open
// transactions end only by the broker's transaction timeout, 10 s, which a restore waits
// for); the last run gets SIGTERM once everything is committed and exits 0. Every window's
// result is then in the result topics exactly once and equal to the oracle's, every dead
// letter once: the killed runs' transactions are aborted, invisible to read_committed
// readers. (On the dev broker the same test can only check each window's last copy.)
TEST_F(RealKafkaTest, KillNineRepeatedlyThenEveryResultIsThereOnce) {
  KillNineRepeatedlyThenCompare(app_id_, /*last_result_wins=*/false);
}

// Proves the sinks exact through the engine's crashes on Kafka: the kill -9 run above
// with sinks.postgres and sinks.redis enabled in the same processes, so the sinks are
// killed with the engine (a Postgres batch in flight rolls back with its connection; a
// Redis batch is one script). The sinks read read_committed, so the killed runs' aborted
// results never reach them. Once the last run committed every input record: the table
// holds one row per window result the topics hold (each once, equal to the oracle's),
// with its count and sum; in Redis each (service, metric, window) has every one of its
// results in its history, scored by window start, and its newest as the latest.
TEST_F(RealKafkaTest, KillNineRepeatedlyWithTheSinksThenTableAndKeysAreExact) {
  absl::StatusOr<std::unique_ptr<PostgresServer>> pg = PostgresServer::Create();
  ASSERT_TRUE(pg.ok()) << pg.status();
  ASSERT_TRUE((*pg)->Start().ok());
  ASSERT_TRUE((*pg)->CreateDatabase("rk").ok());
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Create();
  ASSERT_TRUE(redis.ok()) << redis.status();
  // Every result in the topics, parsed, with its JSON (what the Redis sink stores).
  struct Result {
    streammetrics::testing::AggregateResult a;
    std::string json;
  };
  std::vector<Result> results;
  auto read_results = [&] {
    results.clear();
    for (const std::string& topic : ResultTopics()) {
      absl::StatusOr<std::vector<OutputRecord>> records = ReadTopic(Props(), topic);
      EXPECT_TRUE(records.ok()) << records.status();
      if (!records.ok()) continue;
      for (const OutputRecord& r : *records) {
        results.push_back({streammetrics::testing::ParseAggregate(r), r.value});
      }
    }
  };
  // service|metric|window|window start (ms)|count -> sum.
  auto table = [&] {
    std::map<std::string, double> out;
    absl::StatusOr<std::vector<std::vector<std::string>>> rows = (*pg)->Exec(
        "rk",
        "SELECT service_id || '|' || metric_name || '|' || window_size || '|' || "
        "(extract(epoch from timestamp) * 1000)::bigint || '|' || count, sum::text "
        "FROM metrics.metric_aggregates");
    if (rows.ok()) {
      for (const std::vector<std::string>& r : *rows) out[r[0]] = std::stod(r[1]);
    }
    return out;
  };
  auto history_key = [](const streammetrics::testing::AggregateResult& a) {
    return StrCat("metrics:", a.service, ":", a.metric, ":", a.window, ":history");
  };
  auto redis_caught_up = [&] {
    std::map<std::string, int64_t> per_key;
    for (const Result& r : results) ++per_key[history_key(r.a)];
    for (const auto& [key, n] : per_key) {
      if ((*redis)->Command({"ZCARD", key}) != std::to_string(n)) return false;
    }
    return true;
  };
  const std::string sinks = StrCat(
      "sinks:\n  postgres: {enabled: true, dsn: \"", (*pg)->Dsn("rk"),
      "\", batch_size: 50, flush_interval: 20ms}\n  redis: {enabled: true, url: \"127.0.0.1:",
      (*redis)->port(), "\", batch_size: 50, flush_interval: 20ms}");
  std::map<std::string, double> got;
  KillNineRepeatedlyThenCompare(app_id_, /*last_result_wins=*/false, sinks, [&] {
    read_results();
    EXPECT_TRUE(WaitFor([&] { return table().size() >= results.size(); }, 60'000))
        << table().size() << " of " << results.size();
    EXPECT_TRUE(WaitFor(redis_caught_up, 60'000));
    got = table();
  });
  ASSERT_GT(results.size(), 100u);
  ASSERT_EQ(got.size(), results.size());
  std::map<std::string, const Result*> newest;
  for (const Result& result : results) {
    const streammetrics::testing::AggregateResult& a = result.a;
    const std::string row = StrCat(a.service, "|", a.metric, "|", a.window, "|", a.start, "|", a.count);
    auto it = got.find(row);
    ASSERT_NE(it, got.end()) << row;
    EXPECT_DOUBLE_EQ(it->second, a.sum) << row;
    const std::string score = (*redis)->Command({"ZSCORE", history_key(a), result.json});
    EXPECT_EQ(score, std::to_string(a.start)) << history_key(a) << " " << result.json;
    const Result*& n = newest[StrCat("metrics:", a.service, ":", a.metric, ":", a.window)];
    if (n == nullptr || n->a.start < a.start) n = &result;
  }
  for (const auto& [key, r] : newest) EXPECT_EQ((*redis)->Command({"GET", key}), r->json) << key;
}

// Proves handovers in the middle of open transactions lose and double nothing. Input
// arrives all along and the instances commit every 2 s, so a transaction with results and
// changelog records in it is open whenever the group rebalances: instance b joins a
// (cooperative: a gives up half of its partitions, committing their work first), a stops
// (b takes them, restoring through whatever a last wrote), and c joins b. Every result is
// there exactly once, equal to the oracle's.
TEST_F(RealKafkaTest, HandoversWhileTransactionsAreOpenLoseAndDoubleNothing) {
  const int kEvents = 30'000;
  std::thread producer([&] { Produce(kEvents, 41, InputStartMs(), /*pace_per_s=*/1'000); });
  streammetrics::testing::JoinOnExit joiner{producer};
  auto start = [&](const std::string& instance) {
    RuntimeOptions o = Options(instance);
    o.commit_interval_ms = 2'000;
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*topology_, o);
    EXPECT_TRUE(rt.ok()) << rt.status();
    if (rt.ok()) EXPECT_TRUE((*rt)->Start().ok());
    return rt.ok() ? *std::move(rt) : nullptr;
  };
  auto shared = [](Runtime* x, Runtime* y) {
    const RuntimeCounters cx = x->counters(), cy = y->counters();
    return cx.tasks > 0 && cy.tasks > 0 && cx.tasks + cy.tasks == 6;
  };
  std::unique_ptr<Runtime> a = start("a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitFor([&] { return CommittedInput(app_id_) >= 5'000; }, 60'000));
  std::unique_ptr<Runtime> b = start("b");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(WaitFor([&] { return shared(a.get(), b.get()); }, 60'000));
  const int64_t before_stop = CommittedInput(app_id_);
  ASSERT_TRUE(WaitFor([&] { return CommittedInput(app_id_) >= before_stop + 3'000; }, 60'000));
  a->Stop();
  ASSERT_TRUE(a->Join().ok());
  ASSERT_TRUE(WaitFor([&] { return b->counters().tasks == 6; }, 60'000));
  std::unique_ptr<Runtime> c = start("c");
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(WaitFor([&] { return shared(b.get(), c.get()); }, 60'000));
  EXPECT_LT(CommittedInput(app_id_), kEvents);  // every handover while input arrived
  producer.join();
  EXPECT_TRUE(WaitFor([&] { return CommittedInput(app_id_) == kEvents; }, 90'000))
      << CommittedInput(app_id_);
  b->Stop();
  c->Stop();
  EXPECT_TRUE(b->Join().ok());
  EXPECT_TRUE(c->Join().ok());
  ExpectMatchesOracle(Oracle(), /*last_result_wins=*/false);
}

// Proves a zombie publishes nothing: instance A is frozen (SIGSTOP) for 9 s, longer than
// its 6 s session, while instance B joins; the group gives B every partition and B goes
// on. Thawed (SIGCONT), A finds its partitions lost — or its commit refused for an old
// generation — and its open transaction, still open on the broker (transaction timeout
// 30 s here), is aborted, never committed; A rejoins and the two share the input to its
// end. Every result is there exactly once, equal to the oracle's.
TEST_F(RealKafkaTest, AZombieInstancePublishesNothing) {
  std::filesystem::create_directories(dir_);
  const std::string config_a = (dir_ / "a.yaml").string(), config_b = (dir_ / "b.yaml").string();
  WriteRunConfig(config_a, app_id_, (dir_ / "a").string(), ", transaction.timeout.ms: \"30000\"");
  WriteRunConfig(config_b, app_id_, (dir_ / "b").string(), ", transaction.timeout.ms: \"30000\"");
  const int kEvents = 30'000;  // over 30 s
  std::thread producer([&] { Produce(kEvents, 21, InputStartMs(), /*pace_per_s=*/1'000); });
  streammetrics::testing::JoinOnExit joiner{producer};
  const std::string log_a = (dir_ / "a.log").string(), log_b = (dir_ / "b.log").string();
  pid_t a = Spawn({SM_BINARY, "run", "--config", config_a, "--quiet", "true"}, log_a);
  ASSERT_GT(a, 0);
  ASSERT_TRUE(WaitFor([&] { return CommittedInput(app_id_) > 3'000; }, 150'000));
  kill(a, SIGSTOP);
  pid_t b = Spawn({SM_BINARY, "run", "--config", config_b, "--quiet", "true"}, log_b);
  ASSERT_GT(b, 0);
  std::this_thread::sleep_for(std::chrono::seconds(9));
  kill(a, SIGCONT);
  producer.join();
  EXPECT_TRUE(WaitFor([&] { return CommittedInput(app_id_) == kEvents; }, 240'000))
      << CommittedInput(app_id_) << "\nA:\n" << streammetrics::testing::ReadFile(log_a)
      << "\nB:\n" << streammetrics::testing::ReadFile(log_b);
  for (pid_t pid : {a, b}) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  ExpectMatchesOracle(Oracle(), /*last_result_wins=*/false);
}

// Waits until none of `topics` is listed by the broker (a deletion is asynchronous).
bool WaitUntilDeleted(RealKafka* kafka, const std::vector<std::string>& topics) {
  for (int i = 0; i < 60; ++i) {
    absl::StatusOr<std::string> listed = kafka->Tool("topics", {"--list"});
    if (listed.ok()) {
      bool any = false;
      for (const std::string& t : topics) any |= listed->find(t + "\n") != std::string::npos;
      if (!any) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return false;
}

// Proves an instance whose tasks find no commit in their changelogs while the group has
// committed offsets for their partitions — the changelogs deleted and recreated, the
// local state gone — refuses to start over: the thread fails with an error that says so
// and what to do, and no result is emitted again. Before, the tasks started their input
// from the beginning and every result of the topic came out a second time.
TEST_F(RealKafkaTest, ChangelogsLostWhileTheGroupKeepsItsOffsetsAreRefused) {
  const int kEvents = 3'000;
  Produce(kEvents, 5, InputStartMs());
  ASSERT_TRUE(RunUntilCommitted(Options("a"), kEvents).ok());
  absl::StatusOr<std::vector<OutputRecord>> before = ReadTopic(Props(), ResultTopics()[0]);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_GT(before->size(), 0u);
  std::vector<std::string> changelogs;
  for (const StoreDef& def : topology_->stores()) {
    changelogs.push_back(ChangelogTopic(app_id_, def.name));
    absl::StatusOr<std::string> deleted = kafka_->Tool("topics", {"--delete", "--topic", changelogs.back()});
    ASSERT_TRUE(deleted.ok()) << deleted.status();
  }
  ASSERT_TRUE(WaitUntilDeleted(kafka_, changelogs));
  std::filesystem::remove_all(dir_ / "a");
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*topology_, Options("a"));
  ASSERT_TRUE(rt.ok()) << rt.status();
  ASSERT_TRUE((*rt)->Start().ok());  // the changelogs created anew
  // It looks again for 30 s (a new leader may not show all of a changelog at once).
  ASSERT_TRUE(WaitFor([&] { return (*rt)->failed(); }, 120'000));
  const absl::Status s = (*rt)->Join();
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), ::testing::HasSubstr(StrCat(
                               "its changelogs hold no commit, but the consumer group ", app_id_,
                               " committed ", config_.input_topic)));
  EXPECT_THAT(s.message(), ::testing::HasSubstr("reset the group's offsets"));
  absl::StatusOr<std::vector<OutputRecord>> after = ReadTopic(Props(), ResultTopics()[0]);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->size(), before->size());
}

// Proves an idle instance's commit markers outlive its window changelog's time retention:
// here 20 s (with 300 ms segments; a real one is the store's retention plus a day) and
// markers refreshed every second (processing.marker_refresh; an hour by default). The
// instance commits its input, idles 45 s — every record it wrote expires meanwhile — and
// is killed; a second instance on a new state dir takes over within the retention (its
// rebalance waits out the first one's 6 s session; a transaction the kill left open, 10
// s), finds a marker, resumes at the committed offsets and emits nothing again. Before,
// an idle thread committed nothing, its markers expired, and a takeover started over.
TEST_F(RealKafkaTest, MarkersOfAnIdleInstanceOutliveTheChangelogsRetention) {
  ASSERT_TRUE(CreateTopics({{"bootstrap.servers", Bootstrap()}},
                           {{.name = ChangelogTopic(app_id_, "aggregate-store"),
                             .partitions = 6,
                             .configs = {{"cleanup.policy", "compact,delete"},
                                         {"retention.ms", "20000"},
                                         {"segment.ms", "300"}}},
                            {.name = ChangelogTopic(app_id_, "dedupe-store"),
                             .partitions = 6,
                             .configs = {{"cleanup.policy", "compact"}}}})
                  .ok());
  const int kEvents = 3'000;
  Produce(kEvents, 7, InputStartMs());
  std::filesystem::create_directories(dir_);
  const std::string config_a = (dir_ / "a.yaml").string(), config_b = (dir_ / "b.yaml").string();
  WriteRunConfig(config_a, app_id_, (dir_ / "a").string(), "", ", marker_refresh: 1s");
  WriteRunConfig(config_b, app_id_, (dir_ / "b").string(), "", ", marker_refresh: 1s");
  const std::string log_a = (dir_ / "a.log").string(), log_b = (dir_ / "b.log").string();
  pid_t a = Spawn({SM_BINARY, "run", "--config", config_a, "--quiet", "true"}, log_a);
  ASSERT_GT(a, 0);
  ASSERT_TRUE(WaitFor([&] { return CommittedInput(app_id_) == kEvents; }, 60'000))
      << streammetrics::testing::ReadFile(log_a);
  absl::StatusOr<std::vector<OutputRecord>> before = ReadTopic(Props(), ResultTopics()[0]);
  ASSERT_TRUE(before.ok()) << before.status();
  std::this_thread::sleep_for(std::chrono::seconds(45));
  EXPECT_EQ(CommittedInput(app_id_), kEvents);  // the markers outlived the retention
  kill(a, SIGKILL);
  waitpid(a, nullptr, 0);
  pid_t b = Spawn({SM_BINARY, "run", "--config", config_b, "--quiet", "true"}, log_b);
  ASSERT_GT(b, 0);
  std::this_thread::sleep_for(std::chrono::seconds(15));
  EXPECT_EQ(waitpid(b, nullptr, WNOHANG), 0)
      << "the second instance ended:\n" << streammetrics::testing::ReadFile(log_b)
      << "\nthe first:\n" << streammetrics::testing::ReadFile(log_a);
  EXPECT_EQ(CommittedInput(app_id_), kEvents);
  kill(b, SIGTERM);
  int status = 0;
  waitpid(b, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  absl::StatusOr<std::vector<OutputRecord>> after = ReadTopic(Props(), ResultTopics()[0]);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->size(), before->size());
}

// Proves changelogs that Kafka compacted restore exactly. The changelogs are made with
// 300 ms segments and a cleaner that cleans as soon as 1% of a log is dirty (tombstones
// kept 100 ms), so while input arrives the broker compacts them again and again: earlier
// values of every pane and id, earlier commit markers of each incarnation and the
// aborted or deleted records go. An instance runs twice on its state dir (two
// incarnations of every task) and stops each time after the broker's log says it cleaned
// at least three partitions of each changelog; a second instance (one thread) on an
// empty state dir then restores every task from the compacted changelogs alone and goes
// on to the end of the input. Every result is there exactly once, equal to the oracle's: a window that
// spans the takeover is right only if its pane came back whole.
TEST_F(RealKafkaTest, CompactedChangelogsRestoreExactly) {
  const std::vector<std::pair<std::string, std::string>> aggressive = {
      {"segment.ms", "300"},
      {"min.cleanable.dirty.ratio", "0.01"},
      {"min.compaction.lag.ms", "0"},
      {"delete.retention.ms", "100"}};
  std::vector<std::pair<std::string, std::string>> windows = aggressive, ids = aggressive;
  windows.insert(windows.begin(), {{"cleanup.policy", "compact,delete"}, {"retention.ms", "86400000"}});
  ids.insert(ids.begin(), {"cleanup.policy", "compact"});
  const std::string window_log = ChangelogTopic(app_id_, "aggregate-store");
  const std::string id_log = ChangelogTopic(app_id_, "dedupe-store");
  ASSERT_TRUE(CreateTopics({{"bootstrap.servers", Bootstrap()}},
                           {{.name = window_log, .partitions = 6, .configs = windows},
                            {.name = id_log, .partitions = 6, .configs = ids}})
                  .ok());
  // How many partitions of `topic` the broker has cleaned since its log was
  // `since` bytes long.
  auto cleaned = [&](const std::string& topic, size_t since) {
    // The shared broker's log grows with the whole suite: read it twice a second at most.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string logs = kafka_->ServerLogs();
    int n = 0;
    for (int p = 0; p < 6; ++p) {
      if (logs.find(StrCat("cleaned log ", topic, "-", p, " "), since) != std::string::npos) ++n;
    }
    return n;
  };
  const int kEvents = 30'000;
  std::thread producer([&] { Produce(kEvents, 31, InputStartMs(), /*pace_per_s=*/1'000); });
  streammetrics::testing::JoinOnExit joiner{producer};
  // Instance a twice on its state dir (each run's tasks a new incarnation, so the
  // changelogs hold the markers of several), each until it committed a quarter more of the
  // input and the broker then cleaned at least three partitions of each changelog.
  for (int run = 1; run <= 2; ++run) {
    absl::StatusOr<std::unique_ptr<Runtime>> a = Runtime::Create(*topology_, Options("a"));
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE((*a)->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return (*a)->counters().committed_input >= run * kEvents / 4; },
                        60'000));
    const size_t since = kafka_->ServerLogs().size();
    EXPECT_TRUE(WaitFor([&] { return cleaned(window_log, since) >= 3 && cleaned(id_log, since) >= 3; },
                        60'000))
        << cleaned(window_log, since) << " " << cleaned(id_log, since);
    EXPECT_LT((*a)->counters().committed_input, kEvents);
    (*a)->Stop();
    ASSERT_TRUE((*a)->Join().ok());
  }
  // One stream thread: no second member joins while it commits (a commit racing that
  // rebalance fails with ILLEGAL_GENERATION and rebuilds its tasks, correctly, but then
  // the count below says nothing about the restore).
  RuntimeOptions one_thread = Options("b");
  one_thread.threads = 1;
  absl::StatusOr<std::unique_ptr<Runtime>> b = Runtime::Create(*topology_, one_thread);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->Start().ok());
  producer.join();
  EXPECT_TRUE(WaitFor([&] { return (*b)->counters().committed_input == kEvents; }, 90'000))
      << (*b)->counters().committed_input;
  (*b)->Stop();
  ASSERT_TRUE((*b)->Join().ok());
  EXPECT_EQ((*b)->counters().rebuilds, 0u);
  ExpectMatchesOracle(Oracle(), /*last_result_wins=*/false);
}

std::string Marker(uint64_t sequence, int64_t offset) {
  return CommitMarker{.incarnation = 1, .sequence = sequence, .offsets = {{"in", 0, offset}}}
      .Encode();
}

// Proves a restore reads a changelog to its high watermark, through a transaction still
// open when it starts: it waits for the transaction to end and restores what it
// committed. Before, it read to the last stable offset — the end a read_committed
// reader is given, short of the open transaction — and restored the older commit (Kafka
// Streams' KAFKA-10167). The dev broker cannot show this: it has no last stable offset.
TEST(RealKafkaChangelog, ARestoreReadsThroughAnOpenTransactionToTheHighWatermark) {
  absl::StatusOr<RealKafka*> kafka = RealKafka::Shared();
  ASSERT_TRUE(kafka.ok()) << kafka.status();
  const std::string app = StrCat("restore-open-txn-", ::getpid());
  const Properties props = {{"bootstrap.servers", (*kafka)->bootstrap_servers()}};
  ASSERT_TRUE(CreateTopics(props, {{.name = ChangelogTopic(app, "s"), .partitions = 1,
                                    .configs = {{"cleanup.policy", "compact"}}}})
                  .ok());
  absl::StatusOr<std::unique_ptr<Producer>> producer =
      Producer::Create({.properties = props, .transactional_id = app + "-0-0"});
  ASSERT_TRUE(producer.ok()) << producer.status();
  TaskProducer task(producer->get(), app, 0);
  const std::string m1 = Marker(1, 10), m2 = Marker(2, 20);
  ASSERT_TRUE((*producer)->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "a", .value = "1", .incarnation = 1,
                    .sequence = 1});
  task.Append("s", {.type = ChangeType::kCommit, .value = m1, .incarnation = 1, .sequence = 1});
  ASSERT_TRUE((*producer)->CommitTransaction({}).ok());
  // The next commit's records are on the broker, its transaction not yet ended.
  ASSERT_TRUE((*producer)->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "b", .value = "2", .incarnation = 1,
                    .sequence = 2});
  task.Append("s", {.type = ChangeType::kCommit, .value = m2, .incarnation = 1, .sequence = 2});
  ASSERT_TRUE((*producer)->Flush().ok());

  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> reader =
      KafkaChangelogReader::Create(props, app, 30'000);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::unique_ptr<ChangelogReader> partition = (*reader)->ForPartition(0);
  std::vector<std::string> seen;
  std::atomic<bool> done{false};
  absl::StatusOr<int64_t> end;
  std::thread restore([&] {
    end = partition->Read("s", 0, [&](int64_t offset, const ChangeRecord& c) {
      seen.push_back(StrCat(offset, " ", static_cast<int>(c.type), ":", c.key, "=", c.value));
      return absl::OkStatus();
    });
    done = true;
  });
  streammetrics::testing::JoinOnExit joiner{restore};
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_FALSE(done.load()) << "the restore did not wait for the open transaction";
  ASSERT_TRUE((*producer)->CommitTransaction({}).ok());
  restore.join();
  ASSERT_TRUE(end.ok()) << end.status();
  // Offsets 2 and 5 are the transactions' control records.
  EXPECT_THAT(seen, ::testing::ElementsAre("0 1:a=1", StrCat("1 4:=", m1), "3 1:b=2",
                                           StrCat("4 4:=", m2)));
  EXPECT_EQ(*end, 5);  // the high watermark when it started: after offset 4
  absl::StatusOr<std::optional<CommitMarker>> last = partition->LastMarker("s", 0);
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->sequence, 2u);
}

}  // namespace
}  // namespace streammetrics::kafka
