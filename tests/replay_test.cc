// Replay (engine/kafka/topic_reader.h, `streammetrics replay`) against the dev broker:
// dead letters go back to the topic they came from (or the one named), as they were —
// key, value, original timestamp, no dlq.* headers — filtered by reason and time; a
// punctuator's dead letter (nothing to replay) is counted, not produced; a record with no
// destination is an error. The dev broker answers -1 to every ListOffsets by timestamp
// (offsets_for_times), so here --since is the client-side filter only (on a Kafka broker
// the read also starts at the first record at or after it).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/config.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/topic_reader.h"
#include "operators/strings.h"
#include "tests/spawn.h"

namespace streammetrics::kafka {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct DeadLetter {
  std::string key, value;
  int64_t timestamp_ms;
  std::vector<std::pair<std::string, std::string>> headers;
};

// "key|value|timestamp|headers" of every record of `topic`.
std::vector<std::string> Records(const Properties& props, const std::string& topic) {
  absl::StatusOr<std::vector<OutputRecord>> records = ReadTopic(props, topic);
  EXPECT_TRUE(records.ok()) << records.status();
  std::vector<std::string> out;
  if (!records.ok()) return out;
  for (const OutputRecord& r : *records) {
    std::string headers;
    for (const auto& [k, v] : r.headers) headers += StrCat(k, "=", v, ";");
    out.push_back(StrCat(r.key, "|", r.value, "|", r.timestamp_ms, "|", headers));
  }
  return out;
}

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_TRUE(broker.ok()) << broker.status();
    broker_ = *std::move(broker);
    ASSERT_TRUE(broker_->CreateReferenceTopics().ok());
    props_ = {{"bootstrap.servers", broker_->bootstrap_servers()}};
    auto producer = Producer::Create({.properties = props_});
    ASSERT_TRUE(producer.ok());
    auto dl = [](std::string reason, std::string from, int64_t original_ts) {
      std::vector<std::pair<std::string, std::string>> h = {{"dlq.reason", reason}, {"dlq.error", "e"}};
      if (!from.empty()) h.emplace_back("dlq.topic", from);
      h.emplace_back("dlq.partition", "2");
      h.emplace_back("dlq.offset", original_ts < 0 ? "-1" : "17");
      if (original_ts >= 0) h.emplace_back("dlq.timestamp", StrCat(original_ts));
      return h;
    };
    const std::vector<DeadLetter> letters = {
        {"api", "{bad json", 5'000, dl("deserialization", "metrics-events", 1'000)},
        {"web", "{\"v\":2}", 6'000, dl("validation", "metrics-events", 2'000)},
        {"", "", 7'000, dl("processing", "", -1)},  // a punctuator's: nothing to replay
        {"api", "{\"agg\":1}", 8'000, dl("sink", "metrics-aggregated-1m", 3'000)},
        {"db", "{\"v\":5}", 9'000, dl("validation", "metrics-events", 4'000)},
        {"x", "{\"v\":6}", 10'000, dl("other", "", 4'500)},  // no dlq.topic
    };
    for (const DeadLetter& d : letters) {
      std::vector<Header> headers;
      for (const auto& [k, v] : d.headers) headers.push_back({k, v});
      (*producer)->Send("metrics-dead-letter", 0, d.key, d.value, d.timestamp_ms, headers);
    }
    ASSERT_TRUE((*producer)->Flush().ok());
  }

  std::unique_ptr<DevBroker> broker_;
  Properties props_;
};

TEST_F(ReplayTest, DeadLettersGoBackWhereTheyCameFromAsTheyWere) {
  ReplayOptions o;
  o.from = "metrics-dead-letter";
  o.reasons = {"validation", "sink"};
  absl::StatusOr<ReplayStats> stats = ReplayTopic(props_, o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->read, 6);
  EXPECT_EQ(stats->replayed, 3);
  EXPECT_EQ(stats->filtered, 3);
  EXPECT_EQ(stats->empty, 0);
  EXPECT_THAT(stats->by_topic, ElementsAre(std::pair<std::string, int64_t>{"metrics-events", 2},
                                           std::pair<std::string, int64_t>{"metrics-aggregated-1m", 1}));
  // Keyed as the engine's input is (web and db may share a partition or not): compare
  // as a set, by topic.
  std::vector<std::string> events = Records(props_, "metrics-events");
  std::sort(events.begin(), events.end());
  EXPECT_THAT(events, ElementsAre("db|{\"v\":5}|4000|", "web|{\"v\":2}|2000|"));
  EXPECT_THAT(Records(props_, "metrics-aggregated-1m"), ElementsAre("api|{\"agg\":1}|3000|"));
}

