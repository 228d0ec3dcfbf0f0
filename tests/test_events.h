// Builders of metric-event JSON for tests.
#ifndef STREAMMETRICS_TESTS_TEST_EVENTS_H_
#define STREAMMETRICS_TESTS_TEST_EVENTS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "operators/aggregate_result.h"
#include "operators/strings.h"

namespace streammetrics::testing {

// 2024-02-07T01:00:00Z, a whole hour: window starts fall on round numbers.
inline constexpr int64_t kT0 = 1'707'267'600'000;

struct Ev {
  std::string id;
  int64_t ts = kT0;
  double value = 1;
  std::string service = "payment-service";
  std::string metric = "api.request.duration";
  std::vector<std::pair<std::string, std::string>> tags;

  std::string Json() const {
    std::string out = StrCat("{\"eventId\":\"", id, "\",\"timestamp\":", ts,
                             ",\"serviceId\":\"", service, "\",\"instanceId\":\"", service,
                             "-pod-0\",\"metricType\":\"HTTP_REQUEST\",\"metricName\":\"", metric,
                             "\",\"value\":");
    AppendJsonDouble(value, &out);
    out += ",\"unit\":\"milliseconds\",\"tags\":{";
    for (size_t i = 0; i < tags.size(); ++i) {
      StrAppend(&out, i ? "," : "", "\"", tags[i].first, "\":\"", tags[i].second, "\"");
    }
    out += "}}";
    return out;
  }
};

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_TEST_EVENTS_H_
