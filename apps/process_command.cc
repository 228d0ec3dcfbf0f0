#include "apps/process_command.h"

#include <simdjson.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <vector>
#include <memory>

#include "absl/strings/escaping.h"
#include "apps/event_generator.h"
#include "apps/input_reader.h"
#include "engine/topology_test_driver.h"
#include "operators/aggregate_result.h"
#include "operators/metric_event_codec.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

using Clock = std::chrono::steady_clock;

// "2024-02-07T01:00:00Z"
std::string UtcTime(int64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class OutputFiles {
 public:
  OutputFiles(std::string dir, std::string dead_letter_topic)
      : dir_(std::move(dir)), dead_letter_topic_(std::move(dead_letter_topic)) {}

  absl::Status Open(const std::string& topic) {
    if (files_.contains(topic)) return absl::OkStatus();
    std::string path = StrCat(dir_, "/", topic, ".jsonl");
    auto file = std::make_unique<std::ofstream>(path, std::ios::trunc);
    if (!*file) return absl::UnavailableError(StrCat("cannot write ", path));
    files_.emplace(topic, std::move(file));
    return absl::OkStatus();
  }

  absl::Status Write(const OutputRecord& r, std::map<std::string, uint64_t>* counts) {
    if (absl::Status s = Open(r.topic); !s.ok()) return s;
    std::ofstream& f = *files_.at(r.topic);
    line_.clear();
    if (r.topic == dead_letter_topic_) {
      line_.append("{\"reason\":");
      AppendJsonString(r.Header("dlq.reason").value_or(""), &line_);
      line_.append(",\"error\":");
      AppendJsonString(r.Header("dlq.error").value_or(""), &line_);
      line_.append(",\"topic\":");
      AppendJsonString(r.Header("dlq.topic").value_or(""), &line_);
      StrAppend(&line_, ",\"partition\":", r.Header("dlq.partition").value_or("0"),
                ",\"offset\":", r.Header("dlq.offset").value_or("-1"),
                ",\"timestamp\":", r.Header("dlq.timestamp").value_or("0"));
      if (std::optional<std::string> cut = r.Header("dlq.truncated")) {
        line_.append(",\"truncated\":");
        AppendJsonString(*cut, &line_);
      }
      // JSON strings hold text: bytes that are not UTF-8 (protobuf input, a corrupt line)
      // go as base64, so the exact original can be recovered.
      if (simdjson::validate_utf8(r.value.data(), r.value.size())) {
        line_.append(",\"original\":");
        AppendJsonString(r.value, &line_);
      } else {
        absl::Base64Escape(r.value, &base64_);
        StrAppend(&line_, ",\"original_base64\":\"", base64_, "\"");
      }
      line_.push_back('}');
    } else {
      line_.append(r.value);
    }
    line_.push_back('\n');
    f.write(line_.data(), static_cast<std::streamsize>(line_.size()));
    if (!f) return absl::UnavailableError(StrCat("write to ", dir_, "/", r.topic, ".jsonl failed"));
    ++(*counts)[r.topic];
    return absl::OkStatus();
  }

  absl::Status Close() {
    for (auto& [topic, f] : files_) {
      f->close();
      if (!*f) return absl::UnavailableError(StrCat("closing ", dir_, "/", topic, ".jsonl failed"));
    }
    return absl::OkStatus();
  }

 private:
  std::string dir_;
  std::string dead_letter_topic_;
  std::map<std::string, std::unique_ptr<std::ofstream>> files_;
  std::string line_;
  std::string base64_;
};

// Offline mode's RocksDB stores live in a fresh directory removed at exit: they hold
// state beyond memory (with the cache budget evicting to them), not durability —
// offline input is processed from its start every time. Declared before the driver, so
// the stores close before their files go.
class ScratchStateDir {
 public:
  explicit ScratchStateDir(const AppConfig& config) {
    if (config.pipeline.store != StoreType::kRocksDb) return;
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            StrCat("streammetrics-offline-", ::getpid(), "-", rd());
  }
  ~ScratchStateDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

absl::StatusOr<std::unique_ptr<TopologyTestDriver>> MakeDriver(const AppConfig& config,
                                                               const Topology& topology,
                                                               std::optional<int64_t> clock,
                                                               const ScratchStateDir& state) {
  TopologyTestDriver::Options options;
  options.state_dir = state.path();
  options.application_id = config.pipeline.application_id;
  options.dead_letter_topic = config.pipeline.dead_letter_topic;
  // A dead-letter file takes records of any size, unlike a Kafka topic: none is cut to fit
  // (the document limit bounds them).
  options.dead_letter_max_bytes = 0;
  options.commit_every_records = config.commit_every_records;
  options.wall_clock_ms = clock;
  if (config.pipeline.store == StoreType::kRocksDb) {
    options.rocksdb = RocksDbResources::Create(RocksDbBudget{
        .cache_bytes = config.rocksdb_cache_bytes,
        .write_buffer_bytes = config.rocksdb_write_buffer_bytes});
  }
  if (config.state_cache_max_bytes > 0) {
    options.cache_budget = std::make_shared<CacheBudget>(config.state_cache_max_bytes);
  }
  return TopologyTestDriver::Create(topology, options);
}

// Offline one task reads all of the input: no repartition, no key check.
PipelineConfig OfflinePipeline(PipelineConfig pipeline) {
  pipeline.keying = InputKeying::kSingleTask;
  return pipeline;
}

}  // namespace

absl::StatusOr<ProcessResult> RunProcess(const AppConfig& config, std::istream& input,
                                         const std::string& output_dir) {
  const auto start = Clock::now();
  absl::StatusOr<Topology> topology = BuildMetricsTopology(OfflinePipeline(config.pipeline));
  if (!topology.ok()) return topology.status();
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", output_dir, ": ", ec.message()));
  ScratchStateDir state(config);
  absl::StatusOr<std::unique_ptr<TopologyTestDriver>> driver =
      MakeDriver(config, *topology, std::nullopt, state);
  if (!driver.ok()) return driver.status();

  ProcessResult result;
  OutputFiles files(output_dir, config.pipeline.dead_letter_topic);
  for (const std::string& topic : topology->sink_topics()) {
    if (absl::Status s = files.Open(topic); !s.ok()) return s;
    result.records_per_topic[topic] = 0;
  }
  if (absl::Status s = files.Open(config.pipeline.dead_letter_topic); !s.ok()) return s;
  result.records_per_topic[config.pipeline.dead_letter_topic] = 0;

  auto drain = [&]() -> absl::Status {
    for (const OutputRecord& r : (*driver)->ReadAll()) {
      if (absl::Status s = files.Write(r, &result.records_per_topic); !s.ok()) return s;
    }
    return absl::OkStatus();
  };

  const size_t limit = config.pipeline.limits.max_document_bytes;
  result.framing = InputFramingOf(config);
  std::unique_ptr<InputReader> reader = NewInputReader(result.framing, input, limit);
  InputRecord record;
  while (true) {
    absl::StatusOr<bool> more = reader->Next(&record);
    if (!more.ok()) return more.status();
    if (!*more) break;
    ++result.lines;
    if (record.blank) {
      ++result.blank_lines;
    } else if (!record.error.empty()) {
      if (absl::Status s = (*driver)->PipeUnprocessed(config.pipeline.input_topic, "",
                                                      record.bytes,
                                                      DeadLetterReason::kDeserialization,
                                                      record.error, record.truncated);
          !s.ok()) {
        return s;
      }
    } else if (absl::Status s =
                   (*driver)->PipeInput(config.pipeline.input_topic, "", record.bytes);
               !s.ok()) {
      return s;
    }
    if (result.lines % 4096 == 0) {
      if (absl::Status s = drain(); !s.ok()) return s;
    }
  }
  if (absl::Status s = (*driver)->EndOfInput(); !s.ok()) return s;
  if (absl::Status s = drain(); !s.ok()) return s;
  if (absl::Status s = files.Close(); !s.ok()) return s;
  result.counters = (*driver)->counters();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

std::string FormatProcessSummary(const ProcessResult& r) {
  const TaskCounters& c = r.counters;
  std::string out;
  if (r.framing == InputFraming::kLines) {
    StrAppend(&out, "read:             ", c.records_read, " events (", r.blank_lines,
              " blank lines skipped)\n");
  } else {
    StrAppend(&out, "read:             ", c.records_read, " events (length-delimited)\n");
  }
  StrAppend(&out, "processed:        ", c.records_processed, "\n");
  StrAppend(&out, "duplicates:       ", c.duplicates_dropped, "\n");
  if (c.dedupe_ids_evicted > 0) {
    StrAppend(&out, "dedupe evicted:   ", c.dedupe_ids_evicted,
              " ids forgotten early (dedupe.max_ids)\n");
  }
  StrAppend(&out, "late:             ", c.late_dropped, " dropped, ", c.late_window_updates,
            " window updates skipped\n");
  StrAppend(&out, "dead-lettered:    ", c.dead_letters_total());
  for (int i = 0; i < kDeadLetterReasonCount; ++i) {
    // Offline input is never key-checked (one task reads all of it); stream skew is rare:
    // both are shown when they happened.
    const auto reason = static_cast<DeadLetterReason>(i);
    if ((reason == DeadLetterReason::kKeyMismatch || reason == DeadLetterReason::kStreamSkew) &&
        c.dead_letters[i] == 0) {
      continue;
    }
    StrAppend(&out, i == 0 ? " (" : ", ", DeadLetterReasonName(static_cast<DeadLetterReason>(i)),
              " ", c.dead_letters[i]);
  }
  out += ")\n";
  StrAppend(&out, "windows emitted:  ", c.windows_emitted, "\n");
  for (const auto& [topic, n] : r.records_per_topic) {
    StrAppend(&out, "  ", topic, ".jsonl: ", n, " records\n");
  }
  char rate[64];
  std::snprintf(rate, sizeof(rate), "%.3f s, %.0f events/s",
                r.seconds, r.seconds > 0 ? static_cast<double>(c.records_read) / r.seconds : 0.0);
  StrAppend(&out, "elapsed:          ", rate, "\n");
  return out;
}

absl::Status RunDemo(const AppConfig& config, const DemoOptions& options, std::ostream& out) {
  const auto started = Clock::now();
  absl::StatusOr<Topology> topology = BuildMetricsTopology(OfflinePipeline(config.pipeline));
  if (!topology.ok()) return topology.status();
  out << topology->Describe() << "\n";

  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  GeneratorOptions gen;
  gen.events_per_second = options.events_per_second;
  const int64_t span_ms =
      static_cast<int64_t>(static_cast<double>(options.events) * 1000.0 / gen.events_per_second);
  gen.start_ms = (now - span_ms) / 60'000 * 60'000;  // whole minutes, all in the past
  EventGenerator generator(gen);
  ScratchStateDir state(config);
  absl::StatusOr<std::unique_ptr<TopologyTestDriver>> driver =
      MakeDriver(config, *topology, now, state);
  if (!driver.ok()) return driver.status();

  // The first window that goes to a topic, for the live lines; the 1m one by default.
  const WindowSpec* shown = nullptr;
  for (const WindowSpec& w : config.pipeline.windows) {
    if (!w.topic.empty() && (shown == nullptr || w.name == "1m")) shown = &w;
  }

  struct Latest {
    int64_t window_start = 0;
    uint64_t count = 0;
    double p50 = 0, p95 = 0, p99 = 0;
  };
  std::map<std::string, Latest> latest;  // service -> api.request.duration in `shown`
  int64_t printed_window = INT64_MIN;
  uint64_t window_events = 0;
  simdjson::dom::parser parser;

  auto drain = [&]() -> absl::Status {
    for (const OutputRecord& r : (*driver)->ReadAll()) {
      if (shown == nullptr || r.topic != shown->topic) continue;
      simdjson::dom::element doc;
      if (parser.parse(r.value).get(doc) != simdjson::SUCCESS) {
        return absl::InternalError("demo: unreadable aggregate " + r.value);
      }
      std::string_view metric;
      int64_t start = 0;
      uint64_t count = 0;
      double p50 = 0, p95 = 0, p99 = 0;
      if (doc["metricName"].get(metric) || doc["windowStart"].get(start) ||
          doc["count"].get(count)) {
        return absl::InternalError("demo: aggregate without fields " + r.value);
      }
      if (start != printed_window) {
        if (printed_window != INT64_MIN) {
          out << "[" << shown->name << " window " << UtcTime(printed_window) << "] "
              << window_events << " events aggregated\n";
        }
        printed_window = start;
        window_events = 0;
      }
      window_events += count;
      if (metric != "api.request.duration") continue;
      if (doc["p50"].get(p50) || doc["p95"].get(p95) || doc["p99"].get(p99)) {
        return absl::InternalError("demo: aggregate without quantiles " + r.value);
      }
      latest[std::string(r.key)] = Latest{start, count, p50, p95, p99};
    }
    return absl::OkStatus();
  };

  std::string line;
  for (uint64_t i = 0; i < options.events; ++i) {
    line.clear();
    generator.Next(&line);
    if (absl::Status s = (*driver)->PipeInput(config.pipeline.input_topic, "", line); !s.ok()) {
      return s;
    }
    if (i % 8192 == 0) {
      if (absl::Status s = drain(); !s.ok()) return s;
    }
  }
  if (absl::Status s = (*driver)->EndOfInput(); !s.ok()) return s;
  if (absl::Status s = drain(); !s.ok()) return s;
  if (printed_window != INT64_MIN) {
    out << "[" << shown->name << " window " << UtcTime(printed_window) << "] " << window_events
        << " events aggregated\n";
  }

  out << "\nLatest " << (shown ? shown->name : "") << " api.request.duration per service (ms):\n";
  char row[160];
  std::snprintf(row, sizeof(row), "  %-22s %8s %10s %10s %10s\n", "service", "count", "p50", "p95",
                "p99");
  out << row;
  for (const auto& [service, l] : latest) {
    std::snprintf(row, sizeof(row), "  %-22s %8llu %10.1f %10.1f %10.1f\n", service.c_str(),
                  static_cast<unsigned long long>(l.count), l.p50, l.p95, l.p99);
    out << row;
  }
  ProcessResult result;
  result.lines = options.events;
  result.counters = (*driver)->counters();
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  out << "\n" << FormatProcessSummary(result);
  return absl::OkStatus();
}

}  // namespace streammetrics
