// The Redis sink against a real redis-server (started by the test, redis_server.h) and,
// for the runner, the dev broker. What this proves: the latest key holds the newest
// window's aggregate with a TTL of at most 3600 s, the history sorted set holds the last
// hour of windows (older ones trimmed), an older window never replaces a newer one; a
// batch is applied once (re-applied: no change) and positions are stored with it; a
// fenced runner writes nothing more for the partition it lost; records that are not
// aggregates are rejected and only move the position; Redis stopped mid-run and started
// again (append-only file kept): the runner holds its batch, retries and catches up;
// `streammetrics sink` killed with SIGKILL repeatedly, then two runners at once: every
// key exact.
#include "engine/redis/redis_sink.h"

#include <chrono>
#include <map>
#include <thread>

#include "engine/kafka/dev_broker.h"
#include "engine/kafka/kafka_common.h"
#include "engine/kafka/sink_runner.h"
#include "engine/log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "operators/strings.h"
#include "tests/aggregate_json.h"
#include "tests/redis_server.h"
#include "tests/sink_crash_scenario.h"
#include "tests/spawn.h"

namespace streammetrics {
namespace {

using ::testing::ElementsAre;
using testing::Aggregate;
using testing::RedisServer;

class RedisSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetMinLogLevel(LogLevel::kWarning);
    absl::StatusOr<std::unique_ptr<RedisServer>> r = RedisServer::Create();
    ASSERT_TRUE(r.ok()) << r.status();
    redis_ = *std::move(r);
  }
  std::unique_ptr<RedisSink> NewSink() {
    RedisSinkOptions o;
    o.port = redis_->port();
    return std::make_unique<RedisSink>(o);
  }
  std::string Cmd(const std::vector<std::string>& args) { return redis_->Command(args); }

  std::unique_ptr<RedisServer> redis_;
};

TEST(RedisUrl, HostAndPort) {
  RedisSinkOptions o;
  ASSERT_TRUE(ParseRedisUrl("redis://cache:6380/", &o).ok());
  EXPECT_EQ(o.host, "cache");
  EXPECT_EQ(o.port, 6380);
  ASSERT_TRUE(ParseRedisUrl("localhost", &o).ok());
  EXPECT_EQ(o.host, "localhost");
  EXPECT_EQ(o.port, 6379);
  EXPECT_EQ(ParseRedisUrl("cache:port", &o).message(), "redis url 'cache:port': bad port");
  EXPECT_EQ(ParseRedisUrl(":6379", &o).message(), "redis url ':6379': no host");
}

const std::string kTopic = "metrics-aggregated-1m";
const std::vector<TopicPartition> kParts = {{kTopic, 0}, {kTopic, 1}};

