// The logical graph of processors and stores, and the fluent DSL that builds it.
//
// A Topology is a description: it is instantiated once per task (engine/task.h), which
// calls each node's factory and wires children to parents. Node and store names are
// deterministic — "<kind>-<n>" in creation order unless named — because they name
// stores and changelog topics, which must not change between runs of one application.
//
// The DSL reads like the pipeline it builds:
//
//   StreamsBuilder builder;
//   builder.Stream("metrics-events", EventFormat::kJson)
//       .Validate(rules)
//       .Enrich(enrich)
//       .Dedupe({.within_ms = 600'000})
//       .GroupBy({"serviceId", "metricName"})
//       .WindowedBy({WindowSpec::Tumbling("1m", 60'000), ...})
//       .Aggregate(aggregate_options, "metrics")
//       .ToWindowTopics();                      // each window to its WindowSpec::topic
//   absl::StatusOr<Topology> topology = builder.Build();
//
// Mistakes (an unknown dimension, a bad window) do not throw: the builder remembers
// the first error and Build() returns it.
#ifndef STREAMMETRICS_TOPOLOGY_TOPOLOGY_H_
#define STREAMMETRICS_TOPOLOGY_TOPOLOGY_H_

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "operators/aggregate_result.h"
#include "operators/dedupe.h"
#include "operators/enrich.h"
#include "operators/metric_event.h"
#include "operators/metric_event_codec.h"
#include "operators/processor.h"
#include "operators/repartition.h"
#include "operators/validate.h"
#include "operators/windowed_aggregate.h"
#include "statestore/state_store.h"

namespace streammetrics {


enum class StoreKind { kKeyValue, kWindow };

struct StoreDef {
  std::string name;
  StoreKind kind = StoreKind::kKeyValue;
  StoreType type = StoreType::kInMemory;
  // Window stores: how long a record stays needed (the longest window + its grace). A
  // window store deletes old windows with one DeleteBefore record, not a tombstone per
  // key, so its changelog topic must also delete by time (compact,delete), or compaction
  // alone would keep every pane forever. 0: compaction only.
  int64_t retention_ms = 0;
  // The sub-topology of the node that owns it (set by Build).
  int subtopology = 0;
};

struct NodeDef {
  std::string name;
  std::string kind;    // "source", "validate", "aggregate", "sink", ...
  std::string detail;  // one line for describe()
  std::vector<size_t> children;
  std::vector<std::string> stores;
  std::string topic;  // sources and sinks
  std::function<std::unique_ptr<ProcessorBase>()> factory;
  // Wires a child instance under its parent instance; set on every non-source node.
  std::function<absl::Status(ProcessorBase& parent, ProcessorBase& child)> connect;
  size_t parent = SIZE_MAX;
  // Aggregate nodes: their window definitions (sinks per window find them here).
  std::vector<WindowSpec> windows;
  // The sub-topology: the nodes a task instantiates together, connected without a topic
  // between them. A repartition ends one and starts the next (task ids
  // "<subtopology>_<partition>", as Kafka Streams').
  int subtopology = 0;
  // Sources and sinks of an internal topic: `topic` is then the name's suffix
  // ("<name>-repartition"), the application id its prefix (Topology::TopicOf).
  bool internal = false;
};

class Topology {
 public:
  const std::vector<NodeDef>& nodes() const { return nodes_; }
  const std::vector<StoreDef>& stores() const { return stores_; }
  // Topics by their full names, internal ones under `application_id` ("" leaves internal
  // topics out).
  std::vector<std::string> source_topics(std::string_view application_id = "") const;
  std::vector<std::string> sink_topics(std::string_view application_id = "") const;
  // The repartition topics of the topology, full names.
  std::vector<std::string> internal_topics(std::string_view application_id) const;
  // The full name of a source's or sink's topic.
  static std::string TopicOf(const NodeDef& node, std::string_view application_id);
  int subtopologies() const { return subtopologies_; }
  // The sub-topology whose source reads `topic` (full name), or -1.
  int SubtopologyOf(std::string_view topic, std::string_view application_id) const;
  // Whether sub-topology `sub` reads a repartition topic (its stream time is then the
  // upstream watermark: ProcessorContext::watermarked()).
  bool ReadsInternalTopic(int sub) const;
  bool HasStores(int sub) const;
  // A readable listing of sources, processors (with their stores) and sinks.
  std::string Describe() const;

