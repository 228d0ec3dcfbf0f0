// validate: the rules of reference/002's MetricEvent (required fields, the metricType
// enum, a positive finite value) plus a configurable value range, timestamp bounds and
// the column sizes of the Postgres table, so a valid event is always storable.
#ifndef STREAMMETRICS_OPERATORS_VALIDATE_H_
#define STREAMMETRICS_OPERATORS_VALIDATE_H_

#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "operators/metric_event.h"
#include "operators/processor.h"

namespace streammetrics {

struct ValidationRules {
  // value must lie in (value_min, value_max], or [value_min, ...] when inclusive.
  // Default: value > 0 (reference/002's @Positive).
  double value_min = 0;
  bool value_min_inclusive = false;
  double value_max = std::numeric_limits<double>::max();
  // Events more than this far ahead of the wall clock are rejected; < 0 disables.
  // Default: 5 minutes.
  int64_t max_future_skew_ms = 5 * 60 * 1000;
  // Events older than this (against the wall clock) are rejected; 0 disables. Default 0.
  int64_t max_age_ms = 0;
  // Column sizes of metrics.metric_aggregates (reference/002).
  size_t max_service_id_length = 100;
  size_t max_metric_name_length = 200;
  size_t max_id_length = 256;  // eventId, instanceId
};

// OK, or InvalidArgument whose message names the field ("value: must be > 0, got -1").
// now_ms is the wall clock the timestamp bounds are checked against.
absl::Status ValidateEvent(const ValidationRules& rules, const MetricEvent& event,
                           int64_t now_ms);

// Forwards valid events; dead-letters the rest with reason `validation`.
class ValidateProcessor final : public Transformer<MetricEvent, MetricEvent> {
 public:
  explicit ValidateProcessor(ValidationRules rules) : rules_(rules) {}
  absl::Status Process(const Record<MetricEvent>& record) override;

 private:
  ValidationRules rules_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_VALIDATE_H_
