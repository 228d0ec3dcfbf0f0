// The streammetrics binary: parses flags and calls the libraries.
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "apps/config.h"
#include "apps/event_generator.h"
#include "apps/kafka_commands.h"
#include "apps/process_command.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

constexpr char kUsage[] = R"(usage: streammetrics <command> [flags]

commands:
  process  --config FILE --input EVENTS|- --output DIR
           run the pipeline in-process over a file of events (JSON lines, or
           length-delimited protobuf: input.format, input.framing); write every output
           topic to DIR/<topic>.jsonl and print a summary
  describe --config FILE
           print the topology the config builds
  run      [--config FILE] [--load EVENTS_PER_S] [--duration SECONDS] [--quiet true]
           [--until-end]
           the pipeline on Kafka (kafka.bootstrap.servers; default `embedded`: the dev
           broker and, at --load (default 20000), the load generator in this process),
           with live progress; Ctrl-C commits, checkpoints and exits 0.
           --until-end: read every input partition up to its end offset as of the start,
           close every open window (as `process` does at the end of its file), commit
           and exit 0 — for backfills and for replaying a topic to recover
  broker   [--config FILE] [--brokers N] [--port P] [--bootstrap-file FILE]
           the dev broker for other processes, with every topic the config names
           (reference/001's with their partitions, others with 6) and its changelog
           topics; prints bootstrap.servers=... (127.0.0.1:P with --port), runs until
           SIGTERM
  sink     --config FILE
           the enabled sinks (sinks.postgres, sinks.redis) alone: consume the aggregate topics of
           kafka.bootstrap.servers and apply them exactly once; Ctrl-C to stop
  replay   --config FILE --from TOPIC [--to TOPIC] [--reason R,R...] [--since T] [--until T]
           [--dry-run true]
           produce records of TOPIC again, as they were (key, value, original timestamp, no
           dlq.* headers): dead letters back to their dlq.topic once what refused them is
           fixed; --reason keeps those dead-letter reasons, --since/--until (ms since the
           epoch or 2026-12-01T10:00:00Z) the records' own timestamps; prints what it did
  loadgen  --output FILE|- | --bootstrap SERVERS [--topic T] [--produce-rate R]
           [--count N (0: until SIGTERM, Kafka only)] [--rate EVENTS_PER_S] [--seed S]
           [--start-ms MS|now]
           [--invalid F] [--duplicates F] [--late F]
           generated metric events as JSON lines, to a file or produced to Kafka
           (keyed by serviceId; --rate is event time, --produce-rate the pace)
  demo     [--config FILE] [--events N]
           the main job, offline: generate events, aggregate them, show results
  help     this text

Configuration keys: docs/CONFIGURATION.md
)";

struct Flags {
  std::map<std::string, std::string> values;
  std::string error;
};

Flags ParseFlags(int argc, char** argv, int first) {
  Flags f;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (!StartsWith(arg, "--")) {
      f.error = "unexpected argument '" + arg + "'";
      return f;
    }
    arg = arg.substr(2);
    size_t eq = arg.find('=');
    if (arg == "until-end") {  // a bare flag
      f.values[arg] = "true";
    } else if (eq != std::string::npos) {
      f.values[arg.substr(0, eq)] = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      f.values[arg] = argv[++i];
    } else {
      f.error = "flag --" + arg + " needs a value";
      return f;
    }
  }
  return f;
}

int Fail(const absl::Status& s) {
  std::cerr << "streammetrics: " << Message(s) << "\n";
  return 1;
}

int UsageError(const std::string& what) {
  std::cerr << "streammetrics: " << what << "\n\n" << kUsage;
  return 2;
}

absl::StatusOr<AppConfig> ConfigFrom(const Flags& f, bool required) {
  auto it = f.values.find("config");
  if (it == f.values.end()) {
    if (required) return absl::InvalidArgumentError("--config FILE is required");
    return ParseConfig("");
  }
  return LoadConfigFile(it->second);
}

bool Known(const Flags& f, std::initializer_list<std::string_view> names, std::string* bad) {
  for (const auto& [k, v] : f.values) {
    bool ok = false;
    for (std::string_view n : names) ok |= k == n;
    if (!ok) {
      *bad = "unknown flag --" + k;
      return false;
    }
  }
  return true;
}

template <typename T>
bool NumberFlag(const Flags& f, const std::string& name, T* out, std::string* bad) {
  auto it = f.values.find(name);
  if (it == f.values.end()) return true;
  const std::string& s = it->second;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  if (ec != std::errc() || p != s.data() + s.size()) {
    *bad = "--" + name + ": '" + s + "' is not a number";
    return false;
  }
  return true;
}

