#include "operators/dedupe.h"

#include <cstring>

#include "operators/strings.h"

namespace streammetrics {
namespace {

void EncodeBlockKey(uint64_t seq, std::string* out) {
  out->resize(8);
  for (int i = 0; i < 8; ++i) (*out)[i] = static_cast<char>(seq >> (56 - 8 * i));
}

}  // namespace

absl::Status DedupeProcessor::Init(ProcessorContext* context) {
  if (absl::Status s = ProcessorBase::Init(context); !s.ok()) return s;
  store_ = dynamic_cast<KeyValueStore*>(context->GetStateStore(store_name_));
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("dedupe: key-value store " + store_name_ +
                                         " is not registered");
  }
  return Restore();
}

namespace {
// The operator's own state: u8 version, i64 stream time, u64 next block sequence.
constexpr std::string_view kMetaKey = "meta";  // block keys are 8 bytes: no clash
constexpr uint8_t kMetaVersion = 1;
}  // namespace

absl::Status DedupeProcessor::Restore() {
  auto corrupt = [this](std::string_view why) {
    return absl::DataLossError(
        StrCat("dedupe: store ", store_name_, ": ", why, "; the store must be rebuilt"));
  };
  std::string meta;
  absl::StatusOr<bool> found = store_->Get(kMetaKey, &meta);
  if (!found.ok()) return found.status();
  if (*found) {
    if (meta.size() != 17 || static_cast<uint8_t>(meta[0]) != kMetaVersion) {
      return corrupt("unreadable operator state");
    }
    std::memcpy(&stream_time_, meta.data() + 1, 8);
    std::memcpy(&next_block_, meta.data() + 9, 8);
  }
  const int64_t horizon =
      stream_time_ < INT64_MIN + options_.within_ms ? INT64_MIN : stream_time_ - options_.within_ms;
  absl::Status s = store_->Range("", "", [&](std::string_view key, std::string_view value) {
    if (key == kMetaKey) return absl::OkStatus();
    if (key.size() != 8 || value.empty() || value.size() % 24 != 0 || !*found) {
      return corrupt("unreadable block");
    }
    uint64_t seq = 0;
    for (char c : key) seq = (seq << 8) | static_cast<uint8_t>(c);
    int64_t newest = INT64_MIN;
    for (size_t at = 0; at < value.size(); at += 24) {
      Entry e;
      std::memcpy(&e.id.lo, value.data() + at, 8);
      std::memcpy(&e.id.hi, value.data() + at + 8, 8);
      std::memcpy(&e.first_seen, value.data() + at + 16, 8);
      newest = e.first_seen;
      if (e.first_seen > horizon && seen_.try_emplace(e.id, e.first_seen).second) {
        order_.push_back(e);
      }
    }
    blocks_.push_back(Block{seq, newest});
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  last_meta_stream_time_ = stream_time_;
  return absl::OkStatus();
}

absl::Status DedupeProcessor::Process(const Record<MetricEvent>& record) {
  const MetricEvent& event = *record.value;
  if (record.timestamp_ms > stream_time_) {
    stream_time_ = record.timestamp_ms;
    Expire();
  }
  if (!event.has_event_id || event.event_id.empty()) return Forward(record);
  Hash128 id = StableHash128(event.event_id);
  auto [it, inserted] = seen_.try_emplace(id, stream_time_);
  if (!inserted) {
    ++context()->counters().duplicates_dropped;
    return absl::OkStatus();
  }
  order_.push_back(Entry{id, stream_time_});
  added_.push_back(Entry{id, stream_time_});
  return Forward(record);
}

void DedupeProcessor::Expire() {
  // Saturating: stream_time_ - within must not overflow near INT64_MIN.
  if (stream_time_ < INT64_MIN + options_.within_ms) return;
  const int64_t horizon = stream_time_ - options_.within_ms;
  while (!order_.empty() && order_.front().first_seen <= horizon) {
    seen_.erase(order_.front().id);
    order_.pop_front();
  }
}

absl::Status DedupeProcessor::Flush() {
  // Blocks whose newest id has expired hold nothing live.
  const int64_t horizon =
      stream_time_ < INT64_MIN + options_.within_ms ? INT64_MIN : stream_time_ - options_.within_ms;
  while (!blocks_.empty() && blocks_.front().newest <= horizon) {
    EncodeBlockKey(blocks_.front().seq, &key_buf_);
    if (absl::Status s = store_->Delete(key_buf_); !s.ok()) return s;
    blocks_.pop_front();
  }
  if (stream_time_ != last_meta_stream_time_ || !added_.empty()) {
    const uint64_t next = next_block_ + (added_.empty() ? 0 : 1);
    char meta[17];
    meta[0] = static_cast<char>(kMetaVersion);
    std::memcpy(meta + 1, &stream_time_, 8);
    std::memcpy(meta + 9, &next, 8);
    if (absl::Status s = store_->Put(kMetaKey, std::string_view(meta, 17)); !s.ok()) return s;
    last_meta_stream_time_ = stream_time_;
  }
  if (added_.empty()) return absl::OkStatus();
  value_buf_.resize(added_.size() * 24);
  char* p = value_buf_.data();
  for (const Entry& e : added_) {
    std::memcpy(p, &e.id.lo, 8);
    std::memcpy(p + 8, &e.id.hi, 8);
    std::memcpy(p + 16, &e.first_seen, 8);
    p += 24;
  }
  const uint64_t seq = next_block_++;
  EncodeBlockKey(seq, &key_buf_);
  if (absl::Status s = store_->Put(key_buf_, value_buf_); !s.ok()) return s;
  blocks_.push_back(Block{seq, added_.back().first_seen});
  added_.clear();
  return absl::OkStatus();
}

}  // namespace streammetrics
