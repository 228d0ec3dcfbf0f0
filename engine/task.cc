#include "operators/strings.h"
#include "engine/task.h"

#include <chrono>
#include <charconv>

#include "statestore/in_memory_stores.h"

namespace streammetrics {
namespace {

int64_t SystemClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view FormatInt(int64_t v, char (&buf)[24]) {
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string_view(buf, end - buf);
}

}  // namespace

Task::Task(TaskConfig config, RecordCollector* collector)
    : config_(std::move(config)), collector_(collector) {
  if (!config_.wall_clock) config_.wall_clock = &SystemClockMs;
}

Task::~Task() {
  if (state_ == State::kRunning) (void)Close();
}

absl::StatusOr<std::unique_ptr<Task>> Task::Create(const Topology& topology, TaskConfig config,
                                                   RecordCollector* collector) {
  std::unique_ptr<Task> task(new Task(std::move(config), collector));
  for (const StoreDef& def : topology.stores()) {
    absl::StatusOr<std::unique_ptr<StateStore>> store = task->OpenStore(def);
    if (!store.ok()) return store.status();
    task->stores_.emplace(def.name, *std::move(store));
  }
  const std::vector<NodeDef>& nodes = topology.nodes();
  task->processors_.reserve(nodes.size());
  for (const NodeDef& node : nodes) {
    task->processors_.push_back(node.factory());
    ProcessorBase& instance = *task->processors_.back();
    if (node.parent == SIZE_MAX) {
      auto* source = dynamic_cast<RawSource*>(&instance);
      if (source == nullptr) {
        return absl::InternalError(StrCat("node ", node.name, " has no parent and is no source"));
      }
      if (!task->sources_.emplace(node.topic, source).second) {
        return absl::InvalidArgumentError(StrCat("topic ", node.topic, " has two sources"));
      }
    } else {
      absl::Status s = node.connect(*task->processors_[node.parent], instance);
      if (!s.ok()) return absl::InternalError(StrCat(node.name, ": ", s.message()));
    }
  }
  for (auto& p : task->processors_) {
    if (absl::Status s = p->Init(task.get()); !s.ok()) return s;
  }
  return task;
}

std::string TaskId(int32_t partition) { return StrCat("0_", partition); }

absl::StatusOr<std::unique_ptr<StateStore>> Task::OpenStore(const StoreDef& def) {
  if (def.type == StoreType::kInMemory) {
    if (def.kind == StoreKind::kWindow) return NewInMemoryWindowStore(def.name);
    return NewInMemoryKeyValueStore(def.name);
  }
  if (config_.state_dir.empty()) {
    return absl::FailedPreconditionError(
        StrCat("store ", def.name, ": a RocksDB store needs a state directory"));
  }
  if (config_.rocksdb == nullptr) config_.rocksdb = RocksDbResources::Create(RocksDbBudget{});
  std::string path = StrCat(config_.state_dir, "/", def.name);
  if (def.kind == StoreKind::kWindow) {
    absl::StatusOr<std::unique_ptr<WindowStore>> s =
        OpenRocksDbWindowStore(def.name, path, config_.rocksdb);
    if (!s.ok()) return s.status();
    return std::unique_ptr<StateStore>(*std::move(s));
  }
  absl::StatusOr<std::unique_ptr<KeyValueStore>> s =
      OpenRocksDbKeyValueStore(def.name, path, config_.rocksdb);
  if (!s.ok()) return s.status();
  return std::unique_ptr<StateStore>(*std::move(s));
}

absl::Status Task::CheckRunning() const {
  if (state_ == State::kRunning) return absl::OkStatus();
  return absl::FailedPreconditionError(
      StrCat("task ", config_.application_id, "-", config_.partition, " is closed"));
}

absl::Status Task::Process(const SourceRecord& record) {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  auto it = sources_.find(record.topic);
  if (it == sources_.end()) {
    return absl::InvalidArgumentError(StrCat("no source for topic ", record.topic));
  }
  ++counters_.records_read;
  current_ = &record;
  absl::Status s = it->second->ProcessSource(record);
  current_ = nullptr;
  if (!s.ok()) return s;
  // No stream time yet (nothing with an event time forwarded): nothing to anchor on.
  if (stream_time_ != INT64_MIN && stream_time_ >= next_stream_punctuation_) {
    return RunPunctuators(PunctuationType::kStreamTime, stream_time_);
  }
  return absl::OkStatus();
}

void Task::ObserveEventTime(int64_t timestamp_ms) {
  if (timestamp_ms > stream_time_) stream_time_ = timestamp_ms;
}

absl::Status Task::RunPunctuators(PunctuationType type, int64_t now) {
  if (type == PunctuationType::kStreamTime) next_stream_punctuation_ = INT64_MAX;
  for (Scheduled& p : scheduled_) {
    if (p.type != type) continue;
    if (p.next_ms == INT64_MIN) p.next_ms = now + p.interval_ms;  // anchor at first time seen
    if (now >= p.next_ms) {
      if (absl::Status s = p.punctuator->Punctuate(now); !s.ok()) return s;
      // Skip missed intervals: a jump in time fires once, as in Kafka Streams.
      p.next_ms += ((now - p.next_ms) / p.interval_ms + 1) * p.interval_ms;
    }
    if (type == PunctuationType::kStreamTime) {
      next_stream_punctuation_ = std::min(next_stream_punctuation_, p.next_ms);
    }
  }
  return absl::OkStatus();
}

void Task::Schedule(PunctuationType type, int64_t interval_ms, Punctuator* punctuator) {
  interval_ms = std::max<int64_t>(1, interval_ms);
  // Wall clock: first due one interval after scheduling. Stream time: anchored at the
  // first stream time seen (INT64_MIN = not yet), so the first check anchors it.
  int64_t next = type == PunctuationType::kWallClock ? wall_clock_ms() + interval_ms : INT64_MIN;
  scheduled_.push_back(Scheduled{type, interval_ms, next, punctuator});
  if (type == PunctuationType::kStreamTime) next_stream_punctuation_ = INT64_MIN;
}

absl::Status Task::PunctuateWallClock() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  return RunPunctuators(PunctuationType::kWallClock, wall_clock_ms());
}

