// The Postgres sink and its runner against a real PostgreSQL 15 (started by the test, see
// postgres_server.h) and the dev broker. What this proves: the table ends equal to the
// expected aggregates (the latest result per key by offset); a batch is applied once
// (re-applying it, or a restarted runner, changes nothing and resumes from the
// positions stored in Postgres); a fenced runner applies nothing more of the partitions
// it lost; rows Postgres refuses reach the dead-letter topic with the reason and the rest
// is applied; Postgres stopped mid-run and started again: the runner retries, pauses,
// and catches up with nothing lost; `streammetrics sink` killed with SIGKILL repeatedly,
// then two runners at once: the table is exact. What the dev broker cannot show: a
// runner fenced by a consumer-group zombie in a real network partition (fencing itself is
// tested directly on the sink).
#include "engine/postgres/postgres_sink.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "apps/config.h"
#include "apps/kafka_commands.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/sink_runner.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "operators/strings.h"
#include "tests/aggregate_json.h"
#include "topology/metrics_pipeline.h"
#include "tests/postgres_server.h"
#include "tests/sink_crash_scenario.h"
#include "tests/spawn.h"

namespace streammetrics {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;
using testing::PostgresServer;

using testing::Aggregate;

class PostgresSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetMinLogLevel(LogLevel::kWarning);
    absl::StatusOr<std::unique_ptr<PostgresServer>> pg = PostgresServer::Create();
    ASSERT_TRUE(pg.ok()) << pg.status();
    server_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->Start().ok());
    db_ = StrCat("t", ++databases_);
    ASSERT_TRUE(server_->CreateDatabase(db_).ok());
  }
  std::unique_ptr<PostgresSink> NewSink() {
    return std::make_unique<PostgresSink>(PostgresSinkOptions{.dsn = server_->Dsn(db_)});
  }
  // service_id|metric_name|window_size|epoch ms|count|sum|tags, sorted.
  std::vector<std::string> Table() {
    auto rows = server_->Exec(
        db_,
        "SELECT service_id || '|' || metric_name || '|' || window_size || '|' || "
        "(extract(epoch from timestamp) * 1000)::bigint || '|' || count || '|' || sum || '|' || "
        "tags::text FROM metrics.metric_aggregates ORDER BY 1");
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<std::string> out;
    if (rows.ok()) {
      for (auto& r : *rows) out.push_back(r[0]);
    }
    return out;
  }
  std::vector<std::string> Offsets() {
    auto rows = server_->Exec(db_,
                              "SELECT topic || '[' || partition || ']=' || next_offset || '@' || "
                              "epoch FROM metrics.sink_offsets ORDER BY 1");
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<std::string> out;
    if (rows.ok()) {
      for (auto& r : *rows) out.push_back(r[0]);
    }
    return out;
  }

  static PostgresServer* server_;
  static int databases_;
  std::string db_;
};

PostgresServer* PostgresSinkTest::server_ = nullptr;
int PostgresSinkTest::databases_ = 0;

const std::vector<TopicPartition> kOneMinute = {{"metrics-aggregated-1m", 0},
                                                {"metrics-aggregated-1m", 1}};

