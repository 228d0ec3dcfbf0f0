// The streammetrics binary, run as a user runs it: process, describe, loadgen, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/delimited_message_util.h>

#include "absl/strings/escaping.h"
#include "operators/metric_event.pb.h"
#include "operators/metric_event_codec.h"
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

// The event as a serialized protobuf MetricEvent, the same event as Ev::Json().
proto::MetricEvent Proto(const Ev& e) {
  proto::MetricEvent m;
  m.set_event_id(e.id);
  m.set_timestamp_ms(e.ts);
  m.set_service_id(e.service);
  m.set_instance_id(e.service + "-pod-0");
  m.set_metric_type(proto::HTTP_REQUEST);
  m.set_metric_name(e.metric);
  m.set_value(e.value);
  m.set_unit("milliseconds");
  for (const auto& [k, v] : e.tags) (*m.mutable_tags())[k] = v;
  return m;
}

// `bytes` preceded by its size as a varint: one length-delimited frame.
std::string Frame(std::string_view bytes, uint64_t size) {
  std::string out;
  for (; size >= 0x80; size >>= 7) out.push_back(static_cast<char>((size & 0x7f) | 0x80));
  out.push_back(static_cast<char>(size));
  out.append(bytes);
  return out;
}
std::string Frame(std::string_view bytes) { return Frame(bytes, bytes.size()); }

