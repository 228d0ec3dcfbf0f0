// Aggregate results as the engine writes them (DESIGN.md's output format), for sink tests
// and benchmarks.
#ifndef STREAMMETRICS_TESTS_AGGREGATE_JSON_H_
#define STREAMMETRICS_TESTS_AGGREGATE_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "operators/strings.h"

namespace streammetrics::testing {

inline std::string Aggregate(std::string_view service, std::string_view metric,
                             std::string_view window, int64_t start_ms, int64_t count, double sum,
                             std::string_view tags = "{}") {
  return StrCat("{\"serviceId\":\"", service, "\",\"metricName\":\"", metric, "\",\"window\":\"",
                window, "\",\"windowStart\":", start_ms, ",\"windowEnd\":", start_ms + 60'000,
                ",\"count\":", count, ",\"sum\":", sum, ",\"avg\":", sum / count,
                ",\"min\":1,\"max\":", sum, ",\"p50\":2.5,\"p95\":3.5,\"p99\":4.5,\"rate\":",
                count / 60.0, ",\"tags\":", tags, "}");
}

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_AGGREGATE_JSON_H_