StateStore* Task::GetStateStore(std::string_view name) {
  auto it = stores_.find(name);
  return it == stores_.end() ? nullptr : it->second.get();
}

void Task::DeadLetter(DeadLetterReason reason, std::string_view error) {
  ++counters_.dead_letters[static_cast<int>(reason)];
  const SourceRecord& r = source_record();
  char partition[24], offset[24], timestamp[24];
  const Header headers[] = {
      {"dlq.reason", DeadLetterReasonName(reason)},
      {"dlq.error", error},
      {"dlq.topic", r.topic},
      {"dlq.partition", FormatInt(r.partition, partition)},
      {"dlq.offset", FormatInt(r.offset, offset)},
      {"dlq.timestamp", FormatInt(r.timestamp_ms, timestamp)},
  };
  collector_->Send(config_.dead_letter_topic, r.key, r.value, r.timestamp_ms, headers);
}

void Task::Send(std::string_view topic, std::string_view key, std::string_view value,
                int64_t timestamp_ms) {
  ++counters_.records_sent;
  collector_->Send(topic, key, value, timestamp_ms, {});
}

absl::Status Task::Commit() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  for (auto& p : processors_) {
    if (absl::Status s = p->Flush(); !s.ok()) return s;
  }
  for (auto& [name, store] : stores_) {
    if (absl::Status s = store->Flush(); !s.ok()) return s;
  }
  return collector_->Flush();
}

absl::Status Task::EndOfInput() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  for (auto& p : processors_) {
    if (absl::Status s = p->EndOfInput(); !s.ok()) return s;
  }
  return Commit();
}

absl::Status Task::Close() {
  if (state_ == State::kClosed) return absl::OkStatus();
  state_ = State::kClosed;
  absl::Status result;
  for (auto& p : processors_) result.Update(p->Close());
  for (auto& [name, store] : stores_) result.Update(store->Close());
  return result;
}

}  // namespace streammetrics
