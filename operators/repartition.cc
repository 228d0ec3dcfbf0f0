#include "operators/repartition.h"

#include <algorithm>

#include "operators/strings.h"
#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

// The state entry of the upstream end: version, watermark, last record's wall clock, live.
constexpr std::string_view kStateKey = "watermark";
// Version 2 adds the count of events written at that stream time; version 3 the last
// event dead-lettered as skewed.
constexpr uint8_t kStateVersion1 = 1;
constexpr uint8_t kStateVersion2 = 2;
constexpr uint8_t kStateVersion = 3;
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
  out->push_back(static_cast<char>((w.idle ? 1 : 0) | (w.end_offset >= 0 ? 2 : 0) | 4));
  if (w.end_offset >= 0) AppendFixed<int64_t>(w.end_offset, out);
  AppendFixed<uint32_t>(w.count, out);
}

absl::StatusOr<RepartitionWatermark> DecodeRepartitionWatermark(std::string_view in) {
  RepartitionWatermark w;
  uint8_t flags = 0;
  if (!ReadFixed(&in, &w.partition) || !ReadFixed(&in, &w.partitions) ||
      !ReadFixed(&in, &w.time_ms) || !ReadFixed(&in, &flags) ||
      ((flags & 2) != 0 && (!ReadFixed(&in, &w.end_offset) || w.end_offset < 0)) ||
      ((flags & 4) != 0 && !ReadFixed(&in, &w.count)) ||
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
    if (!ReadFixed(&in, &version) || version < kStateVersion1 || version > kStateVersion ||
        !ReadFixed(&in, &time_ms_) || !ReadFixed(&in, &last_record_wall_) ||
        !ReadFixed(&in, &live) || (version >= kStateVersion2 && !ReadFixed(&in, &time_count_)) ||
        (version >= kStateVersion && !ReadFixed(&in, &skew_pending_)) || !in.empty()) {
      return absl::DataLossError(StrCat("repartition: store ", store_name_,
                                        ": unreadable state entry"));
    }
    last_record_live_ = live != 0;
    stored_time_ = time_ms_;
    stored_count_ = time_count_;
    stored_pending_ = skew_pending_;
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
  if (options_.max_stream_skew_ms > 0 && time_ms_ != INT64_MIN) {
    int64_t ahead;
    if (__builtin_sub_overflow(record.timestamp_ms, time_ms_, &ahead)) ahead = INT64_MAX;
    if (ahead > options_.max_stream_skew_ms) {
      // Accepted when the previous event was as far ahead and close to it: the stream
      // moved on (a gap in the data), not one wild timestamp.
      int64_t apart;
      if (__builtin_sub_overflow(record.timestamp_ms, skew_pending_, &apart)) apart = INT64_MAX;
      if (skew_pending_ == INT64_MIN || apart > options_.max_stream_skew_ms ||
          apart < -options_.max_stream_skew_ms) {
        skew_pending_ = record.timestamp_ms;
        context()->DeadLetter(DeadLetterReason::kStreamSkew,
                              StrCat("timestamp: ", record.timestamp_ms, " is more than ",
                                     options_.max_stream_skew_ms,
                                     " ms ahead of the stream time (", time_ms_, ")"));
        return absl::OkStatus();
      }
    }
  }
  skew_pending_ = INT64_MIN;
  if (record.timestamp_ms > time_ms_) {
    time_ms_ = record.timestamp_ms;
    time_count_ = 0;
  }
  ++time_count_;
  // With where it was read, the task's stream time then (this event's included) and how
  // many events it has written at that stream time (this one included): the downstream
  // merge's order.
  value_.clear();
  value_.push_back(static_cast<char>(kRepartitionOrderedEvent));
  AppendFixed<int32_t>(context()->partition(), &value_);
  AppendFixed<int64_t>(context()->source_record().offset, &value_);
  AppendFixed<int64_t>(time_ms_, &value_);
  AppendFixed<uint32_t>(time_count_, &value_);
  AppendMetricEventProtobuf(event, &value_);
  context()->Send(topic_, event.service_id, value_, record.timestamp_ms);
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
                                                    .end_offset = end_offset_,
                                                    .count = time_count_},
                               &value_);
    context()->SendToPartition(topic_, p, {}, value_, time_ms_ == INT64_MIN ? 0 : time_ms_);
  }
  sent_time_ = time_ms_;
  sent_count_ = time_count_;
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
      time_count_ != sent_count_ || now_ms - sent_wall_ >= kResendMs) {
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
      ((time_ms_ != sent_time_ || time_count_ != sent_count_) &&
       context()->wall_clock_ms() - sent_wall_ >= options_.watermark_interval_ms)) {
    SendWatermark();
  }
  if (time_ms_ != stored_time_ || time_count_ != stored_count_ ||
      skew_pending_ != stored_pending_ || last_record_live_ != stored_live_) {
    std::string value;
    AppendFixed<uint8_t>(kStateVersion, &value);
    AppendFixed<int64_t>(time_ms_, &value);
    AppendFixed<int64_t>(last_record_wall_, &value);
    AppendFixed<uint8_t>(last_record_live_ ? 1 : 0, &value);
    AppendFixed<uint32_t>(time_count_, &value);
    AppendFixed<int64_t>(skew_pending_, &value);
    if (absl::Status s = store_->Put(kStateKey, value); !s.ok()) return s;
    stored_time_ = time_ms_;
    stored_count_ = time_count_;
    stored_pending_ = skew_pending_;
    stored_live_ = last_record_live_;
  }
  return absl::OkStatus();
}

