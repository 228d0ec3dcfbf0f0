// dedupe: drops an event whose eventId was already seen within `within_ms` of stream
// time (reference/003's idempotency). The dedupe operator keeps its own stream time:
// the largest timestamp of the events it has been given.
//
// State: the 128-bit hash of each id (operators/hash.h) with the stream time at which it
// was first seen. Ids expire in first-seen order once stream time passes first-seen +
// within. The hot set lives in memory. Every event id is new state, so persisting ids one
// by one would cost a store write per event; instead each commit writes the ids first seen
// since the previous commit as one block (several past `block_ids`) to the operator's
// KeyValueStore:
//   key:   8-byte big-endian block sequence number (blocks sort in first-seen order)
//   value: n x { u64 hash.lo, u64 hash.hi, i64 first_seen } little-endian (24 bytes each)
// A block is deleted once its newest id has expired. The operator's stream time and next
// block number are one more entry (key "meta"). Init() restores from the store: the
// blocks in key order, skipping ids already past the horizon.
//
// Memory: ~45-67 bytes a live id, and live ids are the input rate times `within_ms`.
// `max_ids` bounds them per task: past it, the oldest ids are forgotten before their
// time (counted in TaskCounters::dedupe_ids_evicted), so a duplicate of one gets
// through — dedupe's window shrinks rather than memory growing without limit.
//
// Stream skew: a record more than `max_stream_skew_ms` ahead of the stream time does not
// move it unless the record before it was as far ahead and within that of it — the rule
// of the window operator (operators/windowed_aggregate.h), which dead-letters such a
// record; without it one wild timestamp would expire every id and keep every later one
// until stream time caught up with it. The pending timestamp is part of the "meta" entry
// (version 2; version 1, without it, is still read).
#ifndef STREAMMETRICS_OPERATORS_DEDUPE_H_
#define STREAMMETRICS_OPERATORS_DEDUPE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "operators/chunked_queue.h"
#include "operators/hash.h"
#include "operators/id_set.h"
#include "operators/metric_event.h"
#include "operators/processor.h"
#include "statestore/key_value_store.h"

namespace streammetrics {

struct DedupeOptions {
  // Default: 10 minutes.
  int64_t within_ms = 10 * 60 * 1000;
  // At most this many live ids per task (0: no bound); see above.
  uint64_t max_ids = 0;
  // At most this many ids per stored block (at least 1): a commit with more new ids
  // writes several. A block is one changelog record, 24 bytes an id: 8,192 ids make
  // ~197 KB, well below Kafka's default 1 MB limit on a record, which one block of a
  // commit's ids passed at ~42,000 new ids a task per commit (a thread working off a
  // backlog at 400K events/s with a 100 ms interval gets there) and failed the commit.
  uint64_t block_ids = 8'192;
  // See above; 0 disables. Not applied behind a repartition (the watermark is the time).
  int64_t max_stream_skew_ms = 0;
};

class DedupeProcessor final : public Transformer<MetricEvent, MetricEvent> {
 public:
  DedupeProcessor(DedupeOptions options, std::string store_name)
      : options_(options), store_name_(std::move(store_name)) {}

  absl::Status Init(ProcessorContext* context) override;
  absl::Status Process(const Record<MetricEvent>& record) override;
  absl::Status Flush() override;

  size_t live_ids() const { return seen_.size(); }

 private:
  struct Entry {
    Hash128 id;
    int64_t first_seen;
  };
  void Expire();
  // Past max_ids: forgets the oldest ids until the set is back at it; how many.
  uint64_t EvictOverCap();
  // Ids first seen at or before this stream time have expired.
  int64_t Horizon() const;
  // Whether a record at `now` is too far ahead to move stream time (stream skew, above).
  bool TooFarAhead(int64_t now) const;
  absl::Status Restore();

  DedupeOptions options_;
  std::string store_name_;
  KeyValueStore* store_ = nullptr;
  int64_t stream_time_ = INT64_MIN;
  // The previous record's time when it was too far ahead to move stream time, else
  // INT64_MIN (stream skew, above).
  int64_t skew_pending_ = INT64_MIN;
  bool watermarked_ = false;  // ProcessorContext::watermarked()
  IdSet seen_;  // live ids (first-seen times are in order_)
  struct Block {
    uint64_t seq;
    int64_t newest;  // the latest first-seen time of the block's ids
  };
  ChunkedQueue<Entry> order_;  // first-seen order, for expiry
  std::vector<Entry> added_;  // since the last flush
  std::deque<Block> blocks_;  // written blocks, oldest first
  uint64_t next_block_ = 0;
  int64_t last_meta_stream_time_ = INT64_MIN;  // as last written
  int64_t last_meta_skew_pending_ = INT64_MIN;
  // First-seen time of the last id evicted over max_ids: a block whose newest id was
  // first seen before it holds only forgotten ids.
  int64_t evicted_through_ = INT64_MIN;
  std::string key_buf_;
  std::string value_buf_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_DEDUPE_H_
