#include "operators/metric_event.h"

namespace streammetrics {
namespace {

constexpr std::array<std::string_view, kMetricTypeCount> kMetricTypeNames = {
    "HTTP_REQUEST",          "DATABASE_QUERY",        "CACHE_HIT",      "CACHE_MISS",
    "EXTERNAL_API_CALL",     "MESSAGE_QUEUE_PUBLISH", "MESSAGE_QUEUE_CONSUME",
    "CUSTOM_COUNTER",        "CUSTOM_GAUGE",          "CUSTOM_HISTOGRAM",
};

}  // namespace

std::string_view MetricTypeName(MetricType type) {
  return kMetricTypeNames[static_cast<size_t>(type)];
}

std::optional<MetricType> ParseMetricType(std::string_view name) {
  for (size_t i = 0; i < kMetricTypeNames.size(); ++i) {
    if (kMetricTypeNames[i] == name) return static_cast<MetricType>(i);
  }
  return std::nullopt;
}

}  // namespace streammetrics
