#include "engine/kafka/producer.h"

#include <chrono>
#include <cstring>
#include <functional>

#include "engine/kafka/kafka_common.h"
#include "engine/log.h"
#include "operators/strings.h"
#include "statestore/fixed_encoding.h"

namespace streammetrics::kafka {

namespace {

// Properties meant for consumers, which a producer would only warn about: the same
// `kafka:` section configures both.
bool IsConsumerOnly(std::string_view key) {
  for (std::string_view k : {"session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
                             "group.id", "group.instance.id", "auto.offset.reset",
                             "isolation.level", "enable.auto.commit", "fetch.max.bytes",
                             "fetch.wait.max.ms", "fetch.min.bytes", "partition.assignment.strategy",
                             "enable.partition.eof", "queued.max.messages.kbytes"}) {
    if (key == k) return true;
  }
  return false;
}

// Held records are queued from this size on (Producer::Hold): a large commit is not
// copied whole, and the queue's bound (queue.buffering.max.*) still applies.
constexpr size_t kMaxHeldBytes = size_t{4} << 20;

}  // namespace

// A topic's librdkafka handle (kept for the producer's life: no topic-name lookup or
// string per record) and the end of what was delivered to each of its partitions.
struct ProducerTopic {
  rd_kafka_topic_t* rkt = nullptr;
  std::vector<int64_t> delivered_end;  // by partition
};

struct Producer::Impl {
  KafkaHandle rk;
  int timeout_ms = 10'000;
  absl::Status first_error;  // since the last successful Flush
  uint32_t sends_since_poll = 0;
  StringMap<std::unique_ptr<ProducerTopic>> topics;

  // Held records (Hold()): their bytes in one buffer, kept with its capacity.
  struct Span {
    size_t offset = 0;
    size_t size = 0;
  };
  struct HeldRecord {
    ProducerTopic* topic = nullptr;
    int32_t partition = 0;
    Span key;
    std::optional<Span> value;
    int64_t timestamp_ms = 0;
    size_t first_header = 0;  // into held_headers
    size_t headers = 0;
  };
  bool holding = false;
  bool hold_always = false;  // holding again after each Release
  std::string held_bytes;
  std::vector<HeldRecord> held;
  std::vector<std::pair<Span, Span>> held_headers;

  Span Keep(std::string_view bytes) {
    Span s{held_bytes.size(), bytes.size()};
    held_bytes.append(bytes);
    return s;
  }
  std::string_view View(Span s) const {
    return std::string_view(held_bytes).substr(s.offset, s.size);
  }

  void SendNow(ProducerTopic* t, int32_t partition, std::string_view key,
               std::optional<std::string_view> value, int64_t timestamp_ms,
               rd_kafka_headers_t* hdrs);

  ~Impl() {
    for (auto& [name, t] : topics) rd_kafka_topic_destroy(t->rkt);
  }

  // The topic's handle, created on first use (nullptr if librdkafka refuses the name).
  ProducerTopic* Topic(std::string_view name) {
    auto it = topics.find(name);
    if (it != topics.end()) return it->second.get();
    auto t = std::make_unique<ProducerTopic>();
    rd_kafka_topic_conf_t* conf = rd_kafka_topic_conf_new();
    rd_kafka_topic_conf_set_opaque(conf, t.get());
    t->rkt = rd_kafka_topic_new(rk.get(), std::string(name).c_str(), conf);  // takes conf
    if (t->rkt == nullptr) return nullptr;
    return topics.emplace(std::string(name), std::move(t)).first->second.get();
  }

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (self->first_error.ok()) {
        self->first_error = KafkaStatus(
            std::string("produce to ") + rd_kafka_topic_name(m->rkt), m->err);
      }
      return;
    }
    auto* t = static_cast<ProducerTopic*>(rd_kafka_topic_opaque(m->rkt));
    if (t == nullptr || m->partition < 0) return;
    if (t->delivered_end.size() <= static_cast<size_t>(m->partition)) {
      t->delivered_end.resize(m->partition + 1, 0);
    }
    int64_t& end = t->delivered_end[m->partition];
    end = std::max(end, m->offset + 1);
  }
};

