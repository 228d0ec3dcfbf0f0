#include "operators/strings.h"
#include "topology/topology.h"

#include <algorithm>


namespace streammetrics {
namespace {

// Decodes raw bytes into a MetricEvent and forwards it with its event time.
class MetricEventSource final : public RawSource, public HasOutput<MetricEvent> {
 public:
  MetricEventSource(EventFormat format, DecodeLimits limits)
      : decoder_(NewMetricEventDecoder(format, limits)) {}

  absl::Status ProcessSource(const SourceRecord& record) override {
    absl::Status s = decoder_->Decode(record.value, &event_);
    if (!s.ok()) {
      context()->DeadLetter(DeadLetterReason::kDeserialization, Message(s));
      return absl::OkStatus();
    }
    // An event without a timestamp still flows (validate rejects it); it must not move
    // stream time.
    int64_t ts = event_.has_timestamp ? event_.timestamp_ms : record.timestamp_ms;
    if (event_.has_timestamp) context()->ObserveEventTime(ts);
    return Forward(Record<MetricEvent>{record.key, &event_, ts});
  }

 private:
  std::unique_ptr<MetricEventDecoder> decoder_;
  MetricEvent event_;
};

std::string_view FormatName(EventFormat f) {
  return f == EventFormat::kJson ? "json" : "protobuf";
}

std::string DurationText(int64_t ms) {
  if (ms % 3'600'000 == 0 && ms != 0) return StrCat(ms / 3'600'000, "h");
  if (ms % 60'000 == 0 && ms != 0) return StrCat(ms / 60'000, "m");
  if (ms % 1000 == 0 && ms != 0) return StrCat(ms / 1000, "s");
  return StrCat(ms, "ms");
}

}  // namespace

std::string Topology::TopicOf(const NodeDef& node, std::string_view application_id) {
  return node.internal ? StrCat(application_id, "-", node.topic) : node.topic;
}

std::vector<std::string> Topology::source_topics(std::string_view application_id) const {
  std::vector<std::string> topics;
  for (const NodeDef& n : nodes_) {
    if (n.kind != "source" || (n.internal && application_id.empty())) continue;
    topics.push_back(TopicOf(n, application_id));
  }
  return topics;
}

std::vector<std::string> Topology::sink_topics(std::string_view application_id) const {
  std::vector<std::string> topics;
  for (const NodeDef& n : nodes_) {
    if (n.kind != "sink" || (n.internal && application_id.empty())) continue;
    std::string t = TopicOf(n, application_id);
    if (std::find(topics.begin(), topics.end(), t) == topics.end()) topics.push_back(std::move(t));
  }
  return topics;
}

std::vector<std::string> Topology::internal_topics(std::string_view application_id) const {
  std::vector<std::string> topics;
  for (const NodeDef& n : nodes_) {
    if (n.kind == "source" && n.internal) topics.push_back(TopicOf(n, application_id));
  }
  return topics;
}

int Topology::SubtopologyOf(std::string_view topic, std::string_view application_id) const {
  for (const NodeDef& n : nodes_) {
    if (n.kind == "source" && TopicOf(n, application_id) == topic) return n.subtopology;
  }
  return -1;
}

bool Topology::ReadsInternalTopic(int sub) const {
  for (const NodeDef& n : nodes_) {
    if (n.kind == "source" && n.subtopology == sub && n.internal) return true;
  }
  return false;
}

bool Topology::HasStores(int sub) const {
  for (const StoreDef& d : stores_) {
    if (d.subtopology == sub) return true;
  }
  return false;
}

std::string Topology::Describe() const {
  std::string out = "Topology\n";
  for (int sub = 0; sub < subtopologies_; ++sub) {
  if (subtopologies_ > 1) StrAppend(&out, " Sub-topology: ", sub, "\n");
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const NodeDef& n = nodes_[i];
    if (n.subtopology != sub) continue;
    StrAppend(&out, "  ", n.kind == "source" ? "Source: " : n.kind == "sink" || n.kind == "repartition" ? "Sink: "
                                                                                   : "Processor: ",
                    n.name);
    if (!n.detail.empty()) StrAppend(&out, " (", n.detail, ")");
    out += "\n";
    if (!n.stores.empty()) StrAppend(&out, "    stores: ", StrJoin(n.stores, ", "), "\n");
    if (!n.children.empty()) {
      std::vector<std::string> names;
      for (size_t c : n.children) names.push_back(nodes_[c].name);
      StrAppend(&out, "    --> ", StrJoin(names, ", "), "\n");
    }
    if (n.parent != SIZE_MAX) StrAppend(&out, "    <-- ", nodes_[n.parent].name, "\n");
  }
  }
  if (!stores_.empty()) {
    out += "Stores\n";
    for (const StoreDef& s : stores_) {
      StrAppend(&out, "  ", s.name, " (",
                      s.kind == StoreKind::kWindow ? "window" : "key-value", ", ",
                      s.type == StoreType::kInMemory ? "memory" : "rocksdb", ")\n");
    }
  }
  return out;
}

