// The YAML configuration: defaults, the shipped config, and errors that name the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "apps/config.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(std::string_view yaml) {
  absl::StatusOr<AppConfig> c = ParseConfig(yaml);
  EXPECT_FALSE(c.ok()) << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(Message(c.status()));
}

TEST(ParseDuration, UnitsAndErrors) {
  EXPECT_EQ(*ParseDuration("250ms"), 250);
  EXPECT_EQ(*ParseDuration("10s"), 10'000);
  EXPECT_EQ(*ParseDuration("1m"), 60'000);
  EXPECT_EQ(*ParseDuration("2h"), 7'200'000);
  EXPECT_EQ(*ParseDuration("1d"), 86'400'000);
  EXPECT_EQ(*ParseDuration("1500"), 1500);
  EXPECT_EQ(*ParseDuration(" 0 "), 0);
  EXPECT_EQ(std::string(Message(ParseDuration("10x").status())),
            "'10x': unknown unit 'x' (ms, s, m, h, d)");
  EXPECT_EQ(std::string(Message(ParseDuration("-1s").status())),
            "'-1s' is not a duration (e.g. 250ms, 10s, 1m, 2h, 1d)");
  EXPECT_EQ(ParseDuration("99999999999999999d").status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ParseDuration("99999999999999999999").status().code(),
            absl::StatusCode::kOutOfRange);
}

// What `broker --config` and the embedded broker create: every topic a config names, once.
TEST(Config, NamedTopicsAreInputWindowsDeadLettersAndSinks) {
  EXPECT_EQ(NamedTopics(*ParseConfig("")),
            (std::vector<std::string>{"metrics-events", "metrics-aggregated-1m",
                                      "metrics-aggregated-5m", "metrics-aggregated-1m-10s",
                                      "metrics-dead-letter"}));
  absl::StatusOr<AppConfig> c = ParseConfig(
      "topics: {input: in, dead_letter: dlq}\n"
      "aggregate:\n  windows:\n"
      "    - {name: 1m, type: tumbling, size: 1m, topic: out-1m}\n"
      "    - {name: 2m, type: tumbling, size: 2m, topic: out-2m}\n"
      "sinks:\n"
      "  redis: {enabled: true, url: \"127.0.0.1:1\", topics: [out-1m, copy-1m, out-2m]}\n"
      "  postgres: {enabled: false, dsn: x, topics: [never]}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(NamedTopics(*c),
            (std::vector<std::string>{"in", "out-1m", "out-2m", "dlq", "copy-1m"}));
}

TEST(Config, EmptyMeansTheReferencePipeline) {
  absl::StatusOr<AppConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  const PipelineConfig& p = c->pipeline;
  EXPECT_EQ(p.application_id, "streammetrics");
  EXPECT_EQ(p.input_topic, "metrics-events");
  EXPECT_EQ(p.dead_letter_topic, "metrics-dead-letter");
  ASSERT_EQ(p.windows.size(), 3u);
  EXPECT_EQ(p.windows[0].topic, "metrics-aggregated-1m");
  EXPECT_EQ(p.windows[1].topic, "metrics-aggregated-5m");
  EXPECT_EQ(p.windows[2].advance_ms, 10'000);
  EXPECT_EQ(c->commit_every_records, 10'000u);
  EXPECT_EQ(c->state_cache_max_bytes, 512u << 20);
  EXPECT_EQ(p.idle_close_ms, 30'000);
  EXPECT_EQ(ParseConfig("aggregate: {idle_close: \"off\"}")->pipeline.idle_close_ms, 0);
}

TEST(Config, ShippedReferenceConfigLoads) {
  absl::StatusOr<AppConfig> c = LoadConfigFile(std::string(SM_SOURCE_DIR) + "/config/reference.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const PipelineConfig& p = c->pipeline;
  EXPECT_EQ(p.format, EventFormat::kJson);
  EXPECT_EQ(p.dedupe.within_ms, 600'000);
  EXPECT_EQ(p.dedupe.max_ids, 0u);
  EXPECT_EQ(p.validation.max_future_skew_ms, 300'000);
  ASSERT_EQ(p.windows.size(), 3u);
  EXPECT_EQ(p.windows[0].name, "1m");
  EXPECT_EQ(p.windows[0].size_ms, 60'000);
  EXPECT_EQ(p.windows[0].grace_ms, 10'000);
  EXPECT_EQ(p.windows[1].size_ms, 300'000);
  EXPECT_EQ(p.windows[2].name, "1m-10s");
  EXPECT_EQ(p.windows[2].size_ms, 60'000);
  EXPECT_EQ(p.windows[2].advance_ms, 10'000);
  EXPECT_EQ(p.windows[2].topic, "metrics-aggregated-1m-10s");
  ASSERT_TRUE(p.enrich.table.contains("payment-service"));
  EXPECT_EQ(p.enrich.table.at("payment-service")[0],
            (std::pair<std::string, std::string>{"team", "payments"}));
  EXPECT_EQ(p.enrich.defaults.size(), 2u);
}

TEST(Config, ShippedConfigsLoad) {
  for (const char* name : {"embedded.yaml", "docker.yaml"}) {
    absl::StatusOr<AppConfig> c = LoadConfigFile(StrCat(SM_SOURCE_DIR, "/config/", name));
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  }
  absl::StatusOr<AppConfig> docker = LoadConfigFile(StrCat(SM_SOURCE_DIR, "/config/docker.yaml"));
  ASSERT_TRUE(docker.ok());
  EXPECT_TRUE(docker->postgres.enabled);
  EXPECT_EQ(docker->redis.url, "redis:6379");
  // Producers keyed any way unless the config says otherwise; the main job's generator
  // keys by serviceId and says so.
  EXPECT_EQ(docker->pipeline.keying, InputKeying::kAny);
  absl::StatusOr<AppConfig> embedded = LoadConfigFile(StrCat(SM_SOURCE_DIR, "/config/embedded.yaml"));
  ASSERT_TRUE(embedded.ok());
  EXPECT_EQ(embedded->pipeline.keying, InputKeying::kByService);
  absl::StatusOr<AppConfig> bad = ParseConfig("input: {keyed_by_service: maybe}\n");
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(Message(bad.status())), ::testing::HasSubstr("input.keyed_by_service"));
}

// Each format's natural framing unless input.framing says otherwise: JSON is read as
// lines, protobuf length-delimited; JSON may be delimited too.
TEST(Config, InputFramingDefaultsToTheFormats) {
  auto framing = [](std::string_view yaml) {
    absl::StatusOr<AppConfig> c = ParseConfig(yaml);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? InputFramingOf(*c) : InputFraming::kLines;
  };
  EXPECT_EQ(framing(""), InputFraming::kLines);
  EXPECT_EQ(framing("input: {format: json}"), InputFraming::kLines);
  EXPECT_EQ(framing("input: {format: protobuf}"), InputFraming::kDelimited);
  EXPECT_EQ(framing("input: {format: protobuf, framing: delimited}"), InputFraming::kDelimited);
  EXPECT_EQ(framing("input: {framing: delimited}"), InputFraming::kDelimited);
  EXPECT_EQ(framing("input: {format: json, framing: lines}"), InputFraming::kLines);
  EXPECT_FALSE(ParseConfig("input: {format: json}").value().input_framing.has_value());
}

TEST(Config, EveryKeyIsRead) {
  absl::StatusOr<AppConfig> c = ParseConfig(R"(
application: {id: app1}
topics: {input: in, dead_letter: dlq}
input: {format: protobuf, framing: delimited, max_document_bytes: 4096}
validation: {value_min: 0, value_min_inclusive: true, value_max: 1e6, max_future_skew: "off", max_age: 1h}
enrich: {enabled: true, derive: [isError], lookup: {key: serviceId, table: {a: {team: x}}, default: {team: y}}}
dedupe: {enabled: false, within: 30s, max_ids: 5000000}
aggregate:
  group_by: [serviceId, metricName, team]
  quantiles: [0.5, 0.999]
  compression: 200
  exact_quantiles_up_to: 250
  late_to_dead_letter: false
  idle_close: 2m
  store: memory
  windows:
    - {name: w, type: hopping, size: 2m, advance: 30s, grace: 1s, emit: update, topic: t}
processing: {commit_every_records: 7}
state: {cache_max_bytes: 1048576, rocksdb_cache_bytes: 8388608, rocksdb_write_buffer_bytes: 2097152}
kafka: {bootstrap.servers: embedded, linger.ms: 5}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  const PipelineConfig& p = c->pipeline;
  EXPECT_EQ(p.application_id, "app1");
  EXPECT_EQ(p.input_topic, "in");
  EXPECT_EQ(p.dead_letter_topic, "dlq");
  EXPECT_EQ(p.format, EventFormat::kProtobuf);
  EXPECT_EQ(p.limits.max_document_bytes, 4096u);
  EXPECT_EQ(c->input_framing, InputFraming::kDelimited);
  EXPECT_TRUE(p.validation.value_min_inclusive);
  EXPECT_EQ(p.validation.value_max, 1e6);
  EXPECT_EQ(p.validation.max_future_skew_ms, -1);
  EXPECT_EQ(p.validation.max_age_ms, 3'600'000);
  EXPECT_FALSE(p.enrich.derive_status_class);
  EXPECT_TRUE(p.enrich.derive_is_error);
  EXPECT_FALSE(p.dedupe_enabled);
  EXPECT_EQ(p.dedupe.within_ms, 30'000);
  EXPECT_EQ(p.dedupe.max_ids, 5'000'000u);
  EXPECT_EQ(p.group_by.size(), 3u);
  EXPECT_EQ(p.quantiles, (std::vector<double>{0.5, 0.999}));
  EXPECT_EQ(p.compression, 200);
  EXPECT_EQ(p.exact_quantiles_up_to, 250u);
  EXPECT_FALSE(p.late_to_dead_letter);
  EXPECT_EQ(p.idle_close_ms, 120'000);
  ASSERT_EQ(p.windows.size(), 1u);
  EXPECT_EQ(p.windows[0].size_ms, 120'000);
  EXPECT_EQ(p.windows[0].advance_ms, 30'000);
  EXPECT_EQ(p.windows[0].grace_ms, 1'000);
  EXPECT_EQ(p.windows[0].emit, EmitMode::kUpdate);
  EXPECT_EQ(c->commit_every_records, 7u);
  EXPECT_EQ(c->state_cache_max_bytes, 1048576u);
  EXPECT_EQ(c->rocksdb_cache_bytes, 8388608u);
  EXPECT_EQ(c->rocksdb_write_buffer_bytes, 2097152u);
  ASSERT_EQ(c->kafka.size(), 2u);
  EXPECT_EQ(c->kafka[0], (std::pair<std::string, std::string>{"bootstrap.servers", "embedded"}));
}

TEST(Config, ErrorsNameTheKey) {
  EXPECT_EQ(ErrorOf("aggregat: {}"), "aggregat: unknown key");
  // Dotted, as Kafka users write keys: the nested spelling as a hint.
  EXPECT_EQ(ErrorOf("application.id: x"),
            "application.id: unknown key; keys nest, write it as application: {id: ...}");
  EXPECT_EQ(ErrorOf("aggregate: {idle_close.ms: 1s}"), "aggregate.idle_close.ms: unknown key");
  EXPECT_EQ(ErrorOf("sinks.postgres.dsn: x"),
            "sinks.postgres.dsn: unknown key; keys nest, write it as sinks: {postgres: {dsn: ...}}");
  EXPECT_EQ(ErrorOf("aplication.id: x"), "aplication.id: unknown key");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, sise: 2}]}"),
            "aggregate.windows[0].sise: unknown key");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1x}]}"),
            "aggregate.windows[0].size: '1x': unknown unit 'x' (ms, s, m, h, d)");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, type: sliding}]}"),
            "aggregate.windows[0].type: expected tumbling or hopping, got 'sliding'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1m}]}"),
            "aggregate.windows[0].advance: is required for a hopping window");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1m, advance: 7s}]}"),
            "aggregate.windows[0].advance: size must be a multiple of it");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m}, {name: a, size: 5m}]}"),
            "aggregate.windows: window 'a' defined twice");
  EXPECT_EQ(ErrorOf("aggregate: {windows: []}"), "aggregate.windows: expected a non-empty list");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [0.5, 2]}"),
            "aggregate.quantiles[1]: '2' is not in (0, 1)");
  EXPECT_EQ(ErrorOf("aggregate: {compression: 5}"), "aggregate.compression: must be in [10, 10000]");
  EXPECT_EQ(ErrorOf("aggregate: {exact_quantiles_up_to: -1}"),
            "aggregate.exact_quantiles_up_to: must be in [0, 100000]");
  EXPECT_EQ(ErrorOf("aggregate: {exact_quantiles_up_to: 100001}"),
            "aggregate.exact_quantiles_up_to: must be in [0, 100000]");
  EXPECT_EQ(ErrorOf("aggregate: {store: disk}"),
            "aggregate.store: expected memory or rocksdb, got 'disk'");
  EXPECT_EQ(ErrorOf("input: {format: xml}"), "input.format: expected json or protobuf, got 'xml'");
  EXPECT_EQ(ErrorOf("input: {framing: json-seq}"),
            "input.framing: expected lines or delimited, got 'json-seq'");
  EXPECT_EQ(ErrorOf("input: {format: protobuf, framing: lines}"),
            "input.framing: lines cannot frame protobuf input (its messages hold newline "
            "bytes); use delimited");
  EXPECT_EQ(ErrorOf("validation: {value_min: low}"),
            "validation.value_min: expected a finite number, got 'low'");
  EXPECT_EQ(ErrorOf("validation: {value_min: 5, value_max: 1}"),
            "validation.value_max: must be >= validation.value_min");
  EXPECT_EQ(ErrorOf("dedupe: {enabled: maybe}"),
            "dedupe.enabled: expected true or false, got 'maybe'");
  EXPECT_EQ(ErrorOf("dedupe: {within: 0s}"), "dedupe.within: must be in [1ms, 36500d], got '0s'");
  EXPECT_EQ(ErrorOf("dedupe: {max_ids: -1}"),
            "dedupe.max_ids: must be in [0, 1000000000000], got -1");
  EXPECT_EQ(ErrorOf("dedupe: {max_ids: many}"), "dedupe.max_ids: expected an integer, got 'many'");
  EXPECT_EQ(ErrorOf("state: {cache_max_bytes: -1}"),
            "state.cache_max_bytes: must be in [0, 1125899906842624], got -1");
  EXPECT_EQ(ErrorOf("state: {cache: 1}"), "state.cache: unknown key");
  EXPECT_EQ(ErrorOf("state: {rocksdb_cache_bytes: 1000}"),
            "state.rocksdb_cache_bytes: must be in [1048576, 1125899906842624], got 1000");
  EXPECT_EQ(ErrorOf("state: {rocksdb_cache_bytes: 2097152, rocksdb_write_buffer_bytes: 4194304}"),
            "state.rocksdb_write_buffer_bytes: must not exceed state.rocksdb_cache_bytes "
            "(memtables are charged to the cache)");
  EXPECT_EQ(ErrorOf("enrich: {derive: [color]}"),
            "enrich.derive: unknown derived field 'color' (statusClass, isError)");
  EXPECT_EQ(ErrorOf("processing: {commit_every_records: 0}"),
            "processing.commit_every_records: must be in [1, 1000000000000], got 0");
  EXPECT_EQ(ErrorOf("aggregate: {group_by: [serviceId, metricName, colour]}"),
            "aggregate.group_by: unknown field 'colour' (not an event field, not "
            "tags.<key>/metadata.<key>, not set by enrich)");
  EXPECT_THAT(ErrorOf("aggregate: [unclosed"), HasSubstr("config: "));
  EXPECT_EQ(ErrorOf("- just\n- a list\n"), "config: expected a mapping");
}

