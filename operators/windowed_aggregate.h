// The windowed aggregate: groups events by dimensions and aggregates them into any
// number of tumbling and hopping event-time windows at once, by stream slicing.
//
// Stream slicing. Time is cut into panes of PaneSize(windows) — the gcd of all sizes and
// advances (10 s for 1m + 5m + 1m/10s) — and every event updates exactly one pane of its
// group: one hash lookup and one MetricStats::Add, whatever the number of windows. A
// window is the union of its panes; when it closes, its panes are merged (counts add,
// t-digests merge) and the result is emitted. Cost per event does not grow with the
// number of windows or their overlap; the merge work is paid once per window close.
//
// Time. The operator keeps its own stream time: the largest timestamp among the records
// it was given (so an invalid event with a wild timestamp, dropped upstream, cannot close
// windows). A window [start, end) closes when end + grace <= stream time.
//
// Stream skew. A record stamped more than max_stream_skew_ms ahead of the stream time is
// dead-lettered (reason stream_skew) instead of moving it: one wild timestamp (year 9999,
// microseconds read as milliseconds) would otherwise close every open window and make
// all that follows late. The stream moves on when two records in a row are ahead by more
// than that and within max_stream_skew_ms of each other (a gap in the data, a first
// record stamped far in the past): the first is dead-lettered, the second accepted. The
// first record sets the stream time. Applies where the operator keeps its own stream
// time (not behind a repartition, whose watermark one record does not move). Records
// outside the event-time domain (operators/windows.h) are dead-lettered (processing).
//
// Work. Closing windows costs the windows that hold data, whatever the time between
// records: from a window without data the close loop jumps to the next window holding
// a pane (close_steps() counts its iterations).
//
// Late records. A record is late for a window definition when every window of that
// definition containing it has closed. It still updates the windows that are open
// (e.g. the 5m window when only the 1m one has closed). A record late for every
// definition is dropped, counted (TaskCounters::late_dropped) and, if configured,
// dead-lettered with reason `late`.
//
// Idleness (★). With idle_close_ms > 0, when the operator has received no record for
// idle_close_ms of wall-clock time, its stream time moves on with the wall clock from the
// last record's (stream time at last record + wall time since), checked every second of
// wall clock, so windows of a quiet partition still close and emit. It acts on live
// input only: records are noted at the first wall-clock tick or commit after them (no
// clock read per record), and the input counts as live when stream time was then within
// idle_close_ms of the wall clock. Input further behind (a replay of old data, a backlog
// being worked off) never closes a window on the wall clock, however long it pauses; its
// windows close on stream time, at end of input, or once live records follow. The idle
// clock (wall time and stream time when records were last noted) is part of the
// operator's state, so a task restored after a restart or a rebalance continues it: a
// quiet partition's last windows close when they would have without the restart. A
// record arriving afterwards for a window closed this way is late.
//
// Emission. kFinal: one result per (window, group) when the window closes, in window
// order and, within a window, in group-key byte order. kUpdate: at each commit the
// current result of every open window whose panes changed, and at close if it changed
// since the last commit. EndOfInput() closes every window that holds data.
//
// State. Panes live in memory (the write-back cache); at each commit (Flush) the panes
// changed since the last commit are written to the window store (key: group key,
// window start: pane start, value: MetricStats encoding), and panes past retention
// (pane start + max(size + grace) <= stream time) are dropped from both. The operator's
// own state — stream time, the idle clock, the next window of each definition to close,
// the windows' sizes and advances, the compaction boundary and the pending stream-skew
// timestamp — is one more entry (key "", start INT64_MAX), versioned (version 3; version
// 2, without the pending timestamp, and 1, also without the idle clock and the boundary,
// are still read).
//
// Determinism. A result depends only on the input records: a pane changes only by its
// records and by compaction (merging its digest's buffer once its own grace is over),
// which happens where windows close, at a stream time fixed by the data; nothing
// changes a pane at a commit or when a result is computed, and a restored pane is the
// written one bit for bit (operators/metric_stats.h). Init() restores
// everything from the store, so a task reopened on a durable store after a clean commit
// goes on exactly where it stopped; a store written by other windows is DataLoss.
//
// Cache budget. With a CacheBudget (ProcessorContext::cache_budget()), each commit
// charges the bytes the panes hold in memory and, while the process is over budget,
// evicts compacted panes — already written to the store — oldest first. An evicted
// pane is read back from the store when a window containing it closes (or, rarely, when
// a record late for some windows updates it). Results do not change: a pane read back
// is the one written (tested byte for byte). Panes still taking records stay.
#ifndef STREAMMETRICS_OPERATORS_WINDOWED_AGGREGATE_H_
#define STREAMMETRICS_OPERATORS_WINDOWED_AGGREGATE_H_

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "operators/aggregate_result.h"
#include "operators/dimension.h"
#include "operators/metric_event.h"
#include "operators/metric_stats.h"
#include "operators/processor.h"
#include "operators/strings.h"
#include "operators/windows.h"
#include "statestore/window_store.h"

