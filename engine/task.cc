#include "operators/strings.h"
#include "engine/task.h"

#include <algorithm>
#include <chrono>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <thread>

#include "absl/strings/escaping.h"
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

// The checkpoint file: the last commit's marker and each durable store's changelog
// position after it. Text, one item a line:
//   streammetrics-checkpoint 1
//   marker <hex of CommitMarker::Encode()>
//   store <name> <offset>
struct CheckpointFile {
  CommitMarker marker;
  StringMap<int64_t> offsets;
};

constexpr std::string_view kCheckpointHeader = "streammetrics-checkpoint 1";

std::string CheckpointPath(const std::string& state_dir) { return state_dir + "/.checkpoint"; }

// nullopt when absent or unreadable: both mean "no checkpoint", and restore then
// replays the whole changelog, which is correct from any committed local state.
std::optional<CheckpointFile> ReadCheckpoint(const std::string& state_dir) {
  std::ifstream in(CheckpointPath(state_dir));
  if (!in) return std::nullopt;
  std::string line;
  if (!std::getline(in, line) || line != kCheckpointHeader) return std::nullopt;
  CheckpointFile file;
  bool has_marker = false;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string kind, a, b;
    words >> kind >> a;
    if (kind == "marker") {
      if (a.size() % 2 != 0 ||
          !std::all_of(a.begin(), a.end(), [](unsigned char c) { return std::isxdigit(c); })) {
        return std::nullopt;
      }
      absl::StatusOr<CommitMarker> m = CommitMarker::Decode(absl::HexStringToBytes(a));
      if (!m.ok()) return std::nullopt;
      file.marker = *std::move(m);
      has_marker = true;
    } else if (kind == "store") {
      int64_t offset = -1;
      if (!(words >> offset) || offset < 0) return std::nullopt;
      file.offsets[a] = offset;
    } else {
      return std::nullopt;
    }
  }
  if (!has_marker) return std::nullopt;
  return file;
}

