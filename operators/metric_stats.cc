#include "operators/metric_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

// Version 2: the digest merged at serialization, then its parity (read, never written).
constexpr uint8_t kVersionMergedDigest = 2;
constexpr uint8_t kVersion = 3;
constexpr size_t kCommonBytes = 1 + 8 * 4;  // version, count, sum, min, max
constexpr uint8_t kExact = 0;
constexpr uint8_t kDigest = 1;

}  // namespace

MetricStats::MetricStats(const MetricStats& other)
    : count_(other.count_),
      sum_(other.sum_),
      min_(other.min_),
      max_(other.max_),
      values_(other.values_),
      digest_(other.exact_ ? nullptr : std::make_unique<TDigest>(*other.digest_)),
      compression_(other.compression_),
      exact_up_to_(other.exact_up_to_),
      exact_(other.exact_) {}

MetricStats& MetricStats::operator=(const MetricStats& other) {
  if (this == &other) return *this;
  count_ = other.count_;
  sum_ = other.sum_;
  min_ = other.min_;
  max_ = other.max_;
  values_ = other.values_;
  compression_ = other.compression_;
  exact_up_to_ = other.exact_up_to_;
  exact_ = other.exact_;
  if (!exact_) {
    if (digest_ != nullptr) {
      *digest_ = *other.digest_;  // reuses the buffers' memory
    } else {
      digest_ = std::make_unique<TDigest>(*other.digest_);
    }
  }
  return *this;
}

void MetricStats::ToDigest() {
  if (digest_ != nullptr && digest_->compression() == TDigest(compression_).compression()) {
    digest_->Clear();
  } else {
    digest_ = std::make_unique<TDigest>(compression_);
  }
  for (const double v : values_) digest_->Add(v);
  absl::InlinedVector<double, 2>().swap(values_);
  exact_ = false;
}

void MetricStats::Merge(const MetricStats& other) {
  if (other.count_ == 0) return;
  if (&other == this) {
    const MetricStats copy(other);
    Merge(copy);
    return;
  }
  const bool stays_exact =
      exact_ && other.exact_ && count_ + other.count_ <= exact_up_to_;
  count_ += other.count_;
  sum_ += other.sum_;
  if (other.min_ < min_) min_ = other.min_;
  if (other.max_ > max_) max_ = other.max_;
  if (stays_exact) {
    values_.insert(values_.end(), other.values_.begin(), other.values_.end());
    return;
  }
  if (exact_) ToDigest();
  if (other.exact_) {
    for (const double v : other.values_) digest_->Add(v);
  } else {
    digest_->Merge(*other.digest_);
  }
}

void MetricStats::Reset() {
  count_ = 0;
  sum_ = 0;
  min_ = std::numeric_limits<double>::infinity();
  max_ = -std::numeric_limits<double>::infinity();
  values_.clear();
  exact_ = true;  // a kept digest_ is cleared when ToDigest() reuses it
}

double MetricStats::Quantile(double q) const {
  double out;
  Quantiles(std::span<const double>(&q, 1), std::span<double>(&out, 1));
  return out;
}

void MetricStats::Quantiles(std::span<const double> qs, std::span<double> out) const {
  if (!exact_) {
    digest_->Quantiles(qs.data(), qs.size(), out.data());
    return;
  }
  const size_t n = values_.size();
  if (n == 0) {
    std::fill_n(out.begin(), qs.size(), std::numeric_limits<double>::quiet_NaN());
    return;
  }
  // Sorted in a per-thread scratch vector: no allocation once it has grown.
  thread_local std::vector<double> sorted;
  sorted.assign(values_.begin(), values_.end());
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < qs.size(); ++i) {
    const double q = qs[i];
    if (std::isnan(q)) {
      out[i] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    // percentile_disc: the first value whose position reaches the fraction, computed
    // as PostgreSQL computes it (ceil of the double product q * n).
    const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(n));
    const size_t r = rank < 1 ? 1 : std::min(n, static_cast<size_t>(rank));
    out[i] = sorted[r - 1];
  }
}

