// A merging t-digest (Dunning & Ertl, "Computing Extremely Accurate Quantiles Using
// t-Digests", 2019; the MergingDigest of the reference Java implementation): a
// mergeable sketch of a distribution of doubles that answers quantile and CDF queries
// with small *rank* error, smallest in the tails.
//
// Header-only. Used per group-by key and per window pane past its exact threshold
// (operators/metric_stats.h): values are Add()ed on the event hot path, panes are
// Merge()d into windows, and pane state is written to the state store, buffer and all,
// with AppendStateTo()/ParseState().
//
// Design:
//  * Add() appends to an unmerged buffer (amortized O(1)); when the buffer is full it
//    is sorted (an LSD radix sort, see tdigest_internal::RadixSortTop32) and merged
//    with the existing centroids in one linear pass. Once the buffer has grown to its
//    capacity (8 * ceil(compression) values) Add() never allocates.
//  * Scale function: k1, k(q) = compression / (2 pi) * asin(2q - 1). A centroid that
//    starts at quantile q0 may grow until k(q) - k(q0) = 1. Why k1 and not k2/k3:
//    k1 needs no estimate of the total count (k2/k3's normalizer depends on n, so the
//    size bound and the accuracy of a digest would depend on how panes were merged),
//    it bounds the number of centroids by ~compression independent of n (memory per
//    pane is predictable), and at compression 100 it meets our accuracy target with
//    margin: rank error <= 0.005 at the median and <= 0.002 at p95/p99, also after
//    merging 60 one-second digests (see tests/tdigest_test.cc). The centroid limit is
//    evaluated in closed form with one sqrt per centroid (no asin/sin per item).
//  * As in the reference implementation the first and the last item of every merge
//    pass are kept as their own centroids, so the extreme samples stay singletons, and
//    merge passes alternate direction (ascending/descending) to avoid a left bias.
//  * Min and max are tracked exactly: Quantile(0) == Min() and Quantile(1) == Max().
//  * Determinism: the state depends only on the sequence of Add()/Merge() calls. The
//    buffer is merged only when it is full (a point fixed by the data), never by a
//    query or by serialization: queries merge a thread-local copy, and the state
//    encoding (AppendStateTo) keeps the buffer and the merge direction as they are,
//    so a parsed digest evolves bit for bit like the original.
//
// Weights are sample counts: like the reference implementation, interpolation treats
// a centroid of weight exactly 1 as a single sample (no interpolation across it) and
// assumes one sample sits exactly at Min() and at Max(). Fractional positive weights
// are accepted; results stay monotone and within [Min(), Max()], but the singleton
// refinements only apply to integral counts. Keep the total weight well below 2^53 if
// TotalWeight() must be exact.
//
// Thread safety: const methods do not modify the digest; queries with a pending
// buffer work on a thread-local merged copy (so references returned by centroids()
// stay valid only until the thread's next query). Distinct digests may be used from
// different threads concurrently (the scratch space is thread_local); one digest
// needs external synchronization for concurrent writes.

#ifndef STREAMMETRICS_OPERATORS_TDIGEST_H_
#define STREAMMETRICS_OPERATORS_TDIGEST_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streammetrics {

namespace tdigest_internal {

// Maps a double to a uint64 whose unsigned order is the numeric order of the doubles
// (-0.0 sorts just before +0.0). A bijection; FromOrderedKey inverts it bit for bit.
inline uint64_t OrderedKey(double x) {
  const uint64_t u = std::bit_cast<uint64_t>(x);
  return (u >> 63) != 0 ? ~u : (u | (uint64_t{1} << 63));
}
inline double FromOrderedKey(uint64_t k) {
  const uint64_t u = (k >> 63) != 0 ? (k & ~(uint64_t{1} << 63)) : ~k;
  return std::bit_cast<double>(u);
}

// An item with an explicit weight, keyed for sorting.
struct KeyedWeight {
  uint64_t key;
  double weight;
};
inline uint64_t SortKey(uint64_t k) { return k; }
inline uint64_t SortKey(const KeyedWeight& e) { return e.key; }

// Sorts n elements ascending by SortKey(). Fills a[i] = make(i) first. `a` and `tmp`
// must each hold n elements. Returns the array holding the result (a or tmp).
//
// LSD radix sort on the high 32 bits of the key (sign, exponent and 20 mantissa bits;
// 8-bit digits, passes where every element has the same digit are skipped), followed
// by a fix-up pass that std::sort()s each run of equal high bits that is out of order.
// On real data such runs are rare and short (values within ~1e-6 relative of each
// other), so this costs ~5-8 ns per element versus ~40 ns for std::sort; worst case
// (all values distinct but within 1e-6 relative) it degrades to one std::sort.
template <typename T, typename Make>
T* RadixSortTop32(size_t n, T* a, T* tmp, Make make) {
  if (n < 64 || n > std::numeric_limits<uint32_t>::max()) {
    for (size_t i = 0; i < n; ++i) a[i] = make(i);
    std::sort(a, a + n,
              [](const T& x, const T& y) { return SortKey(x) < SortKey(y); });
    return a;
  }
  uint32_t hist[4][256] = {};
  for (size_t i = 0; i < n; ++i) {
    const T e = make(i);
    a[i] = e;
    const uint64_t k = SortKey(e);
    ++hist[0][(k >> 32) & 0xff];
    ++hist[1][(k >> 40) & 0xff];
    ++hist[2][(k >> 48) & 0xff];
    ++hist[3][k >> 56];
  }
  T* src = a;
  T* dst = tmp;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 32 + 8 * pass;
    uint32_t* h = hist[pass];
    if (h[(SortKey(src[0]) >> shift) & 0xff] == n) continue;  // Constant digit.
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) {
      const uint32_t c = h[d];
      h[d] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; ++i) {
      const T e = src[i];
      dst[h[(SortKey(e) >> shift) & 0xff]++] = e;
    }
    std::swap(src, dst);
  }
  // Sorted by the high 32 bits (stably); fix runs that share them.
  size_t i = 1;
  while (i < n) {
    if (SortKey(src[i]) < SortKey(src[i - 1])) {
      const uint64_t hi = SortKey(src[i]) >> 32;
      size_t b = i - 1;
      while (b > 0 && (SortKey(src[b - 1]) >> 32) == hi) --b;
      size_t e = i + 1;
      while (e < n && (SortKey(src[e]) >> 32) == hi) ++e;
      std::sort(src + b, src + e,
                [](const T& x, const T& y) { return SortKey(x) < SortKey(y); });
      i = e;
    } else {
      ++i;
    }
  }
  return src;
}

