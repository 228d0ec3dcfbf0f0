#include "operators/enrich.h"

#include <charconv>

namespace streammetrics {

std::vector<std::string> EnrichOptions::AttributeNames() const {
  std::vector<std::string> names;
  if (derive_status_class) names.push_back("statusClass");
  if (derive_is_error) names.push_back("isError");
  auto add = [&](const Attributes& attrs) {
    for (const auto& [k, v] : attrs) {
      if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
    }
  };
  for (const auto& [key, attrs] : table) add(attrs);
  add(defaults);
  return names;
}

absl::StatusOr<Enricher> Enricher::Create(EnrichOptions options) {
  absl::StatusOr<FieldRef> key = FieldRef::Parse(options.lookup_key);
  if (!key.ok()) return key.status();
  Enricher e;
  e.options_ = std::move(options);
  e.lookup_key_ = *std::move(key);
  return e;
}

absl::Status Enricher::Enrich(MetricEvent* event) const {
  bool ok = true;
  if (options_.derive_status_class || options_.derive_is_error) {
    int code = 0;
    if (std::optional<std::string_view> s = event->tags.Find("statusCode")) {
      auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), code);
      if (ec != std::errc() || p != s->data() + s->size()) code = 0;
    }
    if (options_.derive_status_class && code >= 100 && code <= 599) {
      static constexpr std::string_view kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
      ok &= event->enriched.Set("statusClass", kClasses[code / 100 - 1]);
    }
    if (options_.derive_is_error) {
      bool error = code >= 500 || event->tags.Find("error") == std::optional<std::string_view>("true");
      ok &= event->enriched.Set("isError", error ? "true" : "false");
    }
  }
  if (!options_.table.empty() || !options_.defaults.empty()) {
    const EnrichOptions::Attributes* attrs = &options_.defaults;
    if (std::optional<std::string_view> key = lookup_key_.Get(*event)) {
      auto it = options_.table.find(*key);
      if (it != options_.table.end()) attrs = &it->second;
    }
    for (const auto& [k, v] : *attrs) ok &= event->enriched.Set(k, v);
  }
  if (!ok) return absl::InvalidArgumentError("enrich: too many enriched attributes");
  return absl::OkStatus();
}

absl::Status EnrichProcessor::Process(const Record<MetricEvent>& record) {
  if (absl::Status s = enricher_.Enrich(record.value); !s.ok()) {
    context()->DeadLetter(DeadLetterReason::kProcessing, Message(s));
    return absl::OkStatus();
  }
  return Forward(record);
}

}  // namespace streammetrics