StreamsBuilder::StreamsBuilder() = default;

std::string StreamsBuilder::NextName(std::string_view kind, std::string_view given) {
  ++counter_;
  if (!given.empty()) return std::string(given);
  return StrCat(kind, "-", counter_);
}

void StreamsBuilder::Fail(absl::Status status) {
  if (status_.ok()) status_ = std::move(status);
}

size_t StreamsBuilder::AddNode(NodeDef node, size_t parent) {
  for (const NodeDef& n : topology_.nodes_) {
    if (n.name == node.name) {
      Fail(absl::InvalidArgumentError(StrCat("topology: node name '", node.name,
                                                   "' used twice")));
    }
  }
  size_t index = topology_.nodes_.size();
  node.parent = parent;
  if (parent != SIZE_MAX) node.subtopology = topology_.nodes_[parent].subtopology;
  topology_.nodes_.push_back(std::move(node));
  if (parent != SIZE_MAX) topology_.nodes_[parent].children.push_back(index);
  return index;
}

void StreamsBuilder::AddStore(StoreDef store) {
  for (const StoreDef& s : topology_.stores_) {
    if (s.name == store.name) {
      Fail(absl::InvalidArgumentError(StrCat("topology: store name '", store.name,
                                                   "' used twice")));
    }
  }
  topology_.stores_.push_back(std::move(store));
}

KStream<MetricEvent> StreamsBuilder::Stream(const std::string& topic, EventFormat format,
                                            DecodeLimits limits) {
  NodeDef node;
  node.kind = "source";
  node.name = NextName("source", "source-" + topic);
  node.topic = topic;
  node.detail = StrCat("topic: ", topic, ", format: ", FormatName(format));
  node.factory = [format, limits]() -> std::unique_ptr<ProcessorBase> {
    return std::make_unique<MetricEventSource>(format, limits);
  };
  if (topic.empty()) Fail(absl::InvalidArgumentError("source: topic must not be empty"));
  node.subtopology = NextSubtopology();
  return KStream<MetricEvent>(this, AddNode(std::move(node), SIZE_MAX));
}

const std::vector<WindowSpec>* StreamsBuilder::FindWindows(size_t node) const {
  while (node != SIZE_MAX) {
    const NodeDef& n = topology_.nodes_[node];
    if (!n.windows.empty()) return &n.windows;
    node = n.parent;
  }
  return nullptr;
}

absl::StatusOr<Topology> StreamsBuilder::Build() {
  if (!status_.ok()) return status_;
  if (topology_.source_topics().empty()) {
    return absl::InvalidArgumentError("topology: no source");
  }
  for (StoreDef& store : topology_.stores_) {
    for (const NodeDef& n : topology_.nodes_) {
      if (std::find(n.stores.begin(), n.stores.end(), store.name) != n.stores.end()) {
        store.subtopology = n.subtopology;
      }
    }
  }
  topology_.subtopologies_ = next_subtopology_;
  return topology_;
}

