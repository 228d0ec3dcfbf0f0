#include "operators/strings.h"
#include "operators/windowed_aggregate.h"

#include <algorithm>
#include <cstring>

#include "statestore/fixed_encoding.h"
#include <cmath>


namespace streammetrics {

absl::Status AggregateOptions::Validate() const {
  if (group_by.empty()) {
    return absl::InvalidArgumentError("aggregate: group_by needs at least one dimension");
  }
  if (absl::Status s = ValidateWindowSpecs(windows); !s.ok()) return s;
  if (quantiles.size() > kMaxQuantiles) {
    return absl::InvalidArgumentError(
        StrCat("aggregate: at most ", kMaxQuantiles, " quantiles"));
  }
  if (idle_close_ms < 0 || idle_close_ms > kMaxDurationMs) {
    return absl::InvalidArgumentError(StrCat("aggregate: idle_close must be in [0, ",
                                             kMaxDurationMs / 86'400'000, "d]"));
  }
  if (max_stream_skew_ms < 0 || max_stream_skew_ms > kMaxDurationMs) {
    return absl::InvalidArgumentError(StrCat("aggregate: max_stream_skew must be in [0, ",
                                             kMaxDurationMs / 86'400'000, "d]"));
  }
  if (!(compression >= 10 && compression <= 10000)) {
    return absl::InvalidArgumentError("aggregate: compression must be in [10, 10000]");
  }
  if (exact_quantiles_up_to > MetricStats::kMaxExactUpTo) {
    return absl::InvalidArgumentError(
        StrCat("aggregate: exact_quantiles_up_to must be in [0, ", MetricStats::kMaxExactUpTo,
               "]"));
  }
  return absl::OkStatus();
}

WindowedAggregateProcessor::WindowedAggregateProcessor(AggregateOptions options,
                                                       std::string store_name)
    : options_(std::move(options)),
      store_name_(std::move(store_name)),
      pane_size_(PaneSize(options_.windows)),
      merged_(options_.compression, options_.exact_quantiles_up_to),
      fetched_(options_.compression, options_.exact_quantiles_up_to) {
  if (options_.quantiles.empty()) {
    options_.quantiles = *MakeQuantileSpecs({0.5, 0.95, 0.99});
  }
  for (size_t i = 0; i < options_.quantiles.size(); ++i) qs_[i] = options_.quantiles[i].q;
  for (const FieldRef& dim : options_.group_by) dim_names_.push_back(dim.output_name());
  for (const WindowSpec& w : options_.windows) {
    max_retention_ = std::max(max_retention_, w.size_ms + w.grace_ms);
    max_grace_ = std::max(max_grace_, w.grace_ms);
    has_update_windows_ |= w.emit == EmitMode::kUpdate;
  }
  next_start_.assign(options_.windows.size(), INT64_MIN);
}

absl::Status WindowedAggregateProcessor::Init(ProcessorContext* context) {
  if (absl::Status s = ProcessorBase::Init(context); !s.ok()) return s;
  store_ = dynamic_cast<WindowStore*>(context->GetStateStore(store_name_));
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("aggregate: window store " + store_name_ +
                                         " is not registered");
  }
  budget_ = context->cache_budget();
  watermarked_ = context->watermarked();
  // A bounded run closes every window at its end, never on the wall clock: a source
  // whose records come slowly is not idle there, only behind.
  if (options_.idle_close_ms > 0 && context->bounded_input() == nullptr) {
    context->Schedule(PunctuationType::kWallClock, std::min<int64_t>(options_.idle_close_ms, 1000),
                      this);
  }
  return Restore();
}

namespace {

// The operator's own state beside its panes: key "" (no group key encodes empty) at
// window start INT64_MAX (never reached by retention's DeleteBefore).
constexpr int64_t kMetaStart = INT64_MAX;
// Version 1: no idle clock (read as "no live record seen yet") and no compaction boundary
// (read: panes were compacted at commits then). Version 2 has both. Version 3 adds the
// pending stream-skew timestamp (read from older versions as none pending).
constexpr uint8_t kMetaVersion1 = 1;
constexpr uint8_t kMetaVersion2 = 2;
constexpr uint8_t kMetaVersion = 3;

}  // namespace

