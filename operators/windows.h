// Event-time window definitions. Windows are epoch-aligned and half-open:
// [start, start + size), with start a multiple of advance.
#ifndef STREAMMETRICS_OPERATORS_WINDOWS_H_
#define STREAMMETRICS_OPERATORS_WINDOWS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace streammetrics {

enum class EmitMode {
  // One result per window when it closes (end + grace <= stream time). Default.
  kFinal,
  // The current result of every window that changed, at each commit, and at close if
  // it changed since the last commit (Kafka Streams' behaviour with caching on).
  kUpdate,
};

struct WindowSpec {
  std::string name;        // "1m"; the `window` field of results
  int64_t size_ms = 0;     // > 0
  int64_t advance_ms = 0;  // == size for tumbling; 0 < advance <= size, size % advance == 0
  int64_t grace_ms = 0;    // >= 0
  EmitMode emit = EmitMode::kFinal;
  std::string topic;       // where results go (empty: not sent anywhere by default)

  static WindowSpec Tumbling(std::string name, int64_t size_ms, int64_t grace_ms = 0);
  static WindowSpec Hopping(std::string name, int64_t size_ms, int64_t advance_ms,
                            int64_t grace_ms = 0);

  bool tumbling() const { return advance_ms == size_ms; }
  // The start of the latest window that contains t.
  int64_t LatestStartFor(int64_t t) const { return FloorDiv(t, advance_ms) * advance_ms; }
  // The start of the earliest window that contains t.
  int64_t EarliestStartFor(int64_t t) const { return LatestStartFor(t) - size_ms + advance_ms; }
  // Stream time at which the window starting at `start` closes.
  int64_t CloseTime(int64_t start) const { return start + size_ms + grace_ms; }

  static int64_t FloorDiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
  }
};

// InvalidArgument naming the window and the rule it breaks.
absl::Status ValidateWindowSpec(const WindowSpec& spec);
// Also checks names are unique and non-empty.
absl::Status ValidateWindowSpecs(const std::vector<WindowSpec>& specs);

// The pane size of stream slicing: the greatest common divisor of every window's size
// and advance, so each window is an exact union of panes.
int64_t PaneSize(const std::vector<WindowSpec>& specs);

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_WINDOWS_H_
