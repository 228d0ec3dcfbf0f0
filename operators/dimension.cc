#include "operators/strings.h"
#include "operators/dimension.h"


namespace streammetrics {
namespace {

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool ReadVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in->empty(); shift += 7) {
    uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

struct NamedField {
  std::string_view camel;
  std::string_view snake;
  FieldRef::Kind kind;
};
constexpr NamedField kEventFields[] = {
    {"serviceId", "service_id", FieldRef::Kind::kServiceId},
    {"instanceId", "instance_id", FieldRef::Kind::kInstanceId},
    {"metricName", "metric_name", FieldRef::Kind::kMetricName},
    {"metricType", "metric_type", FieldRef::Kind::kMetricType},
    {"unit", "unit", FieldRef::Kind::kUnit},
};

}  // namespace

absl::StatusOr<FieldRef> FieldRef::Parse(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("empty field name");
  FieldRef ref;
  ref.config_name_ = std::string(name);
  for (const NamedField& f : kEventFields) {
    if (name == f.camel || name == f.snake) {
      ref.kind_ = f.kind;
      ref.output_name_ = std::string(f.camel);
      return ref;
    }
  }
  for (auto [prefix, kind] : {std::pair<std::string_view, Kind>{"tags.", Kind::kTag},
                              std::pair<std::string_view, Kind>{"metadata.", Kind::kMetadata}}) {
    if (StartsWith(name, prefix)) {
      std::string_view key = name.substr(prefix.size());
      if (key.empty()) {
        return absl::InvalidArgumentError("field '" + std::string(name) + "' names no key");
      }
      ref.kind_ = kind;
      ref.key_ = std::string(key);
      ref.output_name_ = std::string(key);
      return ref;
    }
  }
  ref.kind_ = Kind::kEnriched;
  ref.key_ = std::string(name);
  ref.output_name_ = std::string(name);
  return ref;
}

std::optional<std::string_view> FieldRef::Get(const MetricEvent& event) const {
  switch (kind_) {
    case Kind::kServiceId:
      return event.has_service_id ? std::optional(event.service_id) : std::nullopt;
    case Kind::kInstanceId:
      return event.has_instance_id ? std::optional(event.instance_id) : std::nullopt;
    case Kind::kMetricName:
      return event.has_metric_name ? std::optional(event.metric_name) : std::nullopt;
    case Kind::kMetricType:
      return event.has_metric_type ? std::optional(MetricTypeName(event.metric_type))
                                   : std::nullopt;
    case Kind::kUnit:
      return event.unit.empty() ? std::nullopt : std::optional(event.unit);
    case Kind::kTag:
      return event.tags.Find(key_);
    case Kind::kMetadata:
      return event.metadata.Find(key_);
    case Kind::kEnriched:
      return event.enriched.Find(key_);
  }
  return std::nullopt;
}

void AppendGroupKey(const std::vector<FieldRef>& dims, const MetricEvent& event,
                    std::string* out) {
  for (const FieldRef& dim : dims) {
    std::string_view v = dim.Get(event).value_or(std::string_view());
    AppendVarint(v.size(), out);
    out->append(v.data(), v.size());
  }
}

bool DecodeGroupKey(std::string_view key, size_t expected, std::vector<std::string_view>* out) {
  out->clear();
  while (!key.empty()) {
    uint64_t len;
    if (!ReadVarint(&key, &len) || len > key.size()) return false;
    out->push_back(key.substr(0, len));
    key.remove_prefix(len);
  }
  return out->size() == expected;
}

}  // namespace streammetrics
