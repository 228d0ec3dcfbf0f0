#include "engine/topology_test_driver.h"

#include <chrono>

namespace streammetrics {

std::optional<std::string> OutputRecord::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return std::nullopt;
}

class TopologyTestDriver::Collector final : public RecordCollector {
 public:
  void Send(std::string_view topic, std::string_view key, std::string_view value,
            int64_t timestamp_ms, std::span<const streammetrics::Header> headers) override {
    OutputRecord r{std::string(topic), std::string(key), std::string(value), timestamp_ms, {}};
    for (const streammetrics::Header& h : headers) r.headers.emplace_back(h.key, h.value);
    auto it = internal.find(topic);
    if (it != internal.end()) {
      pending.emplace_back(it->second, std::move(r));
      return;
    }
    records.push_back(std::move(r));
  }
  absl::Status Flush() override { return absl::OkStatus(); }

  std::deque<OutputRecord> records;
  StringMap<int> internal;  // repartition topic -> the sub-topology reading it
  std::deque<std::pair<int, OutputRecord>> pending;
  StringMap<int64_t> offsets;
};

TopologyTestDriver::~TopologyTestDriver() = default;

absl::StatusOr<std::unique_ptr<TopologyTestDriver>> TopologyTestDriver::Create(
    const Topology& topology, Options options) {
  std::unique_ptr<TopologyTestDriver> driver(new TopologyTestDriver());
  driver->options_ = options;
  driver->wall_clock_ = std::make_shared<int64_t>(
      options.wall_clock_ms.value_or(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count()));
  driver->collector_ = std::make_unique<Collector>();
  for (const std::string& t : topology.internal_topics(options.application_id)) {
    driver->collector_->internal[t] = topology.SubtopologyOf(t, options.application_id);
  }
  for (const NodeDef& n : topology.nodes()) {
    if (n.kind == "source") {
      driver->source_sub_[Topology::TopicOf(n, options.application_id)] = n.subtopology;
    }
  }
  const int subtopologies = std::max(1, topology.subtopologies());
  for (int sub = 0; sub < subtopologies; ++sub) {
  TaskConfig config;
  config.subtopology = sub;
  config.input_partitions = options.input_partitions;
  config.application_id = options.application_id;
  config.dead_letter_topic = options.dead_letter_topic;
  config.dead_letter_max_bytes = options.dead_letter_max_bytes;
  config.state_dir = options.state_dir;
  if (sub > 0 && !config.state_dir.empty()) config.state_dir += "/" + TaskId(sub, 0);
  config.cache_budget = options.cache_budget;
  config.rocksdb = options.rocksdb;
  config.wall_clock = [clock = driver->wall_clock_]() { return *clock; };
  absl::StatusOr<std::unique_ptr<Task>> task =
      Task::Create(topology, std::move(config), driver->collector_.get());
  if (!task.ok()) return task.status();
  driver->tasks_.push_back(*std::move(task));
  }
  return driver;
}

absl::Status TopologyTestDriver::Drain() {
  while (!collector_->pending.empty()) {
    auto [sub, r] = std::move(collector_->pending.front());
    collector_->pending.pop_front();
    SourceRecord record;
    record.topic = r.topic;
    record.partition = 0;
    record.offset = collector_->offsets[r.topic]++;
    record.timestamp_ms = r.timestamp_ms;
    record.key = r.key;
    record.value = r.value;
    if (absl::Status s = tasks_[sub]->Process(record); !s.ok()) return s;
  }
  return absl::OkStatus();
}

StateStore* TopologyTestDriver::GetStateStore(std::string_view name) {
  for (auto& t : tasks_) {
    if (StateStore* s = t->GetStateStore(name)) return s;
  }
  return nullptr;
}

