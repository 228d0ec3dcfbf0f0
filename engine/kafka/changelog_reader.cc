#include "engine/kafka/changelog_reader.h"

#include <algorithm>
#include <chrono>

#include "engine/kafka/kafka_common.h"
#include "engine/kafka/producer.h"
#include "operators/strings.h"

namespace streammetrics::kafka {

struct KafkaChangelogReader::Impl {
  KafkaHandle rk;
  // read_uncommitted, for the high watermark only: a read_committed ListOffsets answers
  // the last stable offset, which stops short of a transaction still open.
  KafkaHandle ends;
  std::string application_id;
  int timeout_ms = 60'000;
};

KafkaChangelogReader::KafkaChangelogReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaChangelogReader::~KafkaChangelogReader() {
  if (impl_->rk != nullptr) rd_kafka_consumer_close(impl_->rk.get());
}

absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> KafkaChangelogReader::Create(
    std::vector<std::pair<std::string, std::string>> properties, std::string application_id,
    int timeout_ms) {
  Properties props = {{"fetch.max.bytes", "52428800"},
                      {"fetch.wait.max.ms", "10"},
                      // Bounded in bytes only (a restore applies 100,000 changes in
                      // ~0.1 s), and a fetcher the bound stopped looks again after
                      // 10 ms instead of librdkafka's 1 s (docs/SEMANTICS.md,
                      // "Prefetch").
                      {"queued.min.messages", "10000000"},
                      {"queued.max.messages.kbytes", "65536"},
                      {"fetch.queue.backoff.ms", "10"},
                      {"log_level", "4"}};
  for (auto& p : properties) props.push_back(std::move(p));
  // What restore relies on comes last: the user's kafka: settings cannot change it.
  props.insert(props.end(), {{"isolation.level", "read_committed"},
                             {"enable.partition.eof", "true"},
                             {"enable.auto.commit", "false"},
                             // An offset out of range (a new leader that does not yet
                             // show the log's end, retention deleting what is read) is
                             // an error to retry, never a silent jump to the start.
                             {"auto.offset.reset", "error"},
                             {"group.id", application_id + "-restore"}});  // never joined
  absl::StatusOr<KafkaHandle> rk = NewClient(RD_KAFKA_CONSUMER, props);
  if (!rk.ok()) return rk.status();
  Properties end_props = props;
  end_props.emplace_back("isolation.level", "read_uncommitted");
  absl::StatusOr<KafkaHandle> ends = NewClient(RD_KAFKA_CONSUMER, end_props);
  if (!ends.ok()) return ends.status();
  auto impl = std::make_unique<Impl>();
  impl->rk = *std::move(rk);
  impl->ends = *std::move(ends);
  impl->application_id = std::move(application_id);
  impl->timeout_ms = timeout_ms;
  return std::unique_ptr<KafkaChangelogReader>(new KafkaChangelogReader(std::move(impl)));
}


namespace {

bool UnknownTopicOrPartition(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
         err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
}

enum class Existence { kExists, kAbsent, kUnknown };

// Asks a broker for `topic`'s metadata afresh (which also refreshes the client's view of
// its leaders): whether the topic and its `partition` exist.
Existence AskMetadata(rd_kafka_t* rk, const std::string& topic, int32_t partition, int timeout_ms) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (rkt == nullptr) return Existence::kUnknown;
  const struct rd_kafka_metadata* md = nullptr;
  Existence e = Existence::kUnknown;
  if (rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < md->topic_cnt; ++i) {
      const rd_kafka_metadata_topic& t = md->topics[i];
      if (topic != t.topic) continue;
      if (t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        e = Existence::kAbsent;
      } else if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        e = partition < t.partition_cnt ? Existence::kExists : Existence::kAbsent;
      }
    }
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_topic_destroy(rkt);
  return e;
}

}  // namespace