namespace streammetrics {

struct AggregateOptions {
  std::vector<FieldRef> group_by;  // at least one
  std::vector<WindowSpec> windows;
  std::vector<QuantileSpec> quantiles;  // default: p50, p95, p99
  double compression = 100;             // t-digest compression
  // A pane or window of at most this many values keeps them and reports exact
  // quantiles (percentile_disc); above it, t-digest estimates. In [0, 100000].
  uint32_t exact_quantiles_up_to = MetricStats::kDefaultExactUpTo;
  bool late_to_dead_letter = true;
  // Wall-clock idleness after which stream time follows the wall clock; 0 disables.
  int64_t idle_close_ms = 0;
  // Records stamped further ahead of the stream time are dead-lettered (stream_skew);
  // 0 disables. In [0, kMaxDurationMs].
  int64_t max_stream_skew_ms = kDefaultMaxStreamSkewMs;
  static constexpr int64_t kDefaultMaxStreamSkewMs = 86'400'000;  // 1 day

  // InvalidArgument naming what is wrong.
  absl::Status Validate() const;
};

class WindowedAggregateProcessor final : public Transformer<MetricEvent, WindowedAggregate>,
                                         public Punctuator {
 public:
  // REQUIRES: options.Validate().ok()
  WindowedAggregateProcessor(AggregateOptions options, std::string store_name);

  absl::Status Init(ProcessorContext* context) override;
  absl::Status Process(const Record<MetricEvent>& record) override;
  absl::Status Flush() override;
  absl::Status EndOfInput() override;
  absl::Status Close() override;
  ~WindowedAggregateProcessor() override;
  // Wall-clock punctuation: idleness (see above).
  absl::Status Punctuate(int64_t now_ms) override;
  // Behind a repartition: stream time is the upstream partitions' watermark.
  absl::Status OnWatermark(int64_t watermark_ms) override;

  // Introspection for tests and metrics.
  int64_t stream_time() const { return stream_time_; }
  size_t live_panes() const { return pane_ids_.size(); }
  size_t live_keys() const { return key_ids_.size(); }
  int64_t pane_size() const { return pane_size_; }
  size_t evicted_panes() const { return evicted_; }
  // Bytes the panes hold in memory, as last charged to the budget.
  int64_t charged_bytes() const { return charged_; }
  // Iterations of the window-close loop so far: each emits a window holding data or
  // jumps over windows without any.
  uint64_t close_steps() const { return close_steps_; }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;

  struct KeyState {
    std::string key;  // encoded group key; stable address (keys_ is a deque)
    uint32_t panes = 0;
    int64_t cur_pane_start = INT64_MIN;
    uint32_t cur_pane = kNone;
  };
  struct Pane {
    uint32_t key = kNone;
    int64_t start = 0;
    MetricStats stats;
    bool store_dirty = false;
    bool update_dirty = false;
    bool compacted = false;
    bool evicted = false;  // stats live only in the store
    uint32_t charged = 0;  // its stats' MemoryBytes() as last counted in pane_bytes_
  };
  // A pane in panes_by_start_, with its key: closing a window groups its panes by key
  // without touching the panes themselves.
  struct PaneRef {
    uint32_t id;
    uint32_t key;
  };
  // Per key, while a window is emitted: how many of its panes are in the window, then
  // where they go in emit_panes_; whether one changed since the last commit.
  struct EmitSlot {
    uint64_t mark = 0;  // == mark_: the key has panes in the window being emitted
    uint32_t count = 0;
    uint32_t next = 0;  // the next free place of its range in emit_panes_
    bool changed = false;
  };
  struct PaneKey {
    uint32_t key;
    int64_t start;
    friend bool operator==(const PaneKey&, const PaneKey&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const PaneKey& k) {
      return H::combine(std::move(h), k.key, k.start);
    }
  };

  absl::Status Restore();
  void AppendMeta(std::string* out) const;
  // Idleness: notes the records since the last tick at wall time now_ms; whether the
  // input was live when last noted.
  void NoteRecords(int64_t now_ms);
  bool IdleClockLive() const;
  uint32_t InternKey(std::string_view key);
  uint32_t PaneFor(uint32_t key, int64_t pane_start);
  absl::Status CloseDueWindows();
  // Emits window [start, start+size) of windows_[w] for every group with data in it
  // (kFinal) or with panes changed since the last commit (kUpdate).
  // Keys come in group-key byte order without sorting them when the window holds many
  // of the live keys: ordered_keys_ is walked; otherwise the few are sorted.
  absl::Status EmitWindow(size_t w, int64_t start);
  // The result of window [start, start+size) of windows_[w] for one key: from its panes
  // in the window, in start order (EmitWindow), or looking its panes up (EmitResult).
  absl::Status EmitPanes(size_t w, int64_t start, uint32_t key, std::span<const uint32_t> ids);
  absl::Status EmitResult(size_t w, int64_t start, uint32_t key);
  absl::Status Emit(size_t w, int64_t start, uint32_t key, const MetricStats& stats);
  void DropExpiredPanes();
  // Compacts the panes whose own grace is over (start < stream time - pane size - max
  // grace), once each. Called where windows close, never from Flush (see above).
  void CompactPanes();
  // The stats of a pane, read back from the store into fetched_ when evicted.
  absl::StatusOr<const MetricStats*> PaneStats(uint32_t id);
  MetricStats EmptyStats() const {
    return MetricStats(options_.compression, options_.exact_quantiles_up_to);
  }
  absl::Status Reload(uint32_t id);
  // Counts a pane's memory again after its stats changed (with a budget only).
  void Recount(Pane& pane);
  void ChargeAndEvict();
  void FreePane(uint32_t id);
  void RecomputeNextClose();
  int64_t FirstOpenStart(const WindowSpec& w) const;

  AggregateOptions options_;
  std::string store_name_;
  WindowStore* store_ = nullptr;
  std::vector<std::string> dim_names_;
  int64_t pane_size_;
  int64_t max_retention_ = 0;  // max(size + grace)
  int64_t max_grace_ = 0;
  int64_t stream_time_ = INT64_MIN;
  bool watermarked_ = false;
  // Idleness, judged at each wall-clock tick and commit (no clock read per record): the
  // wall time at which records were last noted, and the stream time then (persisted).
  bool record_since_tick_ = false;
  int64_t last_record_wall_ = INT64_MIN;
  int64_t stream_time_at_last_record_ = INT64_MIN;
  // Watermarked (behind a repartition): the newest event time read, which the idle clock
  // notes instead of the watermark — the least over upstream partitions lags the newest
  // records by their spread, and live input noted at it looked like a replay, so a quiet
  // live stream's last windows never closed.
  int64_t newest_record_ts_ = INT64_MIN;

  // Per window definition: the start of the earliest window not yet closed, or
  // INT64_MIN before the first record.
  std::vector<int64_t> next_start_;
  int64_t next_close_time_ = INT64_MAX;  // min CloseTime(next_start_[w])

  std::deque<KeyState> keys_;
  std::vector<uint32_t> free_keys_;
  absl::flat_hash_map<std::string_view, uint32_t, StringHash, StringEq> key_ids_;  // views into keys_[i].key
  // The same keys in byte order (the order results are emitted in), kept as keys come
  // and go: a window of many keys is emitted by walking it, not by sorting its keys.
  absl::btree_map<std::string_view, uint32_t> ordered_keys_;
  std::vector<Pane> panes_;
  std::vector<uint32_t> free_panes_;
  absl::flat_hash_map<PaneKey, uint32_t> pane_ids_;
  absl::btree_map<int64_t, std::vector<PaneRef>> panes_by_start_;
  std::vector<uint32_t> store_dirty_;
  std::vector<uint32_t> update_dirty_;
  int64_t dropped_before_ = INT64_MIN;  // store retention applied at the next Flush
  // Panes starting before this have been compacted (their digest buffers merged). Moved
  // only when windows close — a point fixed by the data — and kept in the operator's
  // state, so a restored operator compacts exactly the panes the original would.
  int64_t compact_below_ = INT64_MIN;
  // The timestamp of the previous record if it was dead-lettered as ahead of the stream
  // (stream skew), else INT64_MIN. Part of the operator's state.
  int64_t skew_pending_ = INT64_MIN;
  bool has_update_windows_ = false;
  uint64_t close_steps_ = 0;

  // Scratch, reused.
  std::string key_buf_;
  std::string value_buf_;
  std::string last_meta_;  // as last written
  std::vector<uint32_t> scratch_keys_;
  std::vector<EmitSlot> emit_;          // by key id
  // The window's panes grouped by key, keys in emission order, each key's in start
  // order; emit_ranges_[i]: where scratch_keys_[i]'s panes begin (one more at the end).
  std::vector<uint32_t> emit_panes_;
  std::vector<uint32_t> emit_ranges_;
  std::vector<std::string_view> scratch_dims_;
  MetricStats merged_;
  MetricStats fetched_;
  std::array<double, kMaxQuantiles> qs_{};  // options_.quantiles' q, contiguous
  uint64_t mark_ = 0;
  CacheBudget* budget_ = nullptr;
  int64_t charged_ = 0;
  int64_t pane_bytes_ = 0;  // the live panes' memory, kept as panes change
  size_t evicted_ = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_WINDOWED_AGGREGATE_H_
