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
    records.push_back(std::move(r));
  }
  absl::Status Flush() override { return absl::OkStatus(); }

  std::deque<OutputRecord> records;
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
  TaskConfig config;
  config.application_id = options.application_id;
  config.dead_letter_topic = options.dead_letter_topic;
  config.dead_letter_max_bytes = options.dead_letter_max_bytes;
  config.state_dir = options.state_dir;
  config.cache_budget = options.cache_budget;
  config.rocksdb = options.rocksdb;
  config.wall_clock = [clock = driver->wall_clock_]() { return *clock; };
  absl::StatusOr<std::unique_ptr<Task>> task =
      Task::Create(topology, std::move(config), driver->collector_.get());
  if (!task.ok()) return task.status();
  driver->task_ = *std::move(task);
  return driver;
}

absl::Status TopologyTestDriver::PipeInput(std::string_view topic, std::string_view key,
                                           std::string_view value,
                                           std::optional<int64_t> timestamp_ms) {
  int64_t& offset = next_offset_[topic];
  SourceRecord record;
  record.topic = topic;
  record.partition = 0;
  record.offset = offset++;
  record.timestamp_ms = timestamp_ms.value_or(*wall_clock_);
  record.key = key;
  record.value = value;
  if (absl::Status s = task_->Process(record); !s.ok()) return s;
  if (options_.commit_every_records > 0 && ++since_commit_ >= options_.commit_every_records) {
    since_commit_ = 0;
    return task_->Commit();
  }
  return absl::OkStatus();
}

absl::Status TopologyTestDriver::AdvanceWallClock(int64_t delta_ms) {
  *wall_clock_ += delta_ms;
  return task_->PunctuateWallClock();
}

absl::Status TopologyTestDriver::Commit() {
  since_commit_ = 0;
  return task_->Commit();
}

absl::Status TopologyTestDriver::EndOfInput() { return task_->EndOfInput(); }

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
