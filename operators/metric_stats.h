// The aggregate of one pane or window: count, sum, min, max and the values' distribution
// for quantiles. Panes merge into windows (stream slicing), so everything here is
// mergeable.
//
// Two representations of the distribution, chosen by the count alone (so the same
// input always gives the same state, whatever commits, restores or merges happened):
//  * exact: up to `exact_up_to` values kept as they are, in arrival order (the first
//    two inline, no allocation). Quantiles are exact: PostgreSQL's percentile_disc,
//    the smallest value whose cumulative share reaches q (rank max(1, ceil(q * n))).
//  * digest: past `exact_up_to` values, a t-digest (operators/tdigest.h) fed the
//    values in arrival order; its quantiles estimate the same percentile_disc.
// A merge stays exact while the total count is <= exact_up_to; otherwise the result
// is a digest fed the exact values (in order) or merged with the other's digest.
//
// Nothing here depends on when the state is serialized: queries are const and change
// nothing, and the encoding keeps the digest's unmerged buffer, so a parsed pane is
// the original bit for bit. Only Add(), Merge() and Compact() change the state.
#ifndef STREAMMETRICS_OPERATORS_METRIC_STATS_H_
#define STREAMMETRICS_OPERATORS_METRIC_STATS_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "operators/tdigest.h"

namespace streammetrics {

class MetricStats {
 public:
  // Default of AggregateOptions::exact_quantiles_up_to (see docs/CONFIGURATION.md).
  static constexpr uint32_t kDefaultExactUpTo = 100;
  // Largest accepted exact_up_to (memory: 8 bytes per value while exact).
  static constexpr uint32_t kMaxExactUpTo = 100'000;

  // Allocates nothing.
  explicit MetricStats(double compression = TDigest::kDefaultCompression,
                       uint32_t exact_up_to = kDefaultExactUpTo)
      : compression_(compression), exact_up_to_(exact_up_to) {}
  MetricStats(const MetricStats& other);
  MetricStats& operator=(const MetricStats& other);
  MetricStats(MetricStats&&) noexcept = default;
  MetricStats& operator=(MetricStats&&) noexcept = default;

  // REQUIRES: value is finite (validate ensures it). Allocates only while the exact
  // list grows (geometrically, from the third value), once when the pane becomes a
  // digest, and while the digest's buffer grows towards its capacity.
  void Add(double value) {
    ++count_;
    sum_ += value;
    if (value < min_) min_ = value;
    if (value > max_) max_ = value;
    if (exact_) [[likely]] {
      if (count_ <= exact_up_to_) {
        values_.push_back(value);
        return;
      }
      ToDigest();
    }
    digest_->Add(value);
  }
  void Merge(const MetricStats& other);
  // Resets to empty (exact), keeping a digest's buffers for reuse.
  void Reset();

  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Both NaN when empty.
  double min() const { return count_ ? min_ : std::numeric_limits<double>::quiet_NaN(); }
  double max() const { return count_ ? max_ : std::numeric_limits<double>::quiet_NaN(); }
  double avg() const {
    return count_ ? sum_ / static_cast<double>(count_) : std::numeric_limits<double>::quiet_NaN();
  }
  // percentile_disc(q): exact while exact(), else the t-digest's estimate. NaN when
  // empty or q is NaN; q is clamped to [0, 1].
  double Quantile(double q) const;
  // Quantile() of each qs[i] into out[i], sorting (or merging a digest's buffer) once.
  // REQUIRES: out.size() >= qs.size().
  void Quantiles(std::span<const double> qs, std::span<double> out) const;
  bool exact() const { return exact_; }
  // The digest; nullptr while exact().
  const TDigest* digest() const { return exact_ ? nullptr : digest_.get(); }
  // For a pane that will take few or no more values: an exact list releases its spare
  // capacity (state unchanged); a digest merges its buffer and frees it (state
  // changed, as a full buffer would change it). Deterministic results need it called
  // at points fixed by the data — the aggregate does it when stream time passes the
  // pane's grace — never because of a commit. Returns whether the state changed (the
  // encoding then changes too).
  bool Compact();
  size_t MemoryBytes() const;

  // Layout (little-endian): u8 version (3), u64 count, f64 sum, f64 min, f64 max,
  // u8 representation: 0 exact, followed by count f64 values in arrival order; 1
  // digest, followed by the digest's state (TDigest::AppendStateTo, buffer included).
  // Version 2 (written before exact panes existed: the digest merged at the commit,
  // then its merge parity) is still read, as a digest.
  void AppendTo(std::string* out) const;
  // DataLoss for a truncated, corrupt or unknown encoding. `compression` and
  // `exact_up_to` configure what the parsed stats become (an encoded digest keeps
  // its own compression).
  static absl::StatusOr<MetricStats> Parse(std::string_view bytes,
                                           double compression = TDigest::kDefaultCompression,
                                           uint32_t exact_up_to = kDefaultExactUpTo);

 private:
  // Exact -> digest: a digest (reused if Reset() kept one) fed the values in order.
  void ToDigest();

  uint64_t count_ = 0;
  double sum_ = 0;
  double min_ = std::numeric_limits<double>::infinity();
  double max_ = -std::numeric_limits<double>::infinity();
  absl::InlinedVector<double, 2> values_;  // while exact_
  std::unique_ptr<TDigest> digest_;        // in use unless exact_ (may be kept by Reset)
  double compression_;
  uint32_t exact_up_to_;
  bool exact_ = true;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_METRIC_STATS_H_
