#include "operators/metric_stats.h"

#include <cstring>

#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

constexpr uint8_t kVersion = 2;
constexpr size_t kHeaderBytes = 1 + 8 * 4 + 1;

}  // namespace

void MetricStats::Merge(const MetricStats& other) {
  if (other.count_ == 0) return;
  count_ += other.count_;
  sum_ += other.sum_;
  if (other.min_ < min_) min_ = other.min_;
  if (other.max_ > max_) max_ = other.max_;
  digest_.Merge(other.digest_);
}

void MetricStats::Reset() {
  double compression = digest_.compression();
  count_ = 0;
  sum_ = 0;
  min_ = std::numeric_limits<double>::infinity();
  max_ = -std::numeric_limits<double>::infinity();
  digest_ = TDigest(compression);
}

void MetricStats::AppendTo(std::string* out) const {
  out->push_back(static_cast<char>(kVersion));
  AppendFixed<uint64_t>(count_, out);
  AppendFixed<double>(sum_, out);
  AppendFixed<double>(min_, out);
  AppendFixed<double>(max_, out);
  const size_t flags_at = out->size();
  out->push_back(0);
  digest_.AppendTo(out);  // merges the digest's buffer: read its parity after
  (*out)[flags_at] = static_cast<char>(digest_.merge_parity() ? 1 : 0);
}

absl::StatusOr<MetricStats> MetricStats::Parse(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError("metric stats: truncated header");
  }
  if (static_cast<uint8_t>(bytes[0]) != kVersion) {
    return absl::DataLossError("metric stats: unknown version " +
                               std::to_string(static_cast<uint8_t>(bytes[0])));
  }
  const uint8_t flags = static_cast<uint8_t>(bytes[kHeaderBytes - 1]);
  if (flags > 1) return absl::DataLossError("metric stats: unknown flags");
  absl::StatusOr<TDigest> digest = TDigest::Parse(bytes.substr(kHeaderBytes));
  if (!digest.ok()) {
    return absl::DataLossError("metric stats: " + std::string(digest.status().message()));
  }
  MetricStats stats(digest->compression());
  // The length check above guarantees every read below succeeds.
  std::string_view header = bytes.substr(1, kHeaderBytes - 2);  // after version, before flags
  ReadFixed(&header, &stats.count_);
  ReadFixed(&header, &stats.sum_);
  ReadFixed(&header, &stats.min_);
  ReadFixed(&header, &stats.max_);
  stats.digest_ = *std::move(digest);
  stats.digest_.set_merge_parity(flags == 1);
  return stats;
}

}  // namespace streammetrics
