#include "operators/dedupe.h"

#include <cstring>

namespace streammetrics {
namespace {

void EncodeKey(const Hash128& h, std::string* out) {
  out->resize(16);
  std::memcpy(out->data(), &h.lo, 8);
  std::memcpy(out->data() + 8, &h.hi, 8);
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
    removed_.push_back(order_.front().id);
    order_.pop_front();
  }
}

absl::Status DedupeProcessor::Flush() {
  for (const Hash128& id : removed_) {
    EncodeKey(id, &key_buf_);
    if (absl::Status s = store_->Delete(key_buf_); !s.ok()) return s;
  }
  removed_.clear();
  char value[8];
  for (const Entry& e : added_) {
    if (!seen_.contains(e.id)) continue;  // expired before this commit
    EncodeKey(e.id, &key_buf_);
    std::memcpy(value, &e.first_seen, 8);
    if (absl::Status s = store_->Put(key_buf_, std::string_view(value, 8)); !s.ok()) return s;
  }
  added_.clear();
  return absl::OkStatus();
}

}  // namespace streammetrics
