// A sink runner: consumes aggregate topics (read_committed, its own consumer group) and
// applies them to an external sink (Postgres, Redis) in batches, exactly once through the
// sink's own positions and fencing (engine/sinks/sink.h):
//   - on assignment it takes the partitions over in the sink (a new epoch each) and
//     resumes each from the position stored in the sink, not from the group's offsets;
//   - a batch (batch_size records or flush_interval_ms) is one sink transaction; records
//     the sink refuses go to the dead-letter topic (delivered before the batch commits);
//   - the sink down or failing: the batch is kept and retried with exponential backoff
//     and full jitter; after breaker_failures failures in a row the circuit opens for
//     breaker_open_ms before the next trial; meanwhile consumption is paused (memory stays
//     bounded by the batch) and health() says so; nothing is lost, it catches up after;
//   - fenced (a newer runner took a partition over): that partition is dropped, the
//     batch discarded and the partitions it still owns re-read from their positions.
#ifndef STREAMMETRICS_ENGINE_KAFKA_SINK_RUNNER_H_
#define STREAMMETRICS_ENGINE_KAFKA_SINK_RUNNER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kafka/producer.h"
#include "engine/sinks/sink.h"

namespace streammetrics::kafka {

struct SinkRunnerOptions {
  Properties kafka;                // bootstrap.servers, ...
  std::string group_id;            // the consumer group of this sink's runners
  std::vector<std::string> topics;  // aggregate topics
  std::string dead_letter_topic = "metrics-dead-letter";
  size_t batch_size = 5'000;
  int flush_interval_ms = 200;
  int retry_initial_ms = 100;
  int retry_max_ms = 10'000;
  int breaker_failures = 5;
  int breaker_open_ms = 5'000;
};

enum class SinkHealth { kStarting, kHealthy, kRetrying, kCircuitOpen, kFailed, kStopped };
std::string_view SinkHealthName(SinkHealth h);

struct SinkRunnerCounters {
  uint64_t records = 0;   // consumed and committed in the sink (applied, skipped or rejected)
  uint64_t batches = 0;
  uint64_t rejected = 0;  // sent to the dead-letter topic
  uint64_t failures = 0;  // failed batch attempts
  uint64_t fenced = 0;    // partitions lost to a newer runner
  SinkHealth health = SinkHealth::kStarting;
  std::string last_error;
};

class SinkRunner {
 public:
  static absl::StatusOr<std::unique_ptr<SinkRunner>> Create(std::unique_ptr<Sink> sink,
                                                            SinkRunnerOptions options);
  ~SinkRunner();
  // Starts the runner's thread (which opens the sink, retrying while it is down).
  void Start();
  // Applies what it holds (one try), leaves the group and ends the thread.
  void Stop();
  // Applies every record of its partitions up to their ends as of the call (high
  // watermarks; once assigned, if not yet), retrying as usual while the sink is down,
  // then stops as Stop() does: `run --until-end`'s sinks. Stop() still stops at once.
  void StopAtEnd();
  absl::Status Join();
  SinkRunnerCounters counters() const;
  // What the runner's consumer was created with (empty before): on the dev broker its
  // defaults (DevBrokerConsumerDefaults), then SinkRunnerOptions::kafka, whose values win.
  Properties consumer_properties() const;

 private:
  class Loop;
  SinkRunner(std::unique_ptr<Sink> sink, SinkRunnerOptions options);

  std::unique_ptr<Sink> sink_;
  SinkRunnerOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> stop_at_end_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  SinkRunnerCounters counters_;  // guarded by mu_
  absl::Status status_;          // guarded by mu_
  Properties consumer_properties_;  // guarded by mu_
  friend class Loop;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_SINK_RUNNER_H_
