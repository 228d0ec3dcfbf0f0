#include "operators/repartition.h"

#include <algorithm>

#include "operators/strings.h"
#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

// The state entry of the upstream end: version, watermark, last record's wall clock, live.
constexpr std::string_view kStateKey = "watermark";
constexpr uint8_t kStateVersion = 1;
// A watermark unchanged is sent again this often, for downstream tasks that restarted
// (they wait until every upstream partition has been heard of).
constexpr int64_t kResendMs = 10'000;
// A task that has read nothing since it started is idle after this (or idle_ms, if less).
constexpr int64_t kStartIdleMs = 2'000;

}  // namespace

std::string RepartitionTopic(std::string_view application_id, std::string_view name) {
  return StrCat(application_id, "-", name, "-repartition");
}

void AppendRepartitionWatermark(const RepartitionWatermark& w, std::string* out) {
  out->push_back(static_cast<char>(kRepartitionWatermark));
  AppendFixed<int32_t>(w.partition, out);
  AppendFixed<int32_t>(w.partitions, out);
  AppendFixed<int64_t>(w.time_ms, out);
  out->push_back(static_cast<char>((w.idle ? 1 : 0) | (w.end_offset >= 0 ? 2 : 0)));
  if (w.end_offset >= 0) AppendFixed<int64_t>(w.end_offset, out);
}

absl::StatusOr<RepartitionWatermark> DecodeRepartitionWatermark(std::string_view in) {
  RepartitionWatermark w;
  uint8_t flags = 0;
  if (!ReadFixed(&in, &w.partition) || !ReadFixed(&in, &w.partitions) ||
      !ReadFixed(&in, &w.time_ms) || !ReadFixed(&in, &flags) ||
      ((flags & 2) != 0 && (!ReadFixed(&in, &w.end_offset) || w.end_offset < 0)) ||
      !in.empty() || w.partitions <= 0 || w.partition < 0 || w.partition >= w.partitions ||
      w.partitions > 100'000) {
    return absl::InvalidArgumentError("repartition: malformed watermark");
  }
  w.idle = (flags & 1) != 0;
  return w;
}

RepartitionSinkProcessor::RepartitionSinkProcessor(RepartitionOptions options,
                                                   std::string store_name)
    : options_(std::move(options)), store_name_(std::move(store_name)) {}

absl::Status RepartitionSinkProcessor::Init(ProcessorContext* context) {
  if (absl::Status s = ProcessorBase::Init(context); !s.ok()) return s;
  topic_ = RepartitionTopic(context->application_id(), options_.name);
  store_ = dynamic_cast<KeyValueStore*>(context->GetStateStore(store_name_));
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        StrCat("repartition: store ", store_name_, " is not registered"));
  }
  std::string value;
  absl::StatusOr<bool> found = store_->Get(kStateKey, &value);
  if (!found.ok()) return found.status();
  if (*found) {
    std::string_view in = value;
    uint8_t version = 0, live = 0;
    if (!ReadFixed(&in, &version) || version != kStateVersion || !ReadFixed(&in, &time_ms_) ||
        !ReadFixed(&in, &last_record_wall_) || !ReadFixed(&in, &live) || !in.empty()) {
      return absl::DataLossError(StrCat("repartition: store ", store_name_,
                                        ": unreadable state entry"));
    }
    last_record_live_ = live != 0;
    stored_time_ = time_ms_;
    stored_live_ = last_record_live_;
    // A replay that paused before this restart holds the others back until it goes on.
    replay_paused_ = time_ms_ != INT64_MIN && !last_record_live_;
  }
  // Nothing read yet in this incarnation: its wall clock starts now (IdleNow).
  last_record_wall_ = INT64_MIN;
  started_wall_ = context->wall_clock_ms();
  context->Schedule(PunctuationType::kWallClock, 1'000, this);
  return absl::OkStatus();
}

absl::Status RepartitionSinkProcessor::Process(const Record<MetricEvent>& record) {
  const MetricEvent& event = *record.value;
  value_.clear();
  value_.push_back(static_cast<char>(kRepartitionEvent));
  AppendMetricEventProtobuf(event, &value_);
  context()->Send(topic_, event.service_id, value_, record.timestamp_ms);
  if (record.timestamp_ms > time_ms_) time_ms_ = record.timestamp_ms;
  records_since_tick_ = true;  // the wall clock is read per tick, not per record
  if (idle_) {
    // Reading again: no longer idle, at once (downstream counts it from this commit on).
    idle_ = false;
  }
  return absl::OkStatus();
}

bool RepartitionSinkProcessor::IdleNow(int64_t now_ms) const {
  // A bounded run: a partition holds the others back until it has read to its end (then
  // its end marker releases them), however long it takes to start.
  if (options_.idle_ms <= 0 || records_since_tick_ || context()->bounded_input() != nullptr) return false;
  if (last_record_wall_ == INT64_MIN) {
    // Nothing read since the task started: an empty partition, or a quiet live one —
    // idle soon once the consumer has found nothing to read (its partition's end), unless
    // a replay paused before the restart. Not on time alone: on a real Kafka a task's
    // first records may take seconds (the group's join, other tasks' restores), and its
    // partition, counted idle meanwhile, turned its records late.
    return !replay_paused_ && context()->input_reached_end() &&
           now_ms - started_wall_ >= std::min<int64_t>(options_.idle_ms, kStartIdleMs);
  }
  return last_record_live_ && now_ms - last_record_wall_ >= options_.idle_ms;
}