TEST_F(RedisSinkTest, LatestAndHistoryPerKeyAppliedOnceWithPositions) {
  auto sink = NewSink();
  ASSERT_TRUE(sink->Open().ok());
  auto acquired = sink->Acquire(kParts);
  ASSERT_TRUE(acquired.ok()) << acquired.status();
  EXPECT_EQ((*acquired)[0], (SinkPosition{kParts[0], 0, 1}));
  const int64_t h = 3'600'000;
  const std::string w0 = Aggregate("api", "latency", "1m", 0, 1, 1);
  const std::string w1 = Aggregate("api", "latency", "1m", 60'000, 2, 2);
  const std::string w1b = Aggregate("api", "latency", "1m", 60'000, 3, 3);  // w1 again, later
  const std::string w_late = Aggregate("api", "latency", "1m", h, 4, 4);    // an hour after w0
  const std::string old = Aggregate("api", "latency", "1m", 120'000, 5, 5);  // older than w_late
  const std::string web = Aggregate("web", "errors", "1m", 0, 6, 6);
  std::vector<SinkRecord> batch = {{kTopic, 0, 0, "api", w0},  {kTopic, 0, 1, "api", w1},
                                   {kTopic, 1, 0, "web", web}, {kTopic, 0, 2, "api", w1b},
                                   {kTopic, 1, 1, "web", "[1,2]"}};
  std::vector<std::string> rejected;
  auto on_rejected = [&](std::span<const RejectedRecord> refused) {
    for (const RejectedRecord& r : refused) rejected.push_back(StrCat(r.record.offset, ": ", r.reason));
    return absl::OkStatus();
  };
  ASSERT_TRUE(sink->Apply(batch, on_rejected).ok());
  EXPECT_THAT(rejected, ElementsAre("1: aggregate: field serviceId missing or of the wrong type"));
  EXPECT_EQ(Cmd({"GET", "metrics:api:latency:1m"}), w1b);
  EXPECT_EQ(Cmd({"GET", "metrics:web:errors:1m"}), web);
  EXPECT_EQ(Cmd({"ZRANGE", "metrics:api:latency:1m:history", "0", "-1", "WITHSCORES"}),
            StrCat(w0, ",0,", w1b, ",60000"));
  const int64_t ttl = std::stoll(Cmd({"TTL", "metrics:api:latency:1m"}));
  EXPECT_GT(ttl, 3'590);
  EXPECT_LE(ttl, 3'600);
  EXPECT_EQ(Cmd({"HGETALL", "streammetrics:sink:redis:positions"}),
            StrCat(kTopic, ":0,3,", kTopic, ":1,2"));

  // Again (a retry after an unknown outcome), plus newer records: only the new ones
  // apply; the window an hour later trims w0 from the history; an older window after it
  // joins the history but does not become the latest.
  rejected.clear();
  std::vector<SinkRecord> again = batch;
  again.push_back({kTopic, 0, 3, "api", w_late});
  again.push_back({kTopic, 0, 4, "api", old});
  ASSERT_TRUE(sink->Apply(again, on_rejected).ok());
  EXPECT_THAT(rejected, ElementsAre("1: aggregate: field serviceId missing or of the wrong type"));
  EXPECT_EQ(Cmd({"GET", "metrics:api:latency:1m"}), w_late);
  EXPECT_EQ(Cmd({"ZRANGE", "metrics:api:latency:1m:history", "0", "-1", "WITHSCORES"}),
            StrCat(w1b, ",60000,", old, ",120000,", w_late, ",", h));
  EXPECT_EQ(Cmd({"HGET", "streammetrics:sink:redis:positions", kTopic + ":0"}), "5");
}

// Results that differ only in their tags (a group_by beyond serviceId and metricName)
// are keys of their own: neither overwrites the other's latest or history.
TEST_F(RedisSinkTest, TaggedResultsAreKeysOfTheirOwn) {
  auto sink = NewSink();
  ASSERT_TRUE(sink->Acquire(kParts).ok());
  const std::string pay = Aggregate("api", "latency", "1m", 0, 1, 1, R"({"endpoint":"/pay"})");
  const std::string home = Aggregate("api", "latency", "1m", 0, 2, 2, R"({"endpoint":"/"})");
  const std::string plain = Aggregate("api", "latency", "1m", 0, 3, 3);
  ASSERT_TRUE(sink->Apply(std::vector<SinkRecord>{{kTopic, 0, 0, "api", pay},
                                                   {kTopic, 0, 1, "api", home},
                                                   {kTopic, 0, 2, "api", plain}},
                          {})
                  .ok());
  EXPECT_EQ(Cmd({"GET", R"(metrics:api:latency:1m:{"endpoint":"/pay"})"}), pay);
  EXPECT_EQ(Cmd({"GET", R"(metrics:api:latency:1m:{"endpoint":"/"})"}), home);
  EXPECT_EQ(Cmd({"GET", "metrics:api:latency:1m"}), plain);
  EXPECT_EQ(Cmd({"ZRANGE", R"(metrics:api:latency:1m:{"endpoint":"/pay"}:history)", "0", "-1"}), pay);
  EXPECT_EQ(Cmd({"ZRANGE", "metrics:api:latency:1m:history", "0", "-1"}), plain);
}

// Keys that hold another type of value (a hash where the latest goes, a string where the
// history goes — say, left by another system): their records are dead letters naming
// the key, Redis' other keys and the positions are applied, the foreign values untouched.
TEST_F(RedisSinkTest, KeysOfAnotherTypeAreDeadLettersNotAStuckSink) {
  auto sink = NewSink();
  ASSERT_TRUE(sink->Acquire(kParts).ok());
  Cmd({"HSET", "metrics:api:latency:1m", "count", "7"});
  Cmd({"SET", "metrics:web:errors:1m:history", "not a sorted set"});
  const std::string api = Aggregate("api", "latency", "1m", 0, 1, 1);
  const std::string web = Aggregate("web", "errors", "1m", 0, 2, 2);
  const std::string db = Aggregate("db", "latency", "1m", 0, 3, 3);
  std::vector<std::string> rejected;
  auto on_rejected = [&](std::span<const RejectedRecord> refused) {
    for (const RejectedRecord& r : refused) rejected.push_back(StrCat(r.record.offset, ": ", r.reason));
    return absl::OkStatus();
  };
  ASSERT_TRUE(sink->Apply(std::vector<SinkRecord>{{kTopic, 0, 0, "db", db},
                                                   {kTopic, 0, 1, "api", api},
                                                   {kTopic, 1, 0, "web", web}},
                          on_rejected)
                  .ok());
  EXPECT_THAT(rejected,
              ElementsAre(StrCat("1: redis: metrics:api:latency:1m: WRONGTYPE Operation against a "
                                 "key holding the wrong kind of value"),
                          StrCat("0: redis: metrics:web:errors:1m:history: WRONGTYPE Operation "
                                 "against a key holding the wrong kind of value")));
  EXPECT_EQ(Cmd({"GET", "metrics:db:latency:1m"}), db);
  EXPECT_EQ(Cmd({"ZRANGE", "metrics:db:latency:1m:history", "0", "-1"}), db);
  EXPECT_EQ(Cmd({"HGETALL", "metrics:api:latency:1m"}), "count,7");
  EXPECT_EQ(Cmd({"EXISTS", "metrics:web:errors:1m"}), "0");  // put back: it did not exist
  EXPECT_EQ(Cmd({"GET", "metrics:web:errors:1m:history"}), "not a sorted set");
  EXPECT_EQ(Cmd({"HGETALL", "streammetrics:sink:redis:positions"}),
            StrCat(kTopic, ":0,2,", kTopic, ":1,1"));
}

TEST_F(RedisSinkTest, NewerOwnerFencesTheOlderOne) {
  auto old_runner = NewSink();
  auto new_runner = NewSink();
  ASSERT_TRUE(old_runner->Acquire(kParts).ok());
  auto taken = new_runner->Acquire(std::vector<TopicPartition>{kParts[0]});
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ((*taken)[0].epoch, 2);
  const std::string newer = Aggregate("api", "latency", "1m", 0, 9, 9);
  const std::string older = Aggregate("api", "latency", "1m", 0, 1, 1);
  ASSERT_TRUE(new_runner->Apply(std::vector<SinkRecord>{{kTopic, 0, 0, "api", newer}}, {}).ok());
  absl::Status s = old_runner->Apply(
      std::vector<SinkRecord>{{kTopic, 0, 0, "api", older}, {kTopic, 1, 0, "web", older}}, {});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_FALSE(old_runner->Owns(kParts[0]));
  EXPECT_TRUE(old_runner->Owns(kParts[1]));
  EXPECT_EQ(Cmd({"GET", "metrics:api:latency:1m"}), newer);
  EXPECT_EQ(Cmd({"HGET", "streammetrics:sink:redis:positions", kTopic + ":1"}), "(nil)");
  // The fenced partition is no longer its to write.
  EXPECT_EQ(old_runner->Apply(std::vector<SinkRecord>{{kTopic, 0, 1, "api", older}}, {}).message(),
            "redis: metrics-aggregated-1m[0] is not this runner's");
}

TEST_F(RedisSinkTest, RunnerCatchesUpAfterRedisOutage) {
  auto broker = kafka::DevBroker::Start(1);
  ASSERT_TRUE(broker.ok());
  ASSERT_TRUE((*broker)->CreateReferenceTopics().ok());
  const kafka::Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()},
                                   {"fetch.wait.max.ms", "50"}};
  auto producer = kafka::Producer::Create({.properties = props});
  ASSERT_TRUE(producer.ok());
  std::map<std::string, std::string> latest;
  auto produce = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      const std::string service = StrCat("svc", i % 5);
      const std::string value = Aggregate(service, "latency", "1m", 60'000 * (i / 5), i + 1, i);
      (*producer)->Send(kTopic, -1, service, value, 0, {});
      latest[StrCat("metrics:", service, ":latency:1m")] = value;
    }
    ASSERT_TRUE((*producer)->Flush().ok());
  };
  const kafka::SinkRunnerOptions ro = testing::FastRetryRunner(props, "test-sink-redis", kTopic);
  auto runner = kafka::SinkRunner::Create(NewSink(), ro);
  ASSERT_TRUE(runner.ok());
  (*runner)->Start();
  produce(0, 500);
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().records == 500; }, 60))
      << (*runner)->counters().records;
  // Its consumer knew the dev broker (by its cluster id) and took its defaults, but for
  // the fetch wait given in the properties.
  const kafka::Properties consumer = (*runner)->consumer_properties();
  EXPECT_EQ(kafka::LastSetting(consumer, "session.timeout.ms"), "6000");
  EXPECT_EQ(kafka::LastSetting(consumer, "heartbeat.interval.ms"), "500");
  EXPECT_EQ(kafka::LastSetting(consumer, "fetch.wait.max.ms"), "50");
  redis_->Stop();
  produce(500, 1000);
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().health == kafka::SinkHealth::kCircuitOpen; }, 30));
  EXPECT_EQ((*runner)->counters().records, 500u);
  ASSERT_TRUE(redis_->Start().ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return (*runner)->counters().records == 1000; }, 60))
      << (*runner)->counters().records;
  for (const auto& [key, value] : latest) EXPECT_EQ(Cmd({"GET", key}), value) << key;
  // Each service's history: its windows within the hour before its newest (60 of them).
  EXPECT_EQ(Cmd({"ZCARD", "metrics:svc0:latency:1m:history"}), "60");
  (*runner)->Stop();
  ASSERT_TRUE((*runner)->Join().ok());
}