TEST(Config, Sinks) {
  absl::StatusOr<AppConfig> c = ParseConfig(
      "sinks:\n"
      "  postgres: {enabled: true, dsn: 'host=db dbname=m', batch_size: 1000, flush_interval: 1s,\n"
      "             connections: 2}\n"
      "  redis: {enabled: true, url: 'cache:6380', topics: [metrics-aggregated-1m], group: g}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->postgres.enabled);
  EXPECT_EQ(c->postgres.url, "host=db dbname=m");
  EXPECT_EQ(c->postgres.batch_size, 1000);
  EXPECT_EQ(c->postgres.flush_interval_ms, 1000);
  EXPECT_EQ(c->postgres.connections, 2);
  EXPECT_TRUE(c->postgres.topics.empty());
  EXPECT_TRUE(c->redis.enabled);
  EXPECT_EQ(c->redis.url, "cache:6380");
  EXPECT_EQ(c->redis.batch_size, 5000);
  EXPECT_EQ(c->redis.topics, std::vector<std::string>{"metrics-aggregated-1m"});
  EXPECT_EQ(c->redis.group, "g");
  EXPECT_EQ(ErrorOf("sinks: {postgres: {enabled: true}}"),
            "sinks.postgres.dsn: required when the sink is enabled");
  EXPECT_EQ(ErrorOf("sinks: {redis: {enabled: true, dsn: x}}"), "sinks.redis.dsn: unknown key");
  EXPECT_EQ(ErrorOf("sinks: {kafka: {}}"), "sinks.kafka: unknown key");
  EXPECT_EQ(ErrorOf("sinks: {redis: {connections: 2}}"), "sinks.redis.connections: unknown key");
  EXPECT_EQ(ErrorOf("sinks: {postgres: {connections: 0}}"),
            "sinks.postgres.connections: must be in [1, 64]");
  EXPECT_EQ(ErrorOf("sinks: {postgres: {batch_size: 0}}"),
            "sinks.postgres.batch_size: must be in [1, 1000000]");
}

// Every duration, size and count has a range that keeps the arithmetic in int64 and the
// work per record bounded; out of range, the load fails naming the key and the range.
TEST(ConfigRanges, DurationsSizesAndCountsOutOfRangeNameTheKeyAndTheRange) {
  const std::string huge = "9223372036854775807";  // 2^63 - 1 ms
  EXPECT_EQ(ErrorOf("validation: {max_future_skew: " + huge + "}"),
            "validation.max_future_skew: must be in [0, 36500d], got '" + huge + "'");
  EXPECT_EQ(ErrorOf("validation: {max_age: 36501d}"),
            "validation.max_age: must be in [0, 36500d], got '36501d'");
  EXPECT_EQ(ErrorOf("validation: {max_stream_skew: 0}"),
            "validation.max_stream_skew: must be in [1ms, 36500d], got '0'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, grace: " + huge + "}]}"),
            "aggregate.windows[0].grace: must be in [0, 36500d], got '" + huge + "'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: " + huge + "}]}"),
            "aggregate.windows[0].size: must be in [1ms, 36500d], got '" + huge + "'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 99999999999999999999d}]}"),
            "aggregate.windows[0].size: must be in [1ms, 36500d], got '99999999999999999999d'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 0s}]}"),
            "aggregate.windows[0].size: must be in [1ms, 36500d], got '0s'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1m, advance: 2m}]}"),
            "aggregate.windows[0].advance: must be in [1ms, 1m], got '2m'");
  // A day advancing by a millisecond: 86,400,000 windows per record.
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1d, advance: 1ms}]}"),
            "aggregate.windows[0].advance: must be at least size / 10000 (each record is in "
            "size / advance windows), got 86400000 windows per record");
  // The limit itself is accepted: 10,000 windows per record.
  EXPECT_TRUE(ParseConfig("aggregate: {windows: [{name: a, type: hopping, size: 10000s, "
                          "advance: 1s}]}").ok());
  EXPECT_EQ(ErrorOf("aggregate: {idle_close: 36501d}"),
            "aggregate.idle_close: must be in [0, 36500d], got '36501d'");
  EXPECT_EQ(ErrorOf("dedupe: {within: " + huge + "}"),
            "dedupe.within: must be in [1ms, 36500d], got '" + huge + "'");
  EXPECT_EQ(ErrorOf("processing: {commit_interval: 2h}"),
            "processing.commit_interval: must be in [1ms, 1h], got '2h'");
  EXPECT_EQ(ErrorOf("processing: {marker_refresh: 0}"),
            "processing.marker_refresh: must be in [1ms, 36500d], got '0'");
  EXPECT_EQ(ErrorOf("sinks: {redis: {flush_interval: 25d}}"),
            "sinks.redis.flush_interval: must be in [1ms, 1h], got '25d'");
  EXPECT_EQ(ErrorOf("input: {max_document_bytes: " + huge + "}"),
            "input.max_document_bytes: must be in [1, 1073741824], got " + huge);
  EXPECT_EQ(ErrorOf("input: {max_document_bytes: 1099511627776}"),
            "input.max_document_bytes: must be in [1, 1073741824], got 1099511627776");
  EXPECT_EQ(ErrorOf("input: {max_document_bytes: 0}"),
            "input.max_document_bytes: must be in [1, 1073741824], got 0");
  EXPECT_EQ(ErrorOf("input: {max_document_bytes: 99999999999999999999}"),
            "input.max_document_bytes: expected an integer, got '99999999999999999999'");
  EXPECT_EQ(ErrorOf("dedupe: {max_ids: 1000000000001}"),
            "dedupe.max_ids: must be in [0, 1000000000000], got 1000000000001");
  EXPECT_EQ(ErrorOf("state: {cache_max_bytes: " + huge + "}"),
            "state.cache_max_bytes: must be in [0, 1125899906842624], got " + huge);
  std::string many = "aggregate: {windows: [";
  for (int i = 0; i < 33; ++i) StrAppend(&many, i ? ", " : "", "{name: w", i, ", size: 1m}");
  many += "]}";
  EXPECT_EQ(ErrorOf(many), "aggregate.windows: at most 32 windows, got 33");
  std::string dims = "aggregate: {group_by: [serviceId, metricName";
  for (int i = 0; i < 15; ++i) StrAppend(&dims, ", tags.t", i);
  dims += "]}";
  EXPECT_EQ(ErrorOf(dims), "aggregate.group_by: at most 16 dimensions, got 17");
  // The upper ends are accepted.
  absl::StatusOr<AppConfig> c = ParseConfig(
      "validation: {max_future_skew: 36500d, max_age: 36500d, max_stream_skew: 36500d}\n"
      "input: {max_document_bytes: 1073741824}\n"
      "aggregate: {idle_close: 36500d, windows: [{name: a, size: 36500d, grace: 36500d}]}\n"
      "dedupe: {within: 36500d}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pipeline.max_stream_skew_ms, 36'500LL * 86'400'000);
  EXPECT_EQ(c->pipeline.windows[0].grace_ms, 36'500LL * 86'400'000);
}

TEST(ConfigRanges, MaxStreamSkewDefaultsToADayAndTurnsOff) {
  EXPECT_EQ(ParseConfig("")->pipeline.max_stream_skew_ms, 86'400'000);
  EXPECT_EQ(ParseConfig("validation: {max_stream_skew: 2h}")->pipeline.max_stream_skew_ms,
            7'200'000);
  EXPECT_EQ(ParseConfig("validation: {max_stream_skew: \"off\"}")->pipeline.max_stream_skew_ms,
            0);
}

TEST(ConfigDocument, DuplicateKeysAreRefusedAtAnyDepth) {
  EXPECT_EQ(ErrorOf("topics: {input: a}\ntopics: {input: b}\n"), "topics: given twice");
  EXPECT_EQ(ErrorOf("topics:\n  input: a\n  input: b\n"), "topics.input: given twice");
  EXPECT_EQ(ErrorOf("aggregate:\n  windows:\n    - name: a\n      size: 1m\n      size: 5m\n"),
            "aggregate.windows[0].size: given twice");
  EXPECT_EQ(ErrorOf("enrich: {lookup: {table: {svc: {team: a, team: b}}}}"),
            "enrich.lookup.table.svc.team: given twice");
  EXPECT_EQ(ErrorOf("kafka: {linger.ms: 5, linger.ms: 50}"), "kafka.linger.ms: given twice");
}

TEST(ConfigDocument, ComplexKeysAreNamedByTheirPlace) {
  EXPECT_EQ(ErrorOf("aggregate:\n  ? [a, b]\n  : 1\n"),
            "aggregate: a key must be a name, not a list or mapping");
  EXPECT_EQ(ErrorOf("? {a: 1}\n: 1\n"), "config: a key must be a name, not a list or mapping");
}

TEST(ConfigDocument, AQuotedValueMustCloseOnItsLine) {
  // Unterminated at the end of the file: everything after the quote would be its value,
  // and the windows below the defaults.
  EXPECT_EQ(ErrorOf("topics:\n  input: \"metrics-events\naggregate:\n  windows:\n"
                    "    - {name: x, size: 1m}\n"),
            "topics.input: the quoted value opened on line 2 runs past the end of its line "
            "(unterminated quote?)");
  // Closed by a later quote, swallowing the keys between.
  EXPECT_EQ(ErrorOf("topics:\n  input: 'in\n  dead_letter: dlq'\n"),
            "topics.input: the quoted value opened on line 2 runs past the end of its line "
            "(unterminated quote?)");
  // Open at the very end of the file: yaml-cpp refuses it itself.
  EXPECT_EQ(ErrorOf("topics:\n  input: \"abc"),
            "config: yaml-cpp: error at line 2, column 14: illegal EOF in scalar");
  EXPECT_EQ(ErrorOf("topics:\n  input: \"abc\\\n  def\"\n"),
            "topics.input: the quoted value opened on line 2 runs past the end of its line "
            "(unterminated quote?)");
  // In a flow mapping yaml-cpp finds the missing brace itself.
  EXPECT_EQ(ErrorOf("application: {id: \"app}\n"),
            "config: yaml-cpp: error at line 2, column 1: end of map flow not found");
  // Quotes that close on their line, escapes and doubled single quotes included.
  absl::StatusOr<AppConfig> c = ParseConfig(
      "application: {id: \"app\"}\n"
      "topics: {input: 'in', dead_letter: \"dl\\u0071\"}\n"
      "enrich: {lookup: {table: {'it''s': {team: \"a \\\" b\"}}}}\n"
      "sinks: {postgres: {dsn: 'host=db dbname=m'}}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pipeline.application_id, "app");
  EXPECT_EQ(c->pipeline.dead_letter_topic, "dlq");
  EXPECT_EQ(c->pipeline.enrich.table.at("it's")[0].second, "a \" b");
}

TEST(ConfigDocument, AliasBombsAreRefused) {
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 8; ++i) {
    StrAppend(&yaml, "a", i, ": &a", i, " [");
    for (int j = 0; j < 10; ++j) StrAppend(&yaml, j ? ", " : "", "*a", i - 1);
    yaml += "]\n";
  }
  EXPECT_EQ(ErrorOf(yaml), "config: more than 100000 values (aliases expanded)");
}

TEST(ConfigValues, NonFiniteNumbersAreRefused) {
  EXPECT_EQ(ErrorOf("validation: {value_min: nan}"),
            "validation.value_min: expected a finite number, got 'nan'");
  EXPECT_EQ(ErrorOf("validation: {value_max: inf}"),
            "validation.value_max: expected a finite number, got 'inf'");
  EXPECT_EQ(ErrorOf("validation: {value_min: -inf}"),
            "validation.value_min: expected a finite number, got '-inf'");
  EXPECT_EQ(ErrorOf("aggregate: {compression: nan}"),
            "aggregate.compression: expected a finite number, got 'nan'");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [nan]}"),
            "aggregate.quantiles[0]: expected a finite number, got 'nan'");
}