// Little-endian fixed-width encoding into p (the caller provides the bytes).
inline void EncodeFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void EncodeDouble(char* p, double d) {
  const uint64_t v = std::bit_cast<uint64_t>(d);
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, 8);
  } else {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
}
// Callers guarantee 4 (resp. 8) readable bytes at p.
inline uint32_t GetFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}
inline double GetDouble(const char* p) {
  uint64_t v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, 8);
  } else {
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  }
  return std::bit_cast<double>(v);
}

}  // namespace tdigest_internal

class TDigest {
 public:
  struct Centroid {
    double mean;
    double weight;
    friend bool operator==(const Centroid&, const Centroid&) = default;
  };

  // The constructor clamps the compression into this range (NaN becomes the default).
  static constexpr double kMinCompression = 10;
  static constexpr double kMaxCompression = 10000;
  static constexpr double kDefaultCompression = 100;
  // The buffer holds up to kBufferFactor * ceil(compression) unmerged values.
  static constexpr size_t kBufferFactor = 8;

  // Serialization format version written by AppendTo() and accepted by Parse().
  static constexpr uint8_t kFormatVersion = 1;
  // Bytes before the centroids: version(1) compression(8) min(8) max(8) count(4).
  static constexpr size_t kHeaderBytes = 29;
  static constexpr size_t kCentroidBytes = 16;

  // `compression` (delta) trades accuracy for size: a digest holds at most about
  // `compression` centroids (~16 bytes each) plus the unmerged buffer. Values outside
  // [kMinCompression, kMaxCompression] are clamped. Allocates nothing.
  explicit TDigest(double compression = kDefaultCompression)
      : compression_(std::isnan(compression)
                         ? kDefaultCompression
                         : std::clamp(compression, kMinCompression, kMaxCompression)),
        buffer_capacity_(kBufferFactor *
                         static_cast<size_t>(std::ceil(compression_))),
        cos_delta_(std::cos(2 * std::numbers::pi / compression_)),
        sin_delta_(std::sin(2 * std::numbers::pi / compression_)) {}

  TDigest(const TDigest&) = default;
  TDigest& operator=(const TDigest&) = default;
  TDigest(TDigest&&) noexcept = default;
  TDigest& operator=(TDigest&&) noexcept = default;

  // Adds one sample. Non-finite x (NaN, +-inf) is ignored: the digest is unchanged
  // (callers are expected to validate values beforehand).
  // Amortized O(1): appends to the buffer; every buffer_capacity() adds the buffer is
  // sorted and merged (O(buffer + centroids)). Allocates only while the buffer grows
  // towards its capacity (geometrically), never afterwards. Not thread-safe.
  void Add(double x) {
    if (!std::isfinite(x)) [[unlikely]] return;
    if (unit_.size() == unit_.capacity()) [[unlikely]] MakeRoom();
    unit_.push_back(x);
  }

  // Adds `weight` samples of value x (a pre-aggregated count). Ignored unless x is
  // finite and weight is finite and > 0. weight == 1 is Add(x). Other weights go to a
  // second buffer of (value, weight) pairs merged the same way; amortized O(1).
  void Add(double x, double weight) {
    if (weight == 1.0) {
      Add(x);
      return;
    }
    if (!std::isfinite(x) || !(weight > 0) || !std::isfinite(weight)) return;
    weighted_.push_back(Centroid{x, weight});
    weighted_weight_ += weight;
    if (weighted_.size() >= buffer_capacity_) MergeBuffer();
  }