// Proves a dead letter cut to fit (dlq.truncated: only its first bytes) is counted and
// not replayed: sent back, it would be another record than the one refused.
TEST_F(ReplayTest, DeadLettersCutToFitAreNotReplayed) {
  auto producer = Producer::Create({.properties = props_});
  ASSERT_TRUE(producer.ok());
  const Header headers[] = {{"dlq.reason", "deserialization"}, {"dlq.error", "e"},
                            {"dlq.topic", "metrics-events"},   {"dlq.partition", "2"},
                            {"dlq.offset", "18"},              {"dlq.timestamp", "4800"},
                            {"dlq.truncated", "key=3,value=2000000"}};
  (*producer)->Send("metrics-dead-letter", 0, "big", "xxxx", 11'000, headers);
  ASSERT_TRUE((*producer)->Flush().ok());
  ReplayOptions o;
  o.from = "metrics-dead-letter";
  o.reasons = {"deserialization"};
  absl::StatusOr<ReplayStats> stats = ReplayTopic(props_, o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->read, 7);
  EXPECT_EQ(stats->replayed, 1);
  EXPECT_EQ(stats->truncated, 1);
  EXPECT_EQ(stats->filtered, 5);
  EXPECT_THAT(Records(props_, "metrics-events"), ElementsAre("api|{bad json|1000|"));
}

TEST_F(ReplayTest, TimeRangeDryRunAndMissingDestination) {
  ReplayOptions o;
  o.from = "metrics-dead-letter";
  o.since_ms = 6'500;  // from the punctuator's dead letter on
  o.until_ms = 9'500;  // the last (no dlq.topic) is outside
  o.dry_run = true;
  absl::StatusOr<ReplayStats> stats = ReplayTopic(props_, o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->read, 6);
  EXPECT_EQ(stats->replayed, 2);
  EXPECT_EQ(stats->empty, 1);
  EXPECT_EQ(stats->filtered, 3);  // two before since_ms, one at or after until_ms
  EXPECT_THAT(Records(props_, "metrics-events"), ElementsAre());  // a dry run
  EXPECT_THAT(Records(props_, "metrics-aggregated-1m"), ElementsAre());

  o = ReplayOptions{.from = "metrics-dead-letter", .reasons = {"other"}};
  stats = ReplayTopic(props_, o);
  EXPECT_TRUE(absl::IsInvalidArgument(stats.status())) << stats.status();
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr("metrics-dead-letter[0]@5 has no dlq.topic header: name the topic to replay to"));
  o.to = "metrics-events";  // named: replayed there
  stats = ReplayTopic(props_, o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_THAT(Records(props_, "metrics-events"), ElementsAre("x|{\"v\":6}|4500|"));

  o = ReplayOptions{.from = "no-such-topic"};
  EXPECT_TRUE(absl::IsNotFound(ReplayTopic(props_, o).status()));
}

// The command: flags, an RFC 3339 --since, the summary it prints.
TEST_F(ReplayTest, CommandReplaysAndSaysWhatItDid) {
  const std::string dir = StrCat("/tmp/sm-replay-test-", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string config = dir + "/replay.yaml";
  {
    std::ofstream f(config);
    f << "kafka: {bootstrap.servers: \"" << broker_->bootstrap_servers() << "\"}\n";
  }
  const std::string log = dir + "/replay.log";
  testing::Finished run = testing::RunToEnd(
      {SM_BINARY, "replay", "--config", config, "--from", "metrics-dead-letter", "--reason",
       "sink,validation", "--since", "1970-01-01T00:00:07Z", "--to", "metrics-aggregated-5m"},
      log);
  ASSERT_TRUE(run.ok()) << run.output;
  EXPECT_EQ(run.output,
            "read 6 records of metrics-dead-letter: replayed 2, filtered out 4, nothing to replay in 0\n"
            "  2 to metrics-aggregated-5m\n");
  std::vector<std::string> got = Records(props_, "metrics-aggregated-5m");
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("api|{\"agg\":1}|3000|", "db|{\"v\":5}|4000|"));

  run = testing::RunToEnd({SM_BINARY, "replay", "--config", config, "--from", "metrics-dead-letter",
                           "--since", "yesterday"},
                          log + ".2");
  EXPECT_TRUE(run.status != -1 && !run.ok());
  EXPECT_THAT(run.output, HasSubstr("--since: 'yesterday' is neither milliseconds since the epoch "
                                    "nor a time like 2026-12-01T10:00:00Z"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace streammetrics::kafka
