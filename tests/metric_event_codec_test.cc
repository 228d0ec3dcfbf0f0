// Tests of the MetricEvent codecs (operators/metric_event_codec.h): JSON in both
// spellings (reference/001 camelCase, reference/002 snake_case), the three timestamp
// forms, every malformed-input error, encode/decode round trips, decoder reuse, and
// random mutations of valid documents.
#include "operators/metric_event_codec.h"

#include <google/protobuf/stubs/common.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "operators/metric_event.h"
#include "operators/metric_event.pb.h"
#include "operators/strings.h"
#include "apps/event_generator.h"

// Counts this thread's operator new calls while counting is on, to check that
// steady-state decoding allocates nothing.
namespace {
thread_local bool counting_allocations = false;
thread_local long allocation_count = 0;
}  // namespace

// Every non-aligned form is replaced, so that allocation and deallocation always pair
// (AddressSanitizer checks that). noinline: once inlined, g++ 12 warns about free() on
// memory from operator new.
namespace {
[[gnu::noinline]] void* CountedMalloc(std::size_t size) noexcept {
  if (counting_allocations) ++allocation_count;
  return std::malloc(size == 0 ? 1 : size);
}
[[gnu::noinline]] void* CountedMallocOrThrow(std::size_t size) {
  if (void* p = CountedMalloc(size)) return p;
  throw std::bad_alloc();
}
}  // namespace
[[gnu::noinline]] void* operator new(std::size_t size) { return CountedMallocOrThrow(size); }
[[gnu::noinline]] void* operator new[](std::size_t size) { return CountedMallocOrThrow(size); }
[[gnu::noinline]] void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return CountedMalloc(size);
}
[[gnu::noinline]] void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return CountedMalloc(size);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace streammetrics {
namespace {

using ::testing::HasSubstr;

// reference/001's "Event Schema" document, verbatim.
constexpr std::string_view kReferenceEvent = R"({
  "eventId": "uuid-v4",
  "timestamp": 1707267600000,
  "serviceId": "payment-service",
  "instanceId": "payment-service-pod-3",
  "metricType": "HTTP_REQUEST",
  "metricName": "api.request.duration",
  "value": 245.5,
  "unit": "milliseconds",
  "tags": {
    "endpoint": "/api/v1/payments",
    "method": "POST",
    "statusCode": "200",
    "region": "us-east-1"
  },
  "metadata": {
    "traceId": "abc123",
    "spanId": "def456"
  }
})";

// The same event as reference/002's Java producer writes it: @JsonProperty snake_case
// names and the Instant as decimal seconds (Jackson's JavaTimeModule default).
constexpr std::string_view kSnakeCaseEvent = R"({
  "event_id": "uuid-v4",
  "timestamp": 1707267600.000000000,
  "service_id": "payment-service",
  "instance_id": "payment-service-pod-3",
  "metric_type": "HTTP_REQUEST",
  "metric_name": "api.request.duration",
  "value": 245.5,
  "unit": "milliseconds",
  "tags": {"endpoint": "/api/v1/payments", "method": "POST", "statusCode": "200",
           "region": "us-east-1"},
  "metadata": {"traceId": "abc123", "spanId": "def456"}
})";

using Pairs = std::vector<std::pair<std::string, std::string>>;

Pairs ToPairs(const TagList& list) {
  Pairs out;
  for (const Tag& tag : list) out.emplace_back(tag.key, tag.value);
  return out;
}

std::map<std::string, std::string> ToMap(const TagList& list) {
  std::map<std::string, std::string> out;
  for (const Tag& tag : list) out.emplace(tag.key, tag.value);
  return out;
}

void ExpectReferenceEvent(const MetricEvent& e) {
  EXPECT_TRUE(e.has_event_id);
  EXPECT_EQ(e.event_id, "uuid-v4");
  EXPECT_TRUE(e.has_timestamp);
  EXPECT_EQ(e.timestamp_ms, 1707267600000);
  EXPECT_TRUE(e.has_service_id);
  EXPECT_EQ(e.service_id, "payment-service");
  EXPECT_TRUE(e.has_instance_id);
  EXPECT_EQ(e.instance_id, "payment-service-pod-3");
  EXPECT_TRUE(e.has_metric_type);
  EXPECT_EQ(e.metric_type, MetricType::kHttpRequest);
  EXPECT_TRUE(e.has_metric_name);
  EXPECT_EQ(e.metric_name, "api.request.duration");
  EXPECT_TRUE(e.has_value);
  EXPECT_EQ(e.value, 245.5);
  EXPECT_EQ(e.unit, "milliseconds");
  EXPECT_EQ(ToPairs(e.tags), (Pairs{{"endpoint", "/api/v1/payments"},
                                    {"method", "POST"},
                                    {"statusCode", "200"},
                                    {"region", "us-east-1"}}));
  EXPECT_EQ(ToPairs(e.metadata), (Pairs{{"traceId", "abc123"}, {"spanId", "def456"}}));
  EXPECT_TRUE(e.enriched.empty());
}