  // Adds all samples of `other` (its centroids and its unmerged buffer) to this
  // digest; `other` is unchanged. The result keeps this digest's compression. The
  // work is buffered like Add(): amortized O(other's centroids + buffer). Merging the
  // same digests in a different order gives slightly different centroids but the same
  // accuracy bounds. Self-merge (d.Merge(d)) doubles every weight.
  void Merge(const TDigest& other) {
    if (&other == this) {
      const TDigest copy(other);
      Merge(copy);
      return;
    }
    if (other.Empty()) return;
    for (const double x : other.unit_) Add(x);
    weighted_.insert(weighted_.end(), other.weighted_.begin(), other.weighted_.end());
    weighted_weight_ += other.weighted_weight_;
    weighted_.insert(weighted_.end(), other.centroids_.begin(), other.centroids_.end());
    weighted_weight_ += other.merged_weight_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    if (weighted_.size() >= buffer_capacity_) MergeBuffer();
  }

  // The value at quantile q, estimating PostgreSQL's percentile_disc: the smallest
  // sample whose cumulative share of the total weight reaches q (rank ceil(q * n) of n).
  // Where the centroids around that rank are single samples the answer is that sample
  // exactly; elsewhere it is interpolated between centroids as in the reference
  // MergingDigest. q is clamped to [0, 1]; Quantile(0) == Min() and Quantile(1) ==
  // Max() exactly. Returns NaN for an empty digest or NaN q. O(centroids), plus a merge
  // of a pending buffer into a thread-local copy (the digest itself is not changed).
  double Quantile(double q) const { return View().QuantileOfMerged(q); }

  // Quantile() of each qs[i] into out[i], merging a pending buffer once.
  // REQUIRES: out has room for qs.size() values.
  void Quantiles(const double* qs, size_t n, double* out) const {
    const TDigest& v = View();
    for (size_t i = 0; i < n; ++i) out[i] = v.QuantileOfMerged(qs[i]);
  }

  // The estimated mid-rank of x as a fraction of the total weight: 0 below Min(), 1
  // above Max(); samples exactly at x count half (e.g. 0.5 / TotalWeight() at
  // x == Min() for a single sample there). Computed on the same piecewise-linear curve
  // as Quantile(), so Cdf(Quantile(q)) == q wherever that curve is strictly increasing.
  // NaN for an empty digest or NaN x. O(centroids) after merging the pending buffer.
  // Not thread-safe.
  double Cdf(double x) const { return View().CdfOfMerged(x); }

 private:
  // Requires merged state (no pending buffer).
  double QuantileOfMerged(double q) const {
    if (centroids_.empty() || std::isnan(q)) {
      return std::numeric_limits<double>::quiet_NaN();
    }
    if (q <= 0) return min_;
    if (q >= 1) return max_;
    const double t = q * merged_weight_;
    double p0 = 0;
    double v0 = min_;
    double result = max_;
    ForEachKnot([&](double p, double v) {
      // The first knot at or after t: left-continuous at steps (a single sample over
      // [i, i + 1] answers every t in (i, i + 1]), which is percentile_disc's rank.
      if (t <= p) {  // t in (p0, p], so p > p0.
        const double f = (t - p0) / (p - p0);
        result = std::clamp(v0 + f * (v - v0), v0, v);
        return false;
      }
      p0 = p;
      v0 = v;
      return true;
    });
    return result;
  }
  double CdfOfMerged(double x) const {
    if (centroids_.empty() || std::isnan(x)) {
      return std::numeric_limits<double>::quiet_NaN();
    }
    if (x < min_) return 0;
    if (x > max_) return 1;
    // The curve position -> value is monotone; the positions where it equals x form
    // an interval [lo, hi] (a point unless x is a singleton or repeated value).
    const double total = merged_weight_;
    double lo = x <= min_ ? 0 : -1;  // -1: not found yet
    double hi = total;
    double p0 = 0;
    double v0 = min_;
    ForEachKnot([&](double p, double v) {
      // Invariant: v0 <= x; and v0 < x while lo is not found.
      if (lo < 0 && v >= x) lo = p0 + (p - p0) * ((x - v0) / (v - v0));
      if (v > x) {
        hi = p0 + (p - p0) * ((x - v0) / (v - v0));
        return false;
      }
      p0 = p;
      v0 = v;
      return true;
    });
    if (lo < 0) lo = total;
    return std::clamp((lo + hi) / 2 / total, 0.0, 1.0);
  }

 public:

  // Exact smallest / largest sample added; NaN if empty. Not thread-safe.
  double Min() const {
    const TDigest& v = View();
    return v.centroids_.empty() ? std::numeric_limits<double>::quiet_NaN() : v.min_;
  }
  double Max() const {
    const TDigest& v = View();
    return v.centroids_.empty() ? std::numeric_limits<double>::quiet_NaN() : v.max_;
  }

  // Sum of the weights of all samples added (count for unit weights). O(1).
  double TotalWeight() const {
    return merged_weight_ + static_cast<double>(unit_.size()) + weighted_weight_;
  }
  bool Empty() const {
    return centroids_.empty() && unit_.empty() && weighted_.empty();
  }
  double compression() const { return compression_; }
  // Maximum number of buffered values before a merge.
  size_t buffer_capacity() const { return buffer_capacity_; }