 private:
  friend class StreamsBuilder;
  std::vector<NodeDef> nodes_;
  std::vector<StoreDef> stores_;
  int subtopologies_ = 0;
};

template <typename V>
class KStream;

// Serializes a WindowedAggregate as DESIGN.md's JSON, keyed by serviceId.
void SerializeAggregateJson(const Record<WindowedAggregate>& record, std::string* key,
                            std::string* value);
class KGroupedStream;
class TimeWindowedStream;

class StreamsBuilder {
 public:
  StreamsBuilder();

  // A stream of MetricEvents decoded from `topic`; undecodable records are
  // dead-lettered with reason `deserialization`.
  KStream<MetricEvent> Stream(const std::string& topic, EventFormat format,
                              DecodeLimits limits = {});

  // The built topology, or the first error the DSL calls met.
  absl::StatusOr<Topology> Build();

  // Low-level: adds a node under `parent` (SIZE_MAX for none); returns its index.
  size_t AddNode(NodeDef node, size_t parent);
  void AddStore(StoreDef store);
  std::string NextName(std::string_view kind, std::string_view given);
  void Fail(absl::Status status);
  // The windows of the nearest aggregate node at or above `node`, or nullptr.
  const std::vector<WindowSpec>* FindWindows(size_t node) const;
  bool failed() const { return !status_.ok(); }
  // A new sub-topology's number (sources start one).
  int NextSubtopology() { return next_subtopology_++; }

 private:
  Topology topology_;
  int next_subtopology_ = 0;
  absl::Status status_;
  int counter_ = 0;
};

// How a sink turns a record into bytes: fills *key and *value (cleared by the caller).
template <typename V>
using Serializer = std::function<void(const Record<V>&, std::string* key, std::string* value)>;

template <typename V>
class KStream {
 public:
  KStream(StreamsBuilder* builder, size_t node) : builder_(builder), node_(node) {}

  // A processor the caller writes: factory() returns a Transformer<V, Out>.
  template <typename Out>
  KStream<Out> Process(std::string kind, std::string name,
                       std::function<std::unique_ptr<Transformer<V, Out>>()> factory,
                       std::string detail = "", std::vector<std::string> stores = {}) {
    NodeDef node;
    node.kind = kind;
    node.name = builder_->NextName(kind, name);
    node.detail = std::move(detail);
    node.stores = std::move(stores);
    node.factory = [factory]() -> std::unique_ptr<ProcessorBase> { return factory(); };
    node.connect = &Connect;
    return KStream<Out>(builder_, builder_->AddNode(std::move(node), node_));
  }

  // Keeps records for which pred is true.
  KStream<V> Filter(std::function<bool(const Record<V>&)> pred, std::string name = "");

  // Sends every record to `topic`, serialized by `serializer`.
  void To(const std::string& topic, Serializer<V> serializer, std::string name = "");