namespace {

// The merge's positions: version, i64 idle clock's wall time, u8 live, i64 newest stream
// time read, i64 last offset read, u32 n, n x {i64 forwarded upstream offset, i64 its
// stream time, u32 its rank there}.
constexpr std::string_view kPositionsKey = "positions";
constexpr uint8_t kPositionsVersion = 1;

}  // namespace

RepartitionSourceProcessor::RepartitionSourceProcessor(std::string store_name, int64_t idle_ms,
                                                       int64_t idle_close_ms,
                                                       int64_t max_held_bytes)
    : store_name_(std::move(store_name)),
      idle_ms_(idle_ms),
      idle_close_ms_(idle_close_ms),
      max_held_bytes_(max_held_bytes),
      decoder_(NewProtobufMetricEventDecoder()) {}

absl::Status RepartitionSourceProcessor::Init(ProcessorContext* context) {
  if (absl::Status s = ProcessorBase::Init(context); !s.ok()) return s;
  upstream_ = std::vector<Upstream>(static_cast<size_t>(std::max(1, context->input_partitions())));
  // A bounded run ends on its end markers, never on the wall clock.
  if (idle_ms_ > 0 && context->bounded_input() == nullptr) {
    context->Schedule(PunctuationType::kWallClock, std::min<int64_t>(idle_ms_, 1'000), this);
  }
  if (store_name_.empty()) return absl::OkStatus();
  store_ = dynamic_cast<KeyValueStore*>(context->GetStateStore(store_name_));
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        StrCat("repartition: store ", store_name_, " is not registered"));
  }
  std::string value;
  absl::StatusOr<bool> found = store_->Get(kPositionsKey, &value);
  if (!found.ok()) return found.status();
  if (!*found) return absl::OkStatus();
  std::string_view in = value;
  uint8_t version = 0, live = 0;
  uint32_t n = 0;
  if (!ReadFixed(&in, &version) || version != kPositionsVersion || !ReadFixed(&in, &input_wall_) ||
      !ReadFixed(&in, &live) || !ReadFixed(&in, &newest_time_) || !ReadFixed(&in, &read_offset_) ||
      !ReadFixed(&in, &n) || in.size() != n * 20ull) {
    return absl::DataLossError(StrCat("repartition: store ", store_name_,
                                      ": unreadable positions"));
  }
  if (n != upstream_.size()) {
    return absl::DataLossError(StrCat("repartition: store ", store_name_, ": positions of ", n,
                                      " upstream partitions, the topic has ", upstream_.size()));
  }
  input_live_ = live != 0;
  // The events held at that commit are read again: up to the last one read then.
  reread_until_ = read_offset_;
  read_offset_ = -1;
  for (Upstream& u : upstream_) {
    ReadFixed(&in, &u.forwarded_offset);
    ReadFixed(&in, &u.forwarded_time);
    ReadFixed(&in, &u.forwarded_rank);
    // Its records still to come — those read again after the restart included — come
    // after the last one forwarded, so carry a stream time at least its.
    u.last_offset = u.forwarded_offset;
    if (u.forwarded_offset >= 0) {
      u.known = true;
      u.Saw(u.forwarded_time, u.forwarded_rank);
    }
  }
  return absl::OkStatus();
}