  // The centroids the digest would have with its buffer merged, ascending by mean.
  // With a pending buffer the reference is to a thread-local copy, valid until the
  // thread's next query of any digest.
  const std::vector<Centroid>& centroids() const { return View().centroids_; }

  // Number of values and weighted pairs in the unmerged buffers.
  size_t buffered() const { return unit_.size() + weighted_.size(); }

  // Back to empty (parity included), keeping the buffers' memory for reuse.
  void Clear() {
    centroids_.clear();
    unit_.clear();
    weighted_.clear();
    merged_weight_ = 0;
    weighted_weight_ = 0;
    min_ = kEmptyMin;
    max_ = kEmptyMax;
    merge_count_ = 0;
  }

  // Merges the buffer and releases the memory of the buffers (for a pane that will
  // receive no more adds): afterwards MemoryBytes() is about sizeof(TDigest) + 16
  // bytes per centroid. Queries return exactly what they returned before. Adding
  // again later is allowed (the buffer grows again). O(buffer + centroids).
  void Compact() {
    MergeBuffer();
    std::vector<double>().swap(unit_);
    std::vector<Centroid>().swap(weighted_);
    centroids_.shrink_to_fit();
  }

  // Approximate bytes used: the object plus the heap capacity of its vectors (not the
  // per-thread sort scratch space shared by all digests of a thread).
  size_t MemoryBytes() const {
    return sizeof(TDigest) + centroids_.capacity() * sizeof(Centroid) +
           unit_.capacity() * sizeof(double) + weighted_.capacity() * sizeof(Centroid);
  }

  // The direction of the next merge pass (passes alternate; see above). AppendTo()'s
  // layout does not hold it (AppendStateTo()'s does); set_merge_parity() serves state
  // written in that layout by older versions (operators/metric_stats.cc).
  bool merge_parity() const { return (merge_count_ & 1) != 0; }
  void set_merge_parity(bool odd) { merge_count_ = odd ? 1 : 0; }

  // Serialization of the merged state (a pending buffer is merged into a copy; the
  // digest is unchanged). Drops the buffer and the merge direction: a snapshot for
  // queries; state that must evolve bit for bit after a restore uses AppendStateTo().
  // Appends to *out, all integers and doubles little-endian, doubles as IEEE-754
  // binary64 bit patterns:
  //
  //   offset  size  field
  //   0       1     version, kFormatVersion (1)
  //   1       8     compression, in [kMinCompression, kMaxCompression]
  //   9       8     min   (+inf when the digest is empty)
  //   17      8     max   (-inf when the digest is empty)
  //   25      4     n, number of centroids (uint32)
  //   29      16*n  n x { mean (8), weight (8) }, ascending by mean
  //
  // Total size is exactly 29 + 16*n bytes (1,629 bytes for 100 centroids).
  void AppendTo(std::string* out) const { View().AppendMergedTo(out); }
  std::string Serialize() const {
    std::string out;
    AppendTo(&out);
    return out;
  }

 private:
  void AppendMergedTo(std::string* out) const {
    const size_t start = out->size();
    out->resize(start + kHeaderBytes + kCentroidBytes * centroids_.size());
    char* p = out->data() + start;
    p[0] = static_cast<char>(kFormatVersion);
    tdigest_internal::EncodeDouble(p + 1, compression_);
    tdigest_internal::EncodeDouble(p + 9, centroids_.empty() ? kEmptyMin : min_);
    tdigest_internal::EncodeDouble(p + 17, centroids_.empty() ? kEmptyMax : max_);
    tdigest_internal::EncodeFixed32(p + 25, static_cast<uint32_t>(centroids_.size()));
    p += kHeaderBytes;
    for (const Centroid& c : centroids_) {
      tdigest_internal::EncodeDouble(p, c.mean);
      tdigest_internal::EncodeDouble(p + 8, c.weight);
      p += kCentroidBytes;
    }
  }

 public:

  // Parses the output of AppendTo(). Never reads outside `bytes` and allocates at most
  // ~bytes.size(). Errors:
  //  * DataLossError: the framing is wrong -- empty input, input shorter than the
  //    header, n centroids need more bytes than remain (truncated input or a corrupt,
  //    e.g. huge, count), or bytes left over after the n-th centroid.
  //  * InvalidArgumentError: the framing is right but the content is not a valid
  //    digest -- unknown version byte (checked first, right after emptiness),
  //    compression out of range or NaN, non-finite min/max/mean, min > max, weight
  //    not finite and > 0, means not ascending or outside [min, max], or an empty
  //    digest whose min/max are not +inf/-inf.
  // Round trip: Parse(d.Serialize()) == d and answers every query bit for bit alike.
  static absl::StatusOr<TDigest> Parse(std::string_view bytes) {
    using tdigest_internal::GetDouble;
    using tdigest_internal::GetFixed32;
    if (bytes.empty()) return absl::DataLossError("tdigest: empty input");
    if (static_cast<uint8_t>(bytes[0]) != kFormatVersion) {
      return absl::InvalidArgumentError(
          "tdigest: unsupported format version " +
          std::to_string(static_cast<uint8_t>(bytes[0])) + " (expected " +
          std::to_string(kFormatVersion) + ")");
    }
    if (bytes.size() < kHeaderBytes) {
      return absl::DataLossError("tdigest: truncated header: " +
                                 std::to_string(bytes.size()) + " of " +
                                 std::to_string(kHeaderBytes) + " bytes");
    }
    const char* p = bytes.data();
    const double compression = GetDouble(p + 1);
    const double min = GetDouble(p + 9);
    const double max = GetDouble(p + 17);
    const uint64_t n = GetFixed32(p + 25);
    const uint64_t remaining = bytes.size() - kHeaderBytes;
    if (n * kCentroidBytes > remaining) {
      return absl::DataLossError(
          "tdigest: truncated or corrupt: centroid count " + std::to_string(n) +
          " needs " + std::to_string(n * kCentroidBytes) + " bytes, " +
          std::to_string(remaining) + " remain");
    }
    if (n * kCentroidBytes < remaining) {
      return absl::DataLossError("tdigest: " +
                                 std::to_string(remaining - n * kCentroidBytes) +
                                 " trailing bytes after " + std::to_string(n) +
                                 " centroids");
    }
    if (!(compression >= kMinCompression && compression <= kMaxCompression)) {
      return absl::InvalidArgumentError("tdigest: compression out of range");
    }
    TDigest digest(compression);
    if (n == 0) {
      if (!(min == kEmptyMin && max == kEmptyMax)) {
        return absl::InvalidArgumentError("tdigest: empty digest with min/max set");
      }
      return digest;
    }
    if (!std::isfinite(min) || !std::isfinite(max) || min > max) {
      return absl::InvalidArgumentError("tdigest: invalid min/max");
    }
    digest.centroids_.reserve(n);
    double total = 0;
    double prev = min;
    p += kHeaderBytes;
    for (uint64_t i = 0; i < n; ++i, p += kCentroidBytes) {
      const Centroid c{GetDouble(p), GetDouble(p + 8)};
      if (!std::isfinite(c.mean) || c.mean < prev || c.mean > max) {
        return absl::InvalidArgumentError(
            "tdigest: centroid " + std::to_string(i) +
            ": mean not finite, not ascending or outside [min, max]");
      }
      if (!(c.weight > 0) || !std::isfinite(c.weight)) {
        return absl::InvalidArgumentError("tdigest: centroid " + std::to_string(i) +
                                          ": weight not finite and positive");
      }
      prev = c.mean;
      total += c.weight;
      digest.centroids_.push_back(c);
    }
    if (!std::isfinite(total)) {
      return absl::InvalidArgumentError("tdigest: total weight overflows");
    }
    digest.merged_weight_ = total;
    digest.min_ = min;
    digest.max_ = max;
    return digest;
  }

  // The whole state, buffers and merge direction included, so that ParseState() gives
  // a digest that answers and evolves (under the same later calls) bit for bit like
  // this one. Nothing is merged. Layout (little-endian, doubles as binary64 bits):
  //
  //   offset  size  field
  //   0       1     version, kStateVersion (2)
  //   1       8     compression
  //   9       8     min, 17 8 max (see min_/max_; +inf/-inf when nothing merged)
  //   25      1     merge parity (0 or 1)
  //   26      4     n, centroids      30  4  u, buffered values
  //   34      4     w, weighted pairs 38  8  sum of the pairs' weights
  //   46      16*n  centroids { mean, weight }, ascending by mean
  //           8*u   buffered values, in arrival order
  //           16*w  weighted pairs { value, weight }, in arrival order
  static constexpr uint8_t kStateVersion = 2;
  static constexpr size_t kStateHeaderBytes = 46;
  void AppendStateTo(std::string* out) const {
    using tdigest_internal::EncodeDouble;
    using tdigest_internal::EncodeFixed32;
    const size_t start = out->size();
    out->resize(start + kStateHeaderBytes + kCentroidBytes * centroids_.size() +
                8 * unit_.size() + kCentroidBytes * weighted_.size());
    char* p = out->data() + start;
    p[0] = static_cast<char>(kStateVersion);
    EncodeDouble(p + 1, compression_);
    EncodeDouble(p + 9, min_);
    EncodeDouble(p + 17, max_);
    p[25] = static_cast<char>(merge_count_ & 1);
    EncodeFixed32(p + 26, static_cast<uint32_t>(centroids_.size()));
    EncodeFixed32(p + 30, static_cast<uint32_t>(unit_.size()));
    EncodeFixed32(p + 34, static_cast<uint32_t>(weighted_.size()));
    EncodeDouble(p + 38, weighted_weight_);
    p += kStateHeaderBytes;
    for (const Centroid& c : centroids_) {
      EncodeDouble(p, c.mean);
      EncodeDouble(p + 8, c.weight);
      p += kCentroidBytes;
    }
    for (const double x : unit_) {
      EncodeDouble(p, x);
      p += 8;
    }
    for (const Centroid& c : weighted_) {
      EncodeDouble(p, c.mean);
      EncodeDouble(p + 8, c.weight);
      p += kCentroidBytes;
    }
  }

