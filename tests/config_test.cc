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
            absl::StatusCode::kInvalidArgument);
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
      "    - {name: 2m, type: tumbling, size: 2m, topic: out-1m}\n"
      "sinks:\n"
      "  redis: {enabled: true, url: \"127.0.0.1:1\", topics: [out-1m, copy-1m]}\n"
      "  postgres: {enabled: false, dsn: x, topics: [never]}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(NamedTopics(*c), (std::vector<std::string>{"in", "out-1m", "dlq", "copy-1m"}));
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

TEST(Config, EveryKeyIsRead) {
  absl::StatusOr<AppConfig> c = ParseConfig(R"(
application: {id: app1}
topics: {input: in, dead_letter: dlq}
input: {format: protobuf, max_document_bytes: 4096}
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
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, sise: 2}]}"),
            "aggregate.windows[0].sise: unknown key");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1x}]}"),
            "aggregate.windows[0].size: '1x': unknown unit 'x' (ms, s, m, h, d)");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m, type: sliding}]}"),
            "aggregate.windows[0].type: expected tumbling or hopping, got 'sliding'");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1m}]}"),
            "aggregate.windows[0].advance: is required for a hopping window");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, type: hopping, size: 1m, advance: 7s}]}"),
            "aggregate.windows[0]: window 'a': size must be a multiple of advance");
  EXPECT_EQ(ErrorOf("aggregate: {windows: [{name: a, size: 1m}, {name: a, size: 5m}]}"),
            "aggregate.windows: window 'a' defined twice");
  EXPECT_EQ(ErrorOf("aggregate: {windows: []}"), "aggregate.windows: expected a non-empty list");
  EXPECT_EQ(ErrorOf("aggregate: {quantiles: [0.5, 2]}"),
            "aggregate.quantiles: quantiles: 2 is not in (0, 1)");
  EXPECT_EQ(ErrorOf("aggregate: {compression: 5}"), "aggregate.compression: must be in [10, 10000]");
  EXPECT_EQ(ErrorOf("aggregate: {exact_quantiles_up_to: -1}"),
            "aggregate.exact_quantiles_up_to: must be in [0, 100000]");
  EXPECT_EQ(ErrorOf("aggregate: {exact_quantiles_up_to: 100001}"),
            "aggregate.exact_quantiles_up_to: must be in [0, 100000]");
  EXPECT_EQ(ErrorOf("aggregate: {store: disk}"),
            "aggregate.store: expected memory or rocksdb, got 'disk'");
  EXPECT_EQ(ErrorOf("input: {format: xml}"), "input.format: expected json or protobuf, got 'xml'");
  EXPECT_EQ(ErrorOf("validation: {value_min: low}"),
            "validation.value_min: expected a number, got 'low'");
  EXPECT_EQ(ErrorOf("validation: {value_min: 5, value_max: 1}"),
            "validation.value_max: must be >= validation.value_min");
  EXPECT_EQ(ErrorOf("dedupe: {enabled: maybe}"),
            "dedupe.enabled: expected true or false, got 'maybe'");
  EXPECT_EQ(ErrorOf("dedupe: {within: 0s}"), "dedupe.within: must be > 0");
  EXPECT_EQ(ErrorOf("dedupe: {max_ids: -1}"), "dedupe.max_ids: must be >= 0 (0: no bound)");
  EXPECT_EQ(ErrorOf("dedupe: {max_ids: many}"), "dedupe.max_ids: expected an integer, got 'many'");
  EXPECT_EQ(ErrorOf("state: {cache_max_bytes: -1}"), "state.cache_max_bytes: must be >= 0");
  EXPECT_EQ(ErrorOf("state: {cache: 1}"), "state.cache: unknown key");
  EXPECT_EQ(ErrorOf("state: {rocksdb_cache_bytes: 1000}"),
            "state.rocksdb_cache_bytes: must be >= 1048576");
  EXPECT_EQ(ErrorOf("state: {rocksdb_cache_bytes: 2097152, rocksdb_write_buffer_bytes: 4194304}"),
            "state.rocksdb_write_buffer_bytes: must not exceed state.rocksdb_cache_bytes "
            "(memtables are charged to the cache)");
  EXPECT_EQ(ErrorOf("enrich: {derive: [color]}"),
            "enrich.derive: unknown derived field 'color' (statusClass, isError)");
  EXPECT_EQ(ErrorOf("processing: {commit_every_records: 0}"),
            "processing.commit_every_records: must be > 0");
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

TEST(Config, MissingFileIsNotFound) {
  absl::StatusOr<AppConfig> c = LoadConfigFile("/nonexistent/streammetrics.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(Message(c.status())),
            "config file /nonexistent/streammetrics.yaml: cannot open");
}

}  // namespace
}  // namespace streammetrics
