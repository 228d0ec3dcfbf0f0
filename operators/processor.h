// The processor API: records, processors and the context a task hands them.
//
// A topology is instantiated once per task (one input partition). Records flow through
// it synchronously and depth-first: a processor's Forward() returns after every
// downstream processor has handled the record. One task is driven by one thread, so
// nothing here is thread-safe and nothing needs to be.
//
// Records carry a *mutable* value pointer: a processor may change the value in place
// before forwarding it (enrich does), which saves a copy per hop. The change is seen by
// everything that runs after it for this record, later siblings of a fan-out included.
// Processors that keep anything past Process() must copy it: the value, its string
// views and the key all die when the record is done.
#ifndef STREAMMETRICS_OPERATORS_PROCESSOR_H_
#define STREAMMETRICS_OPERATORS_PROCESSOR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "statestore/cache_budget.h"
#include "statestore/state_store.h"

namespace streammetrics {

template <typename V>
struct Record {
  std::string_view key;
  V* value = nullptr;
  // Event time in epoch milliseconds.
  int64_t timestamp_ms = 0;
};

// Why a record went to the dead-letter topic (header dlq.reason).
// kKeyMismatch: input declared keyed by serviceId (no repartition) whose key is not the
// event's serviceId — aggregating it where it landed would split its groups.
// kStreamSkew: an event stamped further ahead of the aggregate's stream time than
// validation.max_stream_skew allows (docs/SEMANTICS.md, "Stream skew").
enum class DeadLetterReason {
  kDeserialization,
  kValidation,
  kLate,
  kProcessing,
  kKeyMismatch,
  kStreamSkew,
};
inline constexpr int kDeadLetterReasonCount = 6;
std::string_view DeadLetterReasonName(DeadLetterReason reason);

// Where the record being processed came from: the input record as read, unchanged.
struct SourceRecord {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = -1;
  // The input record's own (broker/producer) timestamp, not the event time.
  int64_t timestamp_ms = 0;
  std::string_view key;
  std::string_view value;
};

// A bounded run (`streammetrics run --until-end`): the input is read up to its end
// offsets as of the run's start, then every open window closes as at the end of a file.
struct BoundedInput {
  // By partition of the input topic: the offset the run reads up to (exclusive).
  std::vector<int64_t> input_end;
  // A task reading a repartition topic: the offset of its partition from which records
  // were written in this run (the partition's end when the instance started). A record
  // before it is left over from an earlier run.
  int64_t written_from = 0;
};

// Counters a task keeps; processors add to them. Plain integers: one thread per task.
struct TaskCounters {
  uint64_t records_read = 0;
  uint64_t records_processed = 0;  // reached every aggregate they were meant for
  uint64_t dead_letters[kDeadLetterReasonCount] = {};
  uint64_t duplicates_dropped = 0;
  uint64_t dedupe_ids_evicted = 0;  // forgotten early: dedupe's max_ids reached
  uint64_t late_dropped = 0;        // late for every window: applied nowhere
  uint64_t late_window_updates = 0; // (record, window definition) pairs skipped as late
  uint64_t windows_emitted = 0;
  uint64_t records_sent = 0;
  // Behind a repartition: records the ordered merge released before their turn because
  // its buffer was full (operators/repartition.h); results that include them may depend
  // on how the upstream partitions interleaved.
  uint64_t merge_overflows = 0;

  uint64_t dead_letters_total() const {
    uint64_t n = 0;
    for (uint64_t d : dead_letters) n += d;
    return n;
  }
};

enum class PunctuationType { kStreamTime, kWallClock };

class Punctuator {
 public:
  virtual ~Punctuator() = default;
  // Called with the stream time or wall-clock time (ms) that triggered it.
  virtual absl::Status Punctuate(int64_t time_ms) = 0;
};

// What a task offers its processors. Implemented by the engine.
class ProcessorContext {
 public:
  virtual ~ProcessorContext() = default;

  virtual std::string_view application_id() const = 0;
  virtual int32_t partition() const = 0;

  // Stream time: the largest record timestamp (event time) the task's sources have
  // forwarded, or INT64_MIN before the first. Never goes back.
  virtual int64_t stream_time_ms() const = 0;
  // Sources report each forwarded record's event time here.
  virtual void ObserveEventTime(int64_t timestamp_ms) = 0;
  // Watermarked tasks (below): stream time moves to `timestamp_ms` (if later) and every
  // processor hears of it (OnWatermark) now, before the source forwards the next record.
  virtual absl::Status AdvanceStreamTime(int64_t timestamp_ms) {
    ObserveEventTime(timestamp_ms);
    return absl::OkStatus();
  }
  // The task's wall clock (mockable in tests).
  virtual int64_t wall_clock_ms() const = 0;

  // The input record being processed. Outside Process() (punctuators, Flush, EndOfInput)
  // an empty record with offset -1.
  virtual const SourceRecord& source_record() const = 0;
  // A source that holds records and forwards them later (the repartition merge) makes
  // the held record the current one while it forwards it (dead letters carry it), and
  // puts the previous one, returned, back afterwards.
  virtual const SourceRecord* ReplaceSourceRecord(const SourceRecord* record) = 0;