// Proves a sink whose stored positions lie past the topics' ends — the topic recreated,
// here a new dev broker (a new cluster) with the same Redis — stops with an error that
// says so and what to do, and applies nothing. Before, it consumed from its old
// positions: every record of the new topic below them was skipped, silently.
TEST_F(RedisSinkTest, PositionsPastARecreatedTopicsEndStopTheRunner) {
  auto run = [&](int records) -> absl::Status {
    auto broker = kafka::DevBroker::Start(1);
    if (!broker.ok()) return broker.status();
    if (absl::Status s = (*broker)->CreateReferenceTopics(); !s.ok()) return s;
    const kafka::Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()}};
    auto producer = kafka::Producer::Create({.properties = props});
    if (!producer.ok()) return producer.status();
    for (int i = 0; i < records; ++i) {
      (*producer)->Send(kTopic, 0, "svc", Aggregate("svc", "latency", "1m", 60'000 * i, i + 1, i), 0, {});
    }
    if (absl::Status s = (*producer)->Flush(); !s.ok()) return s;
    auto runner = kafka::SinkRunner::Create(NewSink(), testing::FastRetryRunner(props, "test-sink-redis", kTopic));
    if (!runner.ok()) return runner.status();
    (*runner)->Start();
    testing::WaitUntil([&] { return (*runner)->counters().records == static_cast<uint64_t>(records) ||
                                    (*runner)->counters().health == kafka::SinkHealth::kFailed; }, 60);
    (*runner)->Stop();
    return (*runner)->Join();
  };
  ASSERT_TRUE(run(50).ok());
  const std::string latest = Cmd({"GET", "metrics:svc:latency:1m"});
  const absl::Status s = run(20);  // the new topic's 20 records lie below position 50
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr(StrCat("redis sink: its position in ", kTopic, " [0] is 50, "
                                          "past the partition's end 20")));
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("sinks.redis.group"));
  EXPECT_EQ(Cmd({"GET", "metrics:svc:latency:1m"}), latest);  // nothing applied
}

