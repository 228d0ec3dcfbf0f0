// The commands of the binary that talk to Kafka: run, broker, loadgen --bootstrap.
#ifndef STREAMMETRICS_APPS_KAFKA_COMMANDS_H_
#define STREAMMETRICS_APPS_KAFKA_COMMANDS_H_

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "apps/config.h"
#include "engine/kafka/topic_reader.h"
#include "topology/topology.h"
#include "apps/event_generator.h"

namespace streammetrics {

namespace kafka {
class DevBroker;
}  // namespace kafka

// Set by SIGINT/SIGTERM (InstallStopSignals); the commands below finish when it is.
std::atomic<bool>& StopRequested();
void InstallStopSignals();

struct RunCommandOptions {
  // Embedded broker only: the built-in load generator's rate (events/s of wall clock
  // and of event time); 0: none.
  double load_rate = 20'000;
  // Stop after this long; 0: at SIGINT/SIGTERM.
  int64_t duration_ms = 0;
  // Print a progress line every second and the latest percentiles as windows close.
  bool live = true;
  // A bounded run (kafka::RuntimeOptions::until_end): exits once the input is read to
  // its end offsets as of the start and every window has closed.
  bool until_end = false;
};

// `streammetrics run`: the configured pipeline on the Kafka runtime. With
// bootstrap.servers `embedded`, the dev broker and (optionally) the load generator run
// in this process too.
absl::Status RunKafka(const AppConfig& config, const RunCommandOptions& options,
                      std::ostream& out);

// `streammetrics sink`: the enabled sinks' runners (sinks.postgres) alone, against the
// broker of kafka.bootstrap.servers, until SIGINT/SIGTERM.
absl::Status RunSinks(const AppConfig& config, std::ostream& out);

// `streammetrics replay`: kafka::ReplayTopic against kafka.bootstrap.servers (a running
// broker), a summary to `out`.
absl::Status RunReplay(const AppConfig& config, const kafka::ReplayOptions& options, std::ostream& out);

struct BrokerCommandOptions {
  int brokers = 3;
  // > 0: clients bootstrap through 127.0.0.1:port (a forwarder to the first broker; the
  // brokers themselves stay on the ports the mock cluster picked).
  int port = 0;
  // Also written to this file (for scripts), when set.
  std::string bootstrap_file;
};

// Creates on the dev broker (whose protocol has no CreateTopics) every topic a run of
// `config` needs: reference/001's topics with their partitions (metrics-events 6, the
// aggregate topics and metrics-dead-letter 3 each); every other topic the config names
// (NamedTopics: input, windows' topics, dead letters, sinks' topics) with
// DevBroker::kInputPartitions (6, metrics-events'); the application's changelog topics
// with the input topic's partitions. For a new dev broker: it refuses a topic that exists.
absl::Status CreateDevBrokerTopics(kafka::DevBroker* broker, const AppConfig& config,
                                   const Topology& topology);

// `streammetrics broker`: the dev broker for other processes, with every topic
// CreateDevBrokerTopics creates for `config` (the reference config without --config).
// Prints `bootstrap.servers=...`, runs until SIGINT/SIGTERM.
absl::Status RunBroker(const AppConfig& config, const BrokerCommandOptions& options,
                       std::ostream& out);

struct LoadgenKafkaOptions {
  std::string bootstrap;
  std::string topic = "metrics-events";
  uint64_t count = 100'000;
  // Producing pace in events/s; 0: as fast as possible. Event time follows
  // GeneratorOptions::events_per_second either way.
  double produce_rate = 0;
};

// `streammetrics loadgen --bootstrap`: produces generated events keyed by serviceId with
// reference/001's producer settings (idempotent, acks=all); prints the achieved rate and
// delivery failures.
absl::Status RunLoadgenKafka(const GeneratorOptions& generator, const LoadgenKafkaOptions& options,
                             std::ostream& out);

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_KAFKA_COMMANDS_H_