// All fields, compared exactly; map order matters only when `ordered`.
void ExpectSameEvent(const MetricEvent& a, const MetricEvent& b, bool ordered) {
  EXPECT_EQ(a.has_event_id, b.has_event_id);
  EXPECT_EQ(a.event_id, b.event_id);
  EXPECT_EQ(a.has_timestamp, b.has_timestamp);
  EXPECT_EQ(a.timestamp_ms, b.timestamp_ms);
  EXPECT_EQ(a.has_service_id, b.has_service_id);
  EXPECT_EQ(a.service_id, b.service_id);
  EXPECT_EQ(a.has_instance_id, b.has_instance_id);
  EXPECT_EQ(a.instance_id, b.instance_id);
  EXPECT_EQ(a.has_metric_type, b.has_metric_type);
  EXPECT_EQ(a.metric_type, b.metric_type);
  EXPECT_EQ(a.has_metric_name, b.has_metric_name);
  EXPECT_EQ(a.metric_name, b.metric_name);
  EXPECT_EQ(a.has_value, b.has_value);
  if (std::isnan(a.value)) {
    EXPECT_TRUE(std::isnan(b.value));
  } else {
    EXPECT_EQ(a.value, b.value);
    EXPECT_EQ(std::signbit(a.value), std::signbit(b.value));
  }
  EXPECT_EQ(a.unit, b.unit);
  if (ordered) {
    EXPECT_EQ(ToPairs(a.tags), ToPairs(b.tags));
    EXPECT_EQ(ToPairs(a.metadata), ToPairs(b.metadata));
  } else {
    EXPECT_EQ(ToMap(a.tags), ToMap(b.tags));
    EXPECT_EQ(ToMap(a.metadata), ToMap(b.metadata));
  }
}

MetricEvent DecodeJsonOk(std::string_view json, MetricEventDecoder& decoder) {
  MetricEvent event;
  const absl::Status status = decoder.Decode(json, &event);
  EXPECT_TRUE(status.ok()) << status << "\n  input: " << json;
  return event;
}

int64_t DecodeTimestamp(std::string_view timestamp_json) {
  auto decoder = NewJsonMetricEventDecoder();
  const std::string doc = "{\"timestamp\":" + std::string(timestamp_json) + "}";
  MetricEvent event = DecodeJsonOk(doc, *decoder);
  EXPECT_TRUE(event.has_timestamp) << doc;
  return event.timestamp_ms;
}

// Decoding `json` fails with InvalidArgument and a message containing `needle`.
void ExpectJsonError(std::string_view json, std::string_view needle, DecodeLimits limits = {}) {
  auto decoder = NewJsonMetricEventDecoder(limits);
  MetricEvent event;
  event.has_event_id = true;  // the decoder must clear it
  const absl::Status status = decoder->Decode(json, &event);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status << "\n  input: " << json;
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(needle))) << "input: " << json;
  EXPECT_FALSE(event.has_event_id);
}

// ------------------------------------------------------------------------------------
// Well-formed JSON.

TEST(JsonDecode, ReferenceCamelCaseEvent) {
  auto decoder = NewJsonMetricEventDecoder();
  ExpectReferenceEvent(DecodeJsonOk(kReferenceEvent, *decoder));
}

TEST(JsonDecode, SnakeCaseEventAsJacksonWritesIt) {
  auto decoder = NewJsonMetricEventDecoder();
  ExpectReferenceEvent(DecodeJsonOk(kSnakeCaseEvent, *decoder));
}

TEST(JsonDecode, FactoryMakesJsonDecoder) {
  auto decoder = NewMetricEventDecoder(EventFormat::kJson);
  ASSERT_NE(decoder, nullptr);
  ExpectReferenceEvent(DecodeJsonOk(kReferenceEvent, *decoder));
}

TEST(JsonDecode, MixedSpellingsAndEscapedKeys) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e =
      DecodeJsonOk(R"({"event\u0049d":"e1","service_id":"s\"1\\","metricType":"CUSTOM_GAUGE",)"
                   R"("metric_name":"m\u00e9","value":-0.0,"unit":""})",
                   *decoder);
  EXPECT_EQ(e.event_id, "e1");
  EXPECT_EQ(e.service_id, "s\"1\\");
  EXPECT_EQ(e.metric_type, MetricType::kCustomGauge);
  EXPECT_EQ(e.metric_name, "m\xc3\xa9");
  EXPECT_TRUE(e.has_value);
  EXPECT_EQ(e.value, 0.0);
  EXPECT_TRUE(std::signbit(e.value));
  EXPECT_EQ(e.unit, "");
  EXPECT_FALSE(e.has_timestamp);
  EXPECT_FALSE(e.has_instance_id);
}

TEST(JsonDecode, AllMetricTypes) {
  auto decoder = NewJsonMetricEventDecoder();
  for (int i = 0; i < kMetricTypeCount; ++i) {
    const auto type = static_cast<MetricType>(i);
    const std::string doc = "{\"metricType\":\"" + std::string(MetricTypeName(type)) + "\"}";
    MetricEvent e = DecodeJsonOk(doc, *decoder);
    EXPECT_TRUE(e.has_metric_type);
    EXPECT_EQ(e.metric_type, type) << doc;
  }
}

TEST(JsonDecode, TimestampEpochMilliseconds) {
  EXPECT_EQ(DecodeTimestamp("1707267600000"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp("0"), 0);
  EXPECT_EQ(DecodeTimestamp("-1"), -1);
  EXPECT_EQ(DecodeTimestamp("1707267600"), 1707267600);  // an integer is always ms
  EXPECT_EQ(DecodeTimestamp("253402300799999"), 253402300799999);
}

TEST(JsonDecode, TimestampEpochSecondsWithFraction) {
  EXPECT_EQ(DecodeTimestamp("1707267600.123456789"), 1707267600123);
  EXPECT_EQ(DecodeTimestamp("1707267600.000000000"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp("1707267600.999999999"), 1707267600999);  // truncated
  EXPECT_EQ(DecodeTimestamp("1707267600.1"), 1707267600100);
  EXPECT_EQ(DecodeTimestamp("1707267600.0015"), 1707267600001);
  EXPECT_EQ(DecodeTimestamp("1.707267600123e9"), 1707267600123);
  EXPECT_EQ(DecodeTimestamp("1707267600123E-3"), 1707267600123);
  EXPECT_EQ(DecodeTimestamp("1.7072676e+9"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp("0.0"), 0);
  EXPECT_EQ(DecodeTimestamp("0e5"), 0);
  EXPECT_EQ(DecodeTimestamp("0.000000000000000000000000000001"), 0);
  EXPECT_EQ(DecodeTimestamp("1.0e-99999999999999"), 0);
  // Before the epoch: floor, as Instant.toEpochMilli().
  EXPECT_EQ(DecodeTimestamp("-0.0015"), -2);
  EXPECT_EQ(DecodeTimestamp("-1.5"), -1500);
}

TEST(JsonDecode, TimestampIso8601) {
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-07T01:00:00Z")"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-07T01:00:00.123Z")"), 1707267600123);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-07T01:00:00.123456789Z")"), 1707267600123);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-07T03:00:00.5+02:00")"), 1707267600500);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-06T19:30:00-05:30")"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-07t01:00:00z")"), 1707267600000);
  EXPECT_EQ(DecodeTimestamp(R"("2024-02-29T00:00:00Z")"), 1709164800000);  // leap day
  EXPECT_EQ(DecodeTimestamp(R"("1970-01-01T00:00:00Z")"), 0);
  EXPECT_EQ(DecodeTimestamp(R"("0001-01-01T00:00:00Z")"), -62135596800000);
  EXPECT_EQ(DecodeTimestamp(R"("9999-12-31T23:59:59.999Z")"), 253402300799999);
}