absl::Status RepartitionSourceProcessor::ProcessSource(const SourceRecord& record) {
  if (topic_.empty()) topic_.assign(record.topic);  // held records' dead letters name it
  if (record.value.empty()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization, "repartition: empty record");
    return absl::OkStatus();
  }
  const uint8_t kind = static_cast<uint8_t>(record.value[0]);
  if (kind == kRepartitionOrderedEvent) {
    std::string_view in = record.value.substr(1);
    int32_t partition;
    int64_t upstream_offset, time_ms;
    uint32_t rank;
    if (!ReadFixed(&in, &partition) || !ReadFixed(&in, &upstream_offset) ||
        !ReadFixed(&in, &time_ms) || !ReadFixed(&in, &rank) || rank == 0 || partition < 0 ||
        static_cast<size_t>(partition) >= upstream_.size()) {
      context()->DeadLetter(DeadLetterReason::kDeserialization,
                            "repartition: malformed event header");
      return absl::OkStatus();
    }
    Upstream& u = upstream_[static_cast<size_t>(partition)];
    newest_time_ = std::max(newest_time_, time_ms);
    read_offset_ = record.offset;
    if (record.offset > reread_until_) {
      input_since_tick_ = true;
      idle_ = false;
    }
    // Forwarded before the restart (its effects are in the restored state), or a copy
    // written again by an upstream task that did not commit (at least once).
    if (upstream_offset <= u.last_offset) return absl::OkStatus();
    u.last_offset = upstream_offset;
    u.known = true;
    u.Saw(time_ms, rank);
    if (absl::Status s = Hold(u, time_ms, rank, upstream_offset, record, in); !s.ok()) return s;
    return Release(/*all=*/idle_);
  }
  if (kind == kRepartitionEvent) {  // written by an earlier release: in arrival order
    return Forward(record, record.value.substr(1), INT64_MIN);
  }
  if (kind != kRepartitionWatermark) {
    context()->DeadLetter(DeadLetterReason::kDeserialization,
                          StrCat("repartition: unknown record kind ", int{kind}));
    return absl::OkStatus();
  }
  return OnUpstreamWatermark(record);
}

absl::Status RepartitionSourceProcessor::OnUpstreamWatermark(const SourceRecord& record) {
  absl::StatusOr<RepartitionWatermark> w = DecodeRepartitionWatermark(record.value.substr(1));
  if (!w.ok()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization, Message(w.status()));
    return absl::OkStatus();
  }
  if (static_cast<size_t>(w->partition) >= upstream_.size()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization,
                          StrCat("repartition: watermark of upstream partition ", w->partition,
                                 " of ", w->partitions, "; the topic has ", upstream_.size()));
    return absl::OkStatus();
  }
  Upstream& u = upstream_[w->partition];
  u.known = true;
  u.idle = w->idle;
  u.Saw(w->time_ms, w->count);
  if (const BoundedInput* bounded = context()->bounded_input(); bounded != nullptr) {
    // Ended in this run: at (or past) the end this instance would read it to, or at an
    // end marker written since this run started (an instance started earlier may have
    // seen an earlier end; it read its partition to there, and no further).
    const size_t p = static_cast<size_t>(w->partition);
    const int64_t end = p < bounded->input_end.size() ? bounded->input_end[p] : 0;
    u.ended = w->end_offset >= 0 && (w->end_offset >= end || record.offset >= bounded->written_from);
  }
  bool all_ended = true;
  for (const Upstream& x : upstream_) all_ended &= x.ended;
  if (absl::Status s = Release(/*all=*/all_ended); !s.ok()) return s;
  if (all_ended && !end_signalled_) {
    // Every upstream task has written all it will in this bounded run, and its records
    // came before its end marker: the task's input is complete.
    end_signalled_ = true;
    context()->SignalEndOfInput();
  }
  return absl::OkStatus();
}