// The bytes of a dead letter's "original_base64" field; fails the test if it has none.
std::string OriginalBase64(const std::string& dead_letter) {
  static const std::regex kField("\"original_base64\":\"([A-Za-z0-9+/=]*)\"\\}$");
  std::smatch m;
  EXPECT_TRUE(std::regex_search(dead_letter, m, kField)) << dead_letter;
  std::string bytes;
  EXPECT_TRUE(absl::Base64Unescape(m.size() > 1 ? m[1].str() : "", &bytes));
  return bytes;
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
  // `process` of `input` with `config`, results and dead letters to <dir>/out.
  CommandRun Process(const std::string& config, const std::string& input) {
    return Streammetrics("process --config " + config + " --input " + input + " --output " +
                         (dir_ / "out").string());
  }

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
  CommandRun r = Process(config, input);
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
  CommandRun r = Process(config, input);
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
  CommandRun r = Process(config, input);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  EXPECT_THAT(r.output, HasSubstr("deserialization 2,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 2u);
  // The error gives the line's real size; the original is its first 400 bytes (enough to
  // identify the record), marked as cut with the original's size.
  ASSERT_EQ(huge.size(), 5'000'014u);
  std::string original;
  AppendJsonString(huge.substr(0, 400), &original);
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(dlq[i], HasSubstr("{\"reason\":\"deserialization\",\"error\":\"document too "
                                  "large: 5000014 bytes (limit 400)\",\"topic\":\"metrics-events\","
                                  "\"partition\":0,\"offset\":" + std::to_string(2 * i) + ","));
    EXPECT_THAT(dlq[i], HasSubstr(",\"truncated\":\"key=0,value=5000014\",\"original\":" +
                                  original + "}"));
    EXPECT_TRUE(dlq[i].ends_with(",\"original\":" + original + "}")) << dlq[i];
  }
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
  CommandRun r = Process(config, input);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events"));
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
  EXPECT_THAT(r.output, HasSubstr("deserialization 1,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("\"offset\":1,"));
  EXPECT_THAT(dlq[0], HasSubstr("\"error\":\"document too large: " +
                                std::to_string(over.Json().size()) + " bytes (limit 200000)\""));
  EXPECT_THAT(dlq[0], HasSubstr("\"truncated\":\"key=0,value=" +
                                std::to_string(over.Json().size()) + "\""));
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
    CommandRun r = Process(bad, input);
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
  CommandRun r = Process(config, input);
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
      static const std::regex kTimestamp("\"timestamp\":[0-9]+,\"(original|truncated)");
      for (std::string& l : lines) l = std::regex_replace(l, kTimestamp, "\"timestamp\":T,\"$1");
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

// 200 events as length-delimited protobuf (the format's default framing) give exactly
// what the same events as JSON lines give. Every message holds 0x0a bytes (field 1's tag,
// and a 10-byte eventId's length) and whitespace; none of that is a line or a blank.
TEST_F(ProcessCommandTest, DelimitedProtobufGivesWhatTheSameJsonLinesGive) {
  const std::string windows = R"(
validation: {max_future_skew: "off"}
aggregate:
  windows:
    - {name: 1m, size: 1m, topic: out-1m}
)";
  std::string json;
  std::ostringstream protobuf;
  for (int i = 0; i < 200; ++i) {
    char id[16];
    std::snprintf(id, sizeof(id), "event-%04d", i);  // 10 bytes: its length is 0x0a too
    Ev e{.id = id, .ts = kT0 + i * 1'000, .value = static_cast<double>(i % 17 + 1),
         .service = i % 3 == 0 ? "user-service" : "payment-service",
         .tags = {{"note", "   "}}};
    json += e.Json() + "\n";
    ASSERT_TRUE(google::protobuf::util::SerializeDelimitedToOstream(Proto(e), &protobuf));
    if (i == 0) ASSERT_EQ(Proto(e).SerializeAsString().substr(0, 2), "\n\n");
  }
  CommandRun r = Streammetrics("process --config " + Write("json.yaml", windows) + " --input " +
                               Write("events.jsonl", json) + " --output " +
                               (dir_ / "json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("processed:        200\n"));
  r = Streammetrics("process --config " +
                    Write("pb.yaml", "input: {format: protobuf}\n" + windows) + " --input " +
                    Write("events.pb", protobuf.str()) + " --output " + (dir_ / "pb").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             200 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        200\n"));
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    0 (deserialization 0, validation 0, late 0, "
                                  "processing 0)\n"));
  EXPECT_EQ(Lines(dir_ / "pb" / "metrics-dead-letter.jsonl").size(), 0u);
  std::vector<std::string> results = Lines(dir_ / "pb" / "out-1m.jsonl");
  EXPECT_EQ(results.size(), 8u);  // 200 s of events: 4 minutes, 2 services
  EXPECT_EQ(results, Lines(dir_ / "json" / "out-1m.jsonl"));
}

// A frame of whitespace bytes only (an eventId of 10 whitespace characters) is a record
// like any other: read, and dead-lettered by validation, not skipped as a blank.
TEST_F(ProcessCommandTest, AWhitespaceOnlyFrameIsARecord) {
  std::string config = Write("c.yaml", "input: {format: protobuf}\n"
                                       "validation: {max_future_skew: \"off\"}\n");
  const std::string blank = "\n\n \t\r\n  \n\t \r";
  ASSERT_EQ(blank.size(), 12u);
  std::string input = Frame(Proto(Ev{.id = "1"}).SerializeAsString()) + Frame(blank) +
                      Frame(Proto(Ev{.id = "2"}).SerializeAsString());
  CommandRun r = Process(config, Write("events.pb", input));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    1 (deserialization 0, validation 1,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("\"offset\":1,"));
  std::string original;
  AppendJsonString(blank, &original);
  EXPECT_TRUE(dlq[0].ends_with(",\"original\":" + original + "}")) << dlq[0];
}

// A last frame the input cuts short is one dead letter saying so, with the bytes there
// are; the frames before it are processed.
TEST_F(ProcessCommandTest, ATruncatedLastFrameIsOneDeadLetter) {
  std::string config = Write("c.yaml", "input: {format: protobuf}\n"
                                       "validation: {max_future_skew: \"off\"}\n");
  const std::string last = Proto(Ev{.id = "4"}).SerializeAsString();
  std::string input;
  for (const char* id : {"1", "2", "3"}) input += Frame(Proto(Ev{.id = id}).SerializeAsString());
  const std::string cut = Frame(last).substr(0, 1 + last.size() - 5);
  input += cut;
  CommandRun r = Process(config, Write("events.pb", input));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             4 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        3\n"));
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    1 (deserialization 1, validation 0,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("{\"reason\":\"deserialization\",\"error\":\"truncated frame: "
                                "its length prefix says " + std::to_string(last.size()) +
                                " bytes, the input ends after " +
                                std::to_string(last.size() - 5) + "\",\"topic\":\"metrics-events\","
                                "\"partition\":0,\"offset\":3,"));
  EXPECT_THAT(dlq[0], Not(HasSubstr("\"truncated\"")));  // all of it that exists is kept
  EXPECT_EQ(OriginalBase64(dlq[0]), last.substr(0, last.size() - 5));

  // The input ends inside a length prefix (a varint byte with its continuation bit).
  input = Frame(Proto(Ev{.id = "1"}).SerializeAsString()) + "\x96";
  r = Streammetrics("process --config " + config + " --input " + Write("events.pb", input) +
                    " --output " + (dir_ / "out2").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             2 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  dlq = Lines(dir_ / "out2" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("\"error\":\"truncated frame: the input ends inside its length "
                                "prefix (1 bytes)\""));
  EXPECT_EQ(OriginalBase64(dlq[0]), "\x96");
}

// A frame longer than input.max_document_bytes is skipped unread but for its first limit
// bytes, dead-lettered with its real size, and the frames after it are processed.
TEST_F(ProcessCommandTest, AFrameOverTheLimitIsSkippedAndTheNextOnesRead) {
  std::string config = Write("c.yaml", "input: {format: protobuf, max_document_bytes: 400}\n"
                                       "validation: {max_future_skew: \"off\"}\n"
                                       "aggregate:\n  windows:\n"
                                       "    - {name: 1m, size: 1m, topic: out-1m}\n");
  const std::string big =
      Proto(Ev{.id = "big", .tags = {{"note", std::string(5'000, '\n')}}}).SerializeAsString();
  ASSERT_GT(big.size(), 5'000u);
  std::string input = Frame(Proto(Ev{.id = "1", .value = 10}).SerializeAsString()) + Frame(big) +
                      Frame(Proto(Ev{.id = "2", .value = 20}).SerializeAsString()) +
                      Frame(Proto(Ev{.id = "3", .value = 30}).SerializeAsString());
  CommandRun r = Process(config, Write("events.pb", input));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             4 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        3\n"));
  EXPECT_THAT(r.output, HasSubstr("dead-lettered:    1 (deserialization 1, validation 0,"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("{\"reason\":\"deserialization\",\"error\":\"document too large: " +
                                std::to_string(big.size()) + " bytes (limit 400)\",\"topic\":"
                                "\"metrics-events\",\"partition\":0,\"offset\":1,"));
  EXPECT_THAT(dlq[0], HasSubstr(",\"truncated\":\"key=0,value=" + std::to_string(big.size()) +
                                "\",\"original_base64\":"));
  EXPECT_EQ(OriginalBase64(dlq[0]), big.substr(0, 400));
  std::vector<std::string> out = Lines(dir_ / "out" / "out-1m.jsonl");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_THAT(out[0], HasSubstr("\"count\":3,\"sum\":60,"));

  // Over the limit and cut short by the end of the input: one dead letter says both.
  input = Frame(Proto(Ev{.id = "1"}).SerializeAsString()) + Frame(big).substr(0, 1'000);
  r = Streammetrics("process --config " + config + " --input " + Write("events.pb", input) +
                    " --output " + (dir_ / "out2").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             2 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  dlq = Lines(dir_ / "out2" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  const size_t prefix = Frame("", big.size()).size();
  EXPECT_THAT(dlq[0], HasSubstr("\"error\":\"document too large: " + std::to_string(big.size()) +
                                " bytes (limit 400); the input ends after " +
                                std::to_string(1'000 - prefix) + " of them\""));
  EXPECT_EQ(OriginalBase64(dlq[0]), big.substr(0, 400));
}

// A length prefix that is no 64-bit varint cannot be skipped: it and the rest of the input
// are one dead letter that says how many bytes were left unread.
TEST_F(ProcessCommandTest, AMalformedLengthPrefixEndsTheInputWithADeadLetter) {
  std::string config = Write("c.yaml", "input: {format: protobuf}\n"
                                       "validation: {max_future_skew: \"off\"}\n");
  const std::string prefix(10, '\xff');
  std::string input = Frame(Proto(Ev{.id = "1"}).SerializeAsString()) + prefix + "rest!";
  CommandRun r = Process(config, Write("events.pb", input));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             2 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_THAT(dlq[0], HasSubstr("\"error\":\"malformed frame: its length prefix is not a varint of "
                                "at most 64 bits; the remaining 5 bytes of the input are not "
                                "read\""));
  EXPECT_EQ(OriginalBase64(dlq[0]), prefix);
}

// JSON may be framed too: a pretty-printed document spans lines in one frame.
TEST_F(ProcessCommandTest, DelimitedJsonFramesHoldNewlines) {
  std::string config = Write("c.yaml", "input: {framing: delimited}\n"
                                       "validation: {max_future_skew: \"off\"}\n");
  std::string pretty = Ev{.id = "1"}.Json();
  for (size_t at = 0; (at = pretty.find(',', at)) != std::string::npos; at += 3) {
    pretty.replace(at, 1, ",\n ");
  }
  std::string input = Frame(pretty) + Frame(Ev{.id = "2"}.Json());
  CommandRun r = Process(config, Write("events.json", input));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             2 events (length-delimited)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        2\n"));
}

// A line that is not UTF-8 is dead-lettered with its bytes in base64, recoverable exactly;
// a line that is UTF-8 keeps its text.
TEST_F(ProcessCommandTest, ABinaryLineIsDeadLetteredRecoverably) {
  std::string config = Write("c.yaml", "validation: {max_future_skew: \"off\"}\n");
  const std::string binary("{\"eventId\":\"\xff\xfe\x00\x80\"}\x0b\xc3", 20);
  ASSERT_EQ(binary.size(), 20u);
  std::string input = Write("events.jsonl", Ev{.id = "1"}.Json() + "\n" + binary + "\n" +
                                                "{\"eventId\":\"é\"\n");
  CommandRun r = Process(config, input);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("read:             3 events (0 blank lines skipped)\n"));
  EXPECT_THAT(r.output, HasSubstr("processed:        1\n"));
  std::vector<std::string> dlq = Lines(dir_ / "out" / "metrics-dead-letter.jsonl");
  ASSERT_EQ(dlq.size(), 2u);
  EXPECT_THAT(dlq[0], HasSubstr("\"offset\":1,"));
  EXPECT_THAT(dlq[0], Not(HasSubstr("\"original\":")));
  EXPECT_EQ(OriginalBase64(dlq[0]), binary);
  EXPECT_THAT(dlq[1], HasSubstr("\"offset\":2,"));
  EXPECT_TRUE(dlq[1].ends_with(",\"original\":\"{\\\"eventId\\\":\\\"é\\\"\"}")) << dlq[1];
}

// Protobuf messages hold newline bytes: cut at lines, none would arrive whole.
TEST_F(ProcessCommandTest, LinesCannotFrameProtobuf) {
  std::string config = Write("c.yaml", "input: {format: protobuf, framing: lines}\n");
  CommandRun r = Streammetrics("process --config " + config + " --input /dev/null --output " +
                               (dir_ / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "streammetrics: " + config +
                          ": input.framing: lines cannot frame protobuf input (its messages hold "
                          "newline bytes); use delimited\n");
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
