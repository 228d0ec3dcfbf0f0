// Decoding throughput of the MetricEvent codecs: ns/event (the "Time" column: one event
// per iteration) and MB/s (bytes_per_second) over a pre-generated set of 1000 distinct,
// realistic events (~390 bytes of compact camelCase JSON each: reference/001's schema
// with a real UUID instead of "uuid-v4", four tags, traceId and spanId; see the
// avg_bytes counter), the same events in reference/002's snake_case form (timestamp as
// Jackson writes an Instant), and as protobuf.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "operators/metric_event.h"
#include "operators/metric_event_codec.h"

namespace streammetrics {
namespace {

constexpr int kEvents = 1000;

// The strings an event's views point at.
struct EventText {
  std::string event_id, service_id, instance_id, metric_name, unit;
  std::string endpoint, method, status_code, region, trace_id, span_id;
  int64_t timestamp_ms;
  double value;
  MetricType type;
};

struct Corpus {
  std::vector<std::string> camel, snake, protobuf;
  size_t camel_bytes = 0, snake_bytes = 0, protobuf_bytes = 0;
};

std::string Hex(std::mt19937_64& rng, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < digits; ++i) out.push_back(kHex[rng() % 16]);
  return out;
}

// reference/002's Java producer: snake_case names, Instant as seconds.nanoseconds.
std::string SnakeCaseJson(const EventText& t, const MetricEvent& e) {
  std::string out = "{\"event_id\":";
  AppendJsonString(t.event_id, &out);
  char ts[48];
  std::snprintf(ts, sizeof(ts), "%lld.%03lld000000", static_cast<long long>(t.timestamp_ms / 1000),
                static_cast<long long>(t.timestamp_ms % 1000));
  out += ",\"timestamp\":";
  out += ts;
  out += ",\"service_id\":";
  AppendJsonString(t.service_id, &out);
  out += ",\"instance_id\":";
  AppendJsonString(t.instance_id, &out);
  out += ",\"metric_type\":";
  AppendJsonString(MetricTypeName(t.type), &out);
  out += ",\"metric_name\":";
  AppendJsonString(t.metric_name, &out);
  char value[32];
  std::snprintf(value, sizeof(value), "%.17g", t.value);
  out += ",\"value\":";
  out += value;
  out += ",\"unit\":";
  AppendJsonString(t.unit, &out);
  for (const auto* map : {&e.tags, &e.metadata}) {
    out += map == &e.tags ? ",\"tags\":{" : ",\"metadata\":{";
    bool first = true;
    for (const Tag& tag : *map) {
      if (!first) out += ',';
      first = false;
      AppendJsonString(tag.key, &out);
      out += ':';
      AppendJsonString(tag.value, &out);
    }
    out += '}';
  }
  out += '}';
  return out;
}

const Corpus& GetCorpus() {
  static const Corpus* corpus = [] {
    static constexpr const char* kServices[] = {"payment-service",      "order-service",
                                                "inventory-service",    "user-service",
                                                "notification-service", "search-service"};
    static constexpr const char* kMetrics[] = {"api.request.duration",   "db.query.duration",
                                               "cache.lookup",           "queue.publish.latency",
                                               "external.call.duration", "jvm.gc.pause"};
    static constexpr const char* kEndpoints[] = {"/api/v1/payments", "/api/v1/orders/{id}",
                                                 "/api/v1/inventory/reserve", "/api/v1/users",
                                                 "/health"};
    static constexpr const char* kMethods[] = {"GET", "POST", "PUT", "DELETE"};
    static constexpr const char* kStatus[] = {"200", "201", "400", "404", "500", "503"};
    static constexpr const char* kRegions[] = {"us-east-1", "us-west-2", "eu-west-1",
                                               "ap-southeast-1"};
    std::mt19937_64 rng(42);
    auto* c = new Corpus;
    int64_t ts = 1707267600000;
    for (int i = 0; i < kEvents; ++i) {
      EventText t;
      t.event_id = Hex(rng, 8) + "-" + Hex(rng, 4) + "-4" + Hex(rng, 3) + "-a" + Hex(rng, 3) + "-" +
                   Hex(rng, 12);
      t.service_id = kServices[rng() % 6];
      t.instance_id = t.service_id + "-pod-" + std::to_string(rng() % 12);
      t.metric_name = kMetrics[rng() % 6];
      t.unit = "ms";
      t.endpoint = kEndpoints[rng() % 5];
      t.method = kMethods[rng() % 4];
      t.status_code = kStatus[rng() % 6];
      t.region = kRegions[rng() % 4];
      t.trace_id = Hex(rng, 16);
      t.span_id = Hex(rng, 8);
      ts += static_cast<int64_t>(rng() % 50);
      t.timestamp_ms = ts;
      t.value = static_cast<double>(rng() % 1000000) / 100.0;
      t.type = static_cast<MetricType>(rng() % kMetricTypeCount);

      MetricEvent e;
      e.has_event_id = e.has_timestamp = e.has_service_id = e.has_instance_id = true;
      e.has_metric_type = e.has_metric_name = e.has_value = true;
      e.event_id = t.event_id;
      e.timestamp_ms = t.timestamp_ms;
      e.service_id = t.service_id;
      e.instance_id = t.instance_id;
      e.metric_type = t.type;
      e.metric_name = t.metric_name;
      e.value = t.value;
      e.unit = t.unit;
      e.tags.Add("endpoint", t.endpoint);
      e.tags.Add("method", t.method);
      e.tags.Add("statusCode", t.status_code);
      e.tags.Add("region", t.region);
      e.metadata.Add("traceId", t.trace_id);
      e.metadata.Add("spanId", t.span_id);

      std::string camel;
      AppendMetricEventJson(e, &camel);
      std::string protobuf;
      AppendMetricEventProtobuf(e, &protobuf);
      c->snake.push_back(SnakeCaseJson(t, e));
      c->camel_bytes += camel.size();
      c->snake_bytes += c->snake.back().size();
      c->protobuf_bytes += protobuf.size();
      c->camel.push_back(std::move(camel));
      c->protobuf.push_back(std::move(protobuf));
    }
    return c;
  }();
  return *corpus;
}

void RunDecode(benchmark::State& state, EventFormat format, const std::vector<std::string>& docs,
               size_t total_bytes) {
  auto decoder = NewMetricEventDecoder(format);
  MetricEvent event;
  // Every document must decode; a failure would make the numbers meaningless.
  for (const std::string& doc : docs) {
    const absl::Status status = decoder->Decode(doc, &event);
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      return;
    }
  }
  size_t i = 0;
  int64_t bytes = 0;
  for (auto _ : state) {
    const std::string& doc = docs[i];
    benchmark::DoNotOptimize(decoder->Decode(doc, &event));
    benchmark::DoNotOptimize(event.value);
    bytes += static_cast<int64_t>(doc.size());
    if (++i == docs.size()) i = 0;
  }
  state.SetBytesProcessed(bytes);
  state.SetItemsProcessed(state.iterations());
  state.counters["avg_bytes"] = static_cast<double>(total_bytes) / static_cast<double>(docs.size());
}

void BM_DecodeJsonCamelCase(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  RunDecode(state, EventFormat::kJson, c.camel, c.camel_bytes);
}
BENCHMARK(BM_DecodeJsonCamelCase);

void BM_DecodeJsonSnakeCase(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  RunDecode(state, EventFormat::kJson, c.snake, c.snake_bytes);
}
BENCHMARK(BM_DecodeJsonSnakeCase);

void BM_DecodeProtobuf(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  RunDecode(state, EventFormat::kProtobuf, c.protobuf, c.protobuf_bytes);
}
BENCHMARK(BM_DecodeProtobuf);

// For comparison: the encoder the sinks and tests use.
void BM_EncodeJson(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent event;
  if (!decoder->Decode(c.camel[0], &event).ok()) {
    state.SkipWithError("decode failed");
    return;
  }
  std::string out;
  int64_t bytes = 0;
  for (auto _ : state) {
    out.clear();
    AppendMetricEventJson(event, &out);
    bytes += static_cast<int64_t>(out.size());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(bytes);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeJson);

}  // namespace
}  // namespace streammetrics

BENCHMARK_MAIN();
