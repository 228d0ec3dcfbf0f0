#include "engine/in_memory_log.h"

#include <utility>

namespace streammetrics {

InMemoryLog::InMemoryLog(Visibility visibility) : visibility_(visibility) {}

void InMemoryLog::Collector::Send(std::string_view topic, std::string_view key,
                                  std::string_view value, int64_t timestamp_ms,
                                  std::span<const Header> headers) {
  Output out;
  out.record.topic.assign(topic);
  out.record.key.assign(key);
  out.record.value.assign(value);
  out.record.timestamp_ms = timestamp_ms;
  for (const Header& h : headers) out.record.headers.emplace_back(h.key, h.value);
  if (log_->shows_uncommitted()) {
    log_->open_output_indices_.push_back(log_->outputs_.size());
    log_->outputs_.push_back(std::move(out));
  } else {
    log_->open_outputs_.push_back(std::move(out));
  }
}

absl::Status InMemoryLog::Collector::Flush() {
  log_->Commit();
  return absl::OkStatus();
}

void InMemoryLog::Writer::Append(std::string_view store, const ChangeRecord& r) {
  Change c = Change::Copy(r);
  if (log_->shows_uncommitted()) {
    auto it = log_->changelogs_.find(store);
    if (it == log_->changelogs_.end()) it = log_->changelogs_.emplace(store, std::vector<Change>{}).first;
    it->second.push_back(std::move(c));
  } else {
    log_->open_changes_.emplace_back(std::string(store), std::move(c));
  }
}

int64_t InMemoryLog::Writer::EndOffset(std::string_view store) const {
  auto it = log_->changelogs_.find(store);
  return it == log_->changelogs_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

void InMemoryLog::Commit() {
  for (Output& o : open_outputs_) outputs_.push_back(std::move(o));
  for (auto& [store, change] : open_changes_) changelogs_[store].push_back(std::move(change));
  open_outputs_.clear();
  open_changes_.clear();
  open_output_indices_.clear();
}

void InMemoryLog::AbortOpenTransaction() {
  for (size_t i : open_output_indices_) outputs_[i].aborted = true;
  open_output_indices_.clear();
  open_outputs_.clear();
  open_changes_.clear();
}

void InMemoryLog::TreatAsCommittedSince(size_t index) {
  for (size_t i = index; i < outputs_.size(); ++i) outputs_[i].aborted = false;
}

std::vector<InMemoryLog::Output> InMemoryLog::Outputs(std::string_view topic) const {
  std::vector<Output> out;
  for (const Output& o : outputs_) {
    if (topic.empty() || o.record.topic == topic) out.push_back(o);
  }
  return out;
}

size_t InMemoryLog::ChangelogSize(std::string_view store) const {
  auto it = changelogs_.find(store);
  return it == changelogs_.end() ? 0 : it->second.size();
}

absl::StatusOr<int64_t> InMemoryLog::Reader::Read(std::string_view store, int64_t from,
                                                  const Visitor& fn) {
  auto it = log_->changelogs_.find(store);
  if (it == log_->changelogs_.end()) return 0;
  const std::vector<Change>& log = it->second;
  const int64_t end = static_cast<int64_t>(log.size());
  for (int64_t offset = std::max<int64_t>(from, 0); offset < end; ++offset) {
    absl::Status s = fn(offset, log[offset].View());
    if (!s.ok()) return s;
  }
  return end;
}

absl::StatusOr<std::optional<CommitMarker>> InMemoryLog::Reader::LastMarker(
    std::string_view store, int64_t from) {
  auto it = log_->changelogs_.find(store);
  const int64_t end = it == log_->changelogs_.end() ? 0 : static_cast<int64_t>(it->second.size());
  if (from > end) return ChangelogBehindCheckpoint(store, end, from);
  if (it == log_->changelogs_.end()) return std::optional<CommitMarker>();
  const std::vector<Change>& log = it->second;
  for (int64_t offset = static_cast<int64_t>(log.size()) - 1;
       offset >= std::max<int64_t>(from, 0); --offset) {
    if (log[offset].type != ChangeType::kCommit) continue;
    absl::StatusOr<CommitMarker> m = CommitMarker::Decode(log[offset].value);
    if (!m.ok()) return m.status();
    return std::optional<CommitMarker>(*std::move(m));
  }
  return std::optional<CommitMarker>();
}

}  // namespace streammetrics