TEST(ConfigValues, QuantilesAreReportedAsWritten) {
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [0.5, 0.99999999999999999]}"),
            "aggregate.quantiles[1]: '0.99999999999999999' is not in (0, 1) (it reads as 1)");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [1e-400]}"),
            "aggregate.quantiles[0]: expected a finite number, got '1e-400'");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [0]}"), "aggregate.quantiles[0]: '0' is not in (0, 1) (it reads as 0)");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [-0.5]}"),
            "aggregate.quantiles[0]: '-0.5' is not in (0, 1)");
}

TEST(ConfigTopics, NamesFollowKafkasRules) {
  EXPECT_EQ(ErrorOf("topics: {input: \"\"}"), "topics.input: must not be empty");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: \"\"}]}"),
            "aggregate.windows[0].topic: must not be empty");
  EXPECT_EQ(ErrorOf("topics: {dead_letter: ../../etc/x}"),
            "topics.dead_letter: '../../etc/x' is not a topic name (letters, digits, '.', '_' "
            "and '-' only)");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: a/b}]}"),
            "aggregate.windows[0].topic: 'a/b' is not a topic name (letters, digits, '.', '_' "
            "and '-' only)");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: ..}]}"),
            "aggregate.windows[0].topic: '..' is not a topic name");
  EXPECT_EQ(ErrorOf("topics: {input: .}"), "topics.input: '.' is not a topic name");
  EXPECT_EQ(ErrorOf("topics: {input: " + std::string(250, 'a') + "}"),
            "topics.input: a topic name has at most 249 characters, got 250");
  EXPECT_TRUE(ParseConfig("topics: {input: " + std::string(249, 'a') + "}").ok());
  EXPECT_EQ(ErrorOf("sinks: {redis: {topics: [ok, \"b c\"]}}"),
            "sinks.redis.topics[1]: 'b c' is not a topic name (letters, digits, '.', '_' and "
            "'-' only)");
  EXPECT_EQ(ErrorOf("application: {id: a/b}"),
            "application.id: 'a/b' is not a topic name (letters, digits, '.', '_' and '-' only)");
  EXPECT_EQ(ErrorOf("application: {id: " + std::string(201, 'a') + "}"),
            "application.id: must be at most 200 characters (it prefixes internal topic names)");
}

