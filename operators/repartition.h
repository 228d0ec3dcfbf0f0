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
// Time. A downstream task merges the records of every upstream partition, each at its own
// pace (one partition's backlog drained before another's, an instance restoring): the
// largest event time it has read says nothing about the others. So every upstream task
// sends, at each commit, a *watermark* to every partition of the topic: the largest event
// time it has written, and whether it is idle. The downstream task's stream time is the
// least watermark of the upstream partitions that are not idle (RepartitionSourceProcessor)
// — windows close and dedupe forgets ids only when every upstream partition has passed
// them, exactly as when each input partition was aggregated where it was read. It never
// goes back, and it does not move before every upstream partition has sent a watermark
// (a downstream task restarted waits at most one upstream commit for them).
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
// An idle partition that reads again rejoins the least; records of it older than the
// watermark by then are late, as in any stream whose input starts behind.
//
// Wire format of the topic's values (one byte of kind, then):
//   0x01 event:      the event as streammetrics.proto.MetricEvent (operators/metric_event.proto)
//   0x02 watermark:  int32 upstream partition, int32 upstream partitions, int64 event time
//                    (INT64_MIN: none yet), uint8 flags (1: idle, 2: ended), and with
//                    flag 2 an int64 end offset; little-endian
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
};

inline constexpr uint8_t kRepartitionEvent = 0x01;
inline constexpr uint8_t kRepartitionWatermark = 0x02;

struct RepartitionWatermark {
  int32_t partition = 0;
  int32_t partitions = 0;
  int64_t time_ms = INT64_MIN;
  bool idle = false;
  // >= 0: the upstream task has read its input partition up to this offset, the end of a
  // bounded run, and will write nothing more in it.
  int64_t end_offset = -1;
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
  std::string value_;  // scratch
};

class RepartitionSourceProcessor final : public RawSource, public HasOutput<MetricEvent> {
 public:
  RepartitionSourceProcessor() : decoder_(NewProtobufMetricEventDecoder()) {}
  absl::Status ProcessSource(const SourceRecord& record) override;


 private:
  struct Upstream {
    bool known = false;
    bool idle = false;
    bool ended = false;  // a bounded run's end marker of this run
    int64_t time_ms = INT64_MIN;
  };
  std::unique_ptr<MetricEventDecoder> decoder_;
  MetricEvent event_;
  std::vector<Upstream> upstream_;
  int64_t watermark_ = INT64_MIN;
  bool end_signalled_ = false;
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