absl::Status RepartitionSourceProcessor::Hold(Upstream& u, int64_t time_ms, uint32_t rank,
                                              int64_t upstream_offset,
                                              const SourceRecord& record,
                                              std::string_view value) {
  if (u.held.empty()) {
    u.base = u.consumed;
    u.bytes.clear();
  } else if (u.consumed - u.base > (1u << 16) && u.consumed - u.base > u.bytes.size() / 2) {
    u.bytes.erase(0, u.consumed - u.base);
    u.base = u.consumed;
  }
  const uint64_t at = u.base + u.bytes.size();
  // The value as a 0x01 record: what a dead letter of it carries (replay sends that back
  // outside the merge, where the 0x03 record would be skipped as already forwarded).
  u.bytes.append(record.key);
  u.bytes.push_back(static_cast<char>(kRepartitionEvent));
  u.bytes.append(value);
  u.held.push_back(Held{.time_ms = time_ms,
                        .rank = rank,
                        .upstream_offset = upstream_offset,
                        .offset = record.offset,
                        .timestamp_ms = record.timestamp_ms,
                        .at = at,
                        .key_len = static_cast<uint32_t>(record.key.size()),
                        .value_len = static_cast<uint32_t>(value.size() + 1)});
  ++held_records_;
  positions_dirty_ = true;  // what a restart reads again
  held_bytes_ += static_cast<int64_t>(sizeof(Held) + record.key.size() + value.size() + 1);
  return absl::OkStatus();
}

absl::Status RepartitionSourceProcessor::Release(bool all) {
  const size_t n = upstream_.size();
  while (held_records_ > 0) {
    // The least held record in merge order: (stream time, rank at it, upstream
    // partition); a partition's own records are in that order already.
    size_t best = n;
    for (size_t p = 0; p < n; ++p) {
      if (upstream_[p].held.empty()) continue;
      if (best == n || Before(upstream_[p].held.front(), upstream_[best].held.front())) best = p;
    }
    const Held& head = upstream_[best].held.front();
    // Every partition that holds nothing must be unable to send one before it: the next
    // record it can send is at (its stream time, its count there + 1) or later.
    bool due = all;
    if (!due) {
      due = true;
      for (size_t p = 0; p < n && due; ++p) {
        const Upstream& u = upstream_[p];
        if (p == best || !u.held.empty() || u.idle || u.ended) continue;
        const uint64_t next = uint64_t{u.count} + 1;
        due = u.known && (u.time_ms > head.time_ms ||
                          (u.time_ms == head.time_ms &&
                           (next > head.rank || (next == head.rank && p > best))));
      }
    }
    if (!due) {
      if (held_bytes_ <= max_held_bytes_) break;
      ++context()->counters().merge_overflows;  // the buffer is full: in its turn or not
    }
    Upstream& u = upstream_[best];
    const Held h = u.held.front();
    u.held.pop_front();
    --held_records_;
    held_bytes_ -= static_cast<int64_t>(sizeof(Held) + h.key_len + h.value_len);
    u.consumed = h.at + h.key_len + h.value_len;
    u.forwarded_offset = h.upstream_offset;
    u.forwarded_time = h.time_ms;
    u.forwarded_rank = h.rank;
    positions_dirty_ = true;
    const std::string_view bytes(u.bytes.data() + (h.at - u.base), h.key_len + h.value_len);
    const SourceRecord held{.topic = topic_,
                            .partition = context()->partition(),
                            .offset = h.offset,
                            .timestamp_ms = h.timestamp_ms,
                            .key = bytes.substr(0, h.key_len),
                            .value = bytes.substr(h.key_len)};
    if (absl::Status s = Forward(held, held.value.substr(1), h.time_ms); !s.ok()) return s;
  }
  // Stream time: the least stream time a record still to come can carry.
  int64_t least = INT64_MAX;
  for (const Upstream& u : upstream_) {
    if (u.ended || (u.idle && u.held.empty())) continue;
    if (!u.known) return absl::OkStatus();  // not every upstream partition heard of yet
    least = std::min(least, u.held.empty() ? u.time_ms : u.held.front().time_ms);
  }
  if (least == INT64_MAX || least <= watermark_) return absl::OkStatus();
  watermark_ = least;
  return context()->AdvanceStreamTime(watermark_);
}

