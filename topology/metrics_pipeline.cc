#include "operators/strings.h"
#include "topology/metrics_pipeline.h"

#include <algorithm>


namespace streammetrics {

PipelineConfig ReferencePipelineConfig() {
  PipelineConfig config;
  WindowSpec one = WindowSpec::Tumbling("1m", 60'000, 10'000);
  one.topic = "metrics-aggregated-1m";
  WindowSpec five = WindowSpec::Tumbling("5m", 300'000, 10'000);
  five.topic = "metrics-aggregated-5m";
  WindowSpec sliding = WindowSpec::Hopping("1m-10s", 60'000, 10'000, 10'000);
  sliding.topic = "metrics-aggregated-1m-10s";
  config.windows = {one, five, sliding};
  return config;
}

absl::StatusOr<Topology> BuildMetricsTopology(const PipelineConfig& config) {
  for (std::string_view required : {"serviceId", "metricName"}) {
    bool found = false;
    for (const std::string& d : config.group_by) {
      absl::StatusOr<FieldRef> ref = FieldRef::Parse(d);
      if (ref.ok() && ref->output_name() == required && ref->kind() != FieldRef::Kind::kTag &&
          ref->kind() != FieldRef::Kind::kMetadata) {
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          StrCat("aggregate.group_by: must include ", required,
                       " (aggregate results are keyed by serviceId and metricName)"));
    }
  }
  std::vector<std::string> enriched =
      config.enrich_enabled ? config.enrich.AttributeNames() : std::vector<std::string>{};
  std::vector<std::string> output_names;
  for (const std::string& d : config.group_by) {
    absl::StatusOr<FieldRef> ref = FieldRef::Parse(d);
    if (!ref.ok()) {
      return absl::InvalidArgumentError(StrCat("aggregate.group_by: ", ref.status().message()));
    }
    // Two dimensions of one name (serviceId twice, or tags.team and an enriched team)
    // would make results with a repeated field.
    if (std::find(output_names.begin(), output_names.end(), ref->output_name()) !=
        output_names.end()) {
      return absl::InvalidArgumentError(StrCat("aggregate.group_by: '", d, "' names the field ",
                                               ref->output_name(), " a second time"));
    }
    output_names.push_back(ref->output_name());
    if (ref->kind() == FieldRef::Kind::kEnriched &&
        std::find(enriched.begin(), enriched.end(), d) == enriched.end()) {
      return absl::InvalidArgumentError(StrCat(
          "aggregate.group_by: unknown field '", d,
          "' (not an event field, not tags.<key>/metadata.<key>, not set by enrich)"));
    }
  }

  if (config.enrich_enabled) {
    // The lookup runs after the derived fields are set, before the table's attributes:
    // it reads an event field, a tag, a metadata entry or a derived field.
    const std::string& name = config.enrich.lookup_key;
    absl::StatusOr<FieldRef> key = FieldRef::Parse(name);
    if (!key.ok()) {
      return absl::InvalidArgumentError(StrCat("enrich.lookup.key: ", key.status().message()));
    }
    const bool derived = (name == "statusClass" && config.enrich.derive_status_class) ||
                         (name == "isError" && config.enrich.derive_is_error);
    if (key->kind() == FieldRef::Kind::kEnriched && !derived) {
      return absl::InvalidArgumentError(
          StrCat("enrich.lookup.key: unknown field '", name,
                 "' (an event field such as serviceId, tags.<key>, metadata.<key>, or a "
                 "derived statusClass/isError)"));
    }
  }

  StreamsBuilder builder;
  KStream<MetricEvent> events =
      builder.Stream(config.input_topic, config.format, config.limits).Validate(config.validation,
                                                                                "validate");
  switch (config.keying) {
    case InputKeying::kAny:
      // Partitions that read nothing stop holding the others back after the idle period
      // (operators/repartition.h); with idle close disabled, after its default.
      // Stream skew is judged there, where a partition's stream time is (downstream the
      // windows follow the merged upstream time).
      events = events.RepartitionByService(
          "by-service", config.idle_close_ms > 0 ? config.idle_close_ms : 30'000,
          config.idle_close_ms, config.max_stream_skew_ms);
      break;
    case InputKeying::kByService:
      events = events.CheckKeyIsService("key-check");
      break;
    case InputKeying::kSingleTask:
      break;
  }
  if (config.enrich_enabled) events = events.Enrich(config.enrich, "enrich");
  if (config.dedupe_enabled) {
    DedupeOptions dedupe = config.dedupe;
    dedupe.max_stream_skew_ms = config.max_stream_skew_ms;  // moves with the windows' time
    events = events.Dedupe(dedupe, "dedupe", config.store);
  }

  AggregateOptions options;
  absl::StatusOr<std::vector<QuantileSpec>> quantiles = MakeQuantileSpecs(config.quantiles);
  if (!quantiles.ok()) {
    return absl::InvalidArgumentError(StrCat("aggregate.", quantiles.status().message()));
  }
  options.quantiles = *std::move(quantiles);
  options.compression = config.compression;
  options.exact_quantiles_up_to = config.exact_quantiles_up_to;
  options.late_to_dead_letter = config.late_to_dead_letter;
  options.idle_close_ms = config.idle_close_ms;
  options.max_stream_skew_ms = config.max_stream_skew_ms;
  events.GroupBy(config.group_by)
      .WindowedBy(config.windows)
      .Aggregate(options, "aggregate", config.store)
      .ToWindowTopics();
  return builder.Build();
}

}  // namespace streammetrics
