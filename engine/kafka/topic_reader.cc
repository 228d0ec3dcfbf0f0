#include "engine/kafka/topic_reader.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>

#include "operators/strings.h"

#include "engine/kafka/kafka_common.h"

namespace streammetrics::kafka {
namespace {

OutputRecord ToOutput(const rd_kafka_message_t* m) {
  OutputRecord r;
  r.topic = rd_kafka_topic_name(m->rkt);
  r.partition = m->partition;
  if (m->key != nullptr) r.key.assign(static_cast<const char*>(m->key), m->key_len);
  if (m->payload != nullptr) r.value.assign(static_cast<const char*>(m->payload), m->len);
  rd_kafka_timestamp_type_t type;
  r.timestamp_ms = rd_kafka_message_timestamp(m, &type);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      r.headers.emplace_back(name, std::string(static_cast<const char*>(value), size));
    }
  }
  return r;
}

absl::StatusOr<int> PartitionCount(rd_kafka_t* rk, const std::string& topic) {
  const struct rd_kafka_metadata* md = nullptr;
  absl::Status s = KafkaStatus("metadata", rd_kafka_metadata(rk, 1, nullptr, &md, 30'000));
  if (!s.ok()) return s;
  int partitions = -1;
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (topic == md->topics[i].topic && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      partitions = md->topics[i].partition_cnt;
    }
  }
  rd_kafka_metadata_destroy(md);
  if (partitions < 0) return absl::NotFoundError("topic " + topic + " does not exist");
  return partitions;
}

// A read_committed consumer (never joining its group) for `topic`, with the caller's
// properties after `own`, and the topic's partition count.
absl::StatusOr<std::pair<KafkaHandle, int>> OpenReader(Properties own, const Properties& properties,
                                                       const std::string& topic) {
  own.emplace_back("enable.auto.commit", "false");
  own.emplace_back("isolation.level", "read_committed");
  own.emplace_back("log_level", "3");
  for (const auto& p : properties) own.push_back(p);
  absl::StatusOr<KafkaHandle> rk = NewClient(RD_KAFKA_CONSUMER, own);
  if (!rk.ok()) return rk.status();
  absl::StatusOr<int> partitions = PartitionCount(rk->get(), topic);
  if (!partitions.ok()) return partitions.status();
  return std::make_pair(*std::move(rk), *partitions);
}

}  // namespace

absl::StatusOr<std::vector<OutputRecord>> ReadTopic(const Properties& properties,
                                                    const std::string& topic,
                                                    ReadOptions options) {
  absl::StatusOr<std::pair<KafkaHandle, int>> opened = OpenReader(
      {{"group.id", "streammetrics-reader"},
       {"fetch.wait.max.ms", "10"},
       {"enable.partition.eof", "true"}},
      properties, topic);
  if (!opened.ok()) return opened.status();
  KafkaHandle* rk = &opened->first;
  const int* partitions = &opened->second;
  std::vector<OutputRecord> out;
  for (int p = 0; p < *partitions; ++p) {
    int64_t low = 0, high = 0;
    absl::Status s = KafkaStatus("watermarks", rd_kafka_query_watermark_offsets(
                                                   rk->get(), topic.c_str(), p, &low, &high,
                                                   options.timeout_ms));
    if (!s.ok()) return s;
    if (low >= high) continue;
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = low;
    rd_kafka_assign(rk->get(), list);
    rd_kafka_topic_partition_list_destroy(list);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeout_ms);
    while (true) {
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::UnavailableError("read of " + topic + ": timed out");
      }
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk->get(), 100);
      if (m == nullptr) continue;
      const rd_kafka_resp_err_t err = m->err;
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) out.push_back(ToOutput(m));
      rd_kafka_message_destroy(m);
      if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) break;
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaStatus("read of " + topic, err);
    }
    rd_kafka_assign(rk->get(), nullptr);
  }
  rd_kafka_consumer_close(rk->get());
  return out;
}