void WindowedAggregateProcessor::AppendMeta(std::string* out) const {
  // Layout: u8 version (3), i64 stream time, i64 idle clock's wall time, i64 idle clock's
  // stream time, i64 compaction boundary, i64 pending stream-skew timestamp, u32 n,
  // n x {i64 size, i64 advance, i64 next start}. Version 2: without the pending
  // timestamp; version 1: also without the idle clock and the boundary.
  out->push_back(static_cast<char>(kMetaVersion));
  AppendFixed<int64_t>(stream_time_, out);
  AppendFixed<int64_t>(last_record_wall_, out);
  AppendFixed<int64_t>(stream_time_at_last_record_, out);
  AppendFixed<int64_t>(compact_below_, out);
  AppendFixed<int64_t>(skew_pending_, out);
  AppendFixed<uint32_t>(static_cast<uint32_t>(options_.windows.size()), out);
  for (size_t w = 0; w < options_.windows.size(); ++w) {
    AppendFixed<int64_t>(options_.windows[w].size_ms, out);
    AppendFixed<int64_t>(options_.windows[w].advance_ms, out);
    AppendFixed<int64_t>(next_start_[w], out);
  }
}

absl::Status WindowedAggregateProcessor::Restore() {
  std::string meta;
  absl::StatusOr<bool> found = store_->Fetch("", kMetaStart, &meta);
  if (!found.ok()) return found.status();
  auto corrupt = [this](std::string_view why) {
    return absl::DataLossError(StrCat("aggregate: store ", store_name_, ": ", why,
                                      "; the store must be rebuilt"));
  };
  if (*found) {
    std::string_view in = meta;
    uint8_t version;
    uint32_t n;
    if (!ReadFixed(&in, &version) || !ReadFixed(&in, &stream_time_)) {
      return corrupt("unreadable operator state");
    }
    if (version == kMetaVersion || version == kMetaVersion2) {
      if (!ReadFixed(&in, &last_record_wall_) || !ReadFixed(&in, &stream_time_at_last_record_) ||
          !ReadFixed(&in, &compact_below_) ||
          (version == kMetaVersion && !ReadFixed(&in, &skew_pending_))) {
        return corrupt("unreadable operator state");
      }
    } else if (version == kMetaVersion1) {
      if (stream_time_ > INT64_MIN + pane_size_ + max_grace_) {
        compact_below_ = stream_time_ - pane_size_ - max_grace_;  // as commits compacted them
      }
    } else {
      return corrupt(StrCat("operator state of unknown version ", static_cast<int>(version),
                            " (written by a newer release?)"));
    }
    if (!ReadFixed(&in, &n)) return corrupt("unreadable operator state");
    if (n != options_.windows.size()) {
      return corrupt("state written by a topology with other windows");
    }
    for (size_t w = 0; w < n; ++w) {
      int64_t size, advance;
      if (!ReadFixed(&in, &size) || !ReadFixed(&in, &advance) || !ReadFixed(&in, &next_start_[w])) {
        return corrupt("unreadable operator state");
      }
      if (size != options_.windows[w].size_ms || advance != options_.windows[w].advance_ms) {
        return corrupt("state written by a topology with other windows");
      }
    }
    if (!in.empty()) return corrupt("unreadable operator state");
    RecomputeNextClose();
  }
  bool any_pane = false;
  absl::Status s = store_->FetchAll(
      INT64_MIN, kMetaStart, [&](std::string_view key, int64_t start, std::string_view value) {
        any_pane = true;
        if (WindowSpec::FloorDiv(start, pane_size_) * pane_size_ != start) {
          return corrupt("a pane does not start on the pane grid (other windows?)");
        }
        absl::StatusOr<MetricStats> stats =
            MetricStats::Parse(value, options_.compression, options_.exact_quantiles_up_to);
        if (!stats.ok()) return corrupt(Message(stats.status()));
        Pane& pane = panes_[PaneFor(InternKey(key), start)];
        pane.stats = *std::move(stats);
        Recount(pane);
        pane.compacted = start < compact_below_;  // as written: compacted before, or never
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  if (any_pane && !*found) return corrupt("panes without operator state");
  return absl::OkStatus();
}

absl::Status WindowedAggregateProcessor::OnWatermark(int64_t time_ms) {
  time_ms = std::min(time_ms, kMaxEventTimeMs);  // window arithmetic stays in int64
  if (time_ms <= stream_time_) return absl::OkStatus();
  stream_time_ = time_ms;
  if (stream_time_ >= next_close_time_) return CloseDueWindows();
  return absl::OkStatus();
}

void WindowedAggregateProcessor::NoteRecords(int64_t now_ms) {
  record_since_tick_ = false;
  last_record_wall_ = now_ms;
  stream_time_at_last_record_ = watermarked_ ? std::max(stream_time_, newest_record_ts_) : stream_time_;
}

bool WindowedAggregateProcessor::IdleClockLive() const {
  // Live: when the last records were noted, stream time was within idle_close of the
  // wall clock (written so that it cannot overflow: last_record_wall_ is a real time).
  return last_record_wall_ != INT64_MIN &&
         stream_time_at_last_record_ >= last_record_wall_ - options_.idle_close_ms;
}

absl::Status WindowedAggregateProcessor::Punctuate(int64_t now_ms) {
  if (record_since_tick_) {
    NoteRecords(now_ms);
    return absl::OkStatus();
  }
  // Input behind the wall clock (a replay, a backlog) is not idle when it pauses: more of
  // it may follow, and closing its windows on the wall clock would make it late.
  if (!IdleClockLive()) return absl::OkStatus();
  const int64_t idle = now_ms - last_record_wall_;
  if (idle < options_.idle_close_ms) return absl::OkStatus();
  const int64_t advanced = stream_time_at_last_record_ + idle;
  if (advanced <= stream_time_) return absl::OkStatus();
  stream_time_ = advanced;
  if (stream_time_ >= next_close_time_) return CloseDueWindows();
  return absl::OkStatus();
}

int64_t WindowedAggregateProcessor::FirstOpenStart(const WindowSpec& w) const {
  // The smallest aligned start s with CloseTime(s) > stream_time_. Before any stream time
  // (a watermarked operator's first records come before the first watermark), or far
  // below the event-time domain, every window is open.
  int64_t t;
  if (__builtin_sub_overflow(stream_time_, w.size_ms + w.grace_ms, &t) ||
      t < -kMaxEventTimeMs - 3 * kMaxDurationMs) {
    return INT64_MIN;
  }
  return WindowSpec::FloorDiv(t, w.advance_ms) * w.advance_ms + w.advance_ms;
}

absl::Status WindowedAggregateProcessor::Process(const Record<MetricEvent>& record) {
  // validate rejects these, but a topology need not validate (and protobuf carries NaN):
  // one non-finite value would turn a window's sum and avg into nulls.
  if (!std::isfinite(record.value->value)) {
    context()->DeadLetter(DeadLetterReason::kProcessing, "aggregate: value is not finite");
    return absl::OkStatus();
  }
  const int64_t ts = record.timestamp_ms;
  if (!InEventTimeDomain(ts)) {
    context()->DeadLetter(DeadLetterReason::kProcessing,
                          StrCat("aggregate: timestamp ", ts, " is outside [-", kMaxEventTimeMs,
                                 ", ", kMaxEventTimeMs, "]"));
    return absl::OkStatus();
  }
  if (!watermarked_ && options_.max_stream_skew_ms > 0 && stream_time_ != INT64_MIN) {
    int64_t ahead;
    if (__builtin_sub_overflow(ts, stream_time_, &ahead)) ahead = INT64_MAX;
    if (ahead > options_.max_stream_skew_ms) {
      // Accepted when the previous record was ahead too, by as much (the stream moved).
      int64_t apart;
      if (__builtin_sub_overflow(ts, skew_pending_, &apart)) apart = INT64_MAX;
      const bool confirmed = skew_pending_ != INT64_MIN && apart <= options_.max_stream_skew_ms &&
                             apart >= -options_.max_stream_skew_ms;
      if (!confirmed) {
        skew_pending_ = ts;
        context()->DeadLetter(DeadLetterReason::kStreamSkew,
                              StrCat("timestamp: ", ts, " is more than ",
                                     options_.max_stream_skew_ms,
                                     " ms ahead of the stream time (", stream_time_, ")"));
        return absl::OkStatus();
      }
    }
  }
  skew_pending_ = INT64_MIN;
  if (ts > stream_time_ && !watermarked_) stream_time_ = ts;
  if (ts > newest_record_ts_) newest_record_ts_ = ts;
  record_since_tick_ = true;  // idleness is judged per wall-clock tick, not per record

  // Which window definitions can still take this record?
  size_t late = 0;
  for (size_t w = 0; w < options_.windows.size(); ++w) {
    const WindowSpec& spec = options_.windows[w];
    if (spec.CloseTime(spec.LatestStartFor(ts)) <= stream_time_) {
      ++late;
      continue;
    }
    // Usually the event cannot lower the next window to close: skip the divisions.
    const int64_t earliest = spec.EarliestStartFor(ts);
    if (next_start_[w] != INT64_MIN && earliest >= next_start_[w]) continue;
    int64_t first_open = std::max(earliest, FirstOpenStart(spec));
    if (next_start_[w] == INT64_MIN || first_open < next_start_[w]) {
      next_start_[w] = first_open;
      next_close_time_ = std::min(next_close_time_, spec.CloseTime(first_open));
    }
  }
  TaskCounters& counters = context()->counters();
  if (late == options_.windows.size()) {
    ++counters.late_dropped;
    if (options_.late_to_dead_letter) {
      context()->DeadLetter(DeadLetterReason::kLate,
                            "late: every window containing the event has closed");
    }
    return absl::OkStatus();
  }
  counters.late_window_updates += late;

  key_buf_.clear();
  AppendGroupKey(options_.group_by, *record.value, &key_buf_);
  const uint32_t key = InternKey(key_buf_);
  const int64_t pane_start = WindowSpec::FloorDiv(ts, pane_size_) * pane_size_;
  KeyState& ks = keys_[key];
  uint32_t pane_id;
  if (ks.cur_pane_start == pane_start) {
    pane_id = ks.cur_pane;
  } else {
    pane_id = PaneFor(key, pane_start);
    ks.cur_pane_start = pane_start;
    ks.cur_pane = pane_id;
  }
  if (panes_[pane_id].evicted) {  // late for some windows, on time for others
    if (absl::Status s = Reload(pane_id); !s.ok()) return s;
  }
  Pane& pane = panes_[pane_id];
  pane.stats.Add(record.value->value);
  if (!pane.store_dirty) {
    pane.store_dirty = true;
    store_dirty_.push_back(pane_id);
  }
  if (has_update_windows_ && !pane.update_dirty) {
    pane.update_dirty = true;
    update_dirty_.push_back(pane_id);
  }
  ++counters.records_processed;

  if (stream_time_ >= next_close_time_) return CloseDueWindows();
  return absl::OkStatus();
}

uint32_t WindowedAggregateProcessor::InternKey(std::string_view key) {
  auto it = key_ids_.find(key);
  if (it != key_ids_.end()) return it->second;
  uint32_t id;
  if (!free_keys_.empty()) {
    id = free_keys_.back();
    free_keys_.pop_back();
    keys_[id] = KeyState{};
  } else {
    id = static_cast<uint32_t>(keys_.size());
    keys_.emplace_back();
  }
  keys_[id].key.assign(key.data(), key.size());
  key_ids_.emplace(keys_[id].key, id);
  ordered_keys_.emplace(keys_[id].key, id);
  return id;
}

uint32_t WindowedAggregateProcessor::PaneFor(uint32_t key, int64_t pane_start) {
  auto [it, inserted] = pane_ids_.try_emplace(PaneKey{key, pane_start}, kNone);
  if (!inserted) return it->second;
  uint32_t id;
  if (!free_panes_.empty()) {
    id = free_panes_.back();
    free_panes_.pop_back();
  } else {
    id = static_cast<uint32_t>(panes_.size());
    panes_.push_back(Pane{.stats = EmptyStats()});
  }
  Pane& pane = panes_[id];
  pane.key = key;
  pane.start = pane_start;
  pane.compacted = false;
  it->second = id;
  panes_by_start_[pane_start].push_back(PaneRef{id, key});
  ++keys_[key].panes;
  return id;
}

void WindowedAggregateProcessor::RecomputeNextClose() {
  next_close_time_ = INT64_MAX;
  for (size_t w = 0; w < options_.windows.size(); ++w) {
    if (next_start_[w] == INT64_MIN) continue;
    next_close_time_ = std::min(next_close_time_, options_.windows[w].CloseTime(next_start_[w]));
  }
}

absl::Status WindowedAggregateProcessor::CloseDueWindows() {
  // Windows close in order of close time across definitions, so results of a smaller
  // window never trail those of a larger one that closed later.
  while (true) {
    size_t best = options_.windows.size();
    int64_t best_close = INT64_MAX;
    for (size_t w = 0; w < options_.windows.size(); ++w) {
      if (next_start_[w] == INT64_MIN) continue;
      int64_t close = options_.windows[w].CloseTime(next_start_[w]);
      if (close <= stream_time_ && close < best_close) {
        best = w;
        best_close = close;
      }
    }
    if (best == options_.windows.size()) break;
    ++close_steps_;
    const WindowSpec& spec = options_.windows[best];
    // Skip stretches without data in one step: a window holds only panes that start in
    // it, so the next one with data is the earliest containing the first pane at or
    // after its start; without such a pane every window up to the open ones is empty.
    const auto next_pane = panes_by_start_.lower_bound(next_start_[best]);
    if (next_pane == panes_by_start_.end()) {
      next_start_[best] = FirstOpenStart(spec);
      continue;
    }
    int64_t first_with_data = spec.EarliestStartFor(next_pane->first);
    if (first_with_data > next_start_[best]) {
      next_start_[best] = std::min(first_with_data, FirstOpenStart(spec));
      continue;
    }
    if (absl::Status s = EmitWindow(best, next_start_[best]); !s.ok()) return s;
    next_start_[best] += spec.advance_ms;
  }
  RecomputeNextClose();
  DropExpiredPanes();
  CompactPanes();
  return absl::OkStatus();
}

void WindowedAggregateProcessor::CompactPanes() {
  if (stream_time_ <= INT64_MIN + pane_size_ + max_grace_) return;
  const int64_t limit = stream_time_ - pane_size_ - max_grace_;  // pane start < limit
  if (limit <= compact_below_) return;
  for (auto it = panes_by_start_.lower_bound(compact_below_);
       it != panes_by_start_.end() && it->first < limit; ++it) {
    for (const PaneRef& ref : it->second) {
      const uint32_t id = ref.id;
      Pane& pane = panes_[id];
      if (pane.compacted || pane.evicted) continue;
      pane.compacted = true;
      // A merged buffer is a new state: the store must hold it, as a restore must
      // find the pane as compacted as the flag says.
      const bool changed = pane.stats.Compact();
      Recount(pane);
      if (changed && !pane.store_dirty) {
        pane.store_dirty = true;
        store_dirty_.push_back(id);
      }
    }
  }
  compact_below_ = limit;
}

absl::Status WindowedAggregateProcessor::EmitWindow(size_t w, int64_t start) {
  const WindowSpec& spec = options_.windows[w];
  // Saturated: a watermark near the end of time asks for windows that end past it.
  const int64_t end = start > INT64_MAX - spec.size_ms ? INT64_MAX : start + spec.size_ms;
  const bool only_changed = spec.emit == EmitMode::kUpdate;
  const auto first = panes_by_start_.lower_bound(start);
  const auto last = panes_by_start_.lower_bound(end);
  if (first == last) return absl::OkStatus();
  // Count each key's panes in the window, without touching the panes (their keys are in
  // panes_by_start_); kUpdate also needs to know which changed.
  if (emit_.size() < keys_.size()) emit_.resize(keys_.size());
  ++mark_;
  scratch_keys_.clear();
  size_t total = 0;
  for (auto it = first; it != last; ++it) {
    total += it->second.size();
    for (const PaneRef& ref : it->second) {
      EmitSlot& slot = emit_[ref.key];
      if (slot.mark != mark_) {
        slot.mark = mark_;
        slot.count = 0;
        slot.changed = false;
        scratch_keys_.push_back(ref.key);
      }
      ++slot.count;
      if (only_changed && panes_[ref.id].update_dirty) slot.changed = true;
    }
  }
  if (scratch_keys_.empty()) return absl::OkStatus();
  // Group-key byte order either way: walking every live key in order costs a few ns a
  // key, sorting m keys m log m string comparisons; walk unless few keys have data.
  if (ordered_keys_.size() > 16 * scratch_keys_.size()) {
    std::sort(scratch_keys_.begin(), scratch_keys_.end(),
              [this](uint32_t a, uint32_t b) { return keys_[a].key < keys_[b].key; });
  } else {
    size_t n = 0;
    for (const auto& [view, key] : ordered_keys_) {
      if (emit_[key].mark == mark_) scratch_keys_[n++] = key;
    }
  }
  // Each key's range in emit_panes_, in emission order; then the panes into their
  // ranges, in start order (a counting sort): emitting reads them in sequence.
  emit_ranges_.resize(scratch_keys_.size() + 1);
  uint32_t at = 0;
  for (size_t i = 0; i < scratch_keys_.size(); ++i) {
    EmitSlot& slot = emit_[scratch_keys_[i]];
    emit_ranges_[i] = at;
    slot.next = at;
    at += slot.count;
  }
  emit_ranges_[scratch_keys_.size()] = at;
  emit_panes_.resize(total);
  for (auto it = first; it != last; ++it) {
    for (const PaneRef& ref : it->second) emit_panes_[emit_[ref.key].next++] = ref.id;
  }
  for (size_t i = 0; i < scratch_keys_.size(); ++i) {
    const uint32_t key = scratch_keys_[i];
    // The next key's panes and key bytes are the next cache misses: fetch them while
    // this result is computed.
    if (i + 2 < scratch_keys_.size()) __builtin_prefetch(&keys_[scratch_keys_[i + 2]]);
    if (i + 1 < scratch_keys_.size()) {
      __builtin_prefetch(keys_[scratch_keys_[i + 1]].key.data());
      for (uint32_t j = emit_ranges_[i + 1]; j < emit_ranges_[i + 2]; ++j) {
        const char* p = reinterpret_cast<const char*>(&panes_[emit_panes_[j]]);
        __builtin_prefetch(p);
        __builtin_prefetch(p + sizeof(Pane) - 1);
      }
    }
    if (only_changed && !emit_[key].changed) continue;
    const std::span<const uint32_t> ids(emit_panes_.data() + emit_ranges_[i],
                                        emit_ranges_[i + 1] - emit_ranges_[i]);
    if (absl::Status s = EmitPanes(w, start, key, ids); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WindowedAggregateProcessor::EmitPanes(size_t w, int64_t start, uint32_t key,
                                                   std::span<const uint32_t> ids) {
  const WindowSpec& spec = options_.windows[w];
  absl::StatusOr<const MetricStats*> first = PaneStats(ids[0]);
  if (!first.ok()) return first.status();
  // One pane: its stats are the window's (a merge into empty stats would copy them to
  // the same state — unless it turns the pane into a digest, or merges a digest).
  if (ids.size() == 1 &&
      (spec.size_ms == pane_size_ ||
       ((*first)->exact() && (*first)->count() <= options_.exact_quantiles_up_to))) {
    if ((*first)->count() == 0) return absl::OkStatus();
    return Emit(w, start, key, **first);
  }
  merged_.Reset();
  merged_.Merge(**first);
  for (size_t i = 1; i < ids.size(); ++i) {
    absl::StatusOr<const MetricStats*> pane = PaneStats(ids[i]);
    if (!pane.ok()) return pane.status();
    merged_.Merge(**pane);
  }
  if (merged_.count() == 0) return absl::OkStatus();
  return Emit(w, start, key, merged_);
}

absl::Status WindowedAggregateProcessor::EmitResult(size_t w, int64_t start, uint32_t key) {
  const WindowSpec& spec = options_.windows[w];
  const int64_t end = start + spec.size_ms;
  if (spec.size_ms == pane_size_) {
    auto it = pane_ids_.find(PaneKey{key, start});
    if (it == pane_ids_.end()) return absl::OkStatus();
    absl::StatusOr<const MetricStats*> pane = PaneStats(it->second);
    if (!pane.ok()) return pane.status();
    return Emit(w, start, key, **pane);
  }
  merged_.Reset();
  // The pane starts holding data in the window (of any key), not every pane slot of it:
  // at most size / pane size lookups, and no more than the data.
  for (auto at = panes_by_start_.lower_bound(start);
       at != panes_by_start_.end() && at->first < end; ++at) {
    auto it = pane_ids_.find(PaneKey{key, at->first});
    if (it == pane_ids_.end()) continue;
    absl::StatusOr<const MetricStats*> pane = PaneStats(it->second);
    if (!pane.ok()) return pane.status();
    merged_.Merge(**pane);
  }
  if (merged_.count() == 0) return absl::OkStatus();
  return Emit(w, start, key, merged_);
}

absl::Status WindowedAggregateProcessor::Emit(size_t w, int64_t start, uint32_t key,
                                              const MetricStats& stats) {
  const WindowSpec& spec = options_.windows[w];
  const int64_t end = start + spec.size_ms;
  const KeyState& ks = keys_[key];
  if (!DecodeGroupKey(ks.key, dim_names_.size(), &scratch_dims_)) {
    return absl::InternalError("aggregate: corrupt group key");
  }
  WindowedAggregate result;
  result.window = &spec;
  result.window_start = start;
  result.window_end = end;
  result.dim_names = &dim_names_;
  result.dim_values = &scratch_dims_;
  result.stats = &stats;
  result.quantiles = &options_.quantiles;
  // Const: answering changes no pane (results never depend on when they are asked).
  stats.Quantiles(std::span<const double>(qs_.data(), options_.quantiles.size()),
                  std::span<double>(result.quantile_values.data(), options_.quantiles.size()));
  result.rate = static_cast<double>(stats.count()) * 1000.0 / static_cast<double>(spec.size_ms);
  ++context()->counters().windows_emitted;
  // The result's timestamp is the window's last millisecond, so re-windowing results
  // downstream puts each in the window it summarises.
  return Forward(Record<WindowedAggregate>{ks.key, &result, end - 1});
}

void WindowedAggregateProcessor::FreePane(uint32_t id) {
  Pane& pane = panes_[id];
  pane_ids_.erase(PaneKey{pane.key, pane.start});
  KeyState& ks = keys_[pane.key];
  if (ks.cur_pane == id) {
    ks.cur_pane = kNone;
    ks.cur_pane_start = INT64_MIN;
  }
  if (--ks.panes == 0) {
    key_ids_.erase(std::string_view(ks.key));
    ordered_keys_.erase(std::string_view(ks.key));
    ks.key.clear();
    free_keys_.push_back(pane.key);
  }
  pane.key = kNone;
  pane.stats = EmptyStats();  // release the values' memory
  pane_bytes_ -= pane.charged;
  pane.charged = 0;
  pane.store_dirty = false;
  pane.update_dirty = false;
  if (pane.evicted) --evicted_;
  pane.evicted = false;
  free_panes_.push_back(id);
}

void WindowedAggregateProcessor::DropExpiredPanes() {
  if (stream_time_ < INT64_MIN + max_retention_) return;
  const int64_t horizon = stream_time_ - max_retention_;  // panes starting <= horizon go
  auto end = panes_by_start_.upper_bound(horizon);
  if (end == panes_by_start_.begin()) return;
  for (auto it = panes_by_start_.begin(); it != end; ++it) {
    for (const PaneRef& ref : it->second) FreePane(ref.id);
  }
  panes_by_start_.erase(panes_by_start_.begin(), end);
  dropped_before_ = std::max(dropped_before_, horizon + 1);
}

absl::Status WindowedAggregateProcessor::Flush() {
  // kUpdate windows: emit every open window whose panes changed since the last commit.
  if (has_update_windows_ && !update_dirty_.empty()) {
    for (size_t w = 0; w < options_.windows.size(); ++w) {
      const WindowSpec& spec = options_.windows[w];
      if (spec.emit != EmitMode::kUpdate) continue;
      // Windows touched by a changed pane, each emitted once.
      absl::btree_map<int64_t, std::vector<uint32_t>> touched;
      for (uint32_t id : update_dirty_) {
        const Pane& pane = panes_[id];
        if (!pane.update_dirty) continue;
        for (int64_t s = spec.EarliestStartFor(pane.start); s <= spec.LatestStartFor(pane.start);
             s += spec.advance_ms) {
          if (spec.CloseTime(s) > stream_time_) touched[s].push_back(pane.key);
        }
      }
      for (auto& [start, keys] : touched) {
        std::sort(keys.begin(), keys.end(),
                  [this](uint32_t a, uint32_t b) { return keys_[a].key < keys_[b].key; });
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        for (uint32_t key : keys) {
          if (absl::Status s = EmitResult(w, start, key); !s.ok()) return s;
        }
      }
    }
    for (uint32_t id : update_dirty_) panes_[id].update_dirty = false;
    update_dirty_.clear();
  }

  // Write-back: changed panes to the store, expired ones out of it, and the operator's
  // own state (stream time, next windows to close, idle clock) when it moved. Records
  // since the last tick are noted first (one clock read per commit), so the idle clock
  // committed with them is theirs and a restored task continues it.
  if (record_since_tick_ && options_.idle_close_ms > 0) NoteRecords(context()->wall_clock_ms());
  value_buf_.clear();
  AppendMeta(&value_buf_);
  if (value_buf_ != last_meta_) {
    if (absl::Status s = store_->Put("", kMetaStart, value_buf_); !s.ok()) return s;
    last_meta_ = value_buf_;
  }
  if (dropped_before_ != INT64_MIN) {
    if (absl::Status s = store_->DeleteBefore(dropped_before_); !s.ok()) return s;
  }
  for (uint32_t id : store_dirty_) {
    Pane& pane = panes_[id];
    if (!pane.store_dirty) continue;
    pane.store_dirty = false;
    Recount(pane);  // every change by a record made the pane dirty
    value_buf_.clear();
    pane.stats.AppendTo(&value_buf_);
    if (absl::Status s = store_->Put(keys_[pane.key].key, pane.start, value_buf_); !s.ok()) {
      return s;
    }
  }
  store_dirty_.clear();

  // Panes are compacted where windows close (CompactPanes), never here: a commit
  // changes no pane, so where commits fall changes no result.
  if (budget_ != nullptr) ChargeAndEvict();
  return absl::OkStatus();
}

void WindowedAggregateProcessor::Recount(Pane& pane) {
  if (budget_ == nullptr) return;
  const uint32_t bytes = static_cast<uint32_t>(pane.stats.MemoryBytes());
  pane_bytes_ += static_cast<int64_t>(bytes) - pane.charged;
  pane.charged = bytes;
}

void WindowedAggregateProcessor::ChargeAndEvict() {
  // The panes' memory is counted as they change (Recount), not by visiting every live
  // pane at each commit (which cost ~4% of the job at 30,000 keys).
  budget_->Charge(pane_bytes_ - charged_);
  charged_ = pane_bytes_;
  // Oldest first: compacted panes (they precede compact_below_ in start order) are
  // clean after the write-back above, so the store holds exactly their stats.
  for (auto it = panes_by_start_.begin();
       budget_->excess() > 0 && it != panes_by_start_.end() && it->first < compact_below_;
       ++it) {
    for (const PaneRef& ref : it->second) {
      Pane& pane = panes_[ref.id];
      if (pane.evicted || !pane.compacted || pane.store_dirty) continue;
      const int64_t before = pane_bytes_;
      pane.stats = EmptyStats();
      pane.evicted = true;
      ++evicted_;
      Recount(pane);
      const int64_t freed = before - pane_bytes_;
      budget_->Charge(-freed);
      charged_ -= freed;
      if (budget_->excess() == 0) break;
    }
  }
}

absl::StatusOr<const MetricStats*> WindowedAggregateProcessor::PaneStats(uint32_t id) {
  const Pane& pane = panes_[id];
  if (!pane.evicted) return &pane.stats;
  absl::StatusOr<bool> found = store_->Fetch(keys_[pane.key].key, pane.start, &value_buf_);
  if (!found.ok()) return found.status();
  if (!*found) {
    return absl::DataLossError(StrCat("aggregate: store ", store_name_,
                                      ": an evicted pane is missing from the store"));
  }
  absl::StatusOr<MetricStats> stats =
      MetricStats::Parse(value_buf_, options_.compression, options_.exact_quantiles_up_to);
  if (!stats.ok()) return stats.status();
  fetched_ = *std::move(stats);
  return &fetched_;
}

absl::Status WindowedAggregateProcessor::Reload(uint32_t id) {
  absl::StatusOr<const MetricStats*> stats = PaneStats(id);
  if (!stats.ok()) return stats.status();
  Pane& pane = panes_[id];
  pane.stats = fetched_;
  pane.evicted = false;
  Recount(pane);
  --evicted_;
  return absl::OkStatus();
}

absl::Status WindowedAggregateProcessor::Close() {
  if (budget_ != nullptr) budget_->Charge(-charged_);
  charged_ = 0;
  return absl::OkStatus();
}

WindowedAggregateProcessor::~WindowedAggregateProcessor() { Close().IgnoreError(); }

absl::Status WindowedAggregateProcessor::EndOfInput() {
  if (panes_by_start_.empty()) return Flush();
  // Advance stream time past the close of every window holding data.
  const int64_t last_pane = panes_by_start_.rbegin()->first;
  stream_time_ = std::max(stream_time_, last_pane + pane_size_ + max_retention_);
  if (absl::Status s = CloseDueWindows(); !s.ok()) return s;
  return Flush();
}

}  // namespace streammetrics