  // A store registered in the topology for this processor; nullptr if unknown.
  virtual StateStore* GetStateStore(std::string_view name) = 0;

  // Sends the current input record, unchanged, to the dead-letter topic with reason
  // and error as headers (DESIGN.md); outside Process() an empty record (offset -1).
  // Never fails the task: the record collector reports send failures at commit.
  virtual void DeadLetter(DeadLetterReason reason, std::string_view error) = 0;

  // Hands a record to the record collector for `topic`.
  virtual void Send(std::string_view topic, std::string_view key, std::string_view value,
                    int64_t timestamp_ms) = 0;
  // The same to one partition of `topic` (Send picks it by key).
  virtual void SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                               std::string_view value, int64_t timestamp_ms) = 0;
  // Partitions of the task's input topic — and of every repartition topic, which has as
  // many. 1 offline.
  virtual int32_t input_partitions() const { return 1; }
  // True in a sub-topology that reads a repartition topic: stream time is then the
  // upstream tasks' watermark (the least of their event times, operators/repartition.h),
  // not the largest timestamp read, and processors that keep time (windows, dedupe) follow
  // stream_time_ms() (ProcessorBase::OnWatermark) rather than their records'.
  virtual bool watermarked() const { return false; }
  // A bounded run's ends; nullptr in an unbounded one (and offline, where EndOfInput()
  // comes from the caller).
  virtual const BoundedInput* bounded_input() const { return nullptr; }
  // A processor that learns from its input that the bounded run's input has ended (a
  // repartition source, from every upstream task's end marker) says so here; the runtime
  // then calls the task's FinishInput() outside Process().
  virtual void SignalEndOfInput() {}
  // The task's input partition has been read to its end (nothing more to read then) at
  // least once since the task started. Where that cannot be told (offline): true.
  virtual bool input_reached_end() const { return true; }

  // Calls punctuator every interval_ms of stream time or wall-clock time. The
  // punctuator must outlive the task (processors schedule themselves in Init).
  virtual void Schedule(PunctuationType type, int64_t interval_ms, Punctuator* punctuator) = 0;

  virtual TaskCounters& counters() = 0;

  // The process-wide budget of operator caches; nullptr: unbounded.
  virtual CacheBudget* cache_budget() { return nullptr; }
};

// The untyped part of every processor: lifecycle hooks the task drives.
//
//   Created --Init()--> Running --Close()--> Closed
// In Running the task calls Process() per record (typed, below), Flush() at each
// commit and EndOfInput() when a bounded input is exhausted.
class ProcessorBase {
 public:
  virtual ~ProcessorBase() = default;
  virtual absl::Status Init(ProcessorContext* context) {
    context_ = context;
    return absl::OkStatus();
  }
  // Commit: move everything buffered for this commit downstream/into stores.
  virtual absl::Status Flush() { return absl::OkStatus(); }
  // Bounded input is exhausted: emit everything still open (e.g. close all windows).
  virtual absl::Status EndOfInput() { return absl::OkStatus(); }
  // Behind a repartition (ProcessorContext::watermarked()): the upstream watermark, the
  // task's stream time, moved to `watermark_ms` — every advance, in topological order.
  virtual absl::Status OnWatermark(int64_t watermark_ms) {
    (void)watermark_ms;
    return absl::OkStatus();
  }
  virtual absl::Status Close() { return absl::OkStatus(); }

 protected:
  ProcessorContext* context() const { return context_; }

 private:
  ProcessorContext* context_ = nullptr;
};

// Untyped entry point of a source node: the task hands it raw input records.
class RawSource : public virtual ProcessorBase {
 public:
  virtual absl::Status ProcessSource(const SourceRecord& record) = 0;
  // The offset of the first input record the source holds without having forwarded it,
  // or -1: a commit records the task's input position no further, so the records held
  // are read again after a restart.
  virtual int64_t HeldFrom() const { return -1; }
};

// A processor of records whose value type is In.
template <typename In>
class Processor : public virtual ProcessorBase {
 public:
  using InputType = In;
  // Returns non-OK only for failures that must stop the task (a store error); bad
  // records are dead-lettered through the context and processing goes on.
  virtual absl::Status Process(const Record<In>& record) = 0;
};

// The downstream edge of a node whose outputs are Out: forwards to every child, in the
// order they were added.
template <typename Out>
class Emitter {
 public:
  void AddChild(Processor<Out>* child) { children_.push_back(child); }
  absl::Status Forward(const Record<Out>& record) {
    for (Processor<Out>* child : children_) {
      absl::Status s = child->Process(record);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  bool empty() const { return children_.empty(); }

 private:
  std::vector<Processor<Out>*> children_;
};

// A node that produces records of type Out.
template <typename Out>
class HasOutput : public virtual ProcessorBase {
 public:
  using OutputType = Out;
  Emitter<Out>& output() { return output_; }

 protected:
  absl::Status Forward(const Record<Out>& record) { return output_.Forward(record); }

 private:
  Emitter<Out> output_;
};

// In -> Out.
template <typename In, typename Out>
class Transformer : public Processor<In>, public HasOutput<Out> {};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_PROCESSOR_H_