TEST(JsonDecode, TagValuesMayBeNumbersOrBooleans) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e = DecodeJsonOk(
      R"({"tags":{"statusCode": 200 ,"ratio":0.25,"big":-1.5e300,"ok":true,"no":false,)"
      R"("skipped":null,"s":"x"},"metadata":{"retries":3}})",
      *decoder);
  EXPECT_EQ(ToPairs(e.tags), (Pairs{{"statusCode", "200"},
                                    {"ratio", "0.25"},
                                    {"big", "-1.5e300"},
                                    {"ok", "true"},
                                    {"no", "false"},
                                    {"s", "x"}}));
  EXPECT_EQ(ToPairs(e.metadata), (Pairs{{"retries", "3"}}));
}

TEST(JsonDecode, NullMeansAbsent) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e =
      DecodeJsonOk(R"({"eventId":null,"timestamp":null,"serviceId":null,"instanceId":null,)"
                   R"("metricType":null,"metricName":null,"value":null,"unit":null,"tags":null,)"
                   R"("metadata":null})",
                   *decoder);
  EXPECT_FALSE(e.has_event_id);
  EXPECT_FALSE(e.has_timestamp);
  EXPECT_FALSE(e.has_service_id);
  EXPECT_FALSE(e.has_instance_id);
  EXPECT_FALSE(e.has_metric_type);
  EXPECT_FALSE(e.has_metric_name);
  EXPECT_FALSE(e.has_value);
  EXPECT_EQ(e.unit, "");
  EXPECT_TRUE(e.tags.empty());
  EXPECT_TRUE(e.metadata.empty());
}

TEST(JsonDecode, MissingFieldsAreNotErrorsAndBlankStringsArePresent) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e = DecodeJsonOk(R"({"eventId":"","serviceId":"  "})", *decoder);
  EXPECT_TRUE(e.has_event_id);
  EXPECT_EQ(e.event_id, "");
  EXPECT_TRUE(e.has_service_id);
  EXPECT_EQ(e.service_id, "  ");
  EXPECT_FALSE(e.has_value);
  e = DecodeJsonOk("{}", *decoder);
  EXPECT_FALSE(e.has_event_id);
  e = DecodeJsonOk(" \n\t{ }\r\n ", *decoder);
  EXPECT_FALSE(e.has_service_id);
  // A leading UTF-8 byte order mark is ignored (RFC 8259 section 8.1 allows it).
  e = DecodeJsonOk("\xEF\xBB\xBF{\"eventId\":\"bom\"}", *decoder);
  EXPECT_EQ(e.event_id, "bom");
}

TEST(JsonDecode, UnknownFieldsAreIgnored) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e = DecodeJsonOk(
      R"({"schemaVersion":2,"eventId":"e","extra":{"a":[1,{"b":null},"c",true,-2.5e-3]},)"
      R"("list":[],"EventId":"case-sensitive: unknown","value":1})",
      *decoder);
  EXPECT_EQ(e.event_id, "e");
  EXPECT_EQ(e.value, 1.0);
}

TEST(JsonDecode, ExactlyThirtyTwoTagsAreAccepted) {
  std::string doc = "{\"tags\":{";
  for (int i = 0; i < 32; ++i) {
    doc += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":\"v" + std::to_string(i) + "\"";
  }
  doc += "}}";
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent e = DecodeJsonOk(doc, *decoder);
  ASSERT_EQ(e.tags.size(), 32u);
  EXPECT_EQ(e.tags[31].key, "k31");
  EXPECT_EQ(e.tags[31].value, "v31");
}

TEST(JsonDecode, ValueNumberForms) {
  auto decoder = NewJsonMetricEventDecoder();
  EXPECT_EQ(DecodeJsonOk(R"({"value":42})", *decoder).value, 42.0);
  EXPECT_EQ(DecodeJsonOk(R"({"value":-7})", *decoder).value, -7.0);
  EXPECT_EQ(DecodeJsonOk(R"({"value":1.5e3})", *decoder).value, 1500.0);
  EXPECT_EQ(DecodeJsonOk(R"({"value":0.1})", *decoder).value, 0.1);
  EXPECT_EQ(DecodeJsonOk(R"({"value":18446744073709551616})", *decoder).value,
            18446744073709551616.0);
  EXPECT_EQ(DecodeJsonOk(R"({"value":1.7976931348623157e308})", *decoder).value,
            std::numeric_limits<double>::max());
}

// ------------------------------------------------------------------------------------
// Malformed JSON: InvalidArgument, and the message names the field where there is one.

TEST(JsonDecodeError, NotJson) {
  ExpectJsonError("hello", "JSON");
  ExpectJsonError("", "JSON");
  ExpectJsonError("   ", "JSON");
}

