#include "engine/kafka/kafka_common.h"

#include "absl/strings/cord.h"

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
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    // A broker leaving the cluster or a leader moving: what was asked of it is asked again
    // of the new leader. (librdkafka answers __DESTROY_BROKER to a request in flight to a
    // broker the metadata no longer lists; a new leader answers OFFSET_NOT_AVAILABLE to a
    // ListOffsets until its high watermark is known, and the epoch errors while leaders
    // change.)
    case RD_KAFKA_RESP_ERR__DESTROY_BROKER:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
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

namespace {
constexpr char kGroupMembershipUrl[] = "streammetrics.kafka/lost-group-membership";
}  // namespace

bool LostGroupMembership(const absl::Status& status) {
  return status.GetPayload(kGroupMembershipUrl).has_value();
}

absl::Status KafkaStatus(std::string_view what, rd_kafka_error_t* error) {
  if (error == nullptr) return absl::OkStatus();
  const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
  const bool abortable = rd_kafka_error_txn_requires_abort(error);
  const bool fatal = rd_kafka_error_is_fatal(error);
  std::string msg = std::string(what) + ": " + rd_kafka_error_string(error);
  rd_kafka_error_destroy(error);
  if (code == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || code == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
      code == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID) {
    absl::Status s = absl::AbortedError(msg);
    s.SetPayload(kGroupMembershipUrl, absl::Cord(std::string(rd_kafka_err2name(code))));
    return s;
  }
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