namespace topology_internal {

KStream<MetricEvent> AddValidate(StreamsBuilder* b, size_t parent, ValidationRules rules,
                                 std::string name) {
  return KStream<MetricEvent>(b, parent).Process<MetricEvent>(
      "validate", std::move(name),
      [rules]() { return std::make_unique<ValidateProcessor>(rules); },
      StrCat("value ", rules.value_min_inclusive ? ">= " : "> ", rules.value_min,
                   ", future skew <= ", DurationText(rules.max_future_skew_ms)));
}

KStream<MetricEvent> AddEnrich(StreamsBuilder* b, size_t parent, EnrichOptions options,
                               std::string name) {
  absl::StatusOr<Enricher> enricher = Enricher::Create(options);
  if (!enricher.ok()) b->Fail(enricher.status());
  std::string detail = StrCat("adds: ", StrJoin(options.AttributeNames(), ", "));
  auto shared = std::make_shared<Enricher>(enricher.ok() ? *std::move(enricher) : Enricher());
  return KStream<MetricEvent>(b, parent).Process<MetricEvent>(
      "enrich", std::move(name), [shared]() { return std::make_unique<EnrichProcessor>(*shared); },
      std::move(detail));
}

KStream<MetricEvent> AddDedupe(StreamsBuilder* b, size_t parent, DedupeOptions options,
                               std::string name, StoreType store) {
  if (options.within_ms <= 0) b->Fail(absl::InvalidArgumentError("dedupe: within must be > 0"));
  std::string node_name = b->NextName("dedupe", name);
  std::string store_name = node_name + "-store";
  b->AddStore(StoreDef{store_name, StoreKind::kKeyValue, store});
  return KStream<MetricEvent>(b, parent).Process<MetricEvent>(
      "dedupe", node_name,
      [options, store_name]() { return std::make_unique<DedupeProcessor>(options, store_name); },
      StrCat("by eventId within ", DurationText(options.within_ms)), {store_name});
}

KGroupedStream AddGroupBy(StreamsBuilder* b, size_t parent,
                          const std::vector<std::string>& dimensions) {
  std::vector<FieldRef> dims;
  for (const std::string& d : dimensions) {
    absl::StatusOr<FieldRef> ref = FieldRef::Parse(d);
    if (!ref.ok()) {
      b->Fail(absl::InvalidArgumentError(StrCat("group_by: ", ref.status().message())));
      continue;
    }
    dims.push_back(*std::move(ref));
  }
  if (dimensions.empty()) b->Fail(absl::InvalidArgumentError("group_by: no dimensions"));
  return KGroupedStream(b, parent, std::move(dims));
}

KStream<MetricEvent> AddRepartition(StreamsBuilder* b, size_t parent, std::string name,
                                    int64_t idle_ms, int64_t idle_close_ms,
                                    int64_t max_stream_skew_ms) {
  if (name.empty()) b->Fail(absl::InvalidArgumentError("repartition: a name is needed"));
  if (idle_ms < 0) b->Fail(absl::InvalidArgumentError("repartition: idle must be >= 0"));
  if (idle_close_ms < 0) {
    b->Fail(absl::InvalidArgumentError("repartition: idle close must be >= 0"));
  }
  if (max_stream_skew_ms < 0) {
    b->Fail(absl::InvalidArgumentError("repartition: max stream skew must be >= 0"));
  }
  const std::string suffix = StrCat(name, "-repartition");
  const std::string store_name = StrCat(name, "-repartition-state");
  b->AddStore(StoreDef{store_name, StoreKind::kKeyValue, StoreType::kInMemory});
  NodeDef sink;
  sink.kind = "repartition";
  sink.name = b->NextName("repartition", StrCat(name, "-repartition-sink"));
  sink.topic = suffix;
  sink.internal = true;
  sink.detail = StrCat("topic: <application.id>-", suffix, ", keyed by serviceId, watermarks");
  sink.stores = {store_name};
  RepartitionOptions options{
      .name = name, .idle_ms = idle_ms, .max_stream_skew_ms = max_stream_skew_ms};
  sink.factory = [options, store_name]() -> std::unique_ptr<ProcessorBase> {
    return std::make_unique<RepartitionSinkProcessor>(options, store_name);
  };
  sink.connect = &KStream<MetricEvent>::Connect;
  b->AddNode(std::move(sink), parent);

  // The downstream end's positions in its ordered merge of the upstream partitions.
  const std::string merge_store = StrCat(name, "-repartition-merge");
  b->AddStore(StoreDef{merge_store, StoreKind::kKeyValue, StoreType::kInMemory});
  NodeDef source;
  source.kind = "source";
  source.name = b->NextName("source", StrCat(name, "-repartition-source"));
  source.topic = suffix;
  source.internal = true;
  source.detail = StrCat("topic: <application.id>-", suffix,
                         ", upstream partitions merged in stream-time order");
  source.stores = {merge_store};
  source.factory = [merge_store, idle_ms, idle_close_ms]() -> std::unique_ptr<ProcessorBase> {
    return std::make_unique<RepartitionSourceProcessor>(merge_store, idle_ms, idle_close_ms);
  };
  source.subtopology = b->NextSubtopology();
  return KStream<MetricEvent>(b, b->AddNode(std::move(source), SIZE_MAX));
}

KStream<MetricEvent> AddKeyCheck(StreamsBuilder* b, size_t parent, std::string name) {
  return KStream<MetricEvent>(b, parent).Process<MetricEvent>(
      "key-check", std::move(name), []() { return std::make_unique<KeyCheckProcessor>(); },
      "key must be the serviceId, else dead letter key_mismatch");
}

void AddWindowTopicSinks(StreamsBuilder* b, size_t parent) {
  const std::vector<WindowSpec>* windows = b->FindWindows(parent);
  if (windows == nullptr) {
    b->Fail(absl::InvalidArgumentError("ToWindowTopics: no aggregate upstream"));
    return;
  }
  for (const WindowSpec& w : *windows) {
    if (w.topic.empty()) continue;
    KStream<WindowedAggregate>(b, parent).Window(w.name).To(w.topic, &SerializeAggregateJson,
                                                            "sink-" + w.name);
  }
}

}  // namespace topology_internal

