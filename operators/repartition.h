// Repartitioning: the two ends of an internal topic `<application.id>-<name>-repartition`
// through which a stream is re-keyed, as Kafka Streams does before a grouping whose key
// the input is not partitioned by.
//
// Upstream (RepartitionSinkProcessor) every event is written keyed by its serviceId — the
// producer's murmur2 partitioner, as the Java client's, picks the partition — so every
// event of a service, and every copy of a duplicated event, meets in one downstream task
// whatever partition it was produced to. Under exactly_once_v2 the writes are part of the
// upstream task's transaction: the downstream task reads them (read_committed) only once
// committed, and a crashed upstream's aborted writes never.
//
// Time and order. A downstream task reads the records of every upstream partition
// interleaved as their transactions happened to commit — an order no run repeats — and
// each upstream partition at its own pace (one partition's backlog drained before
// another's, an instance restoring). So every event carries where it was read (upstream
// partition and input offset), its upstream task's stream time then (the largest event
// time it had written, its own included) and its rank there (the task's events written at
// that stream time, it included); and every upstream task sends, at commits and on a 1 s
// tick, a *watermark* to every partition of the topic: the largest event time it has
// written, how many events it wrote at it, and whether it is idle. The downstream task
// (RepartitionSourceProcessor) merges the upstream partitions: it holds each event until
// no upstream partition can still send one before it in the order (stream time, rank,
// upstream partition) — each partition's own records are in that order already — and
// forwards them in that order. (The rank lets the last events of a stream go: a partition
// whose watermark is at t with n events there can send only (t, n + 1) or later.) Its stream
// time is that event's stream time, and between events the least stream time any
// upstream partition can still send (its held events, its watermark). So the order in
// which dedupe, windows and t-digests see the events, and the stream time at each, depend
// only on the input — not on how the upstream transactions interleaved, on commits,
// crashes or restarts — and an event is late exactly when it is late in its own input
// partition, as without the repartition. Stream time never goes back, and nothing moves
// before every upstream partition has been heard of (a downstream task restarted knows
// those it had forwarded events of from its stored positions; the others send a watermark
// at least every 10 s).
//
// The downstream task's own idleness: when its input was live and it has read nothing for
// idle_ms, it forwards everything held (an upstream partition with a few old events and
// then nothing is never idle upstream, and would hold a live stream's last events for
// ever); with idle close, stream time then follows the wall clock from the newest stream
// time read. Its clock is stored with the positions, so a restart in the idle phase reads
// the held events again and then acts as it would have without the restart.
//
// Held events stay in the topic too: a commit records the task's input position no
// further than its first held event (RawSource::HeldFrom), and the merge's positions —
// per upstream partition, the input offset, stream time and rank of the last event forwarded —
// are stored (`<name>-repartition-merge`, changelogged). After a restart the events read
// again that were forwarded before it (or written twice by an upstream task that did not
// commit, at least once) are skipped by their upstream offset. The buffer is bounded
// (max_held_bytes, 64 MiB): past it the least event is forwarded without waiting
// (TaskCounters::merge_overflows), and results that include it may depend on the
// interleaving again — upstream partitions far apart in event time (a backfill whose
// partitions are read one after another) need that much buffer.
//
// Idle upstream partitions. A partition with nothing to read must not hold every window
// back for ever (a service keying, six partitions, five services: one is empty). An
// upstream task is idle when its last record was *live* — its event time within
// `idle_ms` of the wall clock when read — and it has read nothing for `idle_ms` since; or
// when it has read nothing at all since it started, its consumer found the partition's
// end (ProcessorContext::input_reached_end) and 2 s (or idle_ms if less) have passed,
// unless the last record before its restart was not live. Never in a bounded run. A replay of old data that pauses is
// therefore never idle: its partition holds the others back until it goes on (windows
// never close early on it), across restarts too.
// An idle partition that reads again rejoins the merge; records of it older than the
// stream time by then are late, as in any stream whose input starts behind (idleness
// follows the wall clock: results it touches can differ between runs).
//
// Wire format of the topic's values (one byte of kind, then):
//   0x03 event:      int32 upstream partition, int64 upstream input offset, int64 upstream
//                    stream time, uint32 its rank there (the upstream task's events at
//                    that stream time, it included), then streammetrics.proto.MetricEvent
//                    (operators/metric_event.proto); little-endian
//   0x01 event:      the event alone (earlier releases, and dead letters sent back by
//                    `replay`): forwarded as read, outside the merge
//   0x02 watermark:  int32 upstream partition, int32 upstream partitions, int64 event time
//                    (INT64_MIN: none yet), uint8 flags (1: idle, 2: ended, 4: count),
//                    with flag 2 an int64 end offset, with flag 4 a uint32: the events
//                    written at that event time; little-endian
//   A bounded run (`run --until-end`): an upstream task that has read its input partition
//   up to the run's end offset sends a watermark flagged ended, with that offset, to
//   every partition (and again every 10 s, for downstream tasks that restart). A
//   downstream task counts an upstream partition ended when the marker's offset reaches
//   the end it knows for that partition, or the marker was written in this run
//   (BoundedInput::written_from): ended partitions no longer hold stream time back, and
//   once every upstream partition has ended the task's input is complete
//   (ProcessorContext::SignalEndOfInput): its windows all close.
// Keys: the serviceId (events), empty (watermarks).
//
// State. The upstream task keeps its watermark — and so, through its changelog's commit
// markers, its input offsets, which a stateless task would have to trust the group's
// committed offsets for (the dev broker drops transactional ones) — in a key-value store
// `<name>-repartition-state`, one entry written at the commits that changed it.
#ifndef STREAMMETRICS_OPERATORS_REPARTITION_H_
#define STREAMMETRICS_OPERATORS_REPARTITION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "operators/chunked_queue.h"
#include "operators/metric_event.h"
#include "operators/metric_event_codec.h"
#include "operators/processor.h"
#include "statestore/key_value_store.h"