TEST(JsonDecodeError, TruncatedJson) {
  const std::string full(kReferenceEvent);
  for (size_t cut : {size_t{1}, size_t{20}, full.size() / 2, full.size() - 1}) {
    SCOPED_TRACE(cut);
    ExpectJsonError(std::string_view(full).substr(0, cut), "JSON");
  }
  ExpectJsonError(R"({"eventId":"abc)", "JSON");
  ExpectJsonError(R"({"eventId":"abc","value":1)", "JSON");
}

TEST(JsonDecodeError, TopLevelMustBeAnObject) {
  ExpectJsonError(R"([{"eventId":"a"}])", "expected a JSON object at the top level, got array");
  ExpectJsonError(R"("eventId")", "top level, got string");
  ExpectJsonError("42", "top level, got number");
  ExpectJsonError("null", "top level, got null");
}

TEST(JsonDecodeError, StructuralErrors) {
  ExpectJsonError(R"({"eventId" "a"})", "JSON");
  ExpectJsonError(R"({"eventId":"a" "value":1})", "JSON");
  ExpectJsonError(R"({"eventId":"a",})", "JSON");
  ExpectJsonError(R"({eventId:"a"})", "JSON");
  ExpectJsonError(R"({"value":1 2})", "invalid JSON after member value");
  ExpectJsonError(R"({"tags":{"a":"b"} "value":1})", "invalid JSON after member tags");
}

TEST(JsonDecodeError, WrongTypePerField) {
  ExpectJsonError(R"({"eventId":5})", "eventId: expected a string, got number");
  ExpectJsonError(R"({"event_id":5})", "event_id: expected a string, got number");
  ExpectJsonError(R"({"serviceId":true})", "serviceId: expected a string, got boolean");
  ExpectJsonError(R"({"instanceId":{}})", "instanceId: expected a string, got object");
  ExpectJsonError(R"({"metricName":["a"]})", "metricName: expected a string, got array");
  ExpectJsonError(R"({"unit":1})", "unit: expected a string, got number");
  ExpectJsonError(R"({"metricType":3})", "metricType: expected a string, got number");
  ExpectJsonError(R"({"value":"245.5"})", "value: expected a number, got string");
  ExpectJsonError(R"({"value":true})", "value: expected a number, got boolean");
  ExpectJsonError(R"({"value":[1]})", "value: expected a number, got array");
  ExpectJsonError(R"({"timestamp":true})", "timestamp: expected a number");
  ExpectJsonError(R"({"timestamp":{}})", "timestamp: expected a number");
  ExpectJsonError(R"({"tags":[]})", "tags: expected an object, got array");
  ExpectJsonError(R"({"metadata":"x"})", "metadata: expected an object, got string");
  ExpectJsonError(R"({"tags":{"foo":{"a":1}}})", "tags.foo: expected a string");
  ExpectJsonError(R"({"metadata":{"bar":[]}})", "metadata.bar: expected a string");
}

TEST(JsonDecodeError, InvalidLiterals) {
  ExpectJsonError(R"({"eventId":nul})", "eventId");
  ExpectJsonError(R"({"tags":{"a":tru}})", "tags.a");
  ExpectJsonError(R"({"tags":{"a":01}})", "tags.a");
  ExpectJsonError(R"({"tags":{"a":1.}})", "tags.a");
  ExpectJsonError(R"({"extra":{"x":[1,fals]}})", "extra");
  ExpectJsonError(R"({"extra":{"x" 1}})", "extra");
  ExpectJsonError(R"({"serviceId":"a\qb"})", "serviceId");
  ExpectJsonError(R"({"eventId":"\ud800"})", "eventId");  // lone surrogate
  ExpectJsonError("{\"metricName\":\"a\nb\"}", "metricName: unescaped control character");
}

TEST(JsonDecodeError, UnknownMetricType) {
  ExpectJsonError(R"({"metricType":"FOO"})", R"(metricType: unknown value "FOO")");
  ExpectJsonError(R"({"metricType":"http_request"})", R"(unknown value "http_request")");
  ExpectJsonError(R"({"metricType":""})", R"(metricType: unknown value "")");
  ExpectJsonError(R"({"metric_type":"FOO"})", R"(metric_type: unknown value "FOO")");
}

TEST(JsonDecodeError, ValueOutOfRangeOrNotANumber) {
  ExpectJsonError(R"({"value":1e999})", "value: number out of range");
  ExpectJsonError(R"({"value":-1e999})", "value: number out of range");
  // JSON has no NaN/Infinity literals; neither bare nor quoted is a number.
  ExpectJsonError(R"({"value":NaN})", R"(value: expected a number, got "NaN")");
  ExpectJsonError(R"({"value":Infinity})", R"(value: expected a number, got "Infinity")");
  ExpectJsonError(R"({"value":-Infinity})", "value");
  ExpectJsonError(R"({"tags":{"ratio":NaN}})", R"(tags.ratio: expected a string, number or)");
  ExpectJsonError(R"({"value":"NaN"})", "value: expected a number, got string");
  ExpectJsonError(R"({"value":-})", "value");
  ExpectJsonError(R"({"value":1.5.5})", "value");
}

TEST(JsonDecodeError, BadTimestamps) {
  ExpectJsonError(R"({"timestamp":"yesterday"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00"})", "timestamp");  // no offset
  ExpectJsonError(R"({"timestamp":"2024-02-07 01:00:00Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-30T01:00:00Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2023-02-29T01:00:00Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-13-01T01:00:00Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T24:00:00Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:60Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00.Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00.1234567890Z"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00+2:00"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00+24:00"})", "timestamp");
  ExpectJsonError(R"({"timestamp":"2024-02-07T01:00:00Z "})", "timestamp");
  ExpectJsonError(R"({"timestamp":"0000-12-31T23:59:59Z"})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":253402300800000})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":-62135596800001})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":99999999999999999999999})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":1e999})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":1.5e+99999999999999})", "timestamp: out of range");
  ExpectJsonError(R"({"timestamp":12.})", "timestamp: malformed number");
}

