// Parsing aggregate results (the JSON of DESIGN.md) out of driver output, for tests.
#ifndef STREAMMETRICS_TESTS_AGGREGATE_RESULTS_H_
#define STREAMMETRICS_TESTS_AGGREGATE_RESULTS_H_

#include <simdjson.h>

#include <string>
#include <vector>

#include "engine/topology_test_driver.h"

namespace streammetrics::testing {

struct AggregateResult {
  std::string key, service, metric, window, tags;
  int64_t start = 0, end = 0, timestamp = 0;
  uint64_t count = 0;
  double sum = 0, avg = 0, min = 0, max = 0, p50 = 0, p95 = 0, p99 = 0, rate = 0;
};

// Aborts the test binary (simdjson throws) on a malformed result: a test bug.
inline AggregateResult ParseAggregate(const OutputRecord& r) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(r.value);
  AggregateResult out;
  out.key = r.key;
  out.timestamp = r.timestamp_ms;
  out.service = std::string(std::string_view(doc["serviceId"]));
  out.metric = std::string(std::string_view(doc["metricName"]));
  out.window = std::string(std::string_view(doc["window"]));
  out.start = int64_t(doc["windowStart"]);
  out.end = int64_t(doc["windowEnd"]);
  out.count = uint64_t(doc["count"]);
  out.sum = double(doc["sum"]);
  out.avg = double(doc["avg"]);
  out.min = double(doc["min"]);
  out.max = double(doc["max"]);
  out.p50 = double(doc["p50"]);
  out.p95 = double(doc["p95"]);
  out.p99 = double(doc["p99"]);
  out.rate = double(doc["rate"]);
  out.tags = simdjson::minify(doc["tags"]);
  return out;
}

inline std::vector<AggregateResult> ParseAggregates(const std::vector<OutputRecord>& records) {
  std::vector<AggregateResult> out;
  for (const OutputRecord& r : records) out.push_back(ParseAggregate(r));
  return out;
}

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_AGGREGATE_RESULTS_H_
