// Fields of a MetricEvent addressable by name (group-by dimensions, lookup keys), and
// the encoding of a group key built from several of them.
#ifndef STREAMMETRICS_OPERATORS_DIMENSION_H_
#define STREAMMETRICS_OPERATORS_DIMENSION_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "operators/metric_event.h"

namespace streammetrics {

// A reference to one field, resolved once from its configured name:
//   serviceId, instanceId, metricName, metricType, unit  — the event's own fields
//   tags.<key>, metadata.<key>                            — entries of those maps
//   any other name                                        — an attribute set by enrich
// Snake_case spellings of the event fields (service_id, ...) are accepted too.
class FieldRef {
 public:
  enum class Kind { kServiceId, kInstanceId, kMetricName, kMetricType, kUnit, kTag, kMetadata,
                    kEnriched };

  // InvalidArgument for an empty name or an empty map key ("tags.").
  static absl::StatusOr<FieldRef> Parse(std::string_view name);

  // The field's value in event, or nullopt when the event lacks it.
  std::optional<std::string_view> Get(const MetricEvent& event) const;

  Kind kind() const { return kind_; }
  // The name as output (camelCase for event fields, the map key for tags/metadata,
  // the attribute name for enriched fields).
  const std::string& output_name() const { return output_name_; }
  const std::string& config_name() const { return config_name_; }

 private:
  Kind kind_ = Kind::kServiceId;
  std::string key_;  // map key or attribute name
  std::string output_name_;
  std::string config_name_;
};

// Group keys: each dimension's value with every 0x00 byte written as 0x00 0xFF, followed
// by the terminator 0x00 0x01. Unambiguous for any bytes, and order-preserving: keys
// compare bytewise as their value tuples compare lexicographically (so results emit in
// a natural order and a sorted store can range-scan by leading dimensions). A missing
// value encodes as the empty string.
void AppendGroupKey(const std::vector<FieldRef>& dims, const MetricEvent& event,
                    std::string* out);
// Splits a group key into its dimension values (views into key). False when the key is
// malformed or does not hold exactly `expected` values.
bool DecodeGroupKey(std::string_view key, size_t expected, std::vector<std::string_view>* out);

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_DIMENSION_H_
