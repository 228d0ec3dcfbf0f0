// The metric event model (reference/001 event schema, reference/002 MetricEvent).
//
// A MetricEvent is a *view*: every string field points into memory owned by the
// decoder that produced it (or by the caller that filled it), so decoding and passing
// an event down a processor chain allocates nothing. A view stays valid until the
// owner's next Decode() call; anything that must outlive the record (a store key, a
// dedupe id) is copied by whoever keeps it.
#ifndef STREAMMETRICS_OPERATORS_METRIC_EVENT_H_
#define STREAMMETRICS_OPERATORS_METRIC_EVENT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace streammetrics {

// The ten values of reference/002's MetricType, in that order.
enum class MetricType : uint8_t {
  kHttpRequest,
  kDatabaseQuery,
  kCacheHit,
  kCacheMiss,
  kExternalApiCall,
  kMessageQueuePublish,
  kMessageQueueConsume,
  kCustomCounter,
  kCustomGauge,
  kCustomHistogram,
};
inline constexpr int kMetricTypeCount = 10;

// "HTTP_REQUEST", ...; the wire spelling of each value.
std::string_view MetricTypeName(MetricType type);
// Exact, case-sensitive match of the wire spelling; nullopt for anything else.
std::optional<MetricType> ParseMetricType(std::string_view name);

struct Tag {
  std::string_view key;
  std::string_view value;
};

// A fixed-capacity list of string pairs (no heap). Decoders reject events with more
// than kCapacity entries in one map with a clear error rather than truncating.
class TagList {
 public:
  static constexpr size_t kCapacity = 32;

  // Returns false (and adds nothing) when full.
  bool Add(std::string_view key, std::string_view value) {
    if (size_ == kCapacity) return false;
    items_[size_++] = Tag{key, value};
    return true;
  }
  // Replaces the value of `key` if present, else adds it. Returns false when full.
  bool Set(std::string_view key, std::string_view value) {
    for (size_t i = 0; i < size_; ++i) {
      if (items_[i].key == key) {
        items_[i].value = value;
        return true;
      }
    }
    return Add(key, value);
  }
  // Linear scan: tag maps are small, and a scan over a few entries beats hashing.
  std::optional<std::string_view> Find(std::string_view key) const {
    for (size_t i = 0; i < size_; ++i) {
      if (items_[i].key == key) return items_[i].value;
    }
    return std::nullopt;
  }
  void Clear() { size_ = 0; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const Tag* begin() const { return items_.data(); }
  const Tag* end() const { return items_.data() + size_; }
  const Tag& operator[](size_t i) const { return items_[i]; }

 private:
  std::array<Tag, kCapacity> items_{};
  size_t size_ = 0;
};

struct MetricEvent {
  std::string_view event_id;
  std::string_view service_id;
  std::string_view instance_id;
  std::string_view metric_name;
  std::string_view unit;
  int64_t timestamp_ms = 0;
  double value = 0;
  MetricType metric_type = MetricType::kHttpRequest;
  // Presence of the fields validation requires; a decoder sets these for every field
  // it saw (strings are "present" when the key was there, even if blank).
  bool has_event_id = false;
  bool has_service_id = false;
  bool has_instance_id = false;
  bool has_metric_name = false;
  bool has_metric_type = false;
  bool has_value = false;
  bool has_timestamp = false;
  TagList tags;
  TagList metadata;
  // Fields added by the enrich operator (derived fields and lookup-table attributes),
  // addressable as group-by dimensions by name.
  TagList enriched;

  void Clear() { *this = MetricEvent{}; }
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_METRIC_EVENT_H_
