// The streammetrics binary, run as a user runs it: process, describe, loadgen, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <fstream>
#include <sstream>

#include "tests/test_events.h"

namespace streammetrics {
namespace {

using testing::Ev;
using testing::kT0;
using ::testing::HasSubstr;
using ::testing::Not;

struct CommandRun {
  int exit_code;
  std::string output;  // stdout and stderr
};

CommandRun Streammetrics(const std::string& args) {
  std::string cmd = std::string(SM_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return CommandRun{WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::vector<std::string> Lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class ProcessCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sm-process-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::filesystem::path dir_;
};

// dedupe.max_ids from the config reaches the operator: with one live id, the second id
// forgets the first, so the first's repeat passes; the summary counts what was forgotten.
TEST_F(ProcessCommandTest, DedupeBoundIsAppliedAndCounted) {
  std::string config = Write("c.yaml", R"(
validation: {max_future_skew: "off"}
dedupe: {max_ids: 1}
)");
  std::string input = Write("events.jsonl", Ev{.id = "1", .ts = kT0 + 1'000}.Json() + "\n" +
                                                Ev{.id = "2", .ts = kT0 + 2'000}.Json() + "\n" +
                                                Ev{.id = "1", .ts = kT0 + 3'000}.Json() + "\n" +
                                                Ev{.id = "1", .ts = kT0 + 4'000}.Json() + "\n");
  CommandRun r = Streammetrics("process --config " + config + " --input " + input + " --output " +
                               (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("processed:        3\n"));
  EXPECT_THAT(r.output, HasSubstr("duplicates:       1\n"));  // the last one: 1 is live again
  EXPECT_THAT(r.output, HasSubstr("dedupe evicted:   2 ids forgotten early (dedupe.max_ids)\n"));
}

TEST_F(ProcessCommandTest, ProcessWritesEveryTopicAndASummary) {
  std::string config = Write("c.yaml", R"(
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, grace: 0s, topic: out-1m}
)");
  std::string input = Write(
      "events.jsonl",
      Ev{.id = "1", .ts = kT0 + 1'000, .value = 10}.Json() + "\n" +
          Ev{.id = "2", .ts = kT0 + 2'000, .value = 30}.Json() + "\r\n" +  // CRLF tolerated
          "\n" +                                                          // blank: skipped
          "{\"eventId\":\n" +                                             // bad JSON
          Ev{.id = "1", .ts = kT0 + 3'000, .value = 99}.Json() + "\n" +   // duplicate
          Ev{.id = "3", .ts = kT0 + 61'000, .value = 5, .service = "user-service"}.Json() + "\n");
  CommandRun r = Streammetrics("process --config " + config + " --input " + input + " --output " +
                        (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             5 events (1 blank lines skipped)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        3\n"));
  EXPECT_THAT(r.output, HasSubstr("duplicates:       1\n"));
  EXPECT_THAT(r.output, Not(HasSubstr("dedupe evicted")));  // no bound set
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    1 (deserialization 1, validation 0, late 0, "
                                  "processing 0)\n"));
  EXPECT_THAT(r.output, HasSubstr("windows emitted:  2\n"));
  EXPECT_THAT(r.output, HasSubstr("  out-1m.jsonl: 2 records\n"));

  std::vector<std::string> out = Lines(dir_ / "out" / "out-1m.jsonl");
  ASSERT_EQ(out.size(), 2u);
  // p50 of {10, 30} is 10: percentile_disc, the smallest value whose cumulative share
  // (1/2 for 10) reaches 0.5.
  EXPECT_EQ(out[0],
            "{\"serviceId\":\"payment-service\",\"metricName\":\"api.request.duration\","
            "\"window\":\"1m\",\"windowStart\":1707267600000,\"windowEnd\":1707267660000,"
            "\"count\":2,\"sum\":40,\"avg\":20,\"min\":10,\"max\":30,\"p50\":10,\"p95\":30,"
            "\"p99\":30,\"rate\":0.03333333333333333,\"tags\":{}}");
  EXPECT_THAT(out[1], HasSubstr("\"serviceId\":\"user-service\""));
  EXPECT_THAT(out[1], HasSubstr("\"windowStart\":1707267660000"));

  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("{\"reason\":\"deserialization\",\"error\":"));
  EXPECT_THAT(dlq[0], HasSubstr("\"topic\":\"metrics-events\",\"partition\":0,\"offset\":2,"));
  EXPECT_THAT(dlq[0], HasSubstr("\"original\":\"{\\\"eventId\\\":\"}"));
}

TEST_F(ProcessCommandTest, OverlongLineIsDeadLetteredAndTheRestProcessed) {
  std::string config = Write("c.yaml", R"(
input: {max_document_bytes: 400}
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, topic: out-1m}
)");
  std::string huge = "{\"eventId\":\"" + std::string(5'000'000, 'x') + "\"}";
  std::string input = Write("events.jsonl", huge + "\n" +
                                                Ev{.id = "1", .ts = kT0, .value = 10}.Json() +
                                                "\n" + huge);  // last line, no newline
  CommandRun r = Streammetrics("process --config " + config + " --input " + input +
                               " --output " + (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  EXPECT_THAT(r.output, HasSubstr("deserialization 2,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 2u);
  EXPECT_THAT(dlq[0], HasSubstr("\"offset\":0,"));
  EXPECT_THAT(dlq[1], HasSubstr("\"offset\":2,"));
  // The original is the first limit + 1 bytes: enough to identify the record.
  EXPECT_LT(dlq[0].size(), 1000u);
  EXPECT_EQ(Lines(dir_ / "out" / "out-1m.jsonl").size(), 1u);
}

// Lines longer than the read buffer's first size grow it up to the document limit: one
// just under the limit is processed whole, one over it is cut at limit + 1 bytes.
TEST_F(ProcessCommandTest, LinesLongerThanTheReadBufferAreReadWholeUpToTheLimit) {
  std::string config = Write("c.yaml", R"(
input: {max_document_bytes: 200000}
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, topic: out-1m}
)");
  Ev big{.id = "big", .ts = kT0, .value = 10, .tags = {{"note", std::string(150'000, 'y')}}};
  Ev over{.id = "over", .ts = kT0, .value = 10, .tags = {{"note", std::string(250'000, 'z')}}};
  std::string input = Write("events.jsonl", big.Json() + "\n" + over.Json() + "\n" +
                                                Ev{.id = "1", .ts = kT0, .value = 5}.Json());
  CommandRun r = Streammetrics("process --config " + config + " --input " + input +
                               " --output " + (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events"));
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
  EXPECT_THAT(r.output, HasSubstr("deserialization 1,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("\"offset\":1,"));
  EXPECT_THAT(dlq[0], HasSubstr("document too large: 200001 bytes (limit 200000)"));
  std::vector<std::string> out = Lines(dir_ / "out" / "out-1m.jsonl");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_THAT(out[0], HasSubstr("\"count\":2,\"sum\":15,"));
}

// The document limit is a bound, not an allocation: at its largest (1 GiB) a three-line
// input runs in a quarter of that address space; beyond it the config is refused.
TEST_F(ProcessCommandTest, MaxDocumentBytesIsNeverAllocatedUpFront) {
  std::string config = Write("c.yaml", R"(
input: {max_document_bytes: 1073741824}
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, topic: out-1m}
)");
  std::string input = Write("events.jsonl", Ev{.id = "1", .ts = kT0}.Json() + "\n" +
                                                Ev{.id = "2", .ts = kT0}.Json() + "\n" +
                                                Ev{.id = "3", .ts = kT0}.Json() + "\n");
  const std::string cmd = "process --config " + config + " --input " + input + " --output " +
                          (dir_ / "out").string();
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's shadow memory does not fit a 256 MiB address space";
#endif
  // ulimit -v: 256 MiB of address space.
  std::string run = "sh -c 'ulimit -v 262144 && exec " + std::string(SM_BINARY) + " " + cmd +
                    "' 2>&1";
  FILE* p = popen(run.c_str(), "r");
  std::string output;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) output.append(buf, n);
  int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  ASSERT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_THAT(output, HasSubstr("processed:        3\n"));

  for (const std::string& bytes : {std::string("9223372036854775807"), std::string("1099511627776")}) {
    std::string bad = Write("bad.yaml", "input: {max_document_bytes: " + bytes + "}\n");
    CommandRun r = Streammetrics("process --config " + bad + " --input " + input + " --output " +
                                 (dir_ / "out").string());
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.output, "streammetrics: " + bad +
                            ": input.max_document_bytes: must be in [1, 1073741824], got " +
                            bytes + "\n");
  }
}

// An event stamped year 1 then events stamped now: nothing stalls; the second is
// dead-lettered as stream skew, the third moves the stream on (docs/SEMANTICS.md).
TEST_F(ProcessCommandTest, AncientThenNowCompletesWithTheSkewDeadLettered) {
  std::string config = Write("c.yaml", R"(
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, grace: 10s, topic: out-1m}
    - {name: 1m-10s, type: hopping, size: 1m, advance: 10s, grace: 10s, topic: out-hop}
)");
  const int64_t year1 = -62'135'596'800'000;
  std::string input = Write("events.jsonl", Ev{.id = "0", .ts = year1}.Json() + "\n" +
                                                Ev{.id = "1", .ts = kT0}.Json() + "\n" +
                                                Ev{.id = "2", .ts = kT0 + 1'000}.Json() + "\n");
  CommandRun r = Streammetrics("process --config " + config + " --input " + input +
                               " --output " + (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    1 (deserialization 0, validation 0, late 0, "
                                  "processing 0, stream_skew 1)\n"));
  EXPECT_THAT(r.output, HasSubstr("windows emitted:  14\n"));  // (1 + 6) for each record kept
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("{\"reason\":\"stream_skew\",\"error\":\"timestamp: " +
                                std::to_string(kT0) +
                                " is more than 86400000 ms ahead of the stream time (" +
                                std::to_string(year1) + ")\""));

  // Without the skew rule the jump is taken, at a cost of the windows holding data.
  config = Write("c.yaml", "validation: {max_future_skew: \"off\", max_stream_skew: \"off\"}\n");
  input = Write("events.jsonl", Ev{.id = "0", .ts = 0}.Json() + "\n" +
                                    Ev{.id = "1", .ts = kT0}.Json() + "\n");
  r = Streammetrics("process --config " + config + " --input " + input + " --output " +
                    (dir_ / "out2").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
  EXPECT_THAT(r.output, HasSubstr("windows emitted:  16\n"));  // 1m, 5m, 6 x 1m-10s each
}

// Configs that would write outside --output, or send results to the dead letters.
TEST_F(ProcessCommandTest, TopicNamesThatAreNotKafkasAreRefused) {
  std::string config = Write("c.yaml", "aggregate: {windows: [{name: a, size: 1m, topic: ../../x}]}\n");
  CommandRun r = Streammetrics("process --config " + config + " --input /dev/null --output " +
                               (dir_ / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "streammetrics: " + config +
                          ": aggregate.windows[0].topic: '../../x' is not a topic name (letters, "
                          "digits, '.', '_' and '-' only)\n");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));
}

TEST_F(ProcessCommandTest, RunRefusesAStateDirThatCannotBeADirectory) {
  std::string config = Write("c.yaml", "state: {dir: /etc/passwd}\naggregate: {store: memory}\n");
  CommandRun r = Streammetrics("run --config " + config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "streammetrics: state.dir: '/etc/passwd' cannot be a directory: "
                      "'/etc/passwd' exists and is not one\n");
}

TEST_F(ProcessCommandTest, LoadgenOutputRunsThroughTheReferenceConfig) {
  std::string events = (dir_ / "gen.jsonl").string();
  CommandRun gen = Streammetrics("loadgen --output " + events +
                          " --count 20000 --rate 1000 --invalid 0.01 --duplicates 0.01 --late 0");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_EQ(Lines(events).size(), 20000u);
  CommandRun r = Streammetrics("process --config " + std::string(SM_SOURCE_DIR) +
                        "/config/reference.yaml --input " + events + " --output " +
                        (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 20 s of event time per 20,000 events at 1000/s; every event accounted for once.
  std::istringstream summary(r.output);
  uint64_t read = 0, processed = 0, duplicates = 0, dead = 0;
  for (std::string line; std::getline(summary, line);) {
    std::sscanf(line.c_str(), "read: %lu", &read);
    std::sscanf(line.c_str(), "processed: %lu", &processed);
    std::sscanf(line.c_str(), "duplicates: %lu", &duplicates);
    std::sscanf(line.c_str(), "dead-lettered: %lu", &dead);
  }
  EXPECT_EQ(read, 20000u);
  EXPECT_EQ(processed + duplicates + dead, read) << r.output;
  EXPECT_GT(duplicates, 100u);
  EXPECT_GT(dead, 100u);
  uint64_t counted = 0;
  for (const std::string& line : Lines(dir_ / "out" / "metrics-aggregated-5m.jsonl")) {
    size_t at = line.find("\"count\":");
    counted += std::stoull(line.substr(at + 8));
  }
  EXPECT_EQ(counted, processed);  // the 5m windows hold every processed event exactly once
}

TEST_F(ProcessCommandTest, BadConfigFailsWithTheKeyNamed) {
  std::string config = Write("bad.yaml", "aggregate: {windows: [{name: a, size: 1m, sise: 2}]}\n");
  CommandRun r = Streammetrics("process --config " + config + " --input /dev/null --output " +
                        (dir_ / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "streammetrics: " + config + ": aggregate.windows[0].sise: unknown key\n");
}

// Proves offline mode on RocksDB stores — with a cache budget small enough that panes are
// evicted to RocksDB and read back at window close — writes exactly what it writes on
// in-memory stores, and leaves no state directory behind.
TEST_F(ProcessCommandTest, RocksDbStoresAndEvictionGiveTheSameOutput) {
  const std::string events = (dir_ / "events.jsonl").string();
  CommandRun gen = Streammetrics("loadgen --output " + events + " --count 20000 --rate 200");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto run = [&](const std::string& name, const std::string& yaml) {
    CommandRun r = Streammetrics("process --config " + Write(name + ".yaml", yaml) + " --input " +
                                 events + " --output " + (dir_ / name).string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
  };
  auto ScratchDirs = [] {
    size_t n = 0;
    for (const auto& e :
         std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
      n += e.path().filename().string().rfind("streammetrics-offline-", 0) == 0;
    }
    return n;
  };
  const size_t scratch_before = ScratchDirs();
  run("memory", "aggregate: {store: memory}\n");
  run("rocksdb", "aggregate: {store: rocksdb}\nstate: {cache_max_bytes: 1}\n");
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / "memory")) {
    ++files;
    // Dead letters carry the input record's timestamp: offline, the wall clock at reading.
    auto normalized = [](std::vector<std::string> lines) {
      static const std::regex kTimestamp("\"timestamp\":[0-9]+,\"original\"");
      for (std::string& l : lines) l = std::regex_replace(l, kTimestamp, "\"timestamp\":T,\"original\"");
      return lines;
    };
    std::vector<std::string> mem = normalized(Lines(e.path()));
    std::vector<std::string> rocks = normalized(Lines(dir_ / "rocksdb" / e.path().filename()));
    EXPECT_TRUE(mem == rocks) << e.path().filename();
    if (e.path().filename() == "metrics-aggregated-5m.jsonl") {
      EXPECT_GT(mem.size(), 20u);
    }
  }
  EXPECT_EQ(files, 4u);
  EXPECT_EQ(ScratchDirs(), scratch_before);
}

TEST_F(ProcessCommandTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Streammetrics("").exit_code, 2);
  CommandRun r = Streammetrics("process --config x.yaml --input a --output b --frobnicate 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("streammetrics: unknown flag --frobnicate"));
  EXPECT_EQ(Streammetrics("loadgen --output - --count many").exit_code, 2);
  CommandRun missing = Streammetrics("process --config x.yaml --input /nonexistent --output b");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("x.yaml: cannot open"));
}

TEST_F(ProcessCommandTest, DescribePrintsTheTopology) {
  CommandRun r = Streammetrics("describe --config " + std::string(SM_SOURCE_DIR) +
                        "/config/reference.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("Source: source-metrics-events (topic: metrics-events, format: json)"));
  EXPECT_THAT(r.output, HasSubstr("Sink: sink-5m (topic: metrics-aggregated-5m)"));
  EXPECT_THAT(r.output, HasSubstr("pane 10s"));
}

}  // namespace
}  // namespace streammetrics