void RepartitionSinkProcessor::SendWatermark() {
  const int32_t partitions = context()->input_partitions();
  for (int32_t p = 0; p < partitions; ++p) {
    value_.clear();
    AppendRepartitionWatermark(RepartitionWatermark{.partition = context()->partition(),
                                                    .partitions = partitions,
                                                    .time_ms = time_ms_,
                                                    .idle = idle_,
                                                    .end_offset = end_offset_},
                               &value_);
    context()->SendToPartition(topic_, p, {}, value_, time_ms_ == INT64_MIN ? 0 : time_ms_);
  }
  sent_time_ = time_ms_;
  sent_idle_ = idle_;
  sent_wall_ = context()->wall_clock_ms();
  sent_once_ = true;
}

absl::Status RepartitionSinkProcessor::Punctuate(int64_t now_ms) {
  if (records_since_tick_) {
    last_record_wall_ = now_ms;
    last_record_live_ = time_ms_ != INT64_MIN && now_ms - time_ms_ <= options_.idle_ms;
    records_since_tick_ = false;
  }
  idle_ = IdleNow(now_ms);
  if (!sent_once_ || idle_ != sent_idle_ || time_ms_ != sent_time_ ||
      now_ms - sent_wall_ >= kResendMs) {
    SendWatermark();
  }
  return absl::OkStatus();
}

absl::Status RepartitionSinkProcessor::EndOfInput() {
  const BoundedInput* bounded = context()->bounded_input();
  if (bounded == nullptr) return absl::OkStatus();  // offline: the downstream task's own end
  const size_t p = static_cast<size_t>(context()->partition());
  end_offset_ = p < bounded->input_end.size() ? bounded->input_end[p] : 0;
  SendWatermark();
  return absl::OkStatus();
}

absl::Status RepartitionSinkProcessor::Flush() {
  // The watermark at a commit that moved it, at most every watermark_interval_ms (the
  // wall-clock tick sends a move the interval held back): downstream windows close soon
  // after the events before it are visible. Every watermark goes to every partition — a
  // task of N partitions' topic sends N records — so at every commit, a drain of 72
  // partitions sent 1.4M of them for 2.5M events, and its commits took most of its time.
  if (!sent_once_ || idle_ != sent_idle_ ||
      (time_ms_ != sent_time_ &&
       context()->wall_clock_ms() - sent_wall_ >= options_.watermark_interval_ms)) {
    SendWatermark();
  }
  if (time_ms_ != stored_time_ || last_record_live_ != stored_live_) {
    std::string value;
    AppendFixed<uint8_t>(kStateVersion, &value);
    AppendFixed<int64_t>(time_ms_, &value);
    AppendFixed<int64_t>(last_record_wall_, &value);
    AppendFixed<uint8_t>(last_record_live_ ? 1 : 0, &value);
    if (absl::Status s = store_->Put(kStateKey, value); !s.ok()) return s;
    stored_time_ = time_ms_;
    stored_live_ = last_record_live_;
  }
  return absl::OkStatus();
}

absl::Status RepartitionSourceProcessor::ProcessSource(const SourceRecord& record) {
  if (record.value.empty()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization, "repartition: empty record");
    return absl::OkStatus();
  }
  const uint8_t kind = static_cast<uint8_t>(record.value[0]);
  if (kind == kRepartitionEvent) {
    absl::Status s = decoder_->Decode(record.value.substr(1), &event_);
    if (!s.ok()) {
      context()->DeadLetter(DeadLetterReason::kDeserialization, Message(s));
      return absl::OkStatus();
    }
    const int64_t ts = event_.has_timestamp ? event_.timestamp_ms : record.timestamp_ms;
    return Forward(Record<MetricEvent>{record.key, &event_, ts});
  }
  if (kind != kRepartitionWatermark) {
    context()->DeadLetter(DeadLetterReason::kDeserialization,
                          StrCat("repartition: unknown record kind ", int{kind}));
    return absl::OkStatus();
  }
  absl::StatusOr<RepartitionWatermark> w = DecodeRepartitionWatermark(record.value.substr(1));
  if (!w.ok()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization, Message(w.status()));
    return absl::OkStatus();
  }
  if (upstream_.size() < static_cast<size_t>(w->partitions)) upstream_.resize(w->partitions);
  Upstream& u = upstream_[w->partition];
  u.known = true;
  u.idle = w->idle;
  u.time_ms = std::max(u.time_ms, w->time_ms);
  if (const BoundedInput* bounded = context()->bounded_input(); bounded != nullptr) {
    // Ended in this run: at (or past) the end this instance would read it to, or at an
    // end marker written since this run started (an instance started earlier may have
    // seen an earlier end; it read its partition to there, and no further).
    const size_t p = static_cast<size_t>(w->partition);
    const int64_t end = p < bounded->input_end.size() ? bounded->input_end[p] : 0;
    u.ended = w->end_offset >= 0 && (w->end_offset >= end || record.offset >= bounded->written_from);
  }
  int64_t least = INT64_MAX;
  bool all_ended = true;
  for (const Upstream& x : upstream_) {
    if (!x.known) return absl::OkStatus();  // not every upstream partition heard of yet
    all_ended &= x.ended;
    if (!x.idle && !x.ended) least = std::min(least, x.time_ms);
  }
  if (all_ended && !end_signalled_) {
    // Every upstream task has written all it will in this bounded run, and its records
    // came before its end marker: the task's input is complete.
    end_signalled_ = true;
    context()->SignalEndOfInput();
  }
  if (least == INT64_MAX || least <= watermark_) return absl::OkStatus();
  watermark_ = least;
  context()->ObserveEventTime(watermark_);
  return absl::OkStatus();
}

absl::Status KeyCheckProcessor::Process(const Record<MetricEvent>& record) {
  if (record.key != record.value->service_id) {
    context()->DeadLetter(DeadLetterReason::kKeyMismatch,
                          "input.keyed_by_service: the record's key is not its serviceId");
    return absl::OkStatus();
  }
  return Forward(record);
}

}  // namespace streammetrics