  // Parses AppendStateTo()'s output. DataLossError for wrong framing (truncated,
  // trailing bytes, counts that do not fit), InvalidArgumentError for an unknown
  // version or content no digest can have (compression out of range, non-finite or
  // unordered centroids, non-finite buffered values, weights not finite and > 0).
  static absl::StatusOr<TDigest> ParseState(std::string_view bytes) {
    using tdigest_internal::GetDouble;
    using tdigest_internal::GetFixed32;
    if (bytes.empty()) return absl::DataLossError("tdigest: empty input");
    if (static_cast<uint8_t>(bytes[0]) != kStateVersion) {
      return absl::InvalidArgumentError(
          "tdigest: unsupported state version " +
          std::to_string(static_cast<uint8_t>(bytes[0])) + " (expected " +
          std::to_string(kStateVersion) + ")");
    }
    if (bytes.size() < kStateHeaderBytes) {
      return absl::DataLossError("tdigest: truncated state header");
    }
    const char* p = bytes.data();
    const double compression = GetDouble(p + 1);
    const double min = GetDouble(p + 9);
    const double max = GetDouble(p + 17);
    const uint8_t parity = static_cast<uint8_t>(p[25]);
    const uint64_t n = GetFixed32(p + 26);
    const uint64_t u = GetFixed32(p + 30);
    const uint64_t w = GetFixed32(p + 34);
    const double weighted_weight = GetDouble(p + 38);
    if (kStateHeaderBytes + kCentroidBytes * (n + w) + 8 * u != bytes.size()) {
      return absl::DataLossError("tdigest: state of " + std::to_string(bytes.size()) +
                                 " bytes does not hold its " + std::to_string(n) +
                                 " centroids, " + std::to_string(u) + " values and " +
                                 std::to_string(w) + " pairs");
    }
    if (!(compression >= kMinCompression && compression <= kMaxCompression)) {
      return absl::InvalidArgumentError("tdigest: compression out of range");
    }
    if (parity > 1) return absl::InvalidArgumentError("tdigest: bad merge parity");
    TDigest d(compression);
    if (u > d.buffer_capacity_ || w > d.buffer_capacity_) {
      return absl::InvalidArgumentError("tdigest: buffer larger than its capacity");
    }
    const bool no_bounds = min == kEmptyMin && max == kEmptyMax;
    if (!no_bounds && (!std::isfinite(min) || !std::isfinite(max) || min > max)) {
      return absl::InvalidArgumentError("tdigest: invalid min/max");
    }
    if (n > 0 && no_bounds) {
      return absl::InvalidArgumentError("tdigest: centroids without min/max");
    }
    p += kStateHeaderBytes;
    d.centroids_.reserve(n);
    double total = 0;
    double prev = min;
    for (uint64_t i = 0; i < n; ++i, p += kCentroidBytes) {
      const Centroid c{GetDouble(p), GetDouble(p + 8)};
      if (!std::isfinite(c.mean) || c.mean < prev || c.mean > max || !(c.weight > 0) ||
          !std::isfinite(c.weight)) {
        return absl::InvalidArgumentError("tdigest: centroid " + std::to_string(i) +
                                          " invalid");
      }
      prev = c.mean;
      total += c.weight;
      d.centroids_.push_back(c);
    }
    d.unit_.reserve(u);
    for (uint64_t i = 0; i < u; ++i, p += 8) {
      const double x = GetDouble(p);
      if (!std::isfinite(x)) {
        return absl::InvalidArgumentError("tdigest: buffered value not finite");
      }
      d.unit_.push_back(x);
    }
    d.weighted_.reserve(w);
    for (uint64_t i = 0; i < w; ++i, p += kCentroidBytes) {
      const Centroid c{GetDouble(p), GetDouble(p + 8)};
      if (!std::isfinite(c.mean) || !(c.weight > 0) || !std::isfinite(c.weight)) {
        return absl::InvalidArgumentError("tdigest: buffered pair invalid");
      }
      d.weighted_.push_back(c);
    }
    if (!std::isfinite(total) || !(weighted_weight >= 0) ||
        !std::isfinite(weighted_weight) || (w == 0 && weighted_weight != 0)) {
      return absl::InvalidArgumentError("tdigest: weights do not add up");
    }
    d.merged_weight_ = total;
    d.weighted_weight_ = weighted_weight;
    d.min_ = min;
    d.max_ = max;
    d.merge_count_ = parity;
    return d;
  }

  // Exact equality of the merged state: compression, min, max and every centroid.
  // (Compares the digests as if their buffers were merged; the merge-direction parity
  // is not compared.)
  friend bool operator==(const TDigest& a, const TDigest& b) {
    TDigest ma(a);
    TDigest mb(b);
    ma.MergeBuffer();
    mb.MergeBuffer();
    return ma.compression_ == mb.compression_ && ma.centroids_ == mb.centroids_ &&
           (ma.centroids_.empty() || (ma.min_ == mb.min_ && ma.max_ == mb.max_));
  }

 private:
  static constexpr double kEmptyMin = std::numeric_limits<double>::infinity();
  static constexpr double kEmptyMax = -std::numeric_limits<double>::infinity();