absl::Status WriteCheckpoint(const std::string& state_dir, const CheckpointFile& file) {
  const std::string path = CheckpointPath(state_dir);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kCheckpointHeader << "\n";
    out << "marker " << absl::BytesToHexString(file.marker.Encode()) << "\n";
    std::vector<std::pair<std::string, int64_t>> sorted(file.offsets.begin(), file.offsets.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [name, offset] : sorted) out << "store " << name << " " << offset << "\n";
    out.flush();
    if (!out) return absl::UnavailableError(StrCat("checkpoint: cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(StrCat("checkpoint: rename to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

uint64_t NewIncarnation() {
  std::random_device rd;
  uint64_t v = (uint64_t{rd()} << 32) ^ rd() ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return v == 0 ? 1 : v;
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
  if ((config.changelog == nullptr) != (config.changelog_reader == nullptr)) {
    return absl::InvalidArgumentError("task: a changelog needs both a writer and a reader");
  }
  absl::StatusOr<std::unique_ptr<Task>> task = CreateOnce(topology, config, collector, false);
  if (task.ok() || task.status().code() != absl::StatusCode::kDataLoss ||
      config.changelog == nullptr || config.state_dir.empty()) {
    return task;
  }
  // Corrupt local state: the changelogs hold every committed change, so rebuild.
  std::string why(task.status().message());
  task = CreateOnce(topology, std::move(config), collector, true);
  if (task.ok()) (*task)->restore_report_.rebuilt_because = std::move(why);
  return task;
}

absl::StatusOr<std::unique_ptr<Task>> Task::CreateOnce(const Topology& topology,
                                                       TaskConfig config,
                                                       RecordCollector* collector,
                                                       bool wipe_local_state) {
  std::unique_ptr<Task> task(new Task(std::move(config), collector));
  if (wipe_local_state) {
    std::error_code ec;
    std::filesystem::remove_all(task->config_.state_dir, ec);
    if (ec) {
      return absl::UnavailableError(
          StrCat("task: cannot wipe ", task->config_.state_dir, ": ", ec.message()));
    }
  }
  // RocksDB stores are opened concurrently, all but one on threads of their own: a
  // RocksDB open is ~10-20 ms (files created and synced), and a task's creation is mostly
  // its opens. kafka_bench's drain (24 tasks of two stores, 6 runs each): mean 35-43 ms a
  // task one after the other, 21-30 ms concurrently in 5 of the 6 runs (47 in one).
  // In-memory stores open here (nothing to wait for).
  if (task->config_.subtopology < 0 ||
      task->config_.subtopology >= std::max(1, topology.subtopologies())) {
    return absl::InvalidArgumentError(
        StrCat("task: no sub-topology ", task->config_.subtopology));
  }
  task->watermarked_ = topology.ReadsInternalTopic(task->config_.subtopology);
  std::vector<StoreDef> defs;
  for (const StoreDef& def : topology.stores()) {
    if (def.subtopology == task->config_.subtopology) defs.push_back(def);
  }
  for (const StoreDef& def : defs) {
    if (def.type == StoreType::kRocksDb) task->NoteExisting(def);
  }
  std::vector<absl::StatusOr<std::unique_ptr<StateStore>>> locals(defs.size());
  {
    std::vector<std::thread> openers;
    std::vector<size_t> here;
    for (size_t i = 0; i < defs.size(); ++i) {
      if (defs[i].type != StoreType::kRocksDb || here.empty()) {
        here.push_back(i);
        continue;
      }
      try {
        openers.emplace_back([&, i] { locals[i] = task->OpenLocalStore(defs[i]); });
      } catch (const std::system_error&) {  // no thread to be had: open it here
        here.push_back(i);
      }
    }
    for (size_t i : here) locals[i] = task->OpenLocalStore(defs[i]);
    for (std::thread& t : openers) t.join();
  }
  for (size_t i = 0; i < defs.size(); ++i) {
    if (!locals[i].ok()) return locals[i].status();
    task->stores_.emplace(defs[i].name, task->WrapStore(defs[i], *std::move(locals[i])));
  }
  if (task->config_.changelog != nullptr) {
    if (absl::Status s = task->RestoreFromChangelogs(); !s.ok()) return s;
  }
  const std::vector<NodeDef>& nodes = topology.nodes();
  task->processors_.reserve(nodes.size());
  std::vector<ProcessorBase*> by_node(nodes.size(), nullptr);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeDef& node = nodes[i];
    if (node.subtopology != task->config_.subtopology) continue;
    task->processors_.push_back(node.factory());
    ProcessorBase& instance = *task->processors_.back();
    by_node[i] = &instance;
    if (node.parent == SIZE_MAX) {
      auto* source = dynamic_cast<RawSource*>(&instance);
      if (source == nullptr) {
        return absl::InternalError(StrCat("node ", node.name, " has no parent and is no source"));
      }
      const std::string topic = Topology::TopicOf(node, task->config_.application_id);
      if (!task->sources_.emplace(topic, Source{.node = source}).second) {
        return absl::InvalidArgumentError(StrCat("topic ", topic, " has two sources"));
      }
    } else {
      if (by_node[node.parent] == nullptr) {
        return absl::InternalError(StrCat("node ", node.name, ": parent in another sub-topology"));
      }
      absl::Status s = node.connect(*by_node[node.parent], instance);
      if (!s.ok()) return absl::InternalError(StrCat(node.name, ": ", s.message()));
    }
  }
  for (auto& p : task->processors_) {
    if (absl::Status s = p->Init(task.get()); !s.ok()) return s;
  }
  return task;
}

absl::Status Task::RestoreFromChangelogs() {
  attempt_.incarnation = NewIncarnation();
  std::optional<CheckpointFile> checkpoint;
  if (!config_.state_dir.empty()) checkpoint = ReadCheckpoint(config_.state_dir);
  ChangelogReader& reader = *config_.changelog_reader;

  // Where each store starts, and the last commit its changelog shows after that.
  std::vector<int64_t> from(logged_.size(), 0);
  uint64_t sequence = UINT64_MAX;
  for (size_t i = 0; i < logged_.size(); ++i) {
    const Logged& l = logged_[i];
    uint64_t last = 0;
    if (l.durable && checkpoint.has_value() &&
        std::find(existed_before_open_.begin(), existed_before_open_.end(), l.name) !=
            existed_before_open_.end()) {
      auto it = checkpoint->offsets.find(l.name);
      if (it != checkpoint->offsets.end()) {
        from[i] = it->second;
        last = checkpoint->marker.sequence;
      }
    }
    absl::StatusOr<std::optional<CommitMarker>> marker = reader.LastMarker(l.name, from[i]);
    if (!marker.ok()) return marker.status();
    if (marker->has_value()) last = (*marker)->sequence;
    sequence = std::min(sequence, last);
  }
  if (logged_.empty()) sequence = 0;

  // Every store to the same commit: the last one every changelog shows (on a broker
  // with atomic transactions, always the last one; see changelog.h).
  uint64_t applied = 0;
  for (size_t i = 0; i < logged_.size(); ++i) {
    LoggedStore* store = logged_[i].store;
    absl::StatusOr<RestoreStats> stats = RestoreFromChangelog(
        reader, logged_[i].name, from[i], sequence,
        [store](std::span<const ChangeRecord> c) { return store->ApplyRestored(c); });
    if (!stats.ok()) return stats.status();
    logged_[i].restored_end = stats->end_offset;
    applied += stats->records_applied;
    if (stats->last_marker.has_value() && stats->last_marker->sequence == sequence) {
      last_commit_ = stats->last_marker;
    }
    restore_report_.stores.push_back(
        StoreRestoreReport{.store = logged_[i].name, .from_offset = from[i], .stats = *stats});
  }
  if (!last_commit_.has_value() && sequence > 0 && checkpoint.has_value() &&
      checkpoint->marker.sequence == sequence) {
    last_commit_ = checkpoint->marker;
  }
  if (sequence > 0 && !last_commit_.has_value()) {
    return absl::DataLossError(StrCat("task ", TaskId(config_.subtopology, config_.partition), ": commit ", sequence,
                                      " has no marker to resume from"));
  }
  restore_report_.last_sequence = sequence;
  attempt_.sequence = sequence + 1;
  // A long replay is not repeated after the next crash.
  if (applied > 0 && last_commit_.has_value()) return Checkpoint();
  return absl::OkStatus();
}

std::string TaskId(int subtopology, int32_t partition) { return StrCat(subtopology, "_", partition); }

std::unique_ptr<StateStore> Task::WrapStore(const StoreDef& def, std::unique_ptr<StateStore> local) {
  if (config_.changelog == nullptr) return local;
  std::unique_ptr<StateStore> logged;
  if (def.kind == StoreKind::kWindow) {
    logged = NewLoggedWindowStore(
        std::unique_ptr<WindowStore>(static_cast<WindowStore*>(local.release())),
        config_.changelog, &attempt_);
  } else {
    logged = NewLoggedKeyValueStore(
        std::unique_ptr<KeyValueStore>(static_cast<KeyValueStore*>(local.release())),
        config_.changelog, &attempt_);
  }
  logged_.push_back(Logged{AsLoggedStore(logged.get()), def.name, def.type == StoreType::kRocksDb});
  return logged;
}

void Task::NoteExisting(const StoreDef& def) {
  if (config_.state_dir.empty()) return;  // OpenLocalStore says so
  std::error_code ec;
  if (std::filesystem::exists(StrCat(config_.state_dir, "/", def.name, "/CURRENT"), ec)) {
    existed_before_open_.push_back(def.name);
  }
  if (config_.rocksdb == nullptr) config_.rocksdb = RocksDbResources::Create(RocksDbBudget{});
}

absl::StatusOr<std::unique_ptr<StateStore>> Task::OpenLocalStore(const StoreDef& def) {
  if (def.type == StoreType::kInMemory) {
    if (def.kind == StoreKind::kWindow) return NewInMemoryWindowStore(def.name);
    return NewInMemoryKeyValueStore(def.name);
  }
  if (config_.state_dir.empty()) {
    return absl::FailedPreconditionError(
        StrCat("store ", def.name, ": a RocksDB store needs a state directory"));
  }
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
  if (state_ == State::kFailed) {
    return absl::FailedPreconditionError(
        StrCat("task ", config_.application_id, "-", config_.partition,
               " failed at a commit; create it again to restore the last commit"));
  }
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
  it->second.partition = record.partition;
  it->second.next_offset = record.offset + 1;
  absl::Status s = it->second.node->ProcessSource(record);
  current_ = nullptr;
  if (!s.ok()) return s;
  if (absl::Status w = NotifyWatermark(); !w.ok()) return w;
  // No stream time yet (nothing with an event time forwarded): nothing to anchor on.
  if (stream_time_ != INT64_MIN && stream_time_ >= next_stream_punctuation_) {
    return RunPunctuators(PunctuationType::kStreamTime, stream_time_);
  }
  return absl::OkStatus();
}

void Task::ObserveEventTime(int64_t timestamp_ms) {
  if (timestamp_ms > stream_time_) stream_time_ = timestamp_ms;
}

absl::Status Task::AdvanceStreamTime(int64_t timestamp_ms) {
  ObserveEventTime(timestamp_ms);
  return NotifyWatermark();
}

absl::Status Task::NotifyWatermark() {
  if (!watermarked_ || stream_time_ <= notified_watermark_) return absl::OkStatus();
  notified_watermark_ = stream_time_;
  for (auto& p : processors_) {
    if (absl::Status w = p->OnWatermark(stream_time_); !w.ok()) return w;
  }
  return absl::OkStatus();
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

absl::Status Task::DeadLetterUnprocessed(const SourceRecord& record, DeadLetterReason reason,
                                         std::string_view error, std::string_view truncated) {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  auto it = sources_.find(record.topic);
  if (it == sources_.end()) {
    return absl::InvalidArgumentError(StrCat("no source for topic ", record.topic));
  }
  ++counters_.records_read;
  it->second.partition = record.partition;
  it->second.next_offset = record.offset + 1;
  const SourceRecord* previous = std::exchange(current_, &record);
  SendDeadLetter(reason, error, truncated);
  current_ = previous;
  return absl::OkStatus();
}

void Task::DeadLetter(DeadLetterReason reason, std::string_view error) {
  SendDeadLetter(reason, error, {});
}

void Task::SendDeadLetter(DeadLetterReason reason, std::string_view error,
                          std::string_view truncated_already) {
  ++counters_.dead_letters[static_cast<int>(reason)];
  const SourceRecord& r = source_record();
  char partition[24], offset[24], timestamp[24];
  Header headers[] = {
      {"dlq.reason", DeadLetterReasonName(reason)},
      {"dlq.error", error},
      {"dlq.topic", r.topic},
      {"dlq.partition", FormatInt(r.partition, partition)},
      {"dlq.offset", FormatInt(r.offset, offset)},
      {"dlq.timestamp", FormatInt(r.timestamp_ms, timestamp)},
      {"dlq.truncated", ""},  // sent only when the dead letter is cut
  };
  const std::span<const Header> uncut(headers, std::size(headers) - 1);
  int64_t header_bytes = 0;
  for (const Header& h : uncut) header_bytes += static_cast<int64_t>(h.key.size() + h.value.size());
  const int64_t total = header_bytes + static_cast<int64_t>(r.key.size() + r.value.size());
  if (config_.dead_letter_max_bytes <= 0 || total <= config_.dead_letter_max_bytes) {
    if (truncated_already.empty()) {
      collector_->Send(config_.dead_letter_topic, r.key, r.value, r.timestamp_ms, uncut);
    } else {
      headers[std::size(headers) - 1].value = truncated_already;
      collector_->Send(config_.dead_letter_topic, r.key, r.value, r.timestamp_ms, headers);
    }
    return;
  }
  // Cut to fit. Room for the record's framing (librdkafka counts ~60 bytes of it, a
  // batch's ~60 more) and the dlq.truncated header, with margin.
  constexpr int64_t kFraming = 1'024;
  char key_bytes[24], value_bytes[24];
  const std::string truncated =
      !truncated_already.empty()
          ? std::string(truncated_already)
          : StrCat("key=", FormatInt(static_cast<int64_t>(r.key.size()), key_bytes), ",value=",
                   FormatInt(static_cast<int64_t>(r.value.size()), value_bytes));
  const int64_t room = std::max<int64_t>(
      0, config_.dead_letter_max_bytes - kFraming - header_bytes -
             static_cast<int64_t>(headers[std::size(headers) - 1].key.size() + truncated.size()));
  const std::string_view key = r.key.substr(0, static_cast<size_t>(std::min<int64_t>(room, r.key.size())));
  const std::string_view value =
      r.value.substr(0, static_cast<size_t>(std::min<int64_t>(room - key.size(), r.value.size())));
  headers[std::size(headers) - 1].value = truncated;
  collector_->Send(config_.dead_letter_topic, key, value, r.timestamp_ms, headers);
}

void Task::Send(std::string_view topic, std::string_view key, std::string_view value,
                int64_t timestamp_ms) {
  ++counters_.records_sent;
  collector_->Send(topic, key, value, timestamp_ms, {});
}

void Task::SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                           std::string_view value, int64_t timestamp_ms) {
  collector_->SendToPartition(topic, partition, key, value, timestamp_ms);
}

absl::Status Task::Commit() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  if (config_.changelog != nullptr) return CommitWithChangelogs();
  for (auto& p : processors_) {
    if (absl::Status s = p->Flush(); !s.ok()) return s;
  }
  for (auto& [name, store] : stores_) {
    if (absl::Status s = store->Flush(); !s.ok()) return s;
  }
  return collector_->Flush();
}

absl::Status Task::Fault(CommitStep step) {
  return config_.fault_injector ? config_.fault_injector(step) : absl::OkStatus();
}

absl::Status Task::Fail(absl::Status s) {
  state_ = State::kFailed;
  for (Logged& l : logged_) l.store->DiscardStaged();
  return s;
}

CommitMarker Task::NextMarker() const {
  CommitMarker marker{.incarnation = attempt_.incarnation, .sequence = attempt_.sequence};
  if (last_commit_.has_value()) marker.offsets = last_commit_->offsets;
  for (const auto& [topic, source] : sources_) {
    if (source.next_offset < 0) continue;
    // Records a source still holds are read again after a restart.
    const int64_t held = source.node->HeldFrom();
    const int64_t next = held >= 0 ? std::min(held, source.next_offset) : source.next_offset;
    auto it = std::find_if(marker.offsets.begin(), marker.offsets.end(), [&](const InputOffset& o) {
      return o.topic == topic && o.partition == source.partition;
    });
    if (it != marker.offsets.end()) {
      it->next_offset = next;
    } else {
      marker.offsets.push_back(InputOffset{std::string(topic), source.partition, next});
    }
  }
  std::sort(marker.offsets.begin(), marker.offsets.end(),
            [](const InputOffset& a, const InputOffset& b) {
              return std::tie(a.topic, a.partition) < std::tie(b.topic, b.partition);
            });
  return marker;
}

absl::Status Task::CommitWithChangelogs() {
  if (absl::Status s = PrepareCommit(); !s.ok()) return s;
  if (absl::Status s = collector_->Flush(); !s.ok()) return Fail(s);
  return CompleteCommit();
}

absl::Status Task::PrepareCommit() {
  if (absl::Status s = FlushForCommit(); !s.ok()) return s;
  // Every change acknowledged before any marker is sent: where a broker shows records of
  // unfinished transactions (the dev broker), a visible marker then implies that every
  // change of its commit is there too. A failed change never gets a marker.
  if (absl::Status s = config_.changelog->Flush(); !s.ok()) return Fail(s);
  if (absl::Status s = AppendCommitMarkers(); !s.ok()) return s;
  if (absl::Status s = config_.changelog->Flush(); !s.ok()) return Fail(s);
  return MarkersAcknowledged();
}

absl::Status Task::FlushForCommit() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  if (config_.changelog == nullptr) {
    return absl::FailedPreconditionError("task: a two-phase commit needs changelogs");
  }
  for (auto& p : processors_) {
    if (absl::Status s = p->Flush(); !s.ok()) return Fail(s);
  }
  if (absl::Status s = Fault(CommitStep::kProcessorsFlushed); !s.ok()) return Fail(s);
  return absl::OkStatus();
}