absl::StatusOr<std::pair<int64_t, int64_t>> KafkaChangelogReader::Watermarks(
    const std::string& topic, int32_t partition) {
  int64_t low = 0, high = 0;
  rd_kafka_t* ends = impl_->ends.get();
  // A query goes to the partition's leader as the client's metadata knows it; that client
  // fetches nothing, so nothing tells it a leader was lost. A query that fails is asked
  // again once after the topic's metadata is refreshed (the leader moved to a replica).
  // Each waits at most 10 s: a restore's calls are made from the stream thread's loop.
  const int query_ms = std::min(impl_->timeout_ms, 10'000);
  rd_kafka_resp_err_t err =
      rd_kafka_query_watermark_offsets(ends, topic.c_str(), partition, &low, &high, query_ms);
  if (absl::IsUnavailable(KafkaStatus("", err)) || UnknownTopicOrPartition(err)) {
    // An unknown partition is not an absent one: while a leader moves, librdkafka answers
    // _UNKNOWN_PARTITION for a partition its metadata lists without a leader. Taken for
    // an absent (empty) changelog, a restore found no commit in a changelog full of them
    // (a broker of three killed, RealKafkaThreeNodesTest). Absent only when a broker's
    // metadata says so.
    if (AskMetadata(ends, topic, partition, query_ms) == Existence::kAbsent) {
      return absl::NotFoundError(StrCat("changelog topic ", topic, " [", partition, "] does not exist"));
    }
    err = rd_kafka_query_watermark_offsets(ends, topic.c_str(), partition, &low, &high, query_ms);
  }
  if (UnknownTopicOrPartition(err)) {
    return absl::UnavailableError(StrCat("watermarks of ", topic, " [", partition, "]: ",
                                         rd_kafka_err2str(err), " (its leader is moving)"));
  }
  if (absl::Status s = KafkaStatus("watermarks of " + topic, err); !s.ok()) return s;
  return std::make_pair(low, high);
}

absl::StatusOr<int64_t> KafkaChangelogReader::ReadRange(const std::string& topic,
                                                        int32_t partition, int64_t from,
                                                        int64_t to,
                                                        const ChangelogReader::Visitor& fn) {
  rd_kafka_t* rk = impl_->rk.get();
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = from;
  absl::Status s = KafkaStatus("assign " + topic, rd_kafka_assign(rk, list));
  rd_kafka_topic_partition_list_destroy(list);
  if (!s.ok()) return s;
  int64_t end = from;
  auto last_progress = std::chrono::steady_clock::now();
  while (s.ok()) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) {
      if (std::chrono::steady_clock::now() - last_progress >
          std::chrono::milliseconds(impl_->timeout_ms)) {
        s = absl::UnavailableError(StrCat(
            "restore of ", topic, " [", partition, "]: no progress for ", impl_->timeout_ms,
            " ms at offset ", end, to >= 0 ? StrCat(" of ", to) : std::string(),
            " (a transaction left open by a producer that died ends within its "
            "transaction.timeout.ms)"));
      }
      continue;
    }
    last_progress = std::chrono::steady_clock::now();
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      // A read_committed reader's end is the last stable offset: records of a transaction
      // still open lie beyond it, and so may `to` (a high watermark). Read on until the
      // transaction ends (KAFKA-10167's fix in Kafka Streams: restoring only to the
      // last stable offset restores an older commit).
      end = std::max(end, m->offset);
      rd_kafka_message_destroy(m);
      if (to < 0 || end >= to) break;
      continue;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      s = m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET
              ? absl::UnavailableError(StrCat("restore of ", topic, " [", partition, "]: offset ",
                                              m->offset, " out of range: ",
                                              rd_kafka_message_errstr(m)))
              : KafkaStatus("restore of " + topic, m->err);
      rd_kafka_message_destroy(m);
      break;
    }
    if (to >= 0 && m->offset >= to) {
      rd_kafka_message_destroy(m);
      break;
    }
    end = m->offset + 1;
    rd_kafka_headers_t* hdrs = nullptr;
    const void* hv = nullptr;
    size_t hsize = 0;
    std::string_view header;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, "sm", &hv, &hsize) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      header = std::string_view(static_cast<const char*>(hv), hsize);
    }
    std::string_view key(static_cast<const char*>(m->key), m->key_len);
    std::optional<std::string_view> value;
    if (m->payload != nullptr) value = std::string_view(static_cast<const char*>(m->payload), m->len);
    ChangeRecord record;
    s = DecodeChange(key, value, header, &record);
    if (!s.ok()) {
      s = absl::DataLossError(topic + " at offset " + std::to_string(m->offset) + ": " +
                              std::string(s.message()));
    } else {
      s = fn(m->offset, record);
    }
    rd_kafka_message_destroy(m);
    if (to >= 0 && end >= to) break;
  }
  rd_kafka_assign(rk, nullptr);
  if (!s.ok()) return s;
  return end;
}