bool MetricStats::Compact() {
  if (exact_) {
    values_.shrink_to_fit();
    digest_.reset();  // one kept by Reset() for reuse
    return false;
  }
  const bool merges = digest_->buffered() > 0;
  digest_->Compact();
  return merges;
}

size_t MetricStats::MemoryBytes() const {
  size_t bytes = sizeof(*this);
  if (values_.capacity() > 2) bytes += values_.capacity() * sizeof(double);
  if (digest_ != nullptr) bytes += digest_->MemoryBytes();
  return bytes;
}

void MetricStats::AppendTo(std::string* out) const {
  out->push_back(static_cast<char>(kVersion));
  AppendFixed<uint64_t>(count_, out);
  AppendFixed<double>(sum_, out);
  AppendFixed<double>(min_, out);
  AppendFixed<double>(max_, out);
  if (exact_) {
    out->push_back(static_cast<char>(kExact));
    const size_t at = out->size();
    out->resize(at + 8 * values_.size());
    char* p = out->data() + at;
    for (const double v : values_) {
      tdigest_internal::EncodeDouble(p, v);
      p += 8;
    }
  } else {
    out->push_back(static_cast<char>(kDigest));
    digest_->AppendStateTo(out);
  }
}

absl::StatusOr<MetricStats> MetricStats::Parse(std::string_view bytes, double compression,
                                               uint32_t exact_up_to) {
  if (bytes.size() < kCommonBytes + 1) {
    return absl::DataLossError("metric stats: truncated header");
  }
  const uint8_t version = static_cast<uint8_t>(bytes[0]);
  if (version != kVersion && version != kVersionMergedDigest) {
    return absl::DataLossError("metric stats: unknown version " + std::to_string(version));
  }
  MetricStats stats(compression, exact_up_to);
  // The length check above guarantees every read below succeeds.
  std::string_view header = bytes.substr(1, kCommonBytes - 1);
  ReadFixed(&header, &stats.count_);
  ReadFixed(&header, &stats.sum_);
  ReadFixed(&header, &stats.min_);
  ReadFixed(&header, &stats.max_);
  const uint8_t tag = static_cast<uint8_t>(bytes[kCommonBytes]);
  const std::string_view rest = bytes.substr(kCommonBytes + 1);
  if (version == kVersionMergedDigest) {
    // tag: the digest's merge parity.
    if (tag > 1) return absl::DataLossError("metric stats: unknown flags");
    absl::StatusOr<TDigest> digest = TDigest::Parse(rest);
    if (!digest.ok()) {
      return absl::DataLossError("metric stats: " + std::string(digest.status().message()));
    }
    digest->set_merge_parity(tag == 1);
    stats.digest_ = std::make_unique<TDigest>(*std::move(digest));
    stats.exact_ = false;
    return stats;
  }
  if (tag == kExact) {
    if (rest.size() % 8 != 0 || rest.size() / 8 != stats.count_) {
      return absl::DataLossError("metric stats: " + std::to_string(rest.size()) +
                                 " bytes of values for a count of " +
                                 std::to_string(stats.count_));
    }
    stats.values_.resize(stats.count_);
    for (size_t i = 0; i < stats.count_; ++i) {
      const double v = tdigest_internal::GetDouble(rest.data() + 8 * i);
      if (!std::isfinite(v)) return absl::DataLossError("metric stats: a value is not finite");
      stats.values_[i] = v;
    }
    return stats;
  }
  if (tag != kDigest) return absl::DataLossError("metric stats: unknown representation");
  absl::StatusOr<TDigest> digest = TDigest::ParseState(rest);
  if (!digest.ok()) {
    return absl::DataLossError("metric stats: " + std::string(digest.status().message()));
  }
  if (digest->TotalWeight() != static_cast<double>(stats.count_)) {
    return absl::DataLossError("metric stats: the digest does not hold the count");
  }
  stats.digest_ = std::make_unique<TDigest>(*std::move(digest));
  stats.exact_ = false;
  return stats;
}

}  // namespace streammetrics