  struct Scratch {
    std::vector<uint64_t> keys, keys_tmp;
    std::vector<tdigest_internal::KeyedWeight> kw, kw_tmp;
    std::vector<Centroid> stream, out;
  };
  // This digest if nothing is pending, else a thread-local copy with the buffer
  // merged (valid until the thread's next View()).
  const TDigest& View() const {
    if (unit_.empty() && weighted_.empty()) return *this;
    thread_local TDigest view;
    view = *this;
    view.MergeBuffer();
    return view;
  }

  static Scratch& GetScratch() {
    thread_local Scratch scratch;
    return scratch;
  }
  // Grows scratch vector *v to at least n elements, with headroom so that the small
  // fluctuations of the centroid count in steady state do not reallocate.
  template <typename V>
  static void GrowTo(V* v, size_t n) {
    if (v->size() < n) v->resize(n + n / 2);
  }

  // Called by Add() when the buffer has no free slot: grow it geometrically up to
  // buffer_capacity_, or merge it when it is there.
  void MakeRoom() {
    const size_t cap = unit_.capacity();
    if (cap < buffer_capacity_) {
      unit_.reserve(std::min(std::max<size_t>(2 * cap, 64), buffer_capacity_));
    } else {
      MergeBuffer();
    }
  }

  // The largest quantile a centroid that starts at quantile q0 may extend to: the
  // inverse of k1 at k1(q0) + 1, i.e. (sin(theta0 + Delta) + 1) / 2 with
  // sin(theta0) = 2 q0 - 1, cos(theta0) = 2 sqrt(q0 (1 - q0)), Delta = 2 pi / delta.
  double QLimit(double q0) const {
    const double s = 2 * q0 - 1;
    if (s >= cos_delta_) return 1;  // theta0 + Delta >= pi/2.
    const double c = 2 * std::sqrt(std::max(0.0, q0 * (1 - q0)));
    return (s * cos_delta_ + c * sin_delta_ + 1) / 2;
  }

  // Merges the unit buffer and the weighted buffer into the centroids.
  void MergeBuffer() {
    if (unit_.empty() && weighted_.empty()) return;
    if (unit_.size() >= buffer_capacity_ || weighted_.size() >= buffer_capacity_) {
      // Steady state (a full buffer): make sure merges never have to grow centroids_.
      // Each pair of consecutive centroids spans more than one unit of k1, whose
      // range is compression / 2, so a pass yields at most ~compression + 4.
      const size_t max_centroids = static_cast<size_t>(std::ceil(compression_)) + 8;
      if (centroids_.capacity() < max_centroids) centroids_.reserve(max_centroids);
    }
    Scratch& s = GetScratch();
    const size_t na = unit_.size();
    const uint64_t* a = nullptr;
    if (na > 0) {
      GrowTo(&s.keys, na);
      GrowTo(&s.keys_tmp, na);
      const double* u = unit_.data();
      a = tdigest_internal::RadixSortTop32(
          na, s.keys.data(), s.keys_tmp.data(),
          [u](size_t i) { return tdigest_internal::OrderedKey(u[i]); });
    }
    // Stream b: the sorted weighted buffer merged with the existing centroids.
    const Centroid* b = centroids_.data();
    size_t nb = centroids_.size();
    if (!weighted_.empty()) {
      const size_t nw = weighted_.size();
      GrowTo(&s.kw, nw);
      GrowTo(&s.kw_tmp, nw);
      const Centroid* w = weighted_.data();
      const tdigest_internal::KeyedWeight* sorted = tdigest_internal::RadixSortTop32(
          nw, s.kw.data(), s.kw_tmp.data(), [w](size_t i) {
            return tdigest_internal::KeyedWeight{
                tdigest_internal::OrderedKey(w[i].mean), w[i].weight};
          });
      GrowTo(&s.stream, nw + nb);
      Centroid* dst = s.stream.data();
      size_t i = 0;
      size_t j = 0;
      while (i < nw || j < nb) {
        if (j == nb || (i < nw && tdigest_internal::FromOrderedKey(sorted[i].key) <
                                      centroids_[j].mean)) {
          *dst++ = Centroid{tdigest_internal::FromOrderedKey(sorted[i].key),
                            sorted[i].weight};
          ++i;
        } else {
          *dst++ = centroids_[j++];
        }
      }
      b = s.stream.data();
      nb += nw;
    }
    const double total = merged_weight_ + static_cast<double>(na) + weighted_weight_;
    GrowTo(&s.out, na + nb);
    Centroid* out = s.out.data();
    const size_t n_out = (merge_count_ & 1) == 0
                             ? Compress<false>(a, na, b, nb, total, out)
                             : Compress<true>(a, na, b, nb, total, out);
    if ((merge_count_ & 1) != 0) std::reverse(out, out + n_out);
    ++merge_count_;
    centroids_.assign(out, out + n_out);
    double sum = 0;
    for (const Centroid& c : centroids_) sum += c.weight;
    merged_weight_ = sum;
    min_ = std::min(min_, centroids_.front().mean);
    max_ = std::max(max_, centroids_.back().mean);
    unit_.clear();
    weighted_.clear();
    weighted_weight_ = 0;
  }