absl::StatusOr<int64_t> KafkaChangelogReader::Read(std::string_view store, int32_t partition,
                                                   int64_t from,
                                                   const ChangelogReader::Visitor& fn) {
  const std::string topic = ChangelogTopic(impl_->application_id, store);
  absl::StatusOr<std::pair<int64_t, int64_t>> marks = Watermarks(topic, partition);
  if (absl::IsNotFound(marks.status())) return 0;  // an absent changelog is empty
  if (!marks.ok()) return marks.status();
  from = std::max(from, marks->first);
  if (from >= marks->second) return marks->second;
  return ReadRange(topic, partition, from, marks->second, fn);
}

absl::StatusOr<std::optional<CommitMarker>> KafkaChangelogReader::LastMarker(
    std::string_view store, int32_t partition, int64_t from) {
  const std::string topic = ChangelogTopic(impl_->application_id, store);
  absl::StatusOr<std::pair<int64_t, int64_t>> marks = Watermarks(topic, partition);
  if (absl::IsNotFound(marks.status())) {
    if (from > 0) return ChangelogBehindCheckpoint(StrCat(topic, " [", partition, "]"), 0, from);
    return std::optional<CommitMarker>();
  }
  if (!marks.ok()) return marks.status();
  if (from > marks->second) {
    return ChangelogBehindCheckpoint(StrCat(topic, " [", partition, "]"), marks->second, from);
  }
  from = std::max(from, marks->first);
  int64_t end = marks->second;
  int64_t chunk = 1'000;
  while (end > from) {
    const int64_t start = std::max(from, end - chunk);
    std::optional<std::string> last;
    absl::StatusOr<int64_t> r =
        ReadRange(topic, partition, start, end, [&](int64_t, const ChangeRecord& c) {
      if (c.type == ChangeType::kCommit) last = std::string(c.value);
      return absl::OkStatus();
    });
    if (!r.ok()) return r.status();
    if (last.has_value()) {
      absl::StatusOr<CommitMarker> m = CommitMarker::Decode(*last);
      if (!m.ok()) return m.status();
      return std::optional<CommitMarker>(*std::move(m));
    }
    end = start;
    chunk *= 8;
  }
  return std::optional<CommitMarker>();
}

namespace {

class PartitionReader final : public ChangelogReader {
 public:
  PartitionReader(KafkaChangelogReader* reader, int32_t partition)
      : reader_(reader), partition_(partition) {}
  absl::StatusOr<int64_t> Read(std::string_view store, int64_t from, const Visitor& fn) override {
    return reader_->Read(store, partition_, from, fn);
  }
  absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view store,
                                                         int64_t from) override {
    return reader_->LastMarker(store, partition_, from);
  }

 private:
  KafkaChangelogReader* reader_;
  int32_t partition_;
};

}  // namespace

std::unique_ptr<ChangelogReader> KafkaChangelogReader::ForPartition(int32_t partition) {
  return std::make_unique<PartitionReader>(this, partition);
}

}  // namespace streammetrics::kafka