absl::Status Task::AppendCommitMarkers() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  pending_commit_ = NextMarker();
  const std::string encoded = pending_commit_->Encode();
  for (const Logged& l : logged_) {
    config_.changelog->Append(l.name, ChangeRecord{.type = ChangeType::kCommit,
                                                   .value = encoded,
                                                   .incarnation = pending_commit_->incarnation,
                                                   .sequence = pending_commit_->sequence});
  }
  return absl::OkStatus();
}

absl::Status Task::MarkersAcknowledged() {
  if (absl::Status s = Fault(CommitStep::kMarkersAppended); !s.ok()) return Fail(s);
  return absl::OkStatus();
}

absl::Status Task::CompleteCommit() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  if (!pending_commit_.has_value()) {
    return absl::FailedPreconditionError("task: CompleteCommit without PrepareCommit");
  }
  if (absl::Status s = Fault(CommitStep::kCollectorCommitted); !s.ok()) return Fail(s);
  for (size_t i = 0; i < logged_.size(); ++i) {
    if (absl::Status s = logged_[i].store->ApplyStaged(); !s.ok()) return Fail(s);
    if (i == 0) {
      if (absl::Status s = Fault(CommitStep::kFirstStoreApplied); !s.ok()) return Fail(s);
    }
  }
  if (absl::Status s = Fault(CommitStep::kStoresApplied); !s.ok()) return Fail(s);
  last_commit_ = std::move(pending_commit_);
  pending_commit_.reset();
  ++attempt_.sequence;
  uint64_t logged = 0;
  for (const Logged& l : logged_) logged += l.store->changes_logged();
  if (logged - changes_at_checkpoint_ >= config_.checkpoint_every_changes) {
    if (absl::Status s = Checkpoint(); !s.ok()) return Fail(s);
  }
  return absl::OkStatus();
}

