// Offline mode: the configured pipeline in-process over a JSON-lines file, and the demo.
#ifndef STREAMMETRICS_APPS_PROCESS_COMMAND_H_
#define STREAMMETRICS_APPS_PROCESS_COMMAND_H_

#include <cstdint>
#include <istream>
#include <map>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "apps/config.h"
#include "operators/processor.h"

namespace streammetrics {

struct ProcessResult {
  InputFraming framing = InputFraming::kLines;
  uint64_t lines = 0;          // input records read: lines, or length-delimited frames
  uint64_t blank_lines = 0;    // skipped: not events
  TaskCounters counters;
  std::map<std::string, uint64_t> records_per_topic;  // output files written
  double seconds = 0;
};

// Runs config's pipeline over `input` (one event per line, or per length-delimited frame:
// input.framing), writes each output topic to output_dir/<topic>.jsonl (one record value
// per line) and dead letters to output_dir/<dead-letter-topic>.jsonl as {"reason","error",
// "topic","partition","offset","timestamp"[,"truncated"],"original"|"original_base64"}:
// "original" the record as a JSON string when it is UTF-8, else "original_base64" its
// bytes in base64 (RFC 4648, padded); "truncated" ("key=0,value=<bytes>", the original's
// size) when the original is cut — a record over input.max_document_bytes keeps its first
// max_document_bytes bytes. Closes all windows at end of input. Creates output_dir if
// needed. Output files for every sink topic exist afterwards, empty or not.
absl::StatusOr<ProcessResult> RunProcess(const AppConfig& config, std::istream& input,
                                         const std::string& output_dir);

// The human-readable summary `streammetrics process` prints.
std::string FormatProcessSummary(const ProcessResult& result);

struct DemoOptions {
  uint64_t events = 1'000'000;
  // Event-time rate of the generated stream (not wall time): 2,000/s spreads 1M events
  // over ~8 minutes of event time, so several 1-minute windows close.
  double events_per_second = 2'000;
};
// The main job on the embedded default until the Kafka runtime lands: generates events,
// runs the pipeline in-process, prints one line per closed 1-minute window and a final
// table of per-service latency percentiles.
absl::Status RunDemo(const AppConfig& config, const DemoOptions& options, std::ostream& out);

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_PROCESS_COMMAND_H_
