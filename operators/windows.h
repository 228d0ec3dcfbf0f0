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

// The event-time domain: timestamps t with |t| <= kMaxEventTimeMs (about ±316,000
// years around 1970; JSON's decoder accepts no more). A record outside it is refused by
// validate and dead-lettered by the aggregate.
inline constexpr int64_t kMaxEventTimeMs = 9'999'999'999'999'999;
// The longest duration a configuration may give (window size, advance, grace, and every
// other duration key): 36,500 days. A timestamp of the domain plus or minus a few of them
// stays far inside int64, so window arithmetic (start + size + grace, ...) cannot overflow.
inline constexpr int64_t kMaxDurationMs = 36'500LL * 86'400'000;
// At most this many windows of one definition contain a timestamp (size / advance): the
// work a record can cause per definition. A day advancing by 10 s is 8,640.
inline constexpr int64_t kMaxWindowsPerRecord = 10'000;
// At most this many window definitions per aggregate.
inline constexpr size_t kMaxWindowDefinitions = 32;

inline bool InEventTimeDomain(int64_t t) { return t >= -kMaxEventTimeMs && t <= kMaxEventTimeMs; }

struct WindowSpec {
  std::string name;        // "1m"; the `window` field of results
  int64_t size_ms = 0;     // in (0, kMaxDurationMs]
  int64_t advance_ms = 0;  // == size for tumbling; 0 < advance <= size, size % advance == 0,
                           // size / advance <= kMaxWindowsPerRecord
  int64_t grace_ms = 0;    // in [0, kMaxDurationMs]
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