absl::StatusOr<ReplayStats> ReplayTopic(const Properties& properties, const ReplayOptions& options) {
  absl::StatusOr<std::pair<KafkaHandle, int>> opened = OpenReader(
      {{"group.id", "streammetrics-replay"}, {"fetch.wait.max.ms", "10"}, {"enable.partition.eof", "true"}},
      properties, options.from);
  if (!opened.ok()) return opened.status();
  rd_kafka_t* rk = opened->first.get();
  const int partitions = opened->second;
  std::unique_ptr<Producer> producer;
  if (!options.dry_run) {
    absl::StatusOr<std::unique_ptr<Producer>> p = Producer::Create({.properties = properties});
    if (!p.ok()) return p.status();
    producer = *std::move(p);
  }
  ReplayStats stats;
  auto count_for = [&](std::string_view topic) -> int64_t& {
    for (auto& [t, n] : stats.by_topic) {
      if (t == topic) return n;
    }
    return stats.by_topic.emplace_back(std::string(topic), 0).second;
  };
  int64_t queued = 0;
  auto header = [](rd_kafka_headers_t* hdrs, const char* name) -> std::optional<std::string_view> {
    const void* value = nullptr;
    size_t size = 0;
    if (hdrs == nullptr || rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return std::nullopt;
    }
    return std::string_view(static_cast<const char*>(value), size);
  };
  for (int p = 0; p < partitions; ++p) {
    int64_t low = 0, high = 0;
    if (absl::Status s = KafkaStatus("watermarks", rd_kafka_query_watermark_offsets(
                                                       rk, options.from.c_str(), p, &low, &high,
                                                       options.timeout_ms));
        !s.ok()) {
      return s;
    }
    if (low >= high) continue;
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t* tp = rd_kafka_topic_partition_list_add(list, options.from.c_str(), p);
    tp->offset = low;
    if (options.since_ms != INT64_MIN) {
      tp->offset = options.since_ms;  // offsets_for_times: the first at or after
      absl::Status s = KafkaStatus("offsets for times", rd_kafka_offsets_for_times(rk, list, options.timeout_ms));
      if (s.ok() && tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) s = KafkaStatus("offsets for times", tp->err);
      if (!s.ok()) {
        rd_kafka_topic_partition_list_destroy(list);
        return s;
      }
      // -1: no record at or after since_ms on a Kafka broker; the dev broker answers -1
      // to any timestamp. Either way reading from the start and filtering is right.
      if (tp->offset < 0) tp->offset = low;
    }
    absl::Status assigned = KafkaStatus(StrCat("assign ", options.from), rd_kafka_assign(rk, list));
    rd_kafka_topic_partition_list_destroy(list);
    if (!assigned.ok()) return assigned;
    // The timeout is for silence: a long partition may take as long as it takes.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeout_ms);
    bool done = false;
    while (!done) {
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::UnavailableError(StrCat("replay of ", options.from, "[", p, "]: nothing read for ",
                                             options.timeout_ms, " ms"));
      }
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
      if (m == nullptr) continue;
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeout_ms);
      const rd_kafka_resp_err_t err = m->err;
      absl::Status s;
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++stats.read;
        done = m->offset + 1 >= high;
        rd_kafka_timestamp_type_t type;
        const int64_t ts = rd_kafka_message_timestamp(m, &type);
        rd_kafka_headers_t* hdrs = nullptr;
        if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) hdrs = nullptr;
        const std::optional<std::string_view> reason = header(hdrs, "dlq.reason");
        const bool wanted =
            options.reasons.empty() ||
            (reason.has_value() && std::find(options.reasons.begin(), options.reasons.end(), *reason) !=
                                       options.reasons.end());
        if (ts < options.since_ms || ts >= options.until_ms || !wanted) {
          ++stats.filtered;
        } else if (header(hdrs, "dlq.offset") == "-1" && m->len == 0 && m->key_len == 0) {
          ++stats.empty;
        } else if (header(hdrs, "dlq.truncated").has_value()) {
          ++stats.truncated;  // only the first bytes: replayed, it would be another record
        } else {
          std::optional<std::string_view> to = options.to.empty() ? header(hdrs, "dlq.topic")
                                                                  : std::optional<std::string_view>(options.to);
          if (!to.has_value() || to->empty()) {
            s = absl::InvalidArgumentError(StrCat("replay: ", options.from, "[", p, "]@", m->offset,
                                                  " has no dlq.topic header: name the topic to replay to"));
          } else {
            int64_t original_ts = ts;
            if (std::optional<std::string_view> t = header(hdrs, "dlq.timestamp")) {
              int64_t v = 0;
              auto [end, ec] = std::from_chars(t->data(), t->data() + t->size(), v);
              if (ec == std::errc() && end == t->data() + t->size()) original_ts = v;
            }
            if (producer != nullptr) {
              producer->Send(*to, -1, std::string_view(static_cast<const char*>(m->key), m->key_len),
                             std::string_view(static_cast<const char*>(m->payload), m->len),
                             original_ts, {});
              if (++queued >= options.flush_every) {
                s = producer->Flush();
                queued = 0;
              }
            }
            ++stats.replayed;
            ++count_for(*to);
          }
        }
      } else if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        done = true;
      } else {
        s = KafkaStatus(StrCat("replay: read of ", options.from), err);
      }
      rd_kafka_message_destroy(m);
      if (!s.ok()) {
        if (producer != nullptr) producer->Flush().IgnoreError();  // what was sent stays sent
        return s;
      }
    }
    rd_kafka_assign(rk, nullptr);
  }
  if (producer != nullptr) {
    if (absl::Status s = producer->Flush(); !s.ok()) return s;
  }
  rd_kafka_consumer_close(rk);
  return stats;
}

struct TopicFollower::Impl {
  KafkaHandle rk;
};

TopicFollower::TopicFollower(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TopicFollower::~TopicFollower() {
  if (impl_->rk != nullptr) rd_kafka_consumer_close(impl_->rk.get());
}

absl::StatusOr<std::unique_ptr<TopicFollower>> TopicFollower::Create(const Properties& properties,
                                                                     const std::string& topic,
                                                                     bool from_start) {
  absl::StatusOr<std::pair<KafkaHandle, int>> opened =
      OpenReader({{"group.id", "streammetrics-follower"}}, properties, topic);
  if (!opened.ok()) return opened.status();
  KafkaHandle* rk = &opened->first;
  const int* partitions = &opened->second;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(*partitions);
  for (int p = 0; p < *partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset =
        from_start ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
  }
  absl::Status s = KafkaStatus("assign " + topic, rd_kafka_assign(rk->get(), list));
  rd_kafka_topic_partition_list_destroy(list);
  if (!s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->rk = std::move(*rk);
  return std::unique_ptr<TopicFollower>(new TopicFollower(std::move(impl)));
}

std::vector<OutputRecord> TopicFollower::Poll(int timeout_ms, size_t max_records) {
  std::vector<OutputRecord> out;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < max_records) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(impl_->rk.get(), static_cast<int>(left));
    if (m == nullptr) break;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) out.push_back(ToOutput(m));
    rd_kafka_message_destroy(m);
  }
  return out;
}

}  // namespace streammetrics::kafka