// Milliseconds since the epoch, or an RFC 3339 time (2026-12-01T10:00:00Z).
absl::StatusOr<int64_t> ParseTimeFlag(const std::string& text) {
  int64_t ms = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (ec == std::errc() && p == text.data() + text.size()) return ms;
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &error)) {
    return absl::InvalidArgumentError(
        StrCat("'", text, "' is neither milliseconds since the epoch nor a time like 2026-12-01T10:00:00Z"));
  }
  return absl::ToUnixMillis(t);
}

int Main(int argc, char** argv) {
  if (argc < 2) return UsageError("no command");
  const std::string command = argv[1];
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  Flags flags = ParseFlags(argc, argv, 2);
  if (!flags.error.empty()) return UsageError(flags.error);
  std::string bad;

  if (command == "process") {
    if (!Known(flags, {"config", "input", "output"}, &bad)) return UsageError(bad);
    if (!flags.values.contains("input")) return UsageError("--input is required");
    if (!flags.values.contains("output")) return UsageError("--output is required");
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, true);
    if (!config.ok()) return Fail(config.status());
    const std::string& input_path = flags.values["input"];
    std::ifstream file;
    std::istream* input = &std::cin;
    if (input_path != "-") {
      file.open(input_path, std::ios::binary);
      if (!file) return Fail(absl::NotFoundError("cannot open input " + input_path));
      input = &file;
    }
    absl::StatusOr<ProcessResult> result = RunProcess(*config, *input, flags.values["output"]);
    if (!result.ok()) return Fail(result.status());
    std::cout << FormatProcessSummary(*result);
    return 0;
  }
  if (command == "describe") {
    if (!Known(flags, {"config"}, &bad)) return UsageError(bad);
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, true);
    if (!config.ok()) return Fail(config.status());
    absl::StatusOr<Topology> topology = BuildMetricsTopology(config->pipeline);
    if (!topology.ok()) return Fail(topology.status());
    std::cout << topology->Describe();
    return 0;
  }
  if (command == "run") {
    if (!Known(flags, {"config", "load", "duration", "quiet", "until-end"}, &bad)) return UsageError(bad);
    RunCommandOptions options;
    double duration_s = 0;
    if (!NumberFlag(flags, "load", &options.load_rate, &bad) ||
        !NumberFlag(flags, "duration", &duration_s, &bad)) {
      return UsageError(bad);
    }
    if (options.load_rate < 0) return UsageError("--load must be >= 0");
    options.duration_ms = static_cast<int64_t>(duration_s * 1000);
    options.live = flags.values["quiet"] != "true";
    options.until_end = flags.values.contains("until-end");
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, false);
    if (!config.ok()) return Fail(config.status());
    if (options.until_end && BootstrapServers(*config) == "embedded") {
      return UsageError("--until-end reads a broker's topics to their end: set "
                        "kafka.bootstrap.servers (the embedded broker starts empty)");
    }
    InstallStopSignals();
    if (absl::Status s = RunKafka(*config, options, std::cout); !s.ok()) return Fail(s);
    return 0;
  }
  if (command == "sink") {
    if (!Known(flags, {"config"}, &bad)) return UsageError(bad);
    if (!flags.values.contains("config")) return UsageError("sink needs --config");
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, true);
    if (!config.ok()) return Fail(config.status());
    InstallStopSignals();
    if (absl::Status s = RunSinks(*config, std::cout); !s.ok()) return Fail(s);
    return 0;
  }
  if (command == "replay") {
    if (!Known(flags, {"config", "from", "to", "reason", "since", "until", "dry-run"}, &bad)) {
      return UsageError(bad);
    }
    if (!flags.values.contains("config")) return UsageError("replay needs --config");
    if (flags.values["from"].empty()) return UsageError("replay needs --from TOPIC");
    kafka::ReplayOptions options;
    options.from = flags.values["from"];
    options.to = flags.values["to"];
    for (absl::string_view r : absl::StrSplit(flags.values["reason"], ',', absl::SkipEmpty())) {
      options.reasons.emplace_back(r);
    }
    for (auto [name, out] : {std::pair{"since", &options.since_ms}, std::pair{"until", &options.until_ms}}) {
      auto it = flags.values.find(name);
      if (it == flags.values.end()) continue;
      absl::StatusOr<int64_t> ms = ParseTimeFlag(it->second);
      if (!ms.ok()) return UsageError(StrCat("--", name, ": ", Message(ms.status())));
      *out = *ms;
    }
    if (auto it = flags.values.find("dry-run"); it != flags.values.end()) {
      if (it->second != "true" && it->second != "false") return UsageError("--dry-run: true or false");
      options.dry_run = it->second == "true";
    }
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, true);
    if (!config.ok()) return Fail(config.status());
    if (absl::Status s = RunReplay(*config, options, std::cout); !s.ok()) return Fail(s);
    return 0;
  }
  if (command == "broker") {
    if (!Known(flags, {"config", "brokers", "bootstrap-file", "port"}, &bad)) return UsageError(bad);
    BrokerCommandOptions options;
    if (!NumberFlag(flags, "brokers", &options.brokers, &bad) ||
        !NumberFlag(flags, "port", &options.port, &bad)) {
      return UsageError(bad);
    }
    if (options.port < 0 || options.port > 65535) return UsageError("--port must be in [1, 65535]");
    if (options.brokers < 1) return UsageError("--brokers must be >= 1");
    options.bootstrap_file = flags.values["bootstrap-file"];
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, false);
    if (!config.ok()) return Fail(config.status());
    InstallStopSignals();
    if (absl::Status s = RunBroker(*config, options, std::cout); !s.ok()) return Fail(s);
    return 0;
  }
  if (command == "loadgen") {
    if (!Known(flags, {"output", "bootstrap", "topic", "produce-rate", "start-ms", "count", "rate",
                       "seed", "invalid", "duplicates", "late"},
               &bad)) {
      return UsageError(bad);
    }
    const bool to_kafka = flags.values.contains("bootstrap");
    if (to_kafka == flags.values.contains("output")) {
      return UsageError("give one of --output and --bootstrap");
    }
    GeneratorOptions gen;
    uint64_t count = 100'000;
    LoadgenKafkaOptions kafka_options;
    if (auto it = flags.values.find("start-ms"); it != flags.values.end() && it->second == "now") {
      it->second = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    }
    if (!NumberFlag(flags, "count", &count, &bad) ||
        !NumberFlag(flags, "rate", &gen.events_per_second, &bad) ||
        !NumberFlag(flags, "seed", &gen.seed, &bad) ||
        !NumberFlag(flags, "start-ms", &gen.start_ms, &bad) ||
        !NumberFlag(flags, "produce-rate", &kafka_options.produce_rate, &bad) ||
        !NumberFlag(flags, "invalid", &gen.invalid_fraction, &bad) ||
        !NumberFlag(flags, "duplicates", &gen.duplicate_fraction, &bad) ||
        !NumberFlag(flags, "late", &gen.late_fraction, &bad)) {
      return UsageError(bad);
    }
    if (!(gen.events_per_second > 0)) return UsageError("--rate must be > 0");
    if (count == 0 && !to_kafka) return UsageError("--count 0 (until SIGTERM) is for --bootstrap only");
    if (to_kafka) {
      kafka_options.bootstrap = flags.values["bootstrap"];
      kafka_options.count = count;
      if (flags.values.contains("topic")) kafka_options.topic = flags.values["topic"];
      InstallStopSignals();
      if (absl::Status s = RunLoadgenKafka(gen, kafka_options, std::cout); !s.ok()) return Fail(s);
      return 0;
    }
    std::ofstream file;
    std::ostream* out = &std::cout;
    if (flags.values["output"] != "-") {
      file.open(flags.values["output"], std::ios::trunc);
      if (!file) return Fail(absl::UnavailableError("cannot write " + flags.values["output"]));
      out = &file;
    }
    EventGenerator generator(gen);
    std::string line;
    for (uint64_t i = 0; i < count; ++i) {
      line.clear();
      generator.Next(&line);
      line.push_back('\n');
      out->write(line.data(), static_cast<std::streamsize>(line.size()));
    }
    out->flush();
    if (!*out) return Fail(absl::UnavailableError("writing events failed"));
    return 0;
  }
  if (command == "demo") {
    if (!Known(flags, {"config", "events", "rate"}, &bad)) return UsageError(bad);
    DemoOptions options;
    if (!NumberFlag(flags, "events", &options.events, &bad) ||
        !NumberFlag(flags, "rate", &options.events_per_second, &bad)) {
      return UsageError(bad);
    }
    if (!(options.events_per_second > 0)) return UsageError("--rate must be > 0");
    absl::StatusOr<AppConfig> config = ConfigFrom(flags, false);
    if (!config.ok()) return Fail(config.status());
    if (absl::Status s = RunDemo(*config, options, std::cout); !s.ok()) return Fail(s);
    return 0;
  }
  return UsageError("unknown command '" + command + "'");
}

}  // namespace
}  // namespace streammetrics

int main(int argc, char** argv) { return streammetrics::Main(argc, argv); }