TEST_F(PostgresSinkTest, BatchIsUpsertedOnceLatestOffsetWinsAndRefusedRowsAreRejected) {
  auto sink = NewSink();
  ASSERT_TRUE(sink->Open().ok());
  ASSERT_TRUE(sink->Open().ok());  // idempotent
  auto positions = sink->Acquire(kOneMinute);
  ASSERT_TRUE(positions.ok()) << positions.status();
  EXPECT_EQ((*positions)[0].next_offset, 0);
  EXPECT_EQ((*positions)[0].epoch, 1);

  const std::string a1 = Aggregate("api", "latency", "1m", 60'000, 3, 7.5);
  const std::string a2 = Aggregate("api", "latency", "1m", 60'000, 4, 10);  // same key, later
  const std::string b = Aggregate("web", "latency", "1m", 60'000, 2, 3, R"({"region":"eu"})");
  const std::string c = Aggregate("web", "latency", "1m", 60'000, 5, 9, R"({"region":"us"})");
  const std::string too_long = Aggregate(std::string(101, 's'), "latency", "1m", 60'000, 1, 1);
  const std::string bad_time = Aggregate("api", "latency", "1m", 9'000'000'000'000'000'000, 1, 1);
  const std::string t = "metrics-aggregated-1m";
  std::vector<SinkRecord> batch = {
      {t, 0, 0, "api", a1}, {t, 1, 0, "web", b},        {t, 0, 1, "x", too_long},
      {t, 0, 2, "api", a2}, {t, 1, 1, "web", "not json"}, {t, 1, 2, "web", c},
      {t, 1, 3, "api", bad_time}};
  std::vector<std::string> rejected;
  auto on_rejected = [&](std::span<const RejectedRecord> refused) {
    for (const RejectedRecord& r : refused) {
      rejected.push_back(StrCat(r.record.partition, "/", r.record.offset, ": ", r.reason));
    }
    return absl::OkStatus();
  };
  absl::Status s = sink->Apply(batch, on_rejected);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(Table(), ElementsAre("api|latency|1m|60000|4|10|{}",
                                   "web|latency|1m|60000|2|3|{\"region\": \"eu\"}",
                                   "web|latency|1m|60000|5|9|{\"region\": \"us\"}"));
  ASSERT_THAT(rejected, SizeIs(3));
  EXPECT_EQ(rejected[0], "0/1: service_id: longer than 100 characters");
  EXPECT_EQ(rejected[1], "1/1: aggregate: not JSON");
  EXPECT_THAT(rejected[2], ::testing::StartsWith("1/3: postgres: upsert: ERROR:  timestamp out of range"));
  EXPECT_THAT(Offsets(), ElementsAre("metrics-aggregated-1m[0]=3@1", "metrics-aggregated-1m[1]=4@1"));

  // The same batch again (a runner that crashed before it knew the commit went through):
  // nothing changes, nothing is rejected twice. An older value of api cannot come back.
  rejected.clear();
  std::vector<SinkRecord> again = batch;
  const std::string next_window = Aggregate("api", "latency", "1m", 120'000, 1, 2);
  again.push_back({t, 0, 3, "api", next_window});
  ASSERT_TRUE(sink->Apply(again, on_rejected).ok());
  EXPECT_THAT(rejected, ElementsAre());
  EXPECT_THAT(Table(), ElementsAre("api|latency|1m|120000|1|2|{}", "api|latency|1m|60000|4|10|{}",
                                   "web|latency|1m|60000|2|3|{\"region\": \"eu\"}",
                                   "web|latency|1m|60000|5|9|{\"region\": \"us\"}"));
  EXPECT_THAT(Offsets(), ElementsAre("metrics-aggregated-1m[0]=4@1", "metrics-aggregated-1m[1]=4@1"));
}

TEST_F(PostgresSinkTest, MalformedDsnIsAnErrorNotAnOutage) {
  PostgresSink sink(PostgresSinkOptions{.dsn = "host=127.0.0.1 colour=blue"});
  absl::Status s = sink.Open();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_EQ(s.message(), "postgres: dsn: invalid connection option \"colour\"");
  // The runner gives up at once instead of retrying forever.
  kafka::SinkRunnerOptions ro = testing::FastRetryRunner({{"bootstrap.servers", "127.0.0.1:1"}},
                                                         "g", "metrics-aggregated-1m");
  auto runner = kafka::SinkRunner::Create(
      std::make_unique<PostgresSink>(PostgresSinkOptions{.dsn = "colour=blue"}), ro);
  ASSERT_TRUE(runner.ok());
  (*runner)->Start();
  absl::Status joined = (*runner)->Join();
  EXPECT_TRUE(absl::IsInvalidArgument(joined)) << joined;
  EXPECT_EQ((*runner)->counters().health, kafka::SinkHealth::kFailed);
}

TEST_F(PostgresSinkTest, RejectHandlerFailureRollsTheBatchBack) {
  auto sink = NewSink();
  ASSERT_TRUE(sink->Open().ok());
  ASSERT_TRUE(sink->Acquire(kOneMinute).ok());
  const std::string t = "metrics-aggregated-1m";
  const std::string a = Aggregate("api", "latency", "1m", 60'000, 3, 7.5);
  std::vector<SinkRecord> batch = {{t, 0, 0, "api", a}, {t, 0, 1, "api", "{}"}};
  absl::Status s = sink->Apply(batch, [](std::span<const RejectedRecord>) {
    return absl::UnavailableError("dead-letter topic unreachable");
  });
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_THAT(Table(), ElementsAre());
  EXPECT_THAT(Offsets(), ElementsAre("metrics-aggregated-1m[0]=0@1", "metrics-aggregated-1m[1]=0@1"));
}

TEST_F(PostgresSinkTest, NewerOwnerFencesTheOlderOne) {
  auto old_runner = NewSink();
  auto new_runner = NewSink();
  ASSERT_TRUE(old_runner->Open().ok());
  ASSERT_TRUE(new_runner->Open().ok());
  ASSERT_TRUE(old_runner->Acquire(kOneMinute).ok());
  const std::vector<TopicPartition> p0 = {kOneMinute[0]};
  auto taken = new_runner->Acquire(p0);
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ((*taken)[0].epoch, 2);
  const std::string t = "metrics-aggregated-1m";
  const std::string old_value = Aggregate("api", "latency", "1m", 60'000, 1, 1);
  const std::string new_value = Aggregate("api", "latency", "1m", 60'000, 9, 9);
  ASSERT_TRUE(new_runner->Apply(std::vector<SinkRecord>{{t, 0, 0, "api", new_value}}, {}).ok());
  // The old owner still has offset 0 of partition 0 (and a record of partition 1).
  absl::Status s = old_runner->Apply(
      std::vector<SinkRecord>{{t, 0, 0, "api", old_value}, {t, 1, 0, "web", old_value}}, {});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_FALSE(old_runner->Owns(kOneMinute[0]));
  EXPECT_TRUE(old_runner->Owns(kOneMinute[1]));
  EXPECT_THAT(Table(), ElementsAre("api|latency|1m|60000|9|9|{}"));
  EXPECT_EQ(old_runner->Apply(std::vector<SinkRecord>{{t, 0, 1, "api", old_value}}, {}).message(),
            "postgres: metrics-aggregated-1m[0] is not this runner's");
  // What it still owns it can apply.
  ASSERT_TRUE(old_runner->Apply(std::vector<SinkRecord>{{t, 1, 0, "web", old_value}}, {}).ok());
  EXPECT_THAT(Offsets(), ElementsAre("metrics-aggregated-1m[0]=1@2", "metrics-aggregated-1m[1]=1@1"));
}

// The runner against the dev broker: aggregates produced to the 1m topic reach the table
// exactly; a second runner started after the first stopped resumes from the positions
// in Postgres (applies only the new records); Postgres stopped mid-run: the runner
// retries with the batch held and catches up when it is back.
TEST_F(PostgresSinkTest, RunnerAppliesTopicExactlyResumesFromPostgresAndSurvivesOutage) {
  auto broker = kafka::DevBroker::Start(1);
  ASSERT_TRUE(broker.ok());
  ASSERT_TRUE((*broker)->CreateReferenceTopics().ok());
  const kafka::Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()},
                                   {"fetch.wait.max.ms", "50"},
                                   {"session.timeout.ms", "6000"},
                                   {"heartbeat.interval.ms", "500"}};
  auto producer = kafka::Producer::Create({.properties = props});
  ASSERT_TRUE(producer.ok());
  const std::string topic = "metrics-aggregated-1m";
  std::map<std::string, std::string> expected;  // key → latest row
  int produced = 0;
  auto produce = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      const std::string service = StrCat("svc", i % 7);
      const int64_t start = 60'000 * (i / 7 % 5);
      const std::string value = Aggregate(service, "latency", "1m", start, i + 1, i * 2.0);
      (*producer)->Send(topic, -1, service, value, 0, {});
      expected[StrCat(service, "|", start)] =
          StrCat(service, "|latency|1m|", start, "|", i + 1, "|", i * 2, "|{}");
      ++produced;
    }
    ASSERT_TRUE((*producer)->Flush().ok());
  };
  auto expected_table = [&] {
    std::vector<std::string> rows;
    for (auto& [k, v] : expected) rows.push_back(v);
    std::sort(rows.begin(), rows.end());
    return rows;
  };
  const kafka::SinkRunnerOptions ro = testing::FastRetryRunner(props, "test-sink-postgres", topic);

  produce(0, 700);
  {
    auto runner = kafka::SinkRunner::Create(NewSink(), ro);
    ASSERT_TRUE(runner.ok());
    (*runner)->Start();
    ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().records == 700; }, 60))
        << (*runner)->counters().records;
    EXPECT_EQ(Table(), expected_table());
    (*runner)->Stop();
    ASSERT_TRUE((*runner)->Join().ok());
  }
  produce(700, 1000);
  auto runner = kafka::SinkRunner::Create(NewSink(), ro);
  ASSERT_TRUE(runner.ok());
  (*runner)->Start();
  // Only the 300 new records: the rest were applied by the first runner.
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().records == 300; }, 60))
      << (*runner)->counters().records;
  EXPECT_EQ(Table(), expected_table());

  server_->Stop();
  produce(1000, 1500);
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().health == kafka::SinkHealth::kCircuitOpen; }, 30))
      << kafka::SinkHealthName((*runner)->counters().health);
  EXPECT_EQ((*runner)->counters().records, 300u);
  ASSERT_TRUE(server_->Start().ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().records == 800; }, 60))
      << (*runner)->counters().records;
  EXPECT_EQ((*runner)->counters().health, kafka::SinkHealth::kHealthy);
  EXPECT_GE((*runner)->counters().failures, 3u);
  EXPECT_EQ(Table(), expected_table());
  auto offsets = server_->Exec(db_, "SELECT sum(next_offset) FROM metrics.sink_offsets");
  ASSERT_TRUE(offsets.ok());
  EXPECT_EQ((*offsets)[0][0], "1500");
  (*runner)->Stop();
  ASSERT_TRUE((*runner)->Join().ok());
}