TEST(JsonDecodeError, InvalidUtf8InsideAString) {
  ExpectJsonError(
      "{\"serviceId\":\"pay\xff"
      "ment\"}",
      "serviceId: invalid UTF-8");
  ExpectJsonError("{\"tags\":{\"region\":\"us-\xc3\x28\"}}", "tags.region: invalid UTF-8");
  ExpectJsonError("{\"tags\":{\"re\xed\xa0\x80gion\":\"x\"}}", "tags: invalid UTF-8 in a key");
  ExpectJsonError("{\"eventId\":\"\xf4\x90\x80\x80\"}", "eventId: invalid UTF-8");  // > U+10FFFF
  ExpectJsonError("{\"eventId\":\"\xc0\xaf\"}", "eventId: invalid UTF-8");          // overlong
}

TEST(JsonDecodeError, DocumentTooLarge) {
  DecodeLimits limits;
  limits.max_document_bytes = 100;
  ExpectJsonError(kReferenceEvent, "document too large", limits);
  // At the limit is fine.
  const std::string doc = "{\"eventId\":\"" + std::string(100 - 14, 'x') + "\"}";
  ASSERT_EQ(doc.size(), 100u);
  auto decoder = NewJsonMetricEventDecoder(limits);
  EXPECT_EQ(DecodeJsonOk(doc, *decoder).event_id.size(), 86u);
}

TEST(JsonDecodeError, ThirtyThreeTags) {
  std::string doc = "{\"tags\":{";
  for (int i = 0; i < 33; ++i) doc += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":\"v\"";
  doc += "}}";
  ExpectJsonError(doc, "tags: more than 32 entries");
}

TEST(JsonDecodeError, DuplicateField) {
  ExpectJsonError(R"({"eventId":"a","eventId":"b"})", "duplicate field eventId");
  ExpectJsonError(R"({"eventId":"a","event_id":"b"})", "duplicate field event_id");
  ExpectJsonError(R"({"value":null,"value":1})", "duplicate field value");
  ExpectJsonError(R"({"tags":{"a":"1","a":"2"}})", R"(tags: duplicate key "a")");
}

TEST(JsonDecodeError, TrailingGarbage) {
  ExpectJsonError(R"({"eventId":"a"} x)", "JSON");
  ExpectJsonError(R"({"eventId":"a"}})", "trailing content");
  ExpectJsonError(R"({"eventId":"a"}{"eventId":"b"})", "trailing content");
  ExpectJsonError(R"({"eventId":"a"} {})", "trailing content");
  ExpectJsonError(R"({"eventId":"a"},)", "JSON");
}

TEST(JsonDecodeError, UnknownFieldNestedTooDeep) {
  const std::string doc = "{\"deep\":" + std::string(100, '[') + std::string(100, ']') + "}";
  ExpectJsonError(doc, "deep: nested deeper than 64");
}

// ------------------------------------------------------------------------------------
// Encoding and round trips.

MetricEvent FullEvent() {
  MetricEvent e;
  e.has_event_id = true;
  e.event_id = "4f1c\"quoted\"\\back\\slash\n\t\x01\x1f";
  e.has_timestamp = true;
  e.timestamp_ms = 1707267600123;
  e.has_service_id = true;
  e.service_id = "payment-service \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";  // é € 😀
  e.has_instance_id = true;
  e.instance_id = "";
  e.has_metric_type = true;
  e.metric_type = MetricType::kMessageQueueConsume;
  e.has_metric_name = true;
  e.metric_name = "api.request.duration";
  e.has_value = true;
  e.value = 0.1 + 0.2;  // needs 17 significant digits
  e.unit = "ms";
  e.tags.Add("endpoint", "/api/v1/payments");
  e.tags.Add("statusCode", "200");
  e.tags.Add("", "empty key");
  e.tags.Add("z\"", "</script>");
  e.metadata.Add("traceId", "abc123");
  return e;
}

TEST(JsonEncode, RoundTrip) {
  auto decoder = NewJsonMetricEventDecoder();
  const MetricEvent original = FullEvent();
  std::string json;
  AppendMetricEventJson(original, &json);
  ExpectSameEvent(original, DecodeJsonOk(json, *decoder), /*ordered=*/true);

  for (double v : {0.0, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, -123456.789, 1e21}) {
    MetricEvent e;
    e.has_value = true;
    e.value = v;
    json.clear();
    AppendMetricEventJson(e, &json);
    ExpectSameEvent(e, DecodeJsonOk(json, *decoder), true);
  }
}

TEST(JsonEncode, CamelCaseOmitsAbsentFields) {
  MetricEvent e;
  std::string json;
  AppendMetricEventJson(e, &json);
  EXPECT_EQ(json, "{}");

  e.has_event_id = true;
  e.event_id = "e";
  e.has_timestamp = true;
  e.timestamp_ms = 1707267600000;
  e.has_metric_type = true;
  e.metric_type = MetricType::kHttpRequest;
  e.has_value = true;
  e.value = 245.5;
  e.tags.Add("k", "v");
  json = "prefix:";
  AppendMetricEventJson(e, &json);
  EXPECT_EQ(json, R"(prefix:{"eventId":"e","timestamp":1707267600000,"metricType":"HTTP_REQUEST",)"
                  R"("value":245.5,"tags":{"k":"v"}})");

  auto decoder = NewJsonMetricEventDecoder();
  const std::string reference(kReferenceEvent);
  MetricEvent ref = DecodeJsonOk(reference, *decoder);
  json.clear();
  AppendMetricEventJson(ref, &json);
  EXPECT_EQ(json, R"({"eventId":"uuid-v4","timestamp":1707267600000,"serviceId":"payment-service",)"
                  R"("instanceId":"payment-service-pod-3","metricType":"HTTP_REQUEST",)"
                  R"("metricName":"api.request.duration","value":245.5,"unit":"milliseconds",)"
                  R"("tags":{"endpoint":"/api/v1/payments","method":"POST","statusCode":"200",)"
                  R"("region":"us-east-1"},"metadata":{"traceId":"abc123","spanId":"def456"}})");
}

