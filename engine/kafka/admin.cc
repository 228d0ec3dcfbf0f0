#include "engine/kafka/admin.h"

#include <chrono>
#include <memory>
#include <set>
#include <thread>

#include "engine/kafka/kafka_common.h"
#include "operators/strings.h"

namespace streammetrics::kafka {

absl::Status CreateTopics(rd_kafka_t* rk, const std::vector<TopicSpec>& topics, int timeout_ms) {
  if (topics.empty()) return absl::OkStatus();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::vector<rd_kafka_NewTopic_t*> specs;
  auto destroy = [&] {
    for (rd_kafka_NewTopic_t* nt : specs) rd_kafka_NewTopic_destroy(nt);
  };
  char err[256];
  for (const TopicSpec& t : topics) {
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(t.name.c_str(), t.partitions,
                                                    t.replication_factor, err, sizeof(err));
    if (nt == nullptr) {
      destroy();
      return absl::InvalidArgumentError(StrCat("topic ", t.name, ": ", err));
    }
    specs.push_back(nt);
    for (const auto& [k, v] : t.configs) {
      if (rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        destroy();
        return absl::InvalidArgumentError(StrCat("topic ", t.name, ": config ", k));
      }
    }
  }
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, err, sizeof(err));
  rd_kafka_AdminOptions_set_operation_timeout(options, timeout_ms, err, sizeof(err));
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, specs.data(), specs.size(), options, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, timeout_ms + 1'000);
  absl::Status s;
  if (ev == nullptr) {
    s = absl::UnavailableError(StrCat("create topics: no answer within ", timeout_ms, " ms"));
  } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    s = KafkaStatus(StrCat("create topics: ", rd_kafka_event_error_string(ev)),
                    rd_kafka_event_error(ev));
  } else {
    const rd_kafka_CreateTopics_result_t* res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t** results =
        res != nullptr ? rd_kafka_CreateTopics_result_topics(res, &n) : nullptr;
    for (size_t i = 0; i < n && s.ok(); ++i) {
      const rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        const char* m = rd_kafka_topic_result_error_string(results[i]);
        s = KafkaStatus(StrCat("create topic ", rd_kafka_topic_result_name(results[i]),
                               m != nullptr ? StrCat(" (", m, ")") : ""),
                        e);
      }
    }
  }
  if (ev != nullptr) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_AdminOptions_destroy(options);
  destroy();
  if (!s.ok()) return s;
  // The controller answered; wait until the metadata this client gets shows every topic
  // with all its partitions led, so that the next client to use them finds them.
  std::set<std::string> pending;
  for (const TopicSpec& t : topics) pending.insert(t.name);
  while (!pending.empty()) {
    const struct rd_kafka_metadata* md = nullptr;
    if (rd_kafka_metadata(rk, 1, nullptr, &md, 5'000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int i = 0; i < md->topic_cnt; ++i) {
        const auto& t = md->topics[i];
        if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR || t.partition_cnt == 0) continue;
        bool led = true;
        for (int p = 0; p < t.partition_cnt; ++p) led = led && t.partitions[p].leader >= 0;
        if (led) pending.erase(t.topic);
      }
      rd_kafka_metadata_destroy(md);
    }
    if (pending.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError(StrCat("created topic ", *pending.begin(),
                                           " is not in the cluster's metadata after ",
                                           timeout_ms, " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::OkStatus();
}

absl::Status CreateTopics(const Properties& properties, const std::vector<TopicSpec>& topics,
                          int timeout_ms) {
  Properties props = {{"log_level", "3"}};
  for (const auto& p : properties) props.push_back(p);
  absl::StatusOr<KafkaHandle> rk = NewClient(RD_KAFKA_PRODUCER, props);
  if (!rk.ok()) return rk.status();
  return CreateTopics(rk->get(), topics, timeout_ms);
}

absl::StatusOr<std::map<std::string, int>> TopicPartitions(const Properties& properties,
                                                           int timeout_ms) {
  Properties props = {{"log_level", "3"}};
  for (const auto& p : properties) props.push_back(p);
  absl::StatusOr<KafkaHandle> rk = NewClient(RD_KAFKA_PRODUCER, props);
  if (!rk.ok()) return rk.status();
  const struct rd_kafka_metadata* md = nullptr;
  if (absl::Status s = KafkaStatus("metadata", rd_kafka_metadata(rk->get(), 1, nullptr, &md, timeout_ms));
      !s.ok()) {
    return s;
  }
  std::map<std::string, int> out;
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      out[md->topics[i].topic] = md->topics[i].partition_cnt;
    }
  }
  rd_kafka_metadata_destroy(md);
  return out;
}

}  // namespace streammetrics::kafka