Producer::Producer(std::unique_ptr<Impl> impl, bool transactional)
    : impl_(std::move(impl)), transactional_(transactional) {}

Producer::~Producer() {
  // Whatever was not flushed is dropped, as a crash would: the caller flushes first.
  if (impl_->rk != nullptr) rd_kafka_purge(impl_->rk.get(), RD_KAFKA_PURGE_F_QUEUE |
                                                                 RD_KAFKA_PURGE_F_INFLIGHT);
}

namespace {

// A transactional call made again while librdkafka says the same call may be (its error
// retriable: the call timed out, the coordinator was loading or moving), up to
// kTransactionRetries times; then, or on any other error, its status. Used for init,
// send-offsets, commit and abort: without it a broker slow for a moment failed the
// commit (the transaction aborted and every task of the thread restored) or the
// creation of a producer.
constexpr int kTransactionRetries = 3;

absl::Status RetryTransactional(std::string_view what, const std::function<rd_kafka_error_t*()>& call) {
  for (int attempt = 0;; ++attempt) {
    rd_kafka_error_t* error = call();
    if (error == nullptr) return absl::OkStatus();
    if (attempt < kTransactionRetries && rd_kafka_error_is_retriable(error)) {
      LogEvery(StrCat("txn-retry-", what), 10'000, LogLevel::kWarning,
               StrCat(what, ": ", rd_kafka_error_string(error), "; retrying"));
      rd_kafka_error_destroy(error);
      continue;
    }
    return KafkaStatus(what, error);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(const ProducerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->timeout_ms = options.timeout_ms;
  // reference/001's producer settings: idempotent, all acks; batching for throughput.
  Properties props = {{"enable.idempotence", "true"},
                      {"acks", "all"},
                      {"linger.ms", "5"},
                      {"batch.num.messages", "10000"},
                      {"compression.type", "lz4"},
                      {"partitioner", "murmur2_random"},
                      {"log_level", "4"}};
  // How long the broker keeps a transaction open that its producer does not end (it
  // died): the longest a restore of its changelogs or a read_committed consumer of its
  // outputs can be held up. 10 s, as Kafka Streams under exactly-once; kafka: may change it.
  if (options.transactional_id.has_value()) {
    props.emplace_back("transaction.timeout.ms", std::to_string(kDefaultTransactionTimeoutMs));
  }
  for (const auto& p : options.properties) {
    if (!IsConsumerOnly(p.first)) props.push_back(p);
  }
  if (options.transactional_id.has_value()) {
    // What transactions rely on: no kafka: setting changes it.
    props.insert(props.end(), {{"transactional.id", *options.transactional_id},
                               {"enable.idempotence", "true"},
                               {"acks", "all"}});
  }
  Impl* raw = impl.get();
  absl::StatusOr<KafkaHandle> rk =
      NewClient(RD_KAFKA_PRODUCER, props, [raw](rd_kafka_conf_t* conf) {
        rd_kafka_conf_set_dr_msg_cb(conf, &Impl::OnDelivery);
        rd_kafka_conf_set_opaque(conf, raw);
      });
  if (!rk.ok()) return rk.status();
  impl->rk = *std::move(rk);

  if (options.transactional_id.has_value()) {
    if (absl::Status s = RetryTransactional("init transactions", [&] {
          return rd_kafka_init_transactions(impl->rk.get(), options.timeout_ms);
        });
        !s.ok()) {
      return s;
    }
  }
  return std::unique_ptr<Producer>(
      new Producer(std::move(impl), options.transactional_id.has_value()));
}

void Producer::Send(std::string_view topic, int32_t partition, std::string_view key,
                    std::optional<std::string_view> value, int64_t timestamp_ms,
                    std::span<const Header> headers) {
  Impl& impl = *impl_;
  ProducerTopic* t = impl.Topic(topic);
  if (t == nullptr) {
    if (impl.first_error.ok()) {
      impl.first_error = absl::InvalidArgumentError(StrCat("produce to ", topic, ": bad topic"));
    }
    return;
  }
  if (impl.holding) {
    Impl::HeldRecord r{.topic = t,
                       .partition = partition,
                       .key = impl.Keep(key),
                       .timestamp_ms = timestamp_ms,
                       .first_header = impl.held_headers.size(),
                       .headers = headers.size()};
    if (value.has_value()) r.value = impl.Keep(*value);
    for (const Header& h : headers)
      impl.held_headers.emplace_back(impl.Keep(h.key), impl.Keep(h.value));
    impl.held.push_back(r);
    if (impl.held_bytes.size() >= kMaxHeldBytes) {
      Release();  // queued now, holding on: no second copy of a large commit in memory
      impl.holding = true;
    }
    return;
  }
  rd_kafka_headers_t* hdrs = nullptr;
  if (!headers.empty()) {
    hdrs = rd_kafka_headers_new(headers.size());
    for (const Header& h : headers) {
      rd_kafka_header_add(hdrs, h.key.data(), static_cast<ssize_t>(h.key.size()), h.value.data(),
                          static_cast<ssize_t>(h.value.size()));
    }
  }
  impl.SendNow(t, partition, key, value, timestamp_ms, hdrs);
}

void Producer::Impl::SendNow(ProducerTopic* t, int32_t partition, std::string_view key,
                             std::optional<std::string_view> value, int64_t timestamp_ms,
                             rd_kafka_headers_t* hdrs) {
  while (true) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk.get(), RD_KAFKA_V_RKT(t->rkt),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
        RD_KAFKA_V_VALUE(value.has_value() ? const_cast<char*>(value->data()) : nullptr,
                         value.has_value() ? value->size() : 0),
        RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      // Backpressure: the local queue is bounded (queue.buffering.max.*); wait for room.
      rd_kafka_poll(rk.get(), 10);
      continue;
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (hdrs != nullptr) rd_kafka_headers_destroy(hdrs);  // not taken on failure
      if (first_error.ok()) {
        first_error = KafkaStatus(StrCat("produce to ", rd_kafka_topic_name(t->rkt)), err);
      }
    }
    // Delivery reports are served every 1,024 sends, not only at Flush or when the queue
    // is full: a delivered message is freed while its memory is still warm, instead of
    // 100,000 at a time (the queue's bound) long after.
    if (++sends_since_poll == 1'024) {
      sends_since_poll = 0;
      rd_kafka_poll(rk.get(), 0);
    }
    return;
  }
}

void Producer::Hold() { impl_->holding = true; }

void Producer::HoldAlways() {
  impl_->hold_always = true;
  impl_->holding = true;
}

void Producer::Release() {
  Impl& impl = *impl_;
  impl.holding = false;  // SendNow below queues
  for (const Impl::HeldRecord& r : impl.held) {
    rd_kafka_headers_t* hdrs = nullptr;
    if (r.headers > 0) {
      hdrs = rd_kafka_headers_new(r.headers);
      for (size_t i = r.first_header; i < r.first_header + r.headers; ++i) {
        const std::string_view k = impl.View(impl.held_headers[i].first);
        const std::string_view v = impl.View(impl.held_headers[i].second);
        rd_kafka_header_add(hdrs, k.data(), static_cast<ssize_t>(k.size()), v.data(),
                            static_cast<ssize_t>(v.size()));
      }
    }
    std::optional<std::string_view> value;
    if (r.value.has_value()) value = impl.View(*r.value);
    impl.SendNow(r.topic, r.partition, impl.View(r.key), value, r.timestamp_ms, hdrs);
  }
  DropHeld();
}

void Producer::DropHeld() {
  Impl& impl = *impl_;
  impl.holding = impl.hold_always;
  impl.held.clear();
  impl.held_headers.clear();
  impl.held_bytes.clear();
}

absl::Status Producer::Flush() {
  if (!impl_->held.empty()) Release();
  absl::Status s = KafkaStatus("flush", rd_kafka_flush(impl_->rk.get(), impl_->timeout_ms));
  if (s.ok()) s = impl_->first_error;
  impl_->first_error = absl::OkStatus();
  return s;
}

bool Producer::OnDevBroker(int timeout_ms) { return kafka::OnDevBroker(impl_->rk.get(), timeout_ms); }

absl::Status Producer::BeginTransaction() {
  return KafkaStatus("begin transaction", rd_kafka_begin_transaction(impl_->rk.get()));
}


absl::Status Producer::CommitTransaction(const OffsetCommit& commit) {
  if (absl::Status s = Flush(); !s.ok()) {
    return absl::IsFailedPrecondition(s) ? s : absl::AbortedError(s.message());
  }
  if (!commit.offsets.empty() && commit.consumer != nullptr) {
    rd_kafka_topic_partition_list_t* list =
        rd_kafka_topic_partition_list_new(static_cast<int>(commit.offsets.size()));
    for (const InputOffset& o : commit.offsets) {
      rd_kafka_topic_partition_list_add(list, o.topic.c_str(), o.partition)->offset =
          o.next_offset;
    }
    auto* consumer = static_cast<rd_kafka_t*>(commit.consumer);
    rd_kafka_consumer_group_metadata_t* meta = rd_kafka_consumer_group_metadata(consumer);
    const auto started = std::chrono::steady_clock::now();
    absl::Status s = RetryTransactional("send offsets to transaction", [&] {
      return rd_kafka_send_offsets_to_transaction(impl_->rk.get(), list, meta, impl_->timeout_ms);
    });
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    if (ms > 1'000) {
      Log(LogLevel::kWarning, "send_offsets_to_transaction took " + std::to_string(ms) + " ms");
    }
    rd_kafka_consumer_group_metadata_destroy(meta);
    rd_kafka_topic_partition_list_destroy(list);
    if (!s.ok()) return s;
  }
  const auto started = std::chrono::steady_clock::now();
  absl::Status s = RetryTransactional("commit transaction", [&] {
    return rd_kafka_commit_transaction(impl_->rk.get(), impl_->timeout_ms);
  });
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  if (ms > 1'000) Log(LogLevel::kWarning, "commit_transaction took " + std::to_string(ms) + " ms");
  return s;
}

absl::Status Producer::AbortTransaction() {
  DropHeld();
  impl_->first_error = absl::OkStatus();
  return RetryTransactional("abort transaction", [&] {
    return rd_kafka_abort_transaction(impl_->rk.get(), impl_->timeout_ms);
  });
}

int64_t Producer::DeliveredEnd(std::string_view topic, int32_t partition) const {
  auto it = impl_->topics.find(topic);
  if (it == impl_->topics.end() || partition < 0 ||
      static_cast<size_t>(partition) >= it->second->delivered_end.size()) {
    return 0;
  }
  return it->second->delivered_end[partition];
}

absl::Status Producer::WarmUp(std::span<const std::string> topics) {
  for (const std::string& name : topics) {
    ProducerTopic* t = impl_->Topic(name);
    if (t == nullptr) return absl::InvalidArgumentError(StrCat("topic ", name, ": bad name"));
    const struct rd_kafka_metadata* md = nullptr;
    absl::Status s = KafkaStatus(StrCat("metadata of ", name),
                                 rd_kafka_metadata(impl_->rk.get(), 0, t->rkt, &md, impl_->timeout_ms));
    if (md != nullptr) rd_kafka_metadata_destroy(md);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string ChangelogTopic(std::string_view application_id, std::string_view store) {
  std::string t(application_id);
  t += "-";
  t += store;
  t += "-changelog";
  return t;
}

namespace {
constexpr std::string_view kMarkerKeyPrefix("\0commit", 7);
constexpr std::string_view kDeleteBeforeKey("\0delete-before", 14);
constexpr size_t kHeaderBytes = 1 + 1 + 8 + 8 + 8;
}  // namespace

void EncodeChangeKey(const ChangeRecord& r, std::string* key) {
  key->clear();
  switch (r.type) {
    case ChangeType::kCommit:
      key->append(kMarkerKeyPrefix);
      AppendFixed<uint64_t>(r.incarnation, key);
      return;
    case ChangeType::kDeleteBefore:
      key->append(kDeleteBeforeKey);
      return;
    default:
      if (r.windowed) AppendOrderedInt64(r.window_start, key);
      key->append(r.key);
  }
}

void EncodeChangeHeader(const ChangeRecord& r, std::string* header) {
  header->clear();
  AppendFixed<uint8_t>(static_cast<uint8_t>(r.type), header);
  AppendFixed<uint8_t>(r.windowed ? 1 : 0, header);
  AppendFixed<uint64_t>(r.incarnation, header);
  AppendFixed<uint64_t>(r.sequence, header);
  AppendFixed<int64_t>(r.window_start, header);
}

absl::Status DecodeChange(std::string_view key, std::optional<std::string_view> value,
                          std::string_view header, ChangeRecord* r) {
  if (header.size() != kHeaderBytes) {
    return absl::DataLossError("changelog record without a valid sm header");
  }
  uint8_t type, flags;
  ReadFixed(&header, &type);
  ReadFixed(&header, &flags);
  ReadFixed(&header, &r->incarnation);
  ReadFixed(&header, &r->sequence);
  ReadFixed(&header, &r->window_start);
  if (type < 1 || type > 4) return absl::DataLossError("changelog record of unknown type");
  r->type = static_cast<ChangeType>(type);
  r->windowed = (flags & 1) != 0;
  r->value = value.value_or(std::string_view());
  r->key = {};
  if (r->type == ChangeType::kPut || r->type == ChangeType::kDelete) {
    if (r->windowed) {
      if (key.size() < kOrderedInt64Bytes) return absl::DataLossError("short window key");
      key.remove_prefix(kOrderedInt64Bytes);
    }
    r->key = key;
  }
  if (r->type == ChangeType::kPut && !value.has_value()) {
    return absl::DataLossError("changelog put without a value");
  }
  return absl::OkStatus();
}

TaskProducer::TaskProducer(Producer* producer, std::string application_id, int32_t partition)
    : producer_(producer), application_id_(std::move(application_id)), partition_(partition) {}

void TaskProducer::Send(std::string_view topic, std::string_view key, std::string_view value,
                        int64_t timestamp_ms, std::span<const Header> headers) {
  producer_->Send(topic, -1, key, value, timestamp_ms, headers);
}

void TaskProducer::SendToPartition(std::string_view topic, int32_t partition, std::string_view key,
                                   std::string_view value, int64_t timestamp_ms) {
  producer_->Send(topic, partition, key, value, timestamp_ms, {});
}

const std::string& TaskProducer::Topic(std::string_view store) const {
  for (const auto& [name, topic] : changelog_topics_) {
    if (name == store) return topic;
  }
  return changelog_topics_.emplace_back(std::string(store), ChangelogTopic(application_id_, store))
      .second;
}

void TaskProducer::Append(std::string_view store, const ChangeRecord& record) {
  const std::string& topic = Topic(store);
  EncodeChangeKey(record, &key_);
  EncodeChangeHeader(record, &header_);
  const Header h[] = {{"sm", header_}};
  std::optional<std::string_view> value;
  if (record.type != ChangeType::kDelete) value = record.value;
  producer_->Send(topic, partition_, key_, value, 0, h);
}

int64_t TaskProducer::EndOffset(std::string_view store) const {
  return producer_->DeliveredEnd(Topic(store), partition_);
}

}  // namespace streammetrics::kafka
