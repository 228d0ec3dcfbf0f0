#include "operators/strings.h"
#include "operators/validate.h"
#include "operators/windows.h"

#include <cmath>


namespace streammetrics {
namespace {

absl::Status CheckText(std::string_view field, bool present, std::string_view value,
                       size_t max_length) {
  if (!present) return absl::InvalidArgumentError(StrCat(field, ": is required"));
  if (StripAsciiWhitespace(value).empty()) {
    return absl::InvalidArgumentError(StrCat(field, ": must not be blank"));
  }
  if (value.size() > max_length) {
    return absl::InvalidArgumentError(
        StrCat(field, ": longer than ", max_length, " bytes (", value.size(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateEvent(const ValidationRules& rules, const MetricEvent& e, int64_t now_ms) {
  if (absl::Status s = CheckText("eventId", e.has_event_id, e.event_id, rules.max_id_length);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckText("serviceId", e.has_service_id, e.service_id,
                                 rules.max_service_id_length);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckText("instanceId", e.has_instance_id, e.instance_id, rules.max_id_length);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckText("metricName", e.has_metric_name, e.metric_name,
                                 rules.max_metric_name_length);
      !s.ok()) {
    return s;
  }
  if (!e.has_metric_type) return absl::InvalidArgumentError("metricType: is required");
  if (!e.has_timestamp) return absl::InvalidArgumentError("timestamp: is required");
  if (!InEventTimeDomain(e.timestamp_ms)) {
    return absl::InvalidArgumentError(StrCat("timestamp: ", e.timestamp_ms, " is outside [-",
                                             kMaxEventTimeMs, ", ", kMaxEventTimeMs, "]"));
  }
  if (!e.has_value) return absl::InvalidArgumentError("value: is required");
  if (!std::isfinite(e.value)) {
    return absl::InvalidArgumentError("value: must be finite");
  }
  bool below = rules.value_min_inclusive ? e.value < rules.value_min : e.value <= rules.value_min;
  if (below) {
    return absl::InvalidArgumentError(StrCat(
        "value: must be ", rules.value_min_inclusive ? ">= " : "> ", rules.value_min, ", got ",
        e.value));
  }
  if (e.value > rules.value_max) {
    return absl::InvalidArgumentError(
        StrCat("value: must be <= ", rules.value_max, ", got ", e.value));
  }
  // Differences, not sums: the timestamp is in the domain and the clock a real time, so
  // neither side can overflow whatever the rule's duration.
  if (rules.max_future_skew_ms >= 0 && e.timestamp_ms - now_ms > rules.max_future_skew_ms) {
    return absl::InvalidArgumentError(
        StrCat("timestamp: ", e.timestamp_ms, " is more than ", rules.max_future_skew_ms,
                     " ms ahead of the clock (", now_ms, ")"));
  }
  if (rules.max_age_ms > 0 && now_ms - e.timestamp_ms > rules.max_age_ms) {
    return absl::InvalidArgumentError(StrCat("timestamp: ", e.timestamp_ms,
                                                   " is more than ", rules.max_age_ms,
                                                   " ms old (clock ", now_ms, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateProcessor::Process(const Record<MetricEvent>& record) {
  absl::Status s = ValidateEvent(rules_, *record.value, context()->wall_clock_ms());
  if (!s.ok()) {
    context()->DeadLetter(DeadLetterReason::kValidation, Message(s));
    return absl::OkStatus();
  }
  return Forward(record);
}

}  // namespace streammetrics
