// enrich: derived fields and a lookup table, written into MetricEvent::enriched where
// group-by dimensions and later operators find them by name.
//
// Derived fields (each optional):
//   statusClass  "1xx".."5xx" from tags.statusCode (absent when the code is not 100-599)
//   isError      "true" when tags.statusCode >= 500 or tags.error == "true", else "false"
// Lookup: the value of `lookup_key` (default serviceId) selects a row of attributes
// (e.g. team, tier, region); keys absent from the table get `defaults`.
#ifndef STREAMMETRICS_OPERATORS_ENRICH_H_
#define STREAMMETRICS_OPERATORS_ENRICH_H_

#include <string>
#include <utility>
#include <vector>

#include "operators/strings.h"
#include "operators/dimension.h"
#include "operators/processor.h"

namespace streammetrics {

struct EnrichOptions {
  using Attributes = std::vector<std::pair<std::string, std::string>>;
  bool derive_status_class = true;
  bool derive_is_error = true;
  std::string lookup_key = "serviceId";
  StringMap<Attributes> table;
  Attributes defaults;

  // The attribute names this configuration can set (for checking group-by dimensions).
  std::vector<std::string> AttributeNames() const;
};

// Adds the attributes to event->enriched. Fails (InvalidArgument) only when the event
// would carry more than TagList::kCapacity enriched attributes.
class Enricher {
 public:
  static absl::StatusOr<Enricher> Create(EnrichOptions options);
  absl::Status Enrich(MetricEvent* event) const;

 private:
  EnrichOptions options_;
  FieldRef lookup_key_;
};

class EnrichProcessor final : public Transformer<MetricEvent, MetricEvent> {
 public:
  explicit EnrichProcessor(Enricher enricher) : enricher_(std::move(enricher)) {}
  absl::Status Process(const Record<MetricEvent>& record) override;

 private:
  Enricher enricher_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_ENRICH_H_