namespace streammetrics {

// The internal topic of repartition `name` of application `application_id`.
std::string RepartitionTopic(std::string_view application_id, std::string_view name);

struct RepartitionOptions {
  std::string name;  // the topic is <application.id>-<name>-repartition
  // Wall-clock silence after which an upstream partition counts as idle (above). 0: never.
  int64_t idle_ms = 30'000;
  // A moved watermark is sent at a commit at most this often (and at the next 1 s tick
  // otherwise); idleness changes and end markers at once.
  int64_t watermark_interval_ms = 1'000;
  // An event stamped further ahead of the task's stream time is dead-lettered (reason
  // stream_skew), unless the one before it was as far ahead and within this of it (the
  // stream moved on), as the window operator does without a repartition; 0: no bound.
  int64_t max_stream_skew_ms = 0;
};

inline constexpr uint8_t kRepartitionEvent = 0x01;
inline constexpr uint8_t kRepartitionWatermark = 0x02;
inline constexpr uint8_t kRepartitionOrderedEvent = 0x03;

struct RepartitionWatermark {
  int32_t partition = 0;
  int32_t partitions = 0;
  int64_t time_ms = INT64_MIN;
  bool idle = false;
  // >= 0: the upstream task has read its input partition up to this offset, the end of a
  // bounded run, and will write nothing more in it.
  int64_t end_offset = -1;
  // Events written at stream time time_ms (flag 4; 0 when absent).
  uint32_t count = 0;
};
void AppendRepartitionWatermark(const RepartitionWatermark& w, std::string* out);
// InvalidArgument when `bytes` (after the kind byte) is not one.
absl::StatusOr<RepartitionWatermark> DecodeRepartitionWatermark(std::string_view bytes);

class RepartitionSinkProcessor final : public Processor<MetricEvent>, public Punctuator {
 public:
  RepartitionSinkProcessor(RepartitionOptions options, std::string store_name);
  absl::Status Init(ProcessorContext* context) override;
  absl::Status Process(const Record<MetricEvent>& record) override;
  // Commit: the watermark to every partition, when it or idleness changed (or every
  // few seconds, for downstream tasks that restarted), and the state entry.
  absl::Status Flush() override;
  // Wall clock, every second: idleness.
  absl::Status Punctuate(int64_t now_ms) override;
  // A bounded run's input has been read: the end marker to every partition.
  absl::Status EndOfInput() override;


 private:
  bool IdleNow(int64_t now_ms) const;
  void SendWatermark();

