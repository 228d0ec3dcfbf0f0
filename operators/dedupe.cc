#include "operators/dedupe.h"

#include <algorithm>

#include "statestore/fixed_encoding.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

// The operator's own state: u8 version (2), i64 stream time, u64 next block sequence,
// i64 pending stream-skew timestamp. Version 1: without the last.
constexpr std::string_view kMetaKey = "meta";  // block keys are 8 bytes: no clash
constexpr uint8_t kMetaVersion1 = 1;
constexpr uint8_t kMetaVersion = 2;
constexpr size_t kEntryBytes = 24;             // u64 hash.lo, u64 hash.hi, i64 first seen

void EncodeBlockKey(uint64_t seq, std::string* out) {
  out->resize(8);
  for (int i = 0; i < 8; ++i) (*out)[i] = static_cast<char>(seq >> (56 - 8 * i));
}

}  // namespace

int64_t DedupeProcessor::Horizon() const {
  // Saturating: stream_time_ - within must not overflow near INT64_MIN.
  return stream_time_ < INT64_MIN + options_.within_ms ? INT64_MIN
                                                       : stream_time_ - options_.within_ms;
}

absl::Status DedupeProcessor::Init(ProcessorContext* context) {
  if (absl::Status s = ProcessorBase::Init(context); !s.ok()) return s;
  store_ = dynamic_cast<KeyValueStore*>(context->GetStateStore(store_name_));
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("dedupe: key-value store " + store_name_ +
                                         " is not registered");
  }
  watermarked_ = context->watermarked();
  return Restore();
}

