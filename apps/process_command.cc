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

// One record of the input as its framing cuts it.
struct InputRecord {
  // The record; its first input.max_document_bytes bytes when it is larger.
  std::string_view bytes;
  bool blank = false;  // a line of whitespace only: not an event
  // Not empty: the record cannot be decoded (over the document limit, a broken frame)
  // and is dead-lettered with this error, `bytes` as its original.
  std::string error;
  // Not empty: `bytes` is a cut of the record; the dead letter's dlq.truncated header.
  std::string truncated;
};

std::string TooLarge(uint64_t size, size_t limit) {
  return StrCat("document too large: ", size, " bytes (limit ", limit, ")");
}

// Cuts the input into records; Next() returns false at its end. A record's bytes stay
// valid until the next call. Buffers grow with the records read, up to the document limit
// (a record over it keeps only its first limit bytes, the rest is skipped), so no input can
// exhaust memory and a large limit costs nothing until records are that large.
class InputReader {
 public:
  virtual ~InputReader() = default;
  virtual absl::StatusOr<bool> Next(InputRecord* record) = 0;
};

// One record per line; "\r\n" ends a line too.
class LineReader final : public InputReader {
 public:
  LineReader(std::istream& input, size_t limit)
      : input_(input), limit_(limit), chunk_(std::min<size_t>(limit + 2, size_t{64} << 10)) {}

  absl::StatusOr<bool> Next(InputRecord* record) override {
    if (at_end_) return false;
    buf_.clear();
    uint64_t size = 0;  // of the line, without its newline
    char last = 0;
    while (true) {
      input_.getline(chunk_.data(), static_cast<std::streamsize>(chunk_.size()));
      size_t n = static_cast<size_t>(input_.gcount());
      const bool full = input_.fail() && !input_.eof() && !input_.bad();  // the line goes on
      if (!full && !input_.eof() && n > 0) --n;  // gcount counted the newline getline consumed
      if (n > 0) last = chunk_[n - 1];
      size += n;
      // One byte beyond the limit is kept, for a "\r" that may end the line.
      const size_t room = limit_ + 1 - std::min(buf_.size(), limit_ + 1);
      buf_.append(chunk_.data(), std::min(n, room));
      if (input_.eof() || input_.bad()) {
        at_end_ = true;
        break;
      }
      if (!full) break;
      input_.clear();
    }
    if (input_.bad()) return absl::DataLossError("reading the input failed");
    if (at_end_ && size == 0) return false;
    if (last == '\r') {
      --size;
      if (buf_.size() > size) buf_.resize(size);
    }
    record->error.clear();
    record->truncated.clear();
    if (size > limit_) {
      buf_.resize(limit_);
      record->error = TooLarge(size, limit_);
      record->truncated = StrCat("key=0,value=", size);
    }
    record->bytes = buf_;
    record->blank = record->error.empty() && StripAsciiWhitespace(buf_).empty();
    return true;
  }

 private:
  std::istream& input_;
  const size_t limit_;
  std::vector<char> chunk_;
  std::string buf_;
  bool at_end_ = false;
};

// Length-delimited records: each preceded by its size as a base-128 varint (protobuf's
// writeDelimitedTo / SerializeDelimitedToOstream). Read here rather than with protobuf's
// ParseDelimitedFrom*, which parse into a message: the topology takes the record's bytes
// (and a dead letter keeps them), and a length over the limit must be known before the
// bytes are read, to skip them. A frame over the limit is skipped and the next one read;
// a cut last frame is the last record.
class DelimitedReader final : public InputReader {
 public:
  DelimitedReader(std::istream& input, size_t limit) : input_(input), limit_(limit) {}

  absl::StatusOr<bool> Next(InputRecord* record) override {
    if (at_end_) return false;
    buf_.clear();
    record->error.clear();
    record->truncated.clear();
    record->blank = false;
    uint64_t size = 0;
    for (int shift = 0;; shift += 7) {
      const int c = input_.get();
      if (c == std::char_traits<char>::eof()) {
        if (input_.bad()) return absl::DataLossError("reading the input failed");
        at_end_ = true;
        if (buf_.empty()) return false;
        record->error = StrCat("truncated frame: the input ends inside its length prefix (",
                               buf_.size(), " bytes)");
        record->bytes = buf_;
        return true;
      }
      buf_.push_back(static_cast<char>(c));
      // A varint holds 64 bits in at most 10 bytes, the 10th holding bit 63 only.
      if (shift == 63 && c > 1) {
        at_end_ = true;
        record->error = StrCat("malformed frame: its length prefix is not a varint of at most "
                               "64 bits; the remaining ", Skip(UINT64_MAX),
                               " bytes of the input are not read");
        record->bytes = buf_;
        return true;
      }
      size |= static_cast<uint64_t>(c & 0x7f) << shift;
      if ((c & 0x80) == 0) break;
    }
    buf_.clear();
    const uint64_t keep = std::min<uint64_t>(size, limit_);
    while (buf_.size() < keep) {  // grows with what arrives, not with what the prefix says
      const size_t have = buf_.size();
      buf_.resize(have + std::min<uint64_t>(keep - have, size_t{64} << 10));
      input_.read(buf_.data() + have, static_cast<std::streamsize>(buf_.size() - have));
      buf_.resize(have + static_cast<size_t>(input_.gcount()));
      if (!input_) break;
    }
    uint64_t got = buf_.size();
    if (got == keep && size > keep) got += Skip(size - keep);
    if (input_.bad()) return absl::DataLossError("reading the input failed");
    record->bytes = buf_;
    if (size > limit_) {
      record->error = TooLarge(size, limit_);
      record->truncated = StrCat("key=0,value=", size);
      if (got < size) StrAppend(&record->error, "; the input ends after ", got, " of them");
    } else if (got < size) {
      record->error = StrCat("truncated frame: its length prefix says ", size,
                             " bytes, the input ends after ", got);
    }
    if (got < size) at_end_ = true;
    return true;
  }

 private:
  // Skips up to n bytes; returns how many there were.
  uint64_t Skip(uint64_t n) {
    uint64_t skipped = 0;
    while (skipped < n && input_) {
      // ignore(max) would mean "to the end of the input": ask for less at a time.
      const uint64_t step = std::min<uint64_t>(n - skipped, uint64_t{1} << 30);
      input_.ignore(static_cast<std::streamsize>(step));
      skipped += static_cast<uint64_t>(input_.gcount());
      if (static_cast<uint64_t>(input_.gcount()) < step) break;
    }
    return skipped;
  }

  std::istream& input_;
  const size_t limit_;
  std::string buf_;
  bool at_end_ = false;
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
  std::unique_ptr<InputReader> reader;
  if (result.framing == InputFraming::kDelimited) {
    reader = std::make_unique<DelimitedReader>(input, limit);
  } else {
    reader = std::make_unique<LineReader>(input, limit);
  }
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