// tests/sink_crash_scenario.h: kill -9 of `streammetrics sink` three times, then two
// runners at once. The table must equal the latest value of every key (an older value
// re-applied after a newer one — a batch applied twice — would leave a stale row).
TEST_F(PostgresSinkTest, KillNineRepeatedlyAndTwoRunnersThenTableIsExact) {
  std::vector<testing::ProducedAggregate> produced;
  testing::RunSinkCrashScenario(
      StrCat("{postgres: {enabled: true, dsn: \"", server_->Dsn(db_),
             "\", topics: [metrics-aggregated-1m], batch_size: 50, flush_interval: 20ms}}"),
      [&]() -> int64_t {
        auto r = server_->Exec(db_, "SELECT coalesce(sum(next_offset), 0) FROM metrics.sink_offsets");
        return r.ok() && !r->empty() ? std::stoll((*r)[0][0]) : -1;
      },
      &produced);
  ASSERT_EQ(produced.size(), 3'000u);
  std::map<std::string, std::string> expected;
  for (const testing::ProducedAggregate& p : produced) {
    expected[StrCat(p.service, "|", p.window_start)] =
        StrCat(p.service, "|latency|1m|", p.window_start, "|", p.count, "|", p.sum, "|{}");
  }
  std::vector<std::string> rows;
  for (auto& [k, v] : expected) rows.push_back(v);
  std::sort(rows.begin(), rows.end());
  EXPECT_EQ(Table(), rows);
}

// `streammetrics run` on the embedded default with sinks.postgres enabled: the engine,
// the dev broker, the load generator (event time = wall clock) and the sink runner in one
// process. After 25 s the binary exits 0 (engine and sink stopped cleanly), its progress
// lines show the sink healthy, and the 1m-10s windows that closed are in the table.
TEST_F(PostgresSinkTest, RunStartsTheEnabledSink) {
  const std::string dir = StrCat("/tmp/sm-run-sink-test-", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string config = dir + "/run.yaml";
  {
    std::ofstream f(config);
    f << "application: {id: runsink}\n"
      << "state: {dir: " << dir << "/state}\n"
      << "sinks: {postgres: {enabled: true, dsn: \"" << server_->Dsn(db_)
      << "\", flush_interval: 50ms}}\n";
  }
  const std::string log = dir + "/run.log";
  const testing::Finished run = testing::RunToEnd(
      {SM_BINARY, "run", "--config", config, "--load", "5000", "--duration", "25"}, log);
  const std::string& out = run.output;
  EXPECT_TRUE(run.ok()) << "status " << run.status << "; output:\n"
                        << out.substr(out.size() > 4000 ? out.size() - 4000 : 0);
  EXPECT_THAT(out, ::testing::HasSubstr("postgres healthy")) << out;
  auto rows = server_->Exec(db_, "SELECT count(*) FROM metrics.metric_aggregates WHERE window_size = '1m-10s'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_GT(std::stoll((*rows)[0][0]), 0) << out;
  std::filesystem::remove_all(dir);
}

// Proves `run --until-end` with the Postgres sink enabled applies every result of the
// bounded run before it exits: the table then holds exactly the aggregate topics' results
// (a row per result: they are final, each once), none left for a later run.
TEST_F(PostgresSinkTest, RunUntilEndAppliesEveryResultBeforeExiting) {
  const std::string dir = StrCat("/tmp/sm-run-until-end-sink-test-", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::unique_ptr<kafka::DevBroker>> broker = kafka::DevBroker::Start(1);
  ASSERT_TRUE(broker.ok()) << broker.status();
  const std::string bootstrap = (*broker)->bootstrap_servers();
  const std::string config = dir + "/run.yaml";
  {
    std::ofstream f(config);
    f << "application: {id: untilend}\n"
      << "state: {dir: " << dir << "/state}\n"
      << "kafka: {bootstrap.servers: \"" << bootstrap << "\"}\n"
      << "sinks: {postgres: {enabled: true, dsn: \"" << server_->Dsn(db_)
      << "\", flush_interval: 50ms}}\n";
  }
  absl::StatusOr<AppConfig> app = LoadConfigFile(config);
  ASSERT_TRUE(app.ok()) << app.status();
  absl::StatusOr<Topology> topology = BuildMetricsTopology(app->pipeline);
  ASSERT_TRUE(topology.ok()) << topology.status();
  ASSERT_TRUE(CreateDevBrokerTopics(broker->get(), *app, *topology).ok());
  // 20 minutes old: closed by the end of the run, not by the wall clock.
  const int64_t start = (std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count() /
                         60'000 - 20) * 60'000;
  const testing::Finished loadgen = testing::RunToEnd(
      {SM_BINARY, "loadgen", "--bootstrap", bootstrap, "--count", "20000", "--rate", "200",
       "--start-ms", StrCat(start)},
      dir + "/loadgen.log");
  ASSERT_TRUE(loadgen.ok()) << loadgen.output;
  // Postgres is down until the engine has read its input to the end: the sink can
  // apply nothing before; then it must apply everything before the run exits.
  server_->Stop();
  const std::string log = dir + "/run.log";
  const pid_t pid = testing::Spawn({SM_BINARY, "run", "--config", config, "--until-end", "--quiet", "true"}, log);
  ASSERT_GT(pid, 0);
  int status = -1;
  bool exited = false;
  bool restarted = false;
  for (int i = 0; i < 1'800 && !exited; ++i) {  // 180 s
    if (!restarted && testing::ReadFile(log).find("applying the last results") != std::string::npos) {
      ASSERT_TRUE(server_->Start().ok());
      restarted = true;
    }
    exited = waitpid(pid, &status, WNOHANG) == pid;
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!restarted) ASSERT_TRUE(server_->Start().ok());
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  const std::string out = testing::ReadFile(log);
  ASSERT_TRUE(exited) << "still running after 180 s:\n" << out;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_TRUE(restarted) << out;
  size_t results = 0;
  for (const WindowSpec& w : app->pipeline.windows) {
    absl::StatusOr<std::vector<OutputRecord>> got =
        kafka::ReadTopic({{"bootstrap.servers", bootstrap}}, w.topic);
    ASSERT_TRUE(got.ok()) << got.status();
    results += got->size();
  }
  ASSERT_GT(results, 100u);
  auto rows = server_->Exec(db_, "SELECT count(*) FROM metrics.metric_aggregates");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(std::stoll((*rows)[0][0]), static_cast<long long>(results)) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace streammetrics
