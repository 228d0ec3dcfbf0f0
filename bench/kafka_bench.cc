// End to end through the dev broker (in-process) on this machine: how fast the engine
// drains a topic of generated events, under exactly_once_v2 and at_least_once, against
// how fast a plain librdkafka consumer drains the same topic, measured in the same run.
//
//   build/bench/kafka_bench [--events N] [--threads T]
//
// The dev broker keeps only the last 5 MiB / 100,000 messages per partition, so the
// topics are sized to fit (default 60,000 events over 6 partitions). Each engine run
// starts on an empty topic of its own and waits until its consumer group is stable (the
// dev broker's joins take seconds); then the events are produced and the clock runs from
// the first produce to the commit of the last input record — produce, consume, process,
// commit. The plain consumer's time is from its start to its last record. Prints one
// line per measurement.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "apps/event_generator.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/runtime.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"
#include "topology/metrics_pipeline.h"

namespace streammetrics::kafka {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Produces `events` generated events (keyed by serviceId) to `topic`; false on failure.
bool ProduceEvents(const Properties& props, const std::string& topic, int events) {
  auto producer = Producer::Create({.properties = props});
  if (!producer.ok()) return false;
  GeneratorOptions g;
  g.start_ms = NowMs() - 30 * 60'000;
  g.events_per_second = 1'000;
  EventGenerator generator(g);
  std::string doc;
  for (int i = 0; i < events; ++i) {
    doc.clear();
    generator.Next(&doc);
    (*producer)->Send(topic, -1, GeneratedServiceId(doc), doc, 0, {});
  }
  return (*producer)->Flush().ok();
}

int Main(int argc, char** argv) {
  int events = 60'000;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
  }
  SetMinLogLevel(LogLevel::kWarning);
  auto broker = DevBroker::Start(3);
  if (!broker.ok() || !(*broker)->CreateReferenceTopics().ok()) {
    std::fprintf(stderr, "dev broker failed\n");
    return 1;
  }
  const Properties props = {{"bootstrap.servers", (*broker)->bootstrap_servers()}};
  {
    const auto start = Clock::now();
    if (!ProduceEvents(props, "metrics-events", events)) return 1;
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("produce (idempotent, acks=all, lz4): %d events in %.3f s = %.0f events/s\n",
                events, s, events / s);
  }
  {
    const auto start = Clock::now();
    auto all = ReadTopic(props, "metrics-events");
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (!all.ok() || static_cast<int>(all->size()) != events) {
      std::fprintf(stderr, "plain consumer read %zu of %d\n", all.ok() ? all->size() : 0, events);
      return 1;
    }
    std::printf("plain consumer (read_committed, one client): %d events in %.3f s = %.0f events/s\n",
                events, s, events / s);
  }
  PipelineConfig config = ReferencePipelineConfig();
  config.store = StoreType::kRocksDb;
  config.idle_close_ms = 0;
  for (ProcessingGuarantee g : {ProcessingGuarantee::kExactlyOnceV2, ProcessingGuarantee::kAtLeastOnce}) {
    const std::string name = g == ProcessingGuarantee::kExactlyOnceV2 ? "eos" : "alos";
    const std::string input = "bench-input-" + name;
    if (!(*broker)->CreateTopic(input, 6).ok()) return 1;
    config.input_topic = input;
    Topology topology = *BuildMetricsTopology(config);
    RuntimeOptions o;
    o.application_id = "bench-" + name;
    o.kafka = props;
    if (const char* extra = std::getenv("SM_BENCH_PROPS")) {  // k=v,k=v: experiments
      std::string list(extra);
      size_t at = 0;
      while (at < list.size()) {
        size_t comma = list.find(',', at);
        if (comma == std::string::npos) comma = list.size();
        std::string kv = list.substr(at, comma - at);
        size_t eq = kv.find('=');
        if (eq != std::string::npos) o.kafka.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
        at = comma + 1;
      }
    }
    o.guarantee = g;
    o.threads = threads;
    o.commit_interval_ms = 100;
    o.state_dir = "/tmp/sm-kafka-bench-" + name;
    std::system(("rm -rf " + o.state_dir).c_str());
    o.embedded_broker = broker->get();
    auto rt = Runtime::Create(topology, o);
    if (!rt.ok() || !(*rt)->Start().ok()) return 1;
    while ((*rt)->counters().tasks < 6) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::seconds(8));  // the second member's join
    const auto start = Clock::now();
    if (!ProduceEvents(props, input, events)) return 1;
    while ((*rt)->counters().committed_input < events) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    (*rt)->Stop();
    (void)(*rt)->Join();
    RuntimeCounters c = (*rt)->counters();
    std::printf("engine %s (%d threads, commit 100 ms): %d events produced, processed and "
                "committed in %.3f s = %.0f events/s (%llu commits, %llu windows, %llu rebuilds)\n",
                name == "eos" ? "exactly_once_v2" : "at_least_once", threads, events, s,
                events / s, static_cast<unsigned long long>(c.commits),
                static_cast<unsigned long long>(c.windows_emitted),
                static_cast<unsigned long long>(c.rebuilds));
    std::system(("rm -rf " + o.state_dir).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace streammetrics::kafka

int main(int argc, char** argv) { return streammetrics::kafka::Main(argc, argv); }
