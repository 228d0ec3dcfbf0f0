// What the librdkafka adapters share: client configuration and error conversion. Only
// engine/kafka includes librdkafka; this header is private to it (its .cc files).
#ifndef STREAMMETRICS_ENGINE_KAFKA_KAFKA_COMMON_H_
#define STREAMMETRICS_ENGINE_KAFKA_KAFKA_COMMON_H_

#include <librdkafka/rdkafka.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kafka/admin.h"

namespace streammetrics::kafka {

using Properties = std::vector<std::pair<std::string, std::string>>;

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;

// The status for a librdkafka error: Unavailable for what a retry may cure (transport,
// timeouts, leader changes), Aborted for a fenced or aborted transaction (rebuild the
// task), InvalidArgument for configuration, Internal otherwise.
absl::Status KafkaStatus(std::string_view what, rd_kafka_resp_err_t err);
// The same for an rd_kafka_error_t (transactional API); destroys it.
absl::Status KafkaStatus(std::string_view what, rd_kafka_error_t* error);

// Whether a status says the consumer group no longer knows the member that committed
// (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID on a transactional offset
// commit): its partitions may be another member's by now, and the consumer rejoins.
bool LostGroupMembership(const absl::Status& status);

// A client of `type` with `properties` applied in order (later ones win); `customize`
// (callbacks, opaque) sees the configuration just before the client is made.
absl::StatusOr<KafkaHandle> NewClient(rd_kafka_type_t type, const Properties& properties,
                                      const std::function<void(rd_kafka_conf_t*)>& customize = {});

// CreateTopics (admin.h) through an existing client.
absl::Status CreateTopics(rd_kafka_t* rk, const std::vector<TopicSpec>& topics, int timeout_ms);

// The value a client made with `props` has for `key`: the last setting ("" if none).
std::string LastSetting(const Properties& props, std::string_view key);

// The client is connected to the dev broker (librdkafka's mock cluster, in this process or
// another's, `streammetrics broker`): its cluster id starts with "mockCluster". Waits up to
// `timeout_ms` for the metadata that carries the id (no wait once it came); false when
// none came.
bool OnDevBroker(rd_kafka_t* rk, int timeout_ms);
// Group consumers' defaults on the dev broker, to come before the user's properties: it
// answers a fetch that finds nothing only after the full fetch.wait.max.ms (500 ms by
// default) even when records arrive meanwhile, and it sometimes misses a member that joins
// while the first generation forms, which then waits out session.timeout.ms (45 s by
// default) unassigned; docs/SEMANTICS.md, "Throughput on the dev broker".
Properties DevBrokerConsumerDefaults();

// A consumer in group `group_id` that commits nothing by itself, reads committed records
// and starts at the earliest offset when it has no position; `properties` win but for
// group.id, enable.auto.commit, enable.auto.offset.store and isolation.level, which stay
// as said (what exactly-once relies on); the rebalance callback `rebalance` with `opaque`; polled through
// rd_kafka_consumer_poll; subscribed to `topics`. `offset_commit` (optional): called from
// the poll with the result of every offset commit (asynchronous ones included).
using RebalanceFn = void (*)(rd_kafka_t*, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t*, void*);
using OffsetCommitFn = void (*)(rd_kafka_t*, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t*, void*);
absl::StatusOr<KafkaHandle> NewGroupConsumer(const std::string& group_id, const Properties& properties,
                                             RebalanceFn rebalance, void* opaque,
                                             const std::vector<std::string>& topics,
                                             OffsetCommitFn offset_commit = nullptr);

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_KAFKA_COMMON_H_