absl::Status RepartitionSourceProcessor::Forward(const SourceRecord& record,
                                                 std::string_view value, int64_t time_ms) {
  // The record's own stream time first: windows that closed by then in its upstream
  // partition are closed here too, so it is late exactly where it would have been
  // without the repartition.
  if (time_ms > watermark_) {
    watermark_ = time_ms;
    if (absl::Status s = context()->AdvanceStreamTime(time_ms); !s.ok()) return s;
  }
  absl::Status s = decoder_->Decode(value, &event_);
  const SourceRecord* reading = context()->ReplaceSourceRecord(&record);
  if (!s.ok()) {
    context()->DeadLetter(DeadLetterReason::kDeserialization, Message(s));
    s = absl::OkStatus();
  } else {
    const int64_t ts = event_.has_timestamp ? event_.timestamp_ms : record.timestamp_ms;
    s = HasOutput<MetricEvent>::Forward(Record<MetricEvent>{record.key, &event_, ts});
  }
  context()->ReplaceSourceRecord(reading);
  return s;
}

int64_t RepartitionSourceProcessor::HeldFrom() const {
  int64_t from = -1;
  for (const Upstream& u : upstream_) {
    if (!u.held.empty() && (from < 0 || u.held.front().offset < from)) from = u.held.front().offset;
  }
  return from;
}

absl::Status RepartitionSourceProcessor::Flush() {
  if (store_ == nullptr || !positions_dirty_) return absl::OkStatus();
  scratch_.clear();
  AppendFixed<uint8_t>(kPositionsVersion, &scratch_);
  AppendFixed<int64_t>(input_wall_, &scratch_);
  AppendFixed<uint8_t>(input_live_ ? 1 : 0, &scratch_);
  AppendFixed<int64_t>(newest_time_, &scratch_);
  // What a restart reads again before its idle clock may act: nothing when nothing is held.
  AppendFixed<int64_t>(HeldFrom() >= 0 ? read_offset_ : -1, &scratch_);
  AppendFixed<uint32_t>(static_cast<uint32_t>(upstream_.size()), &scratch_);
  for (const Upstream& u : upstream_) {
    AppendFixed<int64_t>(u.forwarded_offset, &scratch_);
    AppendFixed<int64_t>(u.forwarded_time, &scratch_);
    AppendFixed<uint32_t>(u.forwarded_rank, &scratch_);
  }
  if (absl::Status s = store_->Put(kPositionsKey, scratch_); !s.ok()) return s;
  positions_dirty_ = false;
  return absl::OkStatus();
}

absl::Status RepartitionSourceProcessor::EndOfInput() { return Release(/*all=*/true); }

absl::Status RepartitionSourceProcessor::Punctuate(int64_t now_ms) {
  if (input_since_tick_) {
    input_since_tick_ = false;
    input_wall_ = now_ms;
    input_live_ = newest_time_ != INT64_MIN && newest_time_ >= now_ms - idle_ms_;
    positions_dirty_ = true;
    return absl::OkStatus();
  }
  // Live input that stopped: the upstream partitions that hold it back — a few old events
  // and then nothing (not live, so never idle upstream), or live ones whose idle marks are
  // still on their way — hold it no longer. Everything held goes, in merge order; with
  // idle close, stream time then follows the wall clock from the newest stream time read,
  // as the window operator's idle clock would, so the last windows close. Input further
  // behind (a replay that pauses) is never idle here either.
  // (After a restart, not before the events read before it have been read again: they
  // would be late, stream time having moved on without them.)
  if (!input_live_ || input_wall_ == INT64_MIN || now_ms - input_wall_ < idle_ms_ ||
      read_offset_ < reread_until_) {
    return absl::OkStatus();
  }
  if (!idle_) {
    idle_ = true;
    if (absl::Status s = Release(/*all=*/true); !s.ok()) return s;
  }
  if (idle_close_ms_ <= 0 || now_ms - input_wall_ < idle_close_ms_) return absl::OkStatus();
  const int64_t advanced = newest_time_ + (now_ms - input_wall_);
  if (advanced <= watermark_) return absl::OkStatus();
  watermark_ = advanced;
  return context()->AdvanceStreamTime(watermark_);
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
