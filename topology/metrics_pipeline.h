// The flagship job: reference/001's metrics pipeline, built with the DSL from a
// PipelineConfig (apps/config.h fills one from YAML).
//
//   source(input, format) -> validate -> repartition by serviceId (InputKeying::kAny)
//     | key check (kByService) -> enrich -> dedupe -> groupBy(dims)
//     -> windows (tumbling/hopping, one aggregate node, stream slicing)
//     -> per window: to(window.topic) as JSON keyed by serviceId
#ifndef STREAMMETRICS_TOPOLOGY_METRICS_PIPELINE_H_
#define STREAMMETRICS_TOPOLOGY_METRICS_PIPELINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "topology/topology.h"

namespace streammetrics {

// How the input's producers key their events, which decides where they are aggregated.
enum class InputKeying {
  // Any keying (none, by instance, by service): events are re-keyed by serviceId through
  // the repartition topic `<application.id>-by-service-repartition`, so every event of a
  // service — and every copy of a duplicate — meets in one task. The default: exact
  // whatever the producers do.
  kAny,
  // Every producer keys by serviceId with the same partitioner (reference/000's do): no
  // repartition; a record whose key is not its serviceId is dead-lettered (key_mismatch).
  kByService,
  // One task sees all the input (offline `process`/`demo`, tests of a single task): neither.
  kSingleTask,
};

struct PipelineConfig {
  std::string application_id = "streammetrics";
  std::string input_topic = "metrics-events";
  std::string dead_letter_topic = "metrics-dead-letter";
  EventFormat format = EventFormat::kJson;
  InputKeying keying = InputKeying::kAny;
  DecodeLimits limits;
  ValidationRules validation;
  bool enrich_enabled = true;
  EnrichOptions enrich;
  bool dedupe_enabled = true;
  DedupeOptions dedupe;
  std::vector<std::string> group_by = {"serviceId", "metricName"};
  std::vector<WindowSpec> windows;
  std::vector<double> quantiles = {0.5, 0.95, 0.99};
  double compression = 100;
  // Panes and windows of at most this many values report exact quantiles.
  uint32_t exact_quantiles_up_to = 100;
  bool late_to_dead_letter = true;
  // Wall-clock idleness after which windows close anyway (★); 0 disables. Default 30 s.
  int64_t idle_close_ms = 30'000;
  // Records stamped further ahead of the aggregate's stream time are dead-lettered
  // (stream_skew); 0 disables. Default 1 day.
  int64_t max_stream_skew_ms = AggregateOptions::kDefaultMaxStreamSkewMs;
  StoreType store = StoreType::kInMemory;
};

// reference/001: tumbling 1m and 5m to metrics-aggregated-1m/-5m, and the "sliding
// 1 min / 10 s" hopping window to metrics-aggregated-1m-10s; grace 10 s; grouped by
// serviceId and metricName.
PipelineConfig ReferencePipelineConfig();

// InvalidArgument naming the setting when the configuration cannot make a topology:
// group_by must include serviceId and metricName (the aggregate record contract) and
// every other dimension must be an event field, a tag, or an attribute enrich sets.
absl::StatusOr<Topology> BuildMetricsTopology(const PipelineConfig& config);

}  // namespace streammetrics

#endif  // STREAMMETRICS_TOPOLOGY_METRICS_PIPELINE_H_
