// The result of one window for one group key, and its JSON encoding (DESIGN.md "Event
// model": the value of an output-topic record).
#ifndef STREAMMETRICS_OPERATORS_AGGREGATE_RESULT_H_
#define STREAMMETRICS_OPERATORS_AGGREGATE_RESULT_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "operators/metric_stats.h"
#include "operators/windows.h"

namespace streammetrics {

inline constexpr size_t kMaxQuantiles = 8;

struct QuantileSpec {
  double q = 0.5;    // in (0, 1)
  std::string name;  // "p50", "p99.9"
};
// 0.5 -> "p50", 0.95 -> "p95", 0.999 -> "p99.9".
std::string QuantileName(double q);
// InvalidArgument unless 1..kMaxQuantiles distinct values in (0, 1).
absl::StatusOr<std::vector<QuantileSpec>> MakeQuantileSpecs(const std::vector<double>& qs);

// A view: everything points into the emitting operator and lives until Forward returns.
struct WindowedAggregate {
  const WindowSpec* window = nullptr;
  int64_t window_start = 0;
  int64_t window_end = 0;
  // Group-by dimensions: output names and this group's values, same length.
  const std::vector<std::string>* dim_names = nullptr;
  const std::vector<std::string_view>* dim_values = nullptr;
  const MetricStats* stats = nullptr;
  const std::vector<QuantileSpec>* quantiles = nullptr;
  std::array<double, kMaxQuantiles> quantile_values{};
  // count per second of window size.
  double rate = 0;

  // The value of dimension `name`, or empty.
  std::string_view Dim(std::string_view name) const;
};

// {"serviceId":..,"metricName":..,"window":"1m","windowStart":ms,"windowEnd":ms,
//  "count":..,"sum":..,"avg":..,"min":..,"max":..,"p50":..,"p95":..,"p99":..,
//  "rate":..,"tags":{other dimensions}} — serviceId/metricName at the top when they
// are dimensions; doubles in shortest round-trip form.
void AppendAggregateJson(const WindowedAggregate& result, std::string* out);
// The output record key: the serviceId dimension's value (DESIGN.md), or, when
// serviceId is not a dimension, all dimension values joined by '|'.
void AppendAggregateKey(const WindowedAggregate& result, std::string* out);

// Appends a double in shortest round-trip form ("245.5", "1e+21"); non-finite as null.
void AppendJsonDouble(double v, std::string* out);

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_AGGREGATE_RESULT_H_