  // --- Metric-event operators (C++20 constraints keep them off other streams). ---
  KStream<V> Validate(ValidationRules rules, std::string name = "")
    requires std::same_as<V, MetricEvent>;
  KStream<V> Enrich(EnrichOptions options, std::string name = "")
    requires std::same_as<V, MetricEvent>;
  KStream<V> Dedupe(DedupeOptions options, std::string name = "",
                    StoreType store = StoreType::kInMemory)
    requires std::same_as<V, MetricEvent>;
  KGroupedStream GroupBy(const std::vector<std::string>& dimensions)
    requires std::same_as<V, MetricEvent>;
  // Re-keys the stream by serviceId through the internal topic
  // `<application.id>-<name>-repartition` (operators/repartition.h): what follows is a new
  // sub-topology whose tasks see every event of a service, whatever partition it was
  // produced to. `idle_ms`: wall-clock silence after which a partition stops holding the
  // downstream stream time back (and the downstream task, silent that long, forwards the
  // events its merge holds). `idle_close_ms`: the aggregate's idle close — after that
  // much silence of live input the downstream stream time follows the wall clock; 0:
  // never. `max_stream_skew_ms`: an event further ahead of its partition's stream time is
  // dead-lettered (stream_skew) upstream, as the window operator does without a
  // repartition; 0: no bound.
  KStream<V> RepartitionByService(std::string name, int64_t idle_ms = 30'000,
                                  int64_t idle_close_ms = 0, int64_t max_stream_skew_ms = 0)
    requires std::same_as<V, MetricEvent>;
  // For input keyed by serviceId (no repartition): dead-letters a record whose key is not
  // its serviceId (reason key_mismatch).
  KStream<V> CheckKeyIsService(std::string name = "")
    requires std::same_as<V, MetricEvent>;

  // --- Aggregate-result operators. ---
  // Keeps the results of window `window_name` only.
  KStream<V> Window(const std::string& window_name)
    requires std::same_as<V, WindowedAggregate>;
  // Sends each result to its window's topic (WindowSpec::topic; windows without a
  // topic are not sent), as JSON keyed by serviceId.
  void ToWindowTopics()
    requires std::same_as<V, WindowedAggregate>;

  size_t node() const { return node_; }
  StreamsBuilder* builder() const { return builder_; }

  static absl::Status Connect(ProcessorBase& parent, ProcessorBase& child) {
    auto* out = dynamic_cast<HasOutput<V>*>(&parent);
    auto* in = dynamic_cast<Processor<V>*>(&child);
    if (out == nullptr || in == nullptr) {
      return absl::InternalError("topology: node types do not connect");
    }
    out->output().AddChild(in);
    return absl::OkStatus();
  }

 private:
  StreamsBuilder* builder_;
  size_t node_;
};

class KGroupedStream {
 public:
  KGroupedStream(StreamsBuilder* builder, size_t node, std::vector<FieldRef> dims)
      : builder_(builder), node_(node), dims_(std::move(dims)) {}
  TimeWindowedStream WindowedBy(std::vector<WindowSpec> windows);

 private:
  StreamsBuilder* builder_;
  size_t node_;
  std::vector<FieldRef> dims_;
};

class TimeWindowedStream {
 public:
  TimeWindowedStream(StreamsBuilder* builder, size_t node, std::vector<FieldRef> dims,
                     std::vector<WindowSpec> windows)
      : builder_(builder), node_(node), dims_(std::move(dims)), windows_(std::move(windows)) {}

  // options.group_by and options.windows are taken from the DSL chain; `name` names
  // the node and its window store ("<name>-store").
  KStream<WindowedAggregate> Aggregate(AggregateOptions options, std::string name = "",
                                       StoreType store = StoreType::kInMemory);

 private:
  StreamsBuilder* builder_;
  size_t node_;
  std::vector<FieldRef> dims_;
  std::vector<WindowSpec> windows_;
};

// ---- KStream member templates ----

namespace topology_internal {
// Non-template halves of the metric-event operators (topology.cc).
KStream<MetricEvent> AddValidate(StreamsBuilder* b, size_t parent, ValidationRules rules,
                                 std::string name);
KStream<MetricEvent> AddEnrich(StreamsBuilder* b, size_t parent, EnrichOptions options,
                               std::string name);
KStream<MetricEvent> AddDedupe(StreamsBuilder* b, size_t parent, DedupeOptions options,
                               std::string name, StoreType store);
KGroupedStream AddGroupBy(StreamsBuilder* b, size_t parent,
                          const std::vector<std::string>& dimensions);
KStream<MetricEvent> AddRepartition(StreamsBuilder* b, size_t parent, std::string name,
                                    int64_t idle_ms, int64_t idle_close_ms,
                                    int64_t max_stream_skew_ms);
KStream<MetricEvent> AddKeyCheck(StreamsBuilder* b, size_t parent, std::string name);
void AddWindowTopicSinks(StreamsBuilder* b, size_t parent);
}  // namespace topology_internal

template <typename V>
KStream<V> KStream<V>::Validate(ValidationRules rules, std::string name)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddValidate(builder_, node_, rules, std::move(name));
}