TEST(JsonEncode, NonFiniteValueIsWrittenAsNull) {
  MetricEvent e;
  e.has_value = true;
  e.value = std::numeric_limits<double>::quiet_NaN();
  std::string json;
  AppendMetricEventJson(e, &json);
  EXPECT_EQ(json, R"({"value":null})");
}

TEST(JsonEncode, AppendJsonStringEscapes) {
  std::string out;
  AppendJsonString("a\"b\\c/\b\f\n\r\t\x01\x7f", &out);
  EXPECT_EQ(out, R"("a\"b\\c/\b\f\n\r\t\u0001)"
                 "\x7f\"");
  out.clear();
  AppendJsonString(std::string_view("nul\0x", 5), &out);
  EXPECT_EQ(out, R"("nul\u0000x")");
  out.clear();
  AppendJsonString("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", &out);  // valid UTF-8 kept
  EXPECT_EQ(out, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
  out.clear();
  AppendJsonString(
      "a\xff"
      "b\xc3",
      &out);  // invalid bytes replaced, output stays valid
  EXPECT_EQ(out, R"("a\ufffdb\ufffd")");
  out.clear();
  AppendJsonString("", &out);
  EXPECT_EQ(out, "\"\"");
}

TEST(ProtobufCodec, RoundTrip) {
  auto decoder = NewProtobufMetricEventDecoder();
  const MetricEvent original = FullEvent();
  std::string bytes;
  AppendMetricEventProtobuf(original, &bytes);
  MetricEvent decoded;
  ASSERT_TRUE(decoder->Decode(bytes, &decoded).ok());
  ExpectSameEvent(original, decoded, /*ordered=*/false);

  // Zero values with presence survive (proto3 optional).
  MetricEvent zeros;
  zeros.has_timestamp = true;
  zeros.has_value = true;
  zeros.has_event_id = true;
  bytes.clear();
  AppendMetricEventProtobuf(zeros, &bytes);
  ASSERT_TRUE(decoder->Decode(bytes, &decoded).ok());
  ExpectSameEvent(zeros, decoded, false);

  // And so does an empty event.
  bytes.clear();
  AppendMetricEventProtobuf(MetricEvent{}, &bytes);
  EXPECT_TRUE(bytes.empty());
  ASSERT_TRUE(decoder->Decode(bytes, &decoded).ok());
  ExpectSameEvent(MetricEvent{}, decoded, false);
}

TEST(ProtobufCodec, JsonAndProtobufAgree) {
  auto json = NewMetricEventDecoder(EventFormat::kJson);
  auto protobuf = NewMetricEventDecoder(EventFormat::kProtobuf);
  MetricEvent from_json = DecodeJsonOk(kReferenceEvent, *json);
  std::string bytes;
  AppendMetricEventProtobuf(from_json, &bytes);
  MetricEvent from_protobuf;
  ASSERT_TRUE(protobuf->Decode(bytes, &from_protobuf).ok());
  ExpectSameEvent(from_json, from_protobuf, false);
}

TEST(ProtobufCodec, MetricTypeUnspecifiedIsAbsentAndUnknownIsAnError) {
  auto decoder = NewProtobufMetricEventDecoder();
  proto::MetricEvent message;
  message.set_event_id("e");
  message.set_metric_type(proto::METRIC_TYPE_UNSPECIFIED);
  MetricEvent e;
  ASSERT_TRUE(decoder->Decode(message.SerializeAsString(), &e).ok());
  EXPECT_FALSE(e.has_metric_type);
  EXPECT_EQ(e.event_id, "e");

  message.set_metric_type(proto::CUSTOM_HISTOGRAM);
  ASSERT_TRUE(decoder->Decode(message.SerializeAsString(), &e).ok());
  EXPECT_TRUE(e.has_metric_type);
  EXPECT_EQ(e.metric_type, MetricType::kCustomHistogram);

  message.set_metric_type(static_cast<proto::MetricType>(42));
  const absl::Status status = decoder->Decode(message.SerializeAsString(), &e);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "metric_type: unknown value 42");
  EXPECT_FALSE(e.has_event_id);
}

TEST(ProtobufCodec, Errors) {
  auto decoder = NewProtobufMetricEventDecoder();
  MetricEvent e;
  absl::Status status = decoder->Decode("\xff\xff\xff", &e);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "not a valid protobuf MetricEvent");
  status = decoder->Decode(std::string_view("\x0a\x05"
                                            "ab",
                                            4),
                           &e);  // truncated string
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  proto::MetricEvent message;
  for (int i = 0; i < 33; ++i) (*message.mutable_tags())["k" + std::to_string(i)] = "v";
  status = decoder->Decode(message.SerializeAsString(), &e);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tags: more than 32 entries"));
  message.mutable_tags()->erase("k0");
  ASSERT_TRUE(decoder->Decode(message.SerializeAsString(), &e).ok());
  EXPECT_EQ(e.tags.size(), 32u);

  DecodeLimits limits;
  limits.max_document_bytes = 10;
  auto small = NewProtobufMetricEventDecoder(limits);
  status = small->Decode(message.SerializeAsString(), &e);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("document too large"));
}

// ------------------------------------------------------------------------------------
// Decoder reuse.

