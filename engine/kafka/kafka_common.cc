#include "engine/kafka/kafka_common.h"

#include <cstdlib>

namespace streammetrics::kafka {

absl::Status KafkaStatus(std::string_view what, rd_kafka_resp_err_t err) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();
  std::string msg = std::string(what) + ": " + rd_kafka_err2str(err);
  switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
      return absl::UnavailableError(msg);
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR_INVALID_TXN_STATE:
      return absl::AbortedError(msg);
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
      return absl::InvalidArgumentError(msg);
    // A record the client or the broker refuses as it is: sending it again fails again.
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status KafkaStatus(std::string_view what, rd_kafka_error_t* error) {
  if (error == nullptr) return absl::OkStatus();
  const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
  const bool abortable = rd_kafka_error_txn_requires_abort(error);
  const bool fatal = rd_kafka_error_is_fatal(error);
  std::string msg = std::string(what) + ": " + rd_kafka_error_string(error);
  rd_kafka_error_destroy(error);
  if (abortable || fatal) return absl::AbortedError(msg);
  return KafkaStatus(msg, code).code() == absl::StatusCode::kUnavailable
             ? absl::UnavailableError(msg)
             : absl::InternalError(msg);
}

std::string LastSetting(const Properties& props, std::string_view key) {
  std::string value;
  for (const auto& [k, v] : props) {
    if (k == key) value = v;
  }
  return value;
}

FetchWaker::FetchWaker(const Properties& props) {
  const std::string kbytes = LastSetting(props, "queued.max.messages.kbytes");
  bound_bytes_ = 1024.0 * (kbytes.empty() ? 65'536.0 : std::atof(kbytes.c_str()));
}

void FetchWaker::Observe(rd_kafka_t* rk, rd_kafka_queue_t* queue, size_t payload_bytes,
                         size_t records) {
  if (records == 0 || bound_bytes_ <= 0) return;
  const double mean = static_cast<double>(payload_bytes) / static_cast<double>(records);
  mean_payload_ = mean_payload_ == 0 ? mean : 0.9 * mean_payload_ + 0.1 * mean;
  const double queued = static_cast<double>(rd_kafka_queue_length(queue)) * mean_payload_;
  if (queued >= 0.8 * bound_bytes_) {
    full_ = true;
    return;
  }
  if (!full_ || queued > 0.5 * bound_bytes_) return;
  full_ = false;
  rd_kafka_topic_partition_list_t* parts = nullptr;
  if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
  if (parts->cnt > 0) {
    for (int i = 0; i < parts->cnt; ++i) parts->elems[i].offset = RD_KAFKA_OFFSET_END;
    ++wakeups_;
    // Synchronous (the answers are awaited, up to 200 ms; ~1 ms here): the wakeup is the
    // request being queued; what it returns does not matter.
    rd_kafka_offsets_for_times(rk, parts, 200);
  }
  rd_kafka_topic_partition_list_destroy(parts);
}

bool OnDevBroker(rd_kafka_t* rk, int timeout_ms) {
  char* id = rd_kafka_clusterid(rk, timeout_ms);
  if (id == nullptr) return false;
  const bool mock = std::string_view(id).starts_with("mockCluster");
  rd_kafka_mem_free(rk, id);
  return mock;
}

Properties DevBrokerConsumerDefaults() {
  return {{"fetch.wait.max.ms", "10"}, {"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
}

absl::StatusOr<KafkaHandle> NewClient(rd_kafka_type_t type, const Properties& properties,
                                      const std::function<void(rd_kafka_conf_t*)>& customize) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto& [key, value] : properties) {
    if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError("kafka." + key + ": " + err);
    }
  }
  if (customize) customize(conf);
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof(err));  // owns conf on success
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(
        std::string(type == RD_KAFKA_PRODUCER ? "kafka producer: " : "kafka consumer: ") + err);
  }
  return KafkaHandle(rk);
}

absl::StatusOr<KafkaHandle> NewGroupConsumer(const std::string& group_id, const Properties& properties,
                                             RebalanceFn rebalance, void* opaque,
                                             const std::vector<std::string>& topics,
                                             OffsetCommitFn offset_commit) {
  Properties props = {{"auto.offset.reset", "earliest"}, {"log_level", "4"}};
  for (const auto& p : properties) props.push_back(p);
  // What exactly-once relies on comes last, so that no kafka: setting changes it: the
  // group, offsets committed only by the caller (with its state or transaction), and
  // only committed records read.
  props.insert(props.end(), {{"group.id", group_id},
                             {"enable.auto.commit", "false"},
                             {"enable.auto.offset.store", "false"},
                             {"isolation.level", "read_committed"}});
  absl::StatusOr<KafkaHandle> consumer =
      NewClient(RD_KAFKA_CONSUMER, props, [&](rd_kafka_conf_t* conf) {
        rd_kafka_conf_set_rebalance_cb(conf, rebalance);
        rd_kafka_conf_set_opaque(conf, opaque);
        if (offset_commit != nullptr) rd_kafka_conf_set_offset_commit_cb(conf, offset_commit);
      });
  if (!consumer.ok()) return consumer.status();
  rd_kafka_poll_set_consumer(consumer->get());
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(topics.size()));
  for (const std::string& t : topics) {
    rd_kafka_topic_partition_list_add(list, t.c_str(), RD_KAFKA_PARTITION_UA);
  }
  absl::Status s = KafkaStatus("subscribe", rd_kafka_subscribe(consumer->get(), list));
  rd_kafka_topic_partition_list_destroy(list);
  if (!s.ok()) return s;
  return consumer;
}

}  // namespace streammetrics::kafka