  // One greedy pass over the union of the sorted streams a (unit weights, ordered
  // keys) and b (centroids), ascending or (kReverse) descending, writing the new
  // centroids to out in processing order. Returns their number (<= na + nb).
  template <bool kReverse>
  size_t Compress(const uint64_t* a, size_t na, const Centroid* b, size_t nb,
                  double total, Centroid* out) const {
    const size_t n_items = na + nb;
    size_t ia = 0;
    size_t ib = 0;
    size_t n_out = 0;
    double w_so_far = 0;  // weight of the closed centroids
    double limit = 0;     // max cumulative weight of the open centroid
    double sum = 0;       // sum of mean * weight in the open centroid
    double cw = 0;        // weight of the open centroid
    double first = 0;     // first and last item mean in the open centroid
    double last = 0;
    for (size_t i = 0; i < n_items; ++i) {
      double x;
      double w;
      if constexpr (!kReverse) {
        const double xa = ia < na ? tdigest_internal::FromOrderedKey(a[ia]) : 0;
        if (ia < na && (ib == nb || xa <= b[ib].mean)) {
          x = xa;
          w = 1;
          ++ia;
        } else {
          x = b[ib].mean;
          w = b[ib].weight;
          ++ib;
        }
      } else {
        const double xa = ia < na ? tdigest_internal::FromOrderedKey(a[na - 1 - ia]) : 0;
        if (ia < na && (ib == nb || xa >= b[nb - 1 - ib].mean)) {
          x = xa;
          w = 1;
          ++ia;
        } else {
          x = b[nb - 1 - ib].mean;
          w = b[nb - 1 - ib].weight;
          ++ib;
        }
      }
      if (i == 0) {
        sum = x * w;
        cw = w;
        first = last = x;
      } else if (i != 1 && i != n_items - 1 && w_so_far + cw + w <= limit) {
        sum += x * w;
        cw += w;
        last = x;
      } else {
        out[n_out++] = Centroid{ClampedMean(sum, cw, first, last), cw};
        w_so_far += cw;
        limit = total * QLimit(w_so_far / total);
        sum = x * w;
        cw = w;
        first = last = x;
      }
    }
    out[n_out++] = Centroid{ClampedMean(sum, cw, first, last), cw};
    return n_out;
  }

  // sum / weight, kept within the item range [first, last] (in either order) so that
  // rounding can neither break the order of centroids nor make constant data inexact.
  static double ClampedMean(double sum, double weight, double first, double last) {
    return std::clamp(sum / weight, std::min(first, last), std::max(first, last));
  }

  // Calls fn(position, value) for the knots of the piecewise-linear curve that maps a
  // rank position in [0, TotalWeight()] to a value, in ascending order, until fn
  // returns false. As in the reference MergingDigest: one sample sits at min in
  // [0, 1] and at max in [W - 1, W]; a centroid of weight w is a point at the middle
  // of its rank range, except that a weight-1 centroid (one sample), and a centroid
  // whose mean equals min or max (all its samples equal it), is a flat step over its
  // whole rank range. Positions and values are clamped to be non-decreasing. The first
  // knot, (0, min), is implicit (not passed to fn). Requires merged, non-empty state.
  template <typename Fn>
  void ForEachKnot(Fn&& fn) const {
    const double total = merged_weight_;
    double prev_p = 0;
    double prev_v = min_;
    auto emit = [&](double p, double v) {
      prev_p = std::clamp(p, prev_p, total);
      prev_v = std::clamp(v, prev_v, max_);
      return fn(prev_p, prev_v);
    };
    const size_t n = centroids_.size();
    const Centroid* c = centroids_.data();
    if (min_ < c[0].mean && !emit(std::min(1.0, c[0].weight / 2), min_)) return;
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
      if (c[i].weight == 1.0 || c[i].mean == min_ || c[i].mean == max_) {
        if (!emit(cum, c[i].mean) || !emit(cum + c[i].weight, c[i].mean)) return;
      } else if (!emit(cum + c[i].weight / 2, c[i].mean)) {
        return;
      }
      cum += c[i].weight;
    }
    if (max_ > c[n - 1].mean &&
        !emit(std::max(total - 1, total - c[n - 1].weight / 2), max_)) {
      return;
    }
    emit(total, max_);
  }

  double compression_;
  size_t buffer_capacity_;
  double cos_delta_;  // cos(2 pi / compression), for QLimit()
  double sin_delta_;
  // Merged state.
  std::vector<Centroid> centroids_;  // ascending by mean
  double merged_weight_ = 0;         // sum of centroids_ weights, in order
  // Min and max of the merged samples, and of digests Merge()d in (their buffers
  // included); unit values still in the buffer count only once merged.
  double min_ = kEmptyMin;
  double max_ = kEmptyMax;
  uint32_t merge_count_ = 0;  // parity selects the pass direction
  // Pending state. Invariant: unit_.capacity() <= buffer_capacity_, so the buffer is
  // merged exactly when it holds buffer_capacity_ values and one more arrives,
  // whatever copies, restores or Compact() happened before.
  std::vector<double> unit_;        // unit-weight values
  std::vector<Centroid> weighted_;  // (value, weight != 1) pairs
  double weighted_weight_ = 0;      // sum of weighted_ weights
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_TDIGEST_H_
