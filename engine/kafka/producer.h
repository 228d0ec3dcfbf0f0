// One Kafka producer (a stream thread's), transactional under exactly-once: outputs,
// dead letters, changelog records and markers of all the thread's tasks go through it,
// and one transaction commits them with the tasks' input offsets (EOS v2).
//
// Sends are asynchronous; the first delivery failure is kept and returned by Flush()
// and the commit. Not thread-safe: the owning thread calls everything (librdkafka's
// delivery callbacks run inside Flush/Poll on that thread).
#ifndef STREAMMETRICS_ENGINE_KAFKA_PRODUCER_H_
#define STREAMMETRICS_ENGINE_KAFKA_PRODUCER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/record_collector.h"
#include "statestore/changelog.h"

namespace streammetrics::kafka {

// librdkafka properties, applied in order (later ones win).
using Properties = std::vector<std::pair<std::string, std::string>>;

// A transactional producer's transaction.timeout.ms unless its properties set it.
inline constexpr int kDefaultTransactionTimeoutMs = 10'000;

struct ProducerOptions {
  // librdkafka properties (bootstrap.servers, ...), applied after our defaults.
  std::vector<std::pair<std::string, std::string>> properties;
  // Set: a transactional producer with this transactional.id (exactly-once);
  // enable.idempotence and acks=all then override `properties`, and
  // transaction.timeout.ms is kDefaultTransactionTimeoutMs unless they set it.
  std::optional<std::string> transactional_id;
  // How long Flush and each transactional call may take before the commit fails (and
  // the thread rebuilds its tasks and retries). Default: 10 s.
  int timeout_ms = 10'000;
};

// Input offsets a transaction commits, with the group they belong to.
struct OffsetCommit {
  std::vector<InputOffset> offsets;
  // The consumer whose group metadata goes with the offsets (Consumer::handle()).
  void* consumer = nullptr;
};

class Producer {
 public:
  static absl::StatusOr<std::unique_ptr<Producer>> Create(const ProducerOptions& options);
  ~Producer();

  // Queues a record; partition -1: by key (murmur2, as the Java client). Copies.
  void Send(std::string_view topic, int32_t partition, std::string_view key,
            std::optional<std::string_view> value, int64_t timestamp_ms,
            std::span<const Header> headers);
  // Waits until every queued record is delivered; the first failure since the last
  // successful Flush, if any. Queues held records first.
  absl::Status Flush();

  // Between Hold() and Release(), Send() keeps its records (copied, in one reused
  // buffer) and Release() queues them all at once, in order; DropHeld() forgets them (a
  // failed commit: its tasks are rebuilt from the last commit). A transactional
  // producer registers the partitions a transaction first writes in rounds, one
  // AddPartitionsToTxn request at a time, and before each round librdkafka 2.0.2's main
  // thread spun for up to 1 ms (librdkafka #4684, fixed in 2.3.1/2.4.0): records that
  // reach it over a transaction's 100 ms — dead letters, changes of a store over its
  // cache budget, a commit's changes computed task after task — took 6.3 rounds a
  // transaction in kafka_bench's drain, 12 ms of spinning at most; held and queued at
  // once, 2.7 (with debug logging on, which itself stretches the burst). Once 4 MiB are
  // held they are queued (holding goes on).
  void Hold();
  void Release();
  void DropHeld();
  // From now on every record is held until the next Release() or Flush() (or 4 MiB):
  // for a transactional producer, whose records are visible at the commit anyway.
  void HoldAlways();

  // Transactions (transactional producers only). Aborted: the transaction is lost (the
  // caller rebuilds its tasks from the last commit); Unavailable: retry later;
  // FailedPrecondition: lost too, for a record the broker refuses as it is (too large,
  // say), which a retry sends again.
  absl::Status BeginTransaction();
  absl::Status CommitTransaction(const OffsetCommit& offsets);
  absl::Status AbortTransaction();

  // Fetches the metadata of `topics` now, so their first records are sent at once:
  // without it, a topic's first records wait for librdkafka's metadata refresh (up to
  // ~1 s on the dev broker: a commit that first writes a topic would stall on it).
  absl::Status WarmUp(std::span<const std::string> topics);
  // The producer's broker is the dev broker (OnDevBroker, kafka_common.h).
  bool OnDevBroker(int timeout_ms);

  // The offset after the last delivered record of (topic, partition), or 0.
  int64_t DeliveredEnd(std::string_view topic, int32_t partition) const;
  bool transactional() const { return transactional_; }

 private:
  struct Impl;
  explicit Producer(std::unique_ptr<Impl> impl, bool transactional);
  std::unique_ptr<Impl> impl_;
  bool transactional_;
};

// A task's RecordCollector and ChangelogWriter over the thread's producer: outputs by
// key, changelog records to <application.id>-<store>-changelog at the task's partition.
// Flush() flushes the producer (the thread commits the transaction).
class TaskProducer final : public RecordCollector, public ChangelogWriter {
 public:
  TaskProducer(Producer* producer, std::string application_id, int32_t partition);

  // RecordCollector.
  void Send(std::string_view topic, std::string_view key, std::string_view value,
            int64_t timestamp_ms, std::span<const Header> headers) override;
  void SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                       std::string_view value, int64_t timestamp_ms) override;
  // ChangelogWriter.
  void Append(std::string_view store, const ChangeRecord& record) override;
  absl::Status Flush() override { return producer_->Flush(); }
  int64_t EndOffset(std::string_view store) const override;

 private:
  Producer* producer_;
  std::string application_id_;
  int32_t partition_;
  // The changelog topic of `store` (a store or two per task: a vector).
  const std::string& Topic(std::string_view store) const;

  mutable std::deque<std::pair<std::string, std::string>> changelog_topics_;  // store, topic
  std::string key_;  // scratch
  std::string header_;
};

// The changelog topic of `store`.
std::string ChangelogTopic(std::string_view application_id, std::string_view store);

// Kafka encoding of changelog records (exposed for the reader and tests):
//   header "sm": u8 type, u8 flags (1: windowed), u64 incarnation, u64 sequence,
//                i64 window start (little-endian)
//   key:   windowed puts/deletes: the window start (order-preserving 8 bytes) + the key;
//          other puts/deletes: the key; markers: "\0commit" + the incarnation (one key
//          per incarnation, so compaction keeps each incarnation's last marker);
//          DeleteBefore: "\0delete-before"
//   value: the value; null (a tombstone) for deletes; the marker encoding for markers.
void EncodeChangeKey(const ChangeRecord& record, std::string* key);
void EncodeChangeHeader(const ChangeRecord& record, std::string* header);
// DataLoss when the header or key is not ours.
absl::Status DecodeChange(std::string_view key, std::optional<std::string_view> value,
                          std::string_view header, ChangeRecord* record);

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_PRODUCER_H_