const TaskCounters& TopologyTestDriver::counters() const {
  summed_ = TaskCounters{};
  for (const auto& t : tasks_) {
    const TaskCounters& c = t->counters();
    summed_.records_read += c.records_read;
    summed_.records_processed += c.records_processed;
    for (int i = 0; i < kDeadLetterReasonCount; ++i) summed_.dead_letters[i] += c.dead_letters[i];
    summed_.duplicates_dropped += c.duplicates_dropped;
    summed_.dedupe_ids_evicted += c.dedupe_ids_evicted;
    summed_.late_dropped += c.late_dropped;
    summed_.late_window_updates += c.late_window_updates;
    summed_.windows_emitted += c.windows_emitted;
    summed_.records_sent += c.records_sent;
  }
  return summed_;
}

SourceRecord TopologyTestDriver::NextRecord(std::string_view topic, std::string_view key,
                                            std::string_view value,
                                            std::optional<int64_t> timestamp_ms, int* sub) {
  SourceRecord record;
  record.topic = topic;
  record.partition = 0;
  record.offset = next_offset_[topic]++;
  record.timestamp_ms = timestamp_ms.value_or(*wall_clock_);
  record.key = key;
  record.value = value;
  auto it = source_sub_.find(topic);
  *sub = it == source_sub_.end() ? 0 : it->second;
  return record;
}

absl::Status TopologyTestDriver::CountRecord() {
  if (options_.commit_every_records > 0 && ++since_commit_ >= options_.commit_every_records) {
    return Commit();
  }
  return absl::OkStatus();
}

absl::Status TopologyTestDriver::PipeInput(std::string_view topic, std::string_view key,
                                           std::string_view value,
                                           std::optional<int64_t> timestamp_ms) {
  int sub = 0;
  const SourceRecord record = NextRecord(topic, key, value, timestamp_ms, &sub);
  if (absl::Status s = tasks_[sub]->Process(record); !s.ok()) return s;
  if (absl::Status s = Drain(); !s.ok()) return s;
  return CountRecord();
}

absl::Status TopologyTestDriver::PipeUnprocessed(std::string_view topic, std::string_view key,
                                                 std::string_view value, DeadLetterReason reason,
                                                 std::string_view error,
                                                 std::string_view truncated,
                                                 std::optional<int64_t> timestamp_ms) {
  int sub = 0;
  const SourceRecord record = NextRecord(topic, key, value, timestamp_ms, &sub);
  if (absl::Status s = tasks_[sub]->DeadLetterUnprocessed(record, reason, error, truncated);
      !s.ok()) {
    return s;
  }
  return CountRecord();
}

absl::Status TopologyTestDriver::AdvanceWallClock(int64_t delta_ms) {
  *wall_clock_ += delta_ms;
  for (auto& t : tasks_) {
    if (absl::Status s = t->PunctuateWallClock(); !s.ok()) return s;
    if (absl::Status s = Drain(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TopologyTestDriver::Commit() {
  since_commit_ = 0;
  // Upstream first: what its commit sends (watermarks) reaches the next before it commits.
  for (auto& t : tasks_) {
    if (absl::Status s = t->Commit(); !s.ok()) return s;
    if (absl::Status s = Drain(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TopologyTestDriver::EndOfInput() {
  for (auto& t : tasks_) {
    if (absl::Status s = t->EndOfInput(); !s.ok()) return s;
    if (absl::Status s = Drain(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::vector<OutputRecord> TopologyTestDriver::ReadOutput(std::string_view topic) {
  std::vector<OutputRecord> out;
  std::deque<OutputRecord> rest;
  for (OutputRecord& r : collector_->records) {
    if (r.topic == topic) {
      out.push_back(std::move(r));
    } else {
      rest.push_back(std::move(r));
    }
  }
  collector_->records.swap(rest);
  return out;
}

std::vector<OutputRecord> TopologyTestDriver::ReadAll() {
  std::vector<OutputRecord> out(std::make_move_iterator(collector_->records.begin()),
                                std::make_move_iterator(collector_->records.end()));
  collector_->records.clear();
  return out;
}

}  // namespace streammetrics