absl::Status Task::AbortCommit(absl::Status why) { return Fail(std::move(why)); }

absl::Status Task::Checkpoint() {
  if (config_.state_dir.empty() || !last_commit_.has_value()) return absl::OkStatus();
  CheckpointFile file{.marker = *last_commit_};
  bool any = false;
  for (const Logged& l : logged_) {
    if (!l.durable) continue;
    if (absl::Status s = l.store->local().Flush(); !s.ok()) return s;
    file.offsets[l.name] = std::max(config_.changelog->EndOffset(l.name), l.restored_end);
    any = true;
  }
  if (!any) return absl::OkStatus();
  if (absl::Status s = Fault(CommitStep::kCheckpointFlushed); !s.ok()) return s;
  if (absl::Status s = WriteCheckpoint(config_.state_dir, file); !s.ok()) return s;
  changes_at_checkpoint_ = 0;
  for (const Logged& l : logged_) changes_at_checkpoint_ += l.store->changes_logged();
  return absl::OkStatus();
}

std::vector<InputOffset> Task::committed_offsets() const {
  return last_commit_.has_value() ? last_commit_->offsets : std::vector<InputOffset>{};
}

absl::Status Task::FinishInput() {
  if (absl::Status s = CheckRunning(); !s.ok()) return s;
  input_end_signalled_ = false;
  for (auto& p : processors_) {
    if (absl::Status s = p->EndOfInput(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Task::EndOfInput() {
  if (absl::Status s = FinishInput(); !s.ok()) return s;
  return Commit();
}

absl::Status Task::Close() {
  if (state_ == State::kClosed) return absl::OkStatus();
  absl::Status result;
  // Local stores hold exactly the last commit (nothing is staged between commits), so a
  // running task checkpoints it; a failed one may have applied part of a commit.
  if (state_ == State::kRunning && config_.changelog != nullptr) result.Update(Checkpoint());
  state_ = State::kClosed;
  for (auto& p : processors_) result.Update(p->Close());
  for (auto& [name, store] : stores_) result.Update(store->Close());
  return result;
}

void Task::CloseAsCrashed() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  for (auto& [name, store] : stores_) {
    LoggedStore* logged = AsLoggedStore(store.get());
    StateStore* local = logged != nullptr ? &logged->local() : store.get();
    if (!CloseRocksDbStoreAsCrashed(local).ok()) local->Close().IgnoreError();
  }
}

}  // namespace streammetrics