template <typename V>
KStream<V> KStream<V>::Enrich(EnrichOptions options, std::string name)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddEnrich(builder_, node_, std::move(options), std::move(name));
}

template <typename V>
KStream<V> KStream<V>::Dedupe(DedupeOptions options, std::string name, StoreType store)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddDedupe(builder_, node_, options, std::move(name), store);
}

template <typename V>
KGroupedStream KStream<V>::GroupBy(const std::vector<std::string>& dimensions)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddGroupBy(builder_, node_, dimensions);
}

template <typename V>
KStream<V> KStream<V>::RepartitionByService(std::string name, int64_t idle_ms,
                                            int64_t idle_close_ms, int64_t max_stream_skew_ms)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddRepartition(builder_, node_, std::move(name), idle_ms,
                                           idle_close_ms, max_stream_skew_ms);
}

template <typename V>
KStream<V> KStream<V>::CheckKeyIsService(std::string name)
  requires std::same_as<V, MetricEvent>
{
  return topology_internal::AddKeyCheck(builder_, node_, std::move(name));
}

template <typename V>
void KStream<V>::ToWindowTopics()
  requires std::same_as<V, WindowedAggregate>
{
  topology_internal::AddWindowTopicSinks(builder_, node_);
}

namespace topology_internal {

template <typename V>
class FilterProcessor final : public Transformer<V, V> {
 public:
  explicit FilterProcessor(std::function<bool(const Record<V>&)> pred) : pred_(std::move(pred)) {}
  absl::Status Process(const Record<V>& r) override {
    return pred_(r) ? this->Forward(r) : absl::OkStatus();
  }

 private:
  std::function<bool(const Record<V>&)> pred_;
};

template <typename V>
class SinkProcessor final : public Processor<V> {
 public:
  SinkProcessor(std::string topic, Serializer<V> serializer)
      : topic_(std::move(topic)), serializer_(std::move(serializer)) {}
  absl::Status Process(const Record<V>& r) override {
    key_.clear();
    value_.clear();
    serializer_(r, &key_, &value_);
    this->context()->Send(topic_, key_, value_, r.timestamp_ms);
    return absl::OkStatus();
  }

 private:
  std::string topic_;
  Serializer<V> serializer_;
  std::string key_;
  std::string value_;
};

}  // namespace topology_internal

template <typename V>
KStream<V> KStream<V>::Filter(std::function<bool(const Record<V>&)> pred, std::string name) {
  return Process<V>("filter", std::move(name), [pred]() {
    return std::make_unique<topology_internal::FilterProcessor<V>>(pred);
  });
}

template <typename V>
void KStream<V>::To(const std::string& topic, Serializer<V> serializer, std::string name) {
  NodeDef node;
  node.kind = "sink";
  node.name = builder_->NextName("sink", name);
  node.topic = topic;
  node.detail = "topic: " + topic;
  node.factory = [topic, serializer]() -> std::unique_ptr<ProcessorBase> {
    return std::make_unique<topology_internal::SinkProcessor<V>>(topic, serializer);
  };
  node.connect = &Connect;
  builder_->AddNode(std::move(node), node_);
}

template <typename V>
KStream<V> KStream<V>::Window(const std::string& window_name)
  requires std::same_as<V, WindowedAggregate>
{
  return Filter([window_name](const Record<V>& r) { return r.value->window->name == window_name; },
                "window-" + window_name);
}

}  // namespace streammetrics

#endif  // STREAMMETRICS_TOPOLOGY_TOPOLOGY_H_