TEST(DecoderReuse, JsonSecondDecodeViewsAreCorrect) {
  auto decoder = NewJsonMetricEventDecoder();
  MetricEvent first = DecodeJsonOk(kReferenceEvent, *decoder);
  ExpectReferenceEvent(first);
  MetricEvent second =
      DecodeJsonOk(R"({"eventId":"second\u0021","serviceId":"billing","metricType":"CACHE_MISS",)"
                   R"("value":2,"tags":{"region":"eu-\"west\"-1"}})",
                   *decoder);
  EXPECT_EQ(second.event_id, "second!");
  EXPECT_EQ(second.service_id, "billing");
  EXPECT_FALSE(second.has_instance_id);
  EXPECT_EQ(second.metric_type, MetricType::kCacheMiss);
  EXPECT_EQ(second.value, 2.0);
  EXPECT_EQ(ToPairs(second.tags), (Pairs{{"region", "eu-\"west\"-1"}}));
  EXPECT_TRUE(second.metadata.empty());

  // An error in between does not disturb the next decode; a bigger document grows the
  // buffers, and a smaller one after it still decodes.
  MetricEvent e;
  EXPECT_FALSE(decoder->Decode("{\"value\":\"x\"}", &e).ok());
  const std::string big = "{\"pad\":\"" + std::string(200000, 'p') + "\",\"eventId\":\"big\"}";
  EXPECT_EQ(DecodeJsonOk(big, *decoder).event_id, "big");
  ExpectReferenceEvent(DecodeJsonOk(kReferenceEvent, *decoder));
  // Views stay valid even after the caller's input is gone (they point into the decoder).
  {
    std::string temporary(kSnakeCaseEvent);
    first = DecodeJsonOk(temporary, *decoder);
    temporary.assign(temporary.size(), 'X');
  }
  ExpectReferenceEvent(first);
}

TEST(DecoderReuse, ProtobufSecondDecodeViewsAreCorrect) {
  auto decoder = NewProtobufMetricEventDecoder();
  std::string a, b;
  MetricEvent ea = FullEvent();
  AppendMetricEventProtobuf(ea, &a);
  MetricEvent eb;
  eb.has_event_id = true;
  eb.event_id = "second";
  const std::string long_value(20000, 'r');  // a message larger than the first one
  eb.tags.Add("region", long_value);
  AppendMetricEventProtobuf(eb, &b);
  MetricEvent decoded;
  ASSERT_TRUE(decoder->Decode(a, &decoded).ok());
  ExpectSameEvent(ea, decoded, false);
  ASSERT_TRUE(decoder->Decode(b, &decoded).ok());
  ExpectSameEvent(eb, decoded, false);
  ASSERT_TRUE(decoder->Decode(a, &decoded).ok());
  ExpectSameEvent(ea, decoded, false);
}

TEST(DecoderReuse, JsonSteadyStateDoesNotAllocate) {
  auto decoder = NewJsonMetricEventDecoder();
  const std::vector<std::string> docs = {
      std::string(kReferenceEvent), std::string(kSnakeCaseEvent),
      R"({"eventId":"e\u00e9","timestamp":"2024-02-07T03:00:00.5+02:00","value":1e3,)"
      R"("tags":{"statusCode":200,"ok":true,"a-rather-long-tag-key":null},)"
      R"("an-unknown-member-with-a-long-name":{"nested":[1,2,{"x":null}]}})"};
  MetricEvent event;
  for (const std::string& doc : docs) ASSERT_TRUE(decoder->Decode(doc, &event).ok());
  bool all_ok = true;
  allocation_count = 0;
  counting_allocations = true;
  for (int i = 0; i < 300; ++i) all_ok &= decoder->Decode(docs[i % docs.size()], &event).ok();
  counting_allocations = false;
  EXPECT_TRUE(all_ok);
  EXPECT_EQ(allocation_count, 0);
}

// ------------------------------------------------------------------------------------
// Random mutations: never a crash, always OK or InvalidArgument, and whatever decodes
// re-encodes to JSON that decodes to the same event.

std::string Mutate(std::string doc, std::mt19937& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int k = 0; k < edits && !doc.empty(); ++k) {
    const size_t pos = rng() % doc.size();
    switch (rng() % 6) {
      case 0:  // random byte
        doc[pos] = static_cast<char>(rng() & 0xFF);
        break;
      case 1:  // flip a bit
        doc[pos] = static_cast<char>(doc[pos] ^ (1 << (rng() % 8)));
        break;
      case 2:  // insert a JSON-significant byte
        doc.insert(pos, 1, "{}[]\":,\\0e.-tn \x80"[rng() % 16]);
        break;
      case 3:  // delete a run
        doc.erase(pos, 1 + rng() % 8);
        break;
      case 4:  // truncate
        doc.resize(pos);
        break;
      case 5:  // duplicate a slice
        doc.insert(pos, doc.substr(rng() % doc.size(), 1 + rng() % 16));
        break;
    }
  }
  return doc;
}

TEST(Fuzz, MutatedJsonDocumentsDecodeOrFailCleanly) {
  auto decoder = NewJsonMetricEventDecoder();
  auto check = NewJsonMetricEventDecoder();
  std::mt19937 rng(20240207);
  const std::vector<std::string> seeds = {
      std::string(kReferenceEvent), std::string(kSnakeCaseEvent),
      R"({"eventId":"e","timestamp":"2024-02-07T03:00:00.5+02:00","value":-1.5e-3,)"
      R"("tags":{"n":200,"b":true,"z":null},"x":[{"y":[1,2,{}]}]})"};
  int ok = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string doc = Mutate(seeds[i % seeds.size()], rng);
    MetricEvent event;
    const absl::Status status = decoder->Decode(doc, &event);
    if (status.ok()) {
      ++ok;
      std::string json;
      AppendMetricEventJson(event, &json);
      MetricEvent again;
      const absl::Status status2 = check->Decode(json, &again);
      ASSERT_TRUE(status2.ok()) << status2 << "\n  re-encoded: " << json;
      ExpectSameEvent(event, again, /*ordered=*/true);
    } else {
      ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      ASSERT_FALSE(status.message().empty());
    }
  }
  // The mutations are not all fatal (e.g. inside a string), nor all harmless.
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, 1000);
}