  RepartitionOptions options_;
  std::string store_name_;
  std::string topic_;
  KeyValueStore* store_ = nullptr;
  int64_t time_ms_ = INT64_MIN;         // largest event time written
  int64_t last_record_wall_ = INT64_MIN;  // wall clock of the last record (INT64_MIN: none)
  bool last_record_live_ = false;
  bool idle_ = false;
  // As last sent / stored.
  int64_t sent_time_ = INT64_MIN;
  bool sent_idle_ = false;
  int64_t sent_wall_ = INT64_MIN;
  bool stored_live_ = false;
  int64_t stored_time_ = INT64_MIN;
  bool records_since_tick_ = false;
  bool sent_once_ = false;
  int64_t started_wall_ = INT64_MIN;  // wall clock of Init
  bool replay_paused_ = false;  // restored: the last record before the restart was not live
  int64_t end_offset_ = -1;     // a bounded run's end, once reached
  uint32_t time_count_ = 0;     // events written at stream time time_ms_
  int64_t skew_pending_ = INT64_MIN;  // the last event dead-lettered as skewed (stored)
  int64_t stored_pending_ = INT64_MIN;
  uint32_t sent_count_ = 0;
  uint32_t stored_count_ = 0;
  std::string value_;  // scratch
};

class RepartitionSourceProcessor final : public RawSource,
                                         public HasOutput<MetricEvent>,
                                         public Punctuator {
 public:
  // `store_name`: the key-value store of the merge's positions (above); empty: none (the
  // positions then live only in memory). `idle_ms`: the task's own idleness (above; 0:
  // never). `idle_close_ms`: after that much silence of live input stream time follows
  // the wall clock (the aggregate's idle close; 0: never). `max_held_bytes`: the merge's
  // buffer bound.
  explicit RepartitionSourceProcessor(std::string store_name = "", int64_t idle_ms = 0,
                                      int64_t idle_close_ms = 0,
                                      int64_t max_held_bytes = kDefaultMaxHeldBytes);
  static constexpr int64_t kDefaultMaxHeldBytes = 64 << 20;

  absl::Status Init(ProcessorContext* context) override;
  absl::Status ProcessSource(const SourceRecord& record) override;
  // Commit: the positions, when they changed.
  absl::Status Flush() override;
  // A bounded run's end (or offline, the end of input): every record held is forwarded.
  absl::Status EndOfInput() override;
  int64_t HeldFrom() const override;
  // Wall clock: the task's own idleness.
  absl::Status Punctuate(int64_t now_ms) override;


 private:
  // A record held by the merge; its key and value — the event as a 0x01 record, what its
  // dead letter carries — are bytes [at, at + key_len + value_len) of its upstream
  // partition's byte stream.
  struct Held {
    int64_t time_ms;          // the upstream stream time it carries: its merge order
    uint32_t rank;            // then: its upstream's events at that stream time, it included
    int64_t upstream_offset;  // of the input record it came from
    int64_t offset;           // in the repartition topic
    int64_t timestamp_ms;     // the Kafka record's
    uint64_t at;
    uint32_t key_len;
    uint32_t value_len;
  };
  struct Upstream {
    bool known = false;  // heard of (a record, a watermark or the stored positions)
    bool idle = false;
    bool ended = false;  // a bounded run's end marker of this run
    // Every record of it still to come carries a stream time >= this: the largest of
    // its watermarks and of its records' stream times.
    int64_t time_ms = INT64_MIN;
    uint32_t count = 0;  // its events at time_ms seen: the next is at least count + 1
    // The upstream offset, stream time and rank of the last record forwarded (stored).
    int64_t forwarded_offset = -1;
    int64_t forwarded_time = INT64_MIN;
    uint32_t forwarded_rank = 0;
    int64_t last_offset = -1;  // the upstream offset of the last record held or forwarded
    ChunkedQueue<Held, 256> held;
    std::string bytes;      // held records' keys and values, from position `base`
    uint64_t base = 0;      // the stream position of bytes[0]
    uint64_t consumed = 0;  // stream position up to which bytes are no longer needed

    void Saw(int64_t time, uint32_t rank) {
      if (time > time_ms) {
        time_ms = time;
        count = rank;
      } else if (time == time_ms && rank > count) {
        count = rank;
      }
    }
  };
  static bool Before(const Held& a, const Held& b) {
    return a.time_ms < b.time_ms || (a.time_ms == b.time_ms && a.rank < b.rank);
  }

  absl::Status Hold(Upstream& u, int64_t time_ms, uint32_t rank, int64_t upstream_offset,
                    const SourceRecord& record, std::string_view value);
  // Forwards held records in merge order while no upstream partition can still send one
  // before them, then moves stream time to the least any upstream partition can still
  // send.
  absl::Status Release(bool all);
  absl::Status Forward(const SourceRecord& record, std::string_view value, int64_t time_ms);
  absl::Status OnUpstreamWatermark(const SourceRecord& record);

  std::string store_name_;
  int64_t idle_ms_;
  int64_t idle_close_ms_;
  int64_t max_held_bytes_;
  // The task's idle clock, as the window operator's (operators/windowed_aggregate.h):
  // events read since the last tick; the wall time they were last noted at and whether
  // the newest stream time then was live; the newest stream time read; the last offset
  // read (stored: the events read again after a restart up to it are not new input).
  bool input_since_tick_ = false;
  int64_t input_wall_ = INT64_MIN;
  bool input_live_ = false;
  int64_t newest_time_ = INT64_MIN;
  int64_t read_offset_ = -1;
  int64_t reread_until_ = -1;
  bool idle_ = false;  // stream time follows the wall clock until input comes again
  KeyValueStore* store_ = nullptr;
  std::unique_ptr<MetricEventDecoder> decoder_;
  MetricEvent event_;
  std::vector<Upstream> upstream_;
  size_t held_records_ = 0;
  int64_t held_bytes_ = 0;
  int64_t watermark_ = INT64_MIN;
  bool end_signalled_ = false;
  bool positions_dirty_ = false;
  std::string scratch_;
  std::string topic_;  // the repartition topic, as read
};

// Input declared keyed by serviceId (no repartition): a record whose key is not its
// event's serviceId is dead-lettered (reason key_mismatch) — aggregated where it landed it
// would split its service's groups across tasks — and counted; the rest pass.
class KeyCheckProcessor final : public Transformer<MetricEvent, MetricEvent> {
 public:
  absl::Status Process(const Record<MetricEvent>& record) override;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_REPARTITION_H_