TEST(ConfigTopics, OutputTopicsDifferFromTheInputTheDeadLettersAndEachOther) {
  EXPECT_EQ(ErrorOf("topics: {dead_letter: metrics-events}"),
            "topics.dead_letter: 'metrics-events' is also topics.input; topics must differ");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: metrics-dead-letter}]}"),
            "aggregate.windows[0].topic: 'metrics-dead-letter' is also topics.dead_letter; "
            "topics must differ");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: metrics-events}]}"),
            "aggregate.windows[0].topic: 'metrics-events' is also topics.input; topics must "
            "differ");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, topic: o}, "
                    "{name: b, size: 2m, topic: o}]}"),
            "aggregate.windows[1].topic: 'o' is also aggregate.windows[0].topic; topics must "
            "differ");
  // The defaults changed together stay consistent.
  EXPECT_TRUE(ParseConfig("topics: {input: metrics-dead-letter, dead_letter: metrics-events}").ok());
}

TEST(ConfigFields, LookupKeyAndGroupByNameRealFieldsOnce) {
  EXPECT_EQ(ErrorOf("enrich: {lookup: {key: servce}}"),
            "enrich.lookup.key: unknown field 'servce' (an event field such as serviceId, "
            "tags.<key>, metadata.<key>, or a derived statusClass/isError)");
  EXPECT_EQ(ErrorOf("enrich: {lookup: {key: \"\"}}"), "enrich.lookup.key: empty field name");
  EXPECT_EQ(ErrorOf("enrich: {derive: [isError], lookup: {key: statusClass}}"),
            "enrich.lookup.key: unknown field 'statusClass' (an event field such as serviceId, "
            "tags.<key>, metadata.<key>, or a derived statusClass/isError)");
  EXPECT_TRUE(ParseConfig("enrich: {lookup: {key: tags.region}}").ok());
  EXPECT_TRUE(ParseConfig("enrich: {lookup: {key: statusClass}}").ok());  // derived first
  EXPECT_EQ(ErrorOf("aggregate: {group_by: [serviceId, metricName, serviceId]}"),
            "aggregate.group_by: 'serviceId' names the field serviceId a second time");
  EXPECT_EQ(ErrorOf("aggregate: {group_by: [serviceId, metricName, tags.team, team]}"),
            "aggregate.group_by: 'team' names the field team a second time");
}

TEST(ConfigStateDir, MustBeOrBecomeADirectory) {
  EXPECT_TRUE(CheckStateDir("/tmp").ok());
  EXPECT_TRUE(CheckStateDir("/tmp/streammetrics-state-dir-test/not/yet/there").ok());
  absl::Status s = CheckStateDir("/etc/passwd");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::string(Message(s)),
            "state.dir: '/etc/passwd' cannot be a directory: '/etc/passwd' exists and is not one");
  s = CheckStateDir("/etc/passwd/sub");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(Message(s)), HasSubstr("state.dir: '/etc/passwd/sub'"));
}

TEST(Config, MissingFileIsNotFound) {
  absl::StatusOr<AppConfig> c = LoadConfigFile("/nonexistent/streammetrics.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(Message(c.status())),
            "config file /nonexistent/streammetrics.yaml: cannot open");
}

}  // namespace
}  // namespace streammetrics