void SerializeAggregateJson(const Record<WindowedAggregate>& record, std::string* key,
                            std::string* value) {
  AppendAggregateKey(*record.value, key);
  AppendAggregateJson(*record.value, value);
}

KStream<WindowedAggregate> TimeWindowedStream::Aggregate(AggregateOptions options,
                                                         std::string name, StoreType store) {
  options.group_by = dims_;
  options.windows = windows_;
  if (options.quantiles.empty()) options.quantiles = *MakeQuantileSpecs({0.5, 0.95, 0.99});
  if (absl::Status s = options.Validate(); !s.ok()) builder_->Fail(s);
  std::string node_name = builder_->NextName("aggregate", name);
  std::string store_name = node_name + "-store";
  int64_t retention_ms = 0;
  for (const WindowSpec& w : windows_) retention_ms = std::max(retention_ms, w.size_ms + w.grace_ms);
  builder_->AddStore(StoreDef{store_name, StoreKind::kWindow, store, retention_ms});
  std::vector<std::string> dim_names, window_names, quantile_names;
  for (const FieldRef& d : dims_) dim_names.push_back(d.config_name());
  for (const WindowSpec& w : windows_) {
    window_names.push_back(StrCat(
        w.name, "=", w.tumbling() ? "tumbling " : "hopping ", DurationText(w.size_ms),
        w.tumbling() ? "" : "/" + DurationText(w.advance_ms), " grace ", DurationText(w.grace_ms),
        w.emit == EmitMode::kFinal ? "" : " emit-on-update"));
  }
  for (const QuantileSpec& q : options.quantiles) quantile_names.push_back(q.name);
  NodeDef node;
  node.kind = "aggregate";
  node.name = node_name;
  node.detail = StrCat("by [", StrJoin(dim_names, ", "), "] windows [",
                             StrJoin(window_names, ", "), "] pane ",
                             DurationText(PaneSize(windows_)), ", count sum min max avg rate ",
                             StrJoin(quantile_names, " "));
  node.stores = {store_name};
  node.windows = windows_;
  node.factory = [options, store_name]() -> std::unique_ptr<ProcessorBase> {
    return std::make_unique<WindowedAggregateProcessor>(options, store_name);
  };
  node.connect = &KStream<MetricEvent>::Connect;
  return KStream<WindowedAggregate>(builder_, builder_->AddNode(std::move(node), node_));
}

TimeWindowedStream KGroupedStream::WindowedBy(std::vector<WindowSpec> windows) {
  if (absl::Status s = ValidateWindowSpecs(windows); !s.ok()) builder_->Fail(s);
  return TimeWindowedStream(builder_, node_, dims_, std::move(windows));
}

}  // namespace streammetrics