absl::Status DedupeProcessor::Restore() {
  auto corrupt = [this](std::string_view why) {
    return absl::DataLossError(
        StrCat("dedupe: store ", store_name_, ": ", why, "; the store must be rebuilt"));
  };
  std::string meta;
  absl::StatusOr<bool> found = store_->Get(kMetaKey, &meta);
  if (!found.ok()) return found.status();
  if (*found) {
    std::string_view in = meta;
    uint8_t version;
    if (!ReadFixed(&in, &version) || (version != kMetaVersion && version != kMetaVersion1) ||
        !ReadFixed(&in, &stream_time_) || !ReadFixed(&in, &next_block_) ||
        (version == kMetaVersion && !ReadFixed(&in, &skew_pending_)) || !in.empty()) {
      return corrupt("unreadable operator state");
    }
  }
  const int64_t horizon = Horizon();
  absl::Status s = store_->Range("", "", [&](std::string_view key, std::string_view value) {
    if (key == kMetaKey) return absl::OkStatus();
    if (key.size() != 8 || value.empty() || value.size() % kEntryBytes != 0 || !*found) {
      return corrupt("unreadable block");
    }
    uint64_t seq = 0;
    for (char c : key) seq = (seq << 8) | static_cast<uint8_t>(c);
    int64_t newest = INT64_MIN;
    while (!value.empty()) {  // whole entries: the size check above
      Entry e{};
      ReadFixed(&value, &e.id.lo);
      ReadFixed(&value, &e.id.hi);
      ReadFixed(&value, &e.first_seen);
      newest = std::max(newest, e.first_seen);
      if (e.first_seen > horizon && seen_.Insert(e.id)) {
        order_.push_back(e);
        EvictOverCap();  // the same ids as before the restart: they were evicted then
      }
    }
    blocks_.push_back(Block{seq, newest});
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  last_meta_stream_time_ = stream_time_;
  last_meta_skew_pending_ = skew_pending_;
  return absl::OkStatus();
}

bool DedupeProcessor::TooFarAhead(int64_t now) const {
  if (watermarked_ || options_.max_stream_skew_ms <= 0 || stream_time_ == INT64_MIN) {
    return false;
  }
  const int64_t skew = options_.max_stream_skew_ms;
  int64_t ahead;
  if (__builtin_sub_overflow(now, stream_time_, &ahead)) ahead = INT64_MAX;
  if (ahead <= skew) return false;
  int64_t apart;
  if (__builtin_sub_overflow(now, skew_pending_, &apart)) apart = INT64_MAX;
  return skew_pending_ == INT64_MIN || apart > skew || apart < -skew;
}

absl::Status DedupeProcessor::Process(const Record<MetricEvent>& record) {
  const MetricEvent& event = *record.value;
  // Behind a repartition, stream time is the upstream partitions' watermark: ids are
  // forgotten only once every partition a copy could come from has passed them.
  const int64_t now = watermarked_ ? context()->stream_time_ms() : record.timestamp_ms;
  if (TooFarAhead(now)) {
    skew_pending_ = now;  // the window operator dead-letters it: stream time stays
  } else {
    skew_pending_ = INT64_MIN;
    if (now > stream_time_) {
      stream_time_ = now;
      Expire();
    }
  }
  if (!event.has_event_id || event.event_id.empty()) return Forward(record);
  Hash128 id = StableHash128(event.event_id);
  if (!seen_.Insert(id)) {
    ++context()->counters().duplicates_dropped;
    return absl::OkStatus();
  }
  // First seen at the stream time, or — ahead of a watermark — at the event's own time.
  const int64_t first_seen = std::max(stream_time_, record.timestamp_ms);
  order_.push_back(Entry{id, first_seen});
  added_.push_back(Entry{id, first_seen});
  context()->counters().dedupe_ids_evicted += EvictOverCap();
  return Forward(record);
}

uint64_t DedupeProcessor::EvictOverCap() {
  uint64_t evicted = 0;
  while (options_.max_ids != 0 && seen_.size() > options_.max_ids && !order_.empty()) {
    evicted_through_ = order_.front().first_seen;
    seen_.Erase(order_.front().id);
    order_.pop_front();
    ++evicted;
  }
  return evicted;
}

void DedupeProcessor::Expire() {
  const int64_t horizon = Horizon();
  // Ids expire in first-seen order, so the slots of the next ones are known ahead: each
  // erase is a cache miss unless prefetched (by the time an id expires, its slot has
  // long left the caches).
  constexpr size_t kAhead = 8;
  while (!order_.empty() && order_.front().first_seen <= horizon) {
    if (order_.size() > kAhead) seen_.Prefetch(order_[kAhead].id);
    seen_.Erase(order_.front().id);
    order_.pop_front();
  }
}

absl::Status DedupeProcessor::Flush() {
  // Blocks whose newest id has expired hold nothing live.
  const int64_t horizon = Horizon();
  // So do blocks whose ids were all evicted over max_ids.
  while (!blocks_.empty() &&
         (blocks_.front().newest <= horizon || blocks_.front().newest < evicted_through_)) {
    EncodeBlockKey(blocks_.front().seq, &key_buf_);
    if (absl::Status s = store_->Delete(key_buf_); !s.ok()) return s;
    blocks_.pop_front();
  }
  const size_t per_block = static_cast<size_t>(std::max<uint64_t>(options_.block_ids, 1));
  const size_t new_blocks = (added_.size() + per_block - 1) / per_block;
  if (stream_time_ != last_meta_stream_time_ || skew_pending_ != last_meta_skew_pending_ ||
      new_blocks > 0) {
    value_buf_.clear();
    AppendFixed<uint8_t>(kMetaVersion, &value_buf_);
    AppendFixed<int64_t>(stream_time_, &value_buf_);
    AppendFixed<uint64_t>(next_block_ + new_blocks, &value_buf_);
    AppendFixed<int64_t>(skew_pending_, &value_buf_);
    if (absl::Status s = store_->Put(kMetaKey, value_buf_); !s.ok()) return s;
    last_meta_stream_time_ = stream_time_;
    last_meta_skew_pending_ = skew_pending_;
  }
  for (size_t from = 0; from < added_.size(); from += per_block) {
    const size_t to = std::min(added_.size(), from + per_block);
    value_buf_.clear();
    value_buf_.reserve((to - from) * kEntryBytes);
    int64_t newest = INT64_MIN;  // first-seen times are in order but behind a repartition
    for (size_t i = from; i < to; ++i) {
      const Entry& e = added_[i];
      newest = std::max(newest, e.first_seen);
      AppendFixed(e.id.lo, &value_buf_);
      AppendFixed(e.id.hi, &value_buf_);
      AppendFixed(e.first_seen, &value_buf_);
    }
    const uint64_t seq = next_block_++;
    EncodeBlockKey(seq, &key_buf_);
    if (absl::Status s = store_->Put(key_buf_, value_buf_); !s.ok()) return s;
    blocks_.push_back(Block{seq, newest});
  }
  added_.clear();
  return absl::OkStatus();
}

}  // namespace streammetrics
