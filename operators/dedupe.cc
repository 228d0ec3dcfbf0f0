#include "operators/dedupe.h"

#include <cstring>

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