TEST(Fuzz, MutatedProtobufMessagesDecodeOrFailCleanly) {
#if GOOGLE_PROTOBUF_VERSION < 4022000
  // Quiet protobuf's "String field ... contains invalid UTF-8" log lines.
  google::protobuf::LogSilencer silence_invalid_utf8_logs;
#endif
  auto decoder = NewProtobufMetricEventDecoder();
  std::string seed;
  AppendMetricEventProtobuf(FullEvent(), &seed);
  std::mt19937 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const std::string bytes = Mutate(seed, rng);
    MetricEvent event;
    const absl::Status status = decoder->Decode(bytes, &event);
    if (status.ok()) {
      std::string json;
      AppendMetricEventJson(event, &json);  // views must be readable
      EXPECT_FALSE(json.empty());
    } else {
      ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    }
  }
}

}  // namespace
}  // namespace streammetrics

namespace streammetrics {
namespace {

// The JSON decoder has a fast path (its own walk over simdjson's stage-1 index) and falls
// back to the reference On-Demand decoder for anything it declines. Both must agree on
// every input: the same status (code and message) and, when OK, the same event.
std::string Describe(const absl::Status& s, const MetricEvent& e) {
  if (!s.ok()) return StrCat("error ", static_cast<int>(s.code()), ": ", Message(s));
  std::string out;
  AppendMetricEventJson(e, &out);
  StrAppend(&out, " | has:", e.has_event_id, e.has_service_id, e.has_instance_id,
            e.has_metric_name, e.has_metric_type, e.has_value, e.has_timestamp);
  return out;
}

// Past the 8 service profiles, services repeat them under numbered names, and each
// event's key (GeneratedServiceId) and instance follow its serviceId.
TEST(EventGenerator, MoreThanEightServicesGetNumberedNames) {
  GeneratorOptions options;
  options.services = 20;
  options.invalid_fraction = 0;
  options.duplicate_fraction = 0;
  options.late_fraction = 0;
  EventGenerator generator(options);
  auto decoder = NewJsonMetricEventDecoder();
  std::map<std::string, int> seen;
  std::string doc;
  for (int i = 0; i < 20'000; ++i) {
    doc.clear();
    generator.Next(&doc);
    MetricEvent e;
    ASSERT_TRUE(decoder->Decode(doc, &e).ok()) << doc;
    ASSERT_EQ(GeneratedServiceId(doc), e.service_id) << doc;
    ASSERT_EQ(e.instance_id.substr(0, e.service_id.size() + 5), StrCat(e.service_id, "-pod-")) << doc;
    ++seen[std::string(e.service_id)];
  }
  std::vector<std::string> names;
  for (const auto& [name, n] : seen) {
    names.push_back(name);
    EXPECT_GT(n, 600) << name;  // 1,000 each on average
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre(
      "payment-service", "user-service", "order-service", "inventory-service", "search-service",
      "notification-service", "shipping-service", "auth-service", "payment-service-2",
      "user-service-2", "order-service-2", "inventory-service-2", "search-service-2",
      "notification-service-2", "shipping-service-2", "auth-service-2", "payment-service-3",
      "user-service-3", "order-service-3", "inventory-service-3"));
}

TEST(JsonDecoderFastPath, AgreesWithTheReferenceDecoderOnGeneratedAndMutatedInput) {
  GeneratorOptions options;
  options.invalid_fraction = 0.2;
  options.duplicate_fraction = 0;
  EventGenerator generator(options);
  auto fast = NewJsonMetricEventDecoder();
  auto reference = NewReferenceJsonMetricEventDecoderForTesting();
  std::mt19937_64 rng(11);
  const std::string specials[] = {"\\", "\"", "\\u0000", "\\ud83d\\ude00", "\xff", "\x01", "{",
                                  "}",  "[",  "]",       ",",            ":",    " ", "null",
                                  "1e999", "-0", "1.5e3", "\"tags\":{\"a\":1}"};
  MetricEvent a, b;
  int mutated = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string doc;
    generator.Next(&doc);
    if (i % 2 == 1) {  // mutate: replace, insert or delete at random places
      ++mutated;
      for (int m = 0, n = 1 + static_cast<int>(rng() % 3); m < n && !doc.empty(); ++m) {
        size_t at = rng() % doc.size();
        switch (rng() % 3) {
          case 0:
            doc[at] = static_cast<char>(rng());
            break;
          case 1:
            doc.insert(at, specials[rng() % std::size(specials)]);
            break;
          default:
            doc.erase(at, 1 + rng() % 8);
            break;
        }
      }
    }
    absl::Status sa = fast->Decode(doc, &a);
    absl::Status sb = reference->Decode(doc, &b);
    ASSERT_EQ(Describe(sa, a), Describe(sb, b)) << "input: " << doc;
  }
  EXPECT_EQ(mutated, 10'000);
}

}  // namespace
}  // namespace streammetrics

namespace streammetrics {
namespace {

// Regression: libprotobuf logged an ERROR line per message with invalid UTF-8 in a string
// field, so bad input could flood the logs; the decoder returns the error instead.
TEST(ProtobufDecoder, InvalidUtf8IsAnErrorAndLogsNothing) {
  std::string bytes;
  {
    // Encode by hand: field 3 (service_id), wire type 2, 5 bytes of invalid UTF-8.
    bytes.push_back(static_cast<char>((3 << 3) | 2));
    bytes.push_back(5);
    bytes.append("bad\xff\xfe", 5);
  }
  auto decoder = NewProtobufMetricEventDecoder();
  MetricEvent event;
  ::testing::internal::CaptureStderr();
  absl::Status s1 = decoder->Decode(bytes, &event);
  absl::Status s2 = decoder->Decode(bytes, &event);
  std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s1.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s2.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(logged, "");
}

}  // namespace
}  // namespace streammetrics
