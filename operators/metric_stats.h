// The aggregate of one pane or window: count, sum, min, max and a t-digest for
// quantiles. Panes merge into windows (stream slicing), so everything here is mergeable.
#ifndef STREAMMETRICS_OPERATORS_METRIC_STATS_H_
#define STREAMMETRICS_OPERATORS_METRIC_STATS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "operators/tdigest.h"

namespace streammetrics {

class MetricStats {
 public:
  explicit MetricStats(double compression = 100) : digest_(compression) {}

  // REQUIRES: value is finite (validate ensures it).
  void Add(double value) {
    ++count_;
    sum_ += value;
    if (value < min_) min_ = value;
    if (value > max_) max_ = value;
    digest_.Add(value);
  }
  void Merge(const MetricStats& other);
  // Resets to empty, keeping the digest's buffers for reuse.
  void Reset();

  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Both NaN when empty.
  double min() const { return count_ ? min_ : std::numeric_limits<double>::quiet_NaN(); }
  double max() const { return count_ ? max_ : std::numeric_limits<double>::quiet_NaN(); }
  double avg() const {
    return count_ ? sum_ / static_cast<double>(count_) : std::numeric_limits<double>::quiet_NaN();
  }
  double Quantile(double q) const { return digest_.Quantile(q); }
  const TDigest& digest() const { return digest_; }
  // Merges the digest's buffer and frees it: for panes that take no more adds.
  void Compact() { digest_.Compact(); }
  size_t MemoryBytes() const { return sizeof(*this) - sizeof(digest_) + digest_.MemoryBytes(); }

  // Layout: u8 version (2), u64 count, f64 sum, f64 min, f64 max (little-endian), u8
  // flags (bit 0: the digest's merge parity, so a parsed pane evolves bit for bit like the
  // original), then the digest's own encoding (operators/tdigest.h).
  void AppendTo(std::string* out) const;
  // DataLoss for a truncated or corrupt encoding.
  static absl::StatusOr<MetricStats> Parse(std::string_view bytes);

 private:
  uint64_t count_ = 0;
  double sum_ = 0;
  double min_ = std::numeric_limits<double>::infinity();
  double max_ = -std::numeric_limits<double>::infinity();
  TDigest digest_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_METRIC_STATS_H_
