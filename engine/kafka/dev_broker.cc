#include "engine/kafka/dev_broker.h"

#include "engine/kafka/kafka_common.h"  // rdkafka.h, which rdkafka_mock.h needs first

#include <librdkafka/rdkafka_mock.h>

#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <vector>

namespace streammetrics::kafka {

struct DevBroker::Impl {
  KafkaHandle handle;  // the mock cluster lives in this client's threads
  rd_kafka_mock_cluster_t* cluster = nullptr;
  ~Impl() {
    if (cluster != nullptr) rd_kafka_mock_cluster_destroy(cluster);
  }
};

DevBroker::DevBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(impl_->cluster);
}

DevBroker::~DevBroker() = default;

absl::StatusOr<std::unique_ptr<DevBroker>> DevBroker::Start(int brokers) {
  if (brokers < 1) return absl::InvalidArgumentError("dev broker: at least one broker");
  absl::StatusOr<KafkaHandle> handle =
      NewClient(RD_KAFKA_PRODUCER, {{"log_level", "3"}, {"bootstrap.servers", ""}});
  if (!handle.ok()) return handle.status();
  auto impl = std::make_unique<Impl>();
  impl->handle = *std::move(handle);
  impl->cluster = rd_kafka_mock_cluster_new(impl->handle.get(), brokers);
  if (impl->cluster == nullptr) {
    return absl::UnavailableError("dev broker: the mock cluster did not start");
  }
  return std::unique_ptr<DevBroker>(new DevBroker(std::move(impl)));
}

absl::Status DevBroker::CreateTopic(std::string_view name, int partitions) {
  std::string topic(name);
  return KafkaStatus("dev broker: create topic " + topic,
                     rd_kafka_mock_topic_create(impl_->cluster, topic.c_str(), partitions, 1));
}

namespace {

struct ReferenceTopic {
  std::string_view name;
  int partitions;
};
// reference/001's topic layout.
constexpr ReferenceTopic kReferenceTopics[] = {
    {"metrics-events", DevBroker::kInputPartitions},
    {"metrics-aggregated-1m", 3},
    {"metrics-aggregated-5m", 3},
    {"metrics-aggregated-1m-10s", 3},
    {"metrics-dead-letter", 3},
};

}  // namespace

int DevBroker::ReferencePartitions(std::string_view name) {
  for (const ReferenceTopic& t : kReferenceTopics) {
    if (t.name == name) return t.partitions;
  }
  return 0;
}

std::vector<std::pair<std::string, int>> DevBroker::ReferenceTopics() {
  std::vector<std::pair<std::string, int>> out;
  for (const ReferenceTopic& t : kReferenceTopics) out.emplace_back(t.name, t.partitions);
  return out;
}

absl::Status DevBroker::CreateReferenceTopics() {
  for (const ReferenceTopic& t : kReferenceTopics) {
    if (absl::Status s = CreateTopic(t.name, t.partitions); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DevBroker::SetBrokerDown(int broker_id) {
  return KafkaStatus("dev broker: broker down",
                     rd_kafka_mock_broker_set_down(impl_->cluster, broker_id));
}

absl::Status DevBroker::SetBrokerUp(int broker_id) {
  return KafkaStatus("dev broker: broker up",
                     rd_kafka_mock_broker_set_up(impl_->cluster, broker_id));
}

void DevBroker::FailRequests(int16_t api_key, int count, int error) {
  std::vector<rd_kafka_resp_err_t> errors(static_cast<size_t>(count),
                                          static_cast<rd_kafka_resp_err_t>(error));
  rd_kafka_mock_push_request_errors_array(impl_->cluster, api_key, errors.size(), errors.data());
}

void DevBroker::DelayNextRequest(int broker_id, int16_t api_key, int rtt_ms) {
  rd_kafka_mock_broker_push_request_error_rtts(impl_->cluster, broker_id, api_key, 1,
                                               RD_KAFKA_RESP_ERR_NO_ERROR, rtt_ms);
}

absl::Status DevBroker::SetCoordinator(std::string_view key_type, std::string_view key,
                                       int broker_id) {
  const std::string type(key_type), k(key);
  return KafkaStatus("dev broker: coordinator",
                     rd_kafka_mock_coordinator_set(impl_->cluster, type.c_str(), k.c_str(), broker_id));
}

absl::Status DevBroker::SetLeader(std::string_view topic, int32_t partition, int broker_id) {
  const std::string t(topic);
  return KafkaStatus("dev broker: leader",
                     rd_kafka_mock_partition_set_leader(impl_->cluster, t.c_str(), partition, broker_id));
}

}  // namespace streammetrics::kafka

// The dev broker's sockets without Nagle's algorithm, as a Kafka broker's are
// (socket.tcp.no.delay): librdkafka's mock cluster (2.0.2's and 2.15.1's) accepts
// connections without TCP_NODELAY, so a response written in two parts waits for the
// client's delayed ACK (40 ms on Linux) whenever two requests are in flight on a
// connection — every flush of a producer writing several partitions of one broker paid
// it. Only the mock cluster calls accept() in this process (librdkafka's clients
// connect); this wraps it.
extern "C" int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  using AcceptFn = int (*)(int, struct sockaddr*, socklen_t*);
  static const AcceptFn real = reinterpret_cast<AcceptFn>(dlsym(RTLD_NEXT, "accept"));
  if (real == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const int s = real(fd, addr, len);
  if (s >= 0) {
    int on = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));  // best effort (not TCP: no-op)
  }
  return s;
}
