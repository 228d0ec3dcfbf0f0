#include "operators/strings.h"
#include "operators/dimension.h"

#include <deque>


namespace streammetrics {
namespace {

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
    for (size_t nul; (nul = v.find('\0')) != std::string_view::npos; v.remove_prefix(nul + 1)) {
      out->append(v.data(), nul);
      out->append("\0\xff", 2);
    }
    out->append(v.data(), v.size());
    out->append("\0\x01", 2);
  }
}

bool DecodeGroupKey(std::string_view key, size_t expected, std::vector<std::string_view>* out) {
  // Values without an escaped 0x00 decode to views into key; the rare value holding a
  // 0x00 byte is rebuilt into per-thread storage that lives until the next call.
  thread_local std::deque<std::string> unescaped;  // stable addresses on push_back
  unescaped.clear();
  out->clear();
  while (!key.empty()) {
    size_t end = key.find('\0');
    if (end == std::string_view::npos || end + 1 >= key.size()) return false;
    if (key[end + 1] == '\x01') {
      out->push_back(key.substr(0, end));
      key.remove_prefix(end + 2);
      continue;
    }
    std::string value;
    while (true) {
      end = key.find('\0');
      if (end == std::string_view::npos || end + 1 >= key.size()) return false;
      value.append(key.data(), end);
      char marker = key[end + 1];
      key.remove_prefix(end + 2);
      if (marker == '\x01') break;
      if (marker != '\xff') return false;
      value.push_back('\0');
    }
    unescaped.push_back(std::move(value));
    out->push_back(std::string_view(unescaped.back()));
  }
  return out->size() == expected;
}

}  // namespace streammetrics