// tests/sink_crash_scenario.h: kill -9 of `streammetrics sink` three times, then two
// runners at once. Every latest key must hold its service's newest window with the last
// value produced for it, every history its four windows' last values.
TEST_F(RedisSinkTest, KillNineRepeatedlyAndTwoRunnersThenKeysAreExact) {
  std::vector<testing::ProducedAggregate> produced;
  testing::RunSinkCrashScenario(
      StrCat("{redis: {enabled: true, url: \"127.0.0.1:", redis_->port(),
             "\", topics: [metrics-aggregated-1m], batch_size: 50, flush_interval: 20ms}}"),
      [&]() -> int64_t {
        std::string all = Cmd({"HVALS", "streammetrics:sink:sinktest-sink-redis:positions"});
        if (all.starts_with("ERR")) return -1;
        int64_t sum = 0;
        for (std::string_view rest = all; !rest.empty();) {
          const size_t comma = rest.find(',');
          sum += std::stoll(std::string(rest.substr(0, comma)));
          rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        }
        return sum;
      },
      &produced);
  ASSERT_EQ(produced.size(), 3'000u);
  std::map<std::string, std::map<int64_t, std::string>> windows;  // service → start → last
  for (const testing::ProducedAggregate& p : produced) windows[p.service][p.window_start] = p.json;
  for (const auto& [service, by_start] : windows) {
    const std::string key = StrCat("metrics:", service, ":latency:1m");
    EXPECT_EQ(Cmd({"GET", key}), by_start.rbegin()->second) << key;
    std::string history;
    for (const auto& [start, json] : by_start) history += StrCat(history.empty() ? "" : ",", json);
    EXPECT_EQ(Cmd({"ZRANGE", key + ":history", "0", "-1"}), history) << key;
  }
}

}  // namespace
}  // namespace streammetrics
