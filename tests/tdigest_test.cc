#include "operators/tdigest.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

// Counts heap allocations while g_count_allocations is set (the steady-state Add()
// test asserts there are none). Replaces the global operator new of this test binary.
namespace {
std::atomic<bool> g_count_allocations{false};
std::atomic<int64_t> g_allocations{0};

// Out of line so that GCC does not pair an inlined free() with operator new
// (-Wmismatched-new-delete).
[[gnu::noinline]] void* CountingAlloc(std::size_t n) {
  if (g_count_allocations.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) std::abort();
  return p;
}
[[gnu::noinline]] void CountingFree(void* p) { std::free(p); }
}  // namespace

// Every non-aligned form, so that no allocation pairs with a sanitizer's operator.
void* operator new(std::size_t n) { return CountingAlloc(n); }
void* operator new[](std::size_t n) { return CountingAlloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return CountingAlloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return CountingAlloc(n);
}
void operator delete(void* p) noexcept { CountingFree(p); }
void operator delete[](void* p) noexcept { CountingFree(p); }
void operator delete(void* p, std::size_t) noexcept { CountingFree(p); }
void operator delete[](void* p, std::size_t) noexcept { CountingFree(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { CountingFree(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { CountingFree(p); }

namespace streammetrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr size_t kN = 100000;

enum class Dist { kUniform, kLognormal, kBimodal };

std::vector<double> Generate(Dist dist, uint64_t seed, size_t n = kN) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1000.0);
  std::lognormal_distribution<double> lognormal(3.0, 1.5);
  std::normal_distribution<double> mode1(10.0, 1.0);
  std::normal_distribution<double> mode2(50.0, 5.0);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) {
    switch (dist) {
      case Dist::kUniform:
        x = uniform(rng);
        break;
      case Dist::kLognormal:
        x = lognormal(rng);
        break;
      case Dist::kBimodal:
        x = coin(rng) < 0.6 ? mode1(rng) : mode2(rng);
        break;
    }
  }
  return v;
}

// Exact mid-rank of v in the sorted data: (#samples < v + #samples <= v) / 2n.
double ExactRank(const std::vector<double>& sorted, double v) {
  const auto lo = std::lower_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
  const auto hi = std::upper_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
  return static_cast<double>(lo + hi) / 2.0 / static_cast<double>(sorted.size());
}

double RankError(const TDigest& d, const std::vector<double>& sorted, double q) {
  return std::abs(ExactRank(sorted, d.Quantile(q)) - q);
}

// The accuracy contract at compression 100.
void ExpectAccurate(const TDigest& d, const std::vector<double>& sorted, Dist dist) {
  EXPECT_LE(RankError(d, sorted, 0.50), 0.005);
  EXPECT_LE(RankError(d, sorted, 0.95), 0.002);
  EXPECT_LE(RankError(d, sorted, 0.99), 0.002);
  // Tails are tighter still with k1.
  EXPECT_LE(RankError(d, sorted, 0.001), 0.001);
  EXPECT_LE(RankError(d, sorted, 0.999), 0.001);
  for (int i = 1; i < 100; ++i) {
    const double q = i / 100.0;
    // Smooth data: 0.005 everywhere. Bimodal data has an empty gap at q = 0.6: every
    // value in it has exact rank 0.6, and the centroids next to the gap (k1 allows a
    // width of 2 pi sqrt(q (1 - q)) / compression ~ 0.031 there) are interpolated
    // across it, so near the gap the error is bounded by about two centroid widths.
    const double bound = dist == Dist::kBimodal && q > 0.5 && q < 0.7
                             ? 2 * 2 * std::numbers::pi * std::sqrt(q * (1 - q)) / 100
                             : 0.005;
    EXPECT_LE(RankError(d, sorted, q), bound) << "q=" << q;
  }
  EXPECT_EQ(d.TotalWeight(), static_cast<double>(sorted.size()));
  EXPECT_EQ(d.Min(), sorted.front());
  EXPECT_EQ(d.Max(), sorted.back());
  EXPECT_EQ(d.Quantile(0), sorted.front());
  EXPECT_EQ(d.Quantile(1), sorted.back());
}

std::vector<double> Sorted(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v;
}

uint64_t Bits(double d) { return std::bit_cast<uint64_t>(d); }

// Every quantile on a fine grid, bit for bit.
void ExpectSameQuantiles(const TDigest& a, const TDigest& b) {
  for (int i = 0; i <= 1000; ++i) {
    const double q = i / 1000.0;
    ASSERT_EQ(Bits(a.Quantile(q)), Bits(b.Quantile(q))) << "q=" << q;
  }
}

class TDigestAccuracyTest : public ::testing::TestWithParam<Dist> {};

TEST_P(TDigestAccuracyTest, SingleDigestMeetsRankErrorBounds) {
  const std::vector<double> data = Generate(GetParam(), 20240601);
  TDigest d;
  for (double x : data) d.Add(x);
  ExpectAccurate(d, Sorted(data), GetParam());
  EXPECT_LE(d.centroids().size(), 108u);
}

TEST_P(TDigestAccuracyTest, CdfMatchesExactRank) {
  const std::vector<double> data = Generate(GetParam(), 7);
  const std::vector<double> sorted = Sorted(data);
  TDigest d;
  for (double x : data) d.Add(x);
  for (double q : {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99}) {
    const double x = sorted[static_cast<size_t>(q * kN)];
    EXPECT_NEAR(d.Cdf(x), ExactRank(sorted, x), 0.005) << "q=" << q;
  }
  // Cdf inverts Quantile (up to half a sample where a singleton is a flat step).
  for (int i = 1; i < 1000; ++i) {
    const double q = i / 1000.0;
    EXPECT_NEAR(d.Cdf(d.Quantile(q)), q, 0.5 / kN + 1e-12) << "q=" << q;
  }
}

TEST_P(TDigestAccuracyTest, MergeOfSixtySlicesMeetsBoundsInAnyOrder) {
  const std::vector<double> data = Generate(GetParam(), 99);
  const std::vector<double> sorted = Sorted(data);
  std::vector<TDigest> slices(60);
  for (size_t s = 0; s < 60; ++s) {
    for (size_t i = kN * s / 60; i < kN * (s + 1) / 60; ++i) slices[s].Add(data[i]);
  }
  std::vector<size_t> order(60);
  for (size_t i = 0; i < 60; ++i) order[i] = i;
  std::vector<std::vector<size_t>> orders = {order, {order.rbegin(), order.rend()}};
  std::mt19937_64 rng(5);
  std::shuffle(order.begin(), order.end(), rng);
  orders.push_back(order);

  std::vector<TDigest> merged;
  for (const std::vector<size_t>& o : orders) {
    TDigest window;
    for (size_t s : o) window.Merge(slices[s]);
    SCOPED_TRACE("merge order starting with slice " + std::to_string(o[0]));
    ExpectAccurate(window, sorted, GetParam());
    EXPECT_LE(window.centroids().size(), 108u);
    merged.push_back(window);
  }
  // Order-insensitive: the windows agree with each other within the same bounds.
  for (double q : {0.5, 0.95, 0.99}) {
    const double bound = q == 0.5 ? 0.005 : 0.002;
    for (size_t i = 1; i < merged.size(); ++i) {
      EXPECT_LE(std::abs(ExactRank(sorted, merged[0].Quantile(q)) -
                         ExactRank(sorted, merged[i].Quantile(q))),
                bound);
    }
  }
  // Merging compacted slices (panes) gives the same accuracy.
  TDigest from_compacted;
  for (TDigest& s : slices) {
    s.Compact();
    from_compacted.Merge(s);
  }
  ExpectAccurate(from_compacted, sorted, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Distributions, TDigestAccuracyTest,
                         ::testing::Values(Dist::kUniform, Dist::kLognormal,
                                           Dist::kBimodal),
                         [](const ::testing::TestParamInfo<Dist>& param_info) {
                           switch (param_info.param) {
                             case Dist::kUniform:
                               return std::string("Uniform");
                             case Dist::kLognormal:
                               return std::string("Lognormal");
                             case Dist::kBimodal:
                               return std::string("Bimodal");
                           }
                           return std::string("Unknown");
                         });

// The buffer sort (radix on the high 32 key bits + fix-up) against std::sort on keys
// that defeat the high bits: values sharing them, +-0, negatives, subnormals, huge.
TEST(TDigestTest, BufferSortMatchesStdSort) {
  std::mt19937_64 rng(3);
  std::vector<double> v;
  for (int i = 0; i < 3000; ++i) v.push_back(1.0 + static_cast<double>(rng() % 100000) * 0x1p-45);
  for (int i = 0; i < 500; ++i) v.push_back(-1.0 - static_cast<double>(rng() % 1000) * 0x1p-45);
  for (int i = 0; i < 200; ++i) v.push_back(i % 2 == 0 ? 0.0 : -0.0);
  for (int i = 0; i < 200; ++i) v.push_back(std::ldexp(static_cast<double>(rng() % 1000), -1070));
  for (int i = 0; i < 1000; ++i) {
    v.push_back(std::ldexp(static_cast<double>(rng() >> 11), static_cast<int>(rng() % 200) - 100) *
                (rng() % 2 == 0 ? 1 : -1));
  }
  v.push_back(std::numeric_limits<double>::max());
  v.push_back(std::numeric_limits<double>::lowest());
  std::shuffle(v.begin(), v.end(), rng);
  for (size_t n : {size_t{10}, size_t{63}, size_t{64}, size_t{1000}, v.size()}) {
    std::vector<uint64_t> a(n);
    std::vector<uint64_t> tmp(n);
    const uint64_t* sorted = tdigest_internal::RadixSortTop32(
        n, a.data(), tmp.data(), [&](size_t i) { return tdigest_internal::OrderedKey(v[i]); });
    std::vector<double> expected(v.begin(), v.begin() + n);
    std::stable_sort(expected.begin(), expected.end(), [](double x, double y) {
      return tdigest_internal::OrderedKey(x) < tdigest_internal::OrderedKey(y);
    });
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(Bits(tdigest_internal::FromOrderedKey(sorted[i])), Bits(expected[i]))
          << "n=" << n << " i=" << i;
    }
  }
  // The same data through a digest: centroids ascending, extremes exact.
  TDigest d;
  for (double x : v) d.Add(x);
  const std::vector<TDigest::Centroid>& c = d.centroids();
  for (size_t i = 1; i < c.size(); ++i) ASSERT_LE(c[i - 1].mean, c[i].mean) << i;
  EXPECT_EQ(d.Min(), std::numeric_limits<double>::lowest());
  EXPECT_EQ(d.Max(), std::numeric_limits<double>::max());
  // Values that share their high bits are still ranked correctly.
  TDigest close;
  std::vector<double> close_values;
  for (int i = 0; i < 20000; ++i) close_values.push_back(1.0 + (i * 7919 % 20000) * 0x1p-45);
  for (double x : close_values) close.Add(x);
  const std::vector<double> sorted = Sorted(close_values);
  EXPECT_LE(RankError(close, sorted, 0.5), 0.005);
  EXPECT_LE(RankError(close, sorted, 0.99), 0.002);
}

TEST(TDigestTest, EmptyDigest) {
  const TDigest d;
  EXPECT_TRUE(d.Empty());
  EXPECT_EQ(d.TotalWeight(), 0);
  EXPECT_TRUE(std::isnan(d.Quantile(0)));
  EXPECT_TRUE(std::isnan(d.Quantile(0.5)));
  EXPECT_TRUE(std::isnan(d.Quantile(1)));
  EXPECT_TRUE(std::isnan(d.Cdf(0)));
  EXPECT_TRUE(std::isnan(d.Min()));
  EXPECT_TRUE(std::isnan(d.Max()));
  EXPECT_TRUE(d.centroids().empty());
  EXPECT_EQ(d.compression(), 100);
}

TEST(TDigestTest, CompressionIsClamped) {
  EXPECT_EQ(TDigest(250).compression(), 250);
  EXPECT_EQ(TDigest(1).compression(), TDigest::kMinCompression);
  EXPECT_EQ(TDigest(-5).compression(), TDigest::kMinCompression);
  EXPECT_EQ(TDigest(1e9).compression(), TDigest::kMaxCompression);
  EXPECT_EQ(TDigest(kNaN).compression(), TDigest::kDefaultCompression);
  EXPECT_EQ(TDigest(100).buffer_capacity(), 800u);
}

TEST(TDigestTest, SingleValue) {
  TDigest d;
  d.Add(42.5);
  EXPECT_FALSE(d.Empty());
  EXPECT_EQ(d.TotalWeight(), 1);
  for (double q : {0.0, 1e-9, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0}) {
    EXPECT_EQ(d.Quantile(q), 42.5) << q;
  }
  EXPECT_EQ(d.Quantile(-3), 42.5);  // q is clamped
  EXPECT_EQ(d.Quantile(7), 42.5);
  EXPECT_TRUE(std::isnan(d.Quantile(kNaN)));
  EXPECT_EQ(d.Min(), 42.5);
  EXPECT_EQ(d.Max(), 42.5);
  EXPECT_EQ(d.Cdf(42.4), 0);
  EXPECT_EQ(d.Cdf(42.5), 0.5);
  EXPECT_EQ(d.Cdf(42.6), 1);
}

TEST(TDigestTest, TwoValues) {
  TDigest d;
  d.Add(3);
  d.Add(1);
  EXPECT_EQ(d.TotalWeight(), 2);
  EXPECT_EQ(d.Quantile(0), 1);
  EXPECT_EQ(d.Quantile(0.25), 1);
  EXPECT_EQ(d.Quantile(0.49), 1);
  EXPECT_EQ(d.Quantile(0.51), 3);
  EXPECT_EQ(d.Quantile(0.75), 3);
  EXPECT_EQ(d.Quantile(1), 3);
  EXPECT_EQ(d.Cdf(0.5), 0);
  EXPECT_EQ(d.Cdf(1), 0.25);
  EXPECT_EQ(d.Cdf(2), 0.5);
  EXPECT_EQ(d.Cdf(3), 0.75);
  EXPECT_EQ(d.Cdf(3.5), 1);
}

// Up to ~60 samples every sample stays its own centroid, so quantiles are the exact
// order statistics and Cdf the exact mid-ranks.
TEST(TDigestTest, SmallInputsAreExact) {
  const std::vector<double> data = Generate(Dist::kLognormal, 3, 50);
  const std::vector<double> sorted = Sorted(data);
  TDigest d;
  for (double x : data) d.Add(x);
  ASSERT_EQ(d.centroids().size(), 50u);
  for (size_t k = 0; k < 50; ++k) {
    EXPECT_EQ(d.Quantile((k + 0.5) / 50), sorted[k]) << k;
    EXPECT_EQ(d.Quantile((k + 0.01) / 50), sorted[k]) << k;
    EXPECT_EQ(d.Quantile((k + 0.99) / 50), sorted[k]) << k;
    EXPECT_DOUBLE_EQ(d.Cdf(sorted[k]), (k + 0.5) / 50) << k;
  }
}

TEST(TDigestTest, ConstantData) {
  TDigest d;
  for (int i = 0; i < 100000; ++i) d.Add(0.1);
  TDigest weighted;
  for (int i = 0; i < 1000; ++i) weighted.Add(0.1, 7);
  weighted.Merge(d);
  for (const TDigest* digest : {&d, &weighted}) {
    for (int i = 0; i <= 100; ++i) {
      ASSERT_EQ(digest->Quantile(i / 100.0), 0.1) << i;
    }
    for (const TDigest::Centroid& c : digest->centroids()) ASSERT_EQ(c.mean, 0.1);
    EXPECT_EQ(digest->Cdf(0.1), 0.5);
    EXPECT_EQ(digest->Cdf(0.0999), 0);
    EXPECT_EQ(digest->Cdf(0.1001), 1);
  }
  EXPECT_EQ(d.TotalWeight(), 100000);
  EXPECT_EQ(weighted.TotalWeight(), 107000);
}

TEST(TDigestTest, MinMaxExactAndTailsUseThem) {
  const std::vector<double> data = Generate(Dist::kLognormal, 11);
  TDigest d;
  for (double x : data) d.Add(x);
  const auto [mn, mx] = std::minmax_element(data.begin(), data.end());
  EXPECT_EQ(d.Min(), *mn);
  EXPECT_EQ(d.Max(), *mx);
  EXPECT_EQ(d.Quantile(0), *mn);
  EXPECT_EQ(d.Quantile(1), *mx);
  // The extreme samples are singletons: the first/last sample's rank range maps to them.
  EXPECT_EQ(d.Quantile(0.5 / kN), *mn);
  EXPECT_EQ(d.Quantile(1 - 0.5 / kN), *mx);
  EXPECT_EQ(d.Cdf(*mn), 0.5 / kN);
  EXPECT_EQ(d.Cdf(*mx), 1 - 0.5 / kN);
  EXPECT_EQ(d.Cdf(std::nextafter(*mn, -kInf)), 0);
  EXPECT_EQ(d.Cdf(std::nextafter(*mx, kInf)), 1);
  // Monotone everywhere.
  double prev = d.Quantile(0);
  for (int i = 1; i <= 10000; ++i) {
    const double v = d.Quantile(i / 10000.0);
    ASSERT_GE(v, prev) << i;
    prev = v;
  }
}

TEST(TDigestTest, Weights) {
  TDigest d;
  d.Add(5, 4);
  d.Add(7, 4);
  EXPECT_EQ(d.TotalWeight(), 8);
  EXPECT_EQ(d.Quantile(0.25), 5);
  EXPECT_EQ(d.Quantile(0.49), 5);
  EXPECT_EQ(d.Quantile(0.51), 7);
  EXPECT_EQ(d.Cdf(5), 0.25);  // half of the 4 samples at 5
  EXPECT_EQ(d.Cdf(6), 0.5);
  EXPECT_EQ(d.Cdf(7), 0.75);

  // Weight 1 is a unit add; weight w behaves like w unit adds within the bounds.
  const std::vector<double> data = Generate(Dist::kLognormal, 12, 30000);
  std::vector<double> tripled;
  TDigest w3;
  TDigest w1;
  for (double x : data) {
    w3.Add(x, 3);
    w1.Add(x, 1);
    tripled.insert(tripled.end(), {x, x, x});
  }
  const std::vector<double> sorted = Sorted(tripled);
  EXPECT_EQ(w3.TotalWeight(), 90000);
  EXPECT_EQ(w1.TotalWeight(), 30000);
  EXPECT_LE(RankError(w3, sorted, 0.5), 0.005);
  EXPECT_LE(RankError(w3, sorted, 0.95), 0.002);
  EXPECT_LE(RankError(w3, sorted, 0.99), 0.002);
  EXPECT_EQ(w3.Min(), sorted.front());
  EXPECT_EQ(w3.Max(), sorted.back());

  // Fractional weights: total is their sum, results stay monotone and in range.
  TDigest half;
  for (double x : data) half.Add(x, 0.5);
  EXPECT_EQ(half.TotalWeight(), 15000);
  double prev = half.Quantile(0);
  for (int i = 1; i <= 1000; ++i) {
    const double v = half.Quantile(i / 1000.0);
    ASSERT_GE(v, prev);
    ASSERT_LE(v, half.Max());
    prev = v;
  }
  EXPECT_LE(RankError(half, Sorted(data), 0.5), 0.005);
}

TEST(TDigestTest, NonFiniteInputsAndBadWeightsAreIgnored) {
  TDigest d;
  TDigest reference;
  for (int i = 0; i < 5000; ++i) {
    d.Add(i * 0.5);
    reference.Add(i * 0.5);
    if (i % 7 == 0) {
      d.Add(kNaN);
      d.Add(kInf);
      d.Add(-kInf);
      d.Add(kNaN, 2);
      d.Add(kInf, 1);
      d.Add(1.0, kNaN);
      d.Add(1.0, kInf);
      d.Add(1.0, 0);
      d.Add(1.0, -2);
    }
  }
  EXPECT_EQ(d.TotalWeight(), 5000);
  EXPECT_EQ(d.Min(), 0);
  EXPECT_EQ(d.Max(), 2499.5);
  EXPECT_TRUE(d == reference);
  ExpectSameQuantiles(d, reference);

  TDigest only_bad;
  only_bad.Add(kNaN);
  only_bad.Add(-kInf, 3);
  EXPECT_TRUE(only_bad.Empty());
  EXPECT_EQ(only_bad.TotalWeight(), 0);
  EXPECT_TRUE(std::isnan(only_bad.Quantile(0.5)));
}

TEST(TDigestTest, QueriesOnConstDigestWithPendingBuffer) {
  TDigest d;
  for (int i = 0; i < 100; ++i) d.Add(i);  // stays in the buffer
  const TDigest& cd = d;
  EXPECT_EQ(cd.TotalWeight(), 100);
  EXPECT_EQ(cd.Min(), 0);
  EXPECT_EQ(cd.Max(), 99);
  EXPECT_EQ(cd.Quantile(0.505), 50);  // 100 singletons: exact order statistics
  EXPECT_EQ(cd.Cdf(49), 0.495);
}

TEST(TDigestTest, MergeEdgeCases) {
  TDigest a;
  for (int i = 1; i <= 1000; ++i) a.Add(i);
  TDigest empty;
  a.Merge(empty);
  EXPECT_EQ(a.TotalWeight(), 1000);
  empty.Merge(TDigest());
  EXPECT_TRUE(empty.Empty());

  TDigest b = a;
  b.Merge(b);  // self-merge doubles every weight
  EXPECT_EQ(b.TotalWeight(), 2000);
  EXPECT_EQ(b.Min(), 1);
  EXPECT_EQ(b.Max(), 1000);
  EXPECT_NEAR(b.Quantile(0.5), 500.5, 5);

  // A pane's unmerged buffer and weighted buffer are merged too.
  TDigest pane;
  pane.Add(-5);
  pane.Add(2000, 3);
  a.Merge(pane);
  EXPECT_EQ(a.TotalWeight(), 1004);
  EXPECT_EQ(a.Min(), -5);
  EXPECT_EQ(a.Max(), 2000);
  EXPECT_EQ(pane.TotalWeight(), 4);  // unchanged
}

TEST(TDigestTest, CentroidCountIsBounded) {
  for (double compression : {20.0, 100.0, 500.0}) {
    const std::vector<double> data = Generate(Dist::kUniform, 1, 300000);
    TDigest random(compression);
    TDigest ascending(compression);
    TDigest descending(compression);
    const std::vector<double> sorted = Sorted(data);
    for (size_t i = 0; i < data.size(); ++i) {
      random.Add(data[i]);
      ascending.Add(sorted[i]);
      descending.Add(sorted[sorted.size() - 1 - i]);
    }
    for (const TDigest* d : {&random, &ascending, &descending}) {
      EXPECT_LE(d->centroids().size(), static_cast<size_t>(compression) + 8)
          << compression;
      EXPECT_GE(d->centroids().size(), static_cast<size_t>(compression / 4))
          << compression;
      EXPECT_LE(RankError(*d, sorted, 0.5), 0.5 / compression) << compression;
    }
  }
}

TEST(TDigestTest, SteadyStateAddDoesNotAllocate) {
  const std::vector<double> data = Generate(Dist::kLognormal, 21, 1 << 20);
  TDigest d;
  for (size_t i = 0; i < 20 * d.buffer_capacity(); ++i) d.Add(data[i]);
  TDigest weighted;
  for (size_t i = 0; i < 20 * d.buffer_capacity(); ++i) weighted.Add(data[i], 2);
  g_allocations = 0;
  g_count_allocations = true;
  for (size_t i = 0; i < data.size(); ++i) d.Add(data[i]);
  for (size_t i = 0; i < data.size(); ++i) weighted.Add(data[i], 2);
  g_count_allocations = false;
  EXPECT_EQ(g_allocations.load(), 0);
  EXPECT_EQ(d.TotalWeight(), 20.0 * d.buffer_capacity() + data.size());
}

TEST(TDigestTest, CompactKeepsQuantilesAndReleasesMemory) {
  const std::vector<double> data = Generate(Dist::kBimodal, 8, 12345);
  TDigest d;
  for (double x : data) d.Add(x);
  const TDigest uncompacted = d;
  std::vector<uint64_t> before;
  for (int i = 0; i <= 1000; ++i) before.push_back(Bits(d.Quantile(i / 1000.0)));
  const size_t bytes_before = d.MemoryBytes();
  d.Compact();
  const size_t bytes_after = d.MemoryBytes();
  EXPECT_LT(bytes_after, bytes_before);
  EXPECT_LT(bytes_after, bytes_before / 2);
  EXPECT_LE(bytes_after, sizeof(TDigest) + 108 * sizeof(TDigest::Centroid));
  for (int i = 0; i <= 1000; ++i) {
    ASSERT_EQ(Bits(d.Quantile(i / 1000.0)), before[i]) << i;
  }
  ExpectSameQuantiles(d, uncompacted);
  EXPECT_EQ(d.TotalWeight(), 12345);
  // Still usable afterwards.
  d.Add(1e6);
  EXPECT_EQ(d.Max(), 1e6);
  EXPECT_EQ(d.TotalWeight(), 12346);
}

// A digest whose extreme samples are inside a heavier centroid (possible for parsed
// input): the tails interpolate from the one sample at min/max, as the reference does.
TEST(TDigestTest, InterpolatesTailsFromMinAndMax) {
  std::string bytes = TDigest().Serialize();
  bytes.resize(TDigest::kHeaderBytes + TDigest::kCentroidBytes);
  auto put = [&](size_t offset, double v) {
    const uint64_t u = std::bit_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>((u >> (8 * i)) & 0xff);
  };
  put(9, 0);    // min
  put(17, 10);  // max
  bytes[25] = 1;  // n = 1
  put(29, 5);   // mean
  put(37, 10);  // weight
  absl::StatusOr<TDigest> d = TDigest::Parse(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  // Curve: (0,0) (1,0) (5,5) (9,10) (10,10).
  EXPECT_EQ(d->Quantile(0.05), 0);
  EXPECT_EQ(d->Quantile(0.3), 2.5);
  EXPECT_EQ(d->Quantile(0.5), 5);
  EXPECT_EQ(d->Quantile(0.7), 7.5);
  EXPECT_EQ(d->Quantile(0.95), 10);
  EXPECT_EQ(d->Cdf(0), 0.05);
  EXPECT_EQ(d->Cdf(2.5), 0.3);
  EXPECT_EQ(d->Cdf(7.5), 0.7);
  EXPECT_EQ(d->Cdf(10), 0.95);
}

// ---- Serialization ----

TEST(TDigestSerializationTest, LayoutOfASingleValue) {
  TDigest d;
  d.Add(2.0);
  const std::string bytes = d.Serialize();
  ASSERT_EQ(bytes.size(), TDigest::kHeaderBytes + TDigest::kCentroidBytes);
  EXPECT_EQ(bytes[0], 1);  // version
  // compression 100.0 = 0x4059000000000000, little-endian
  EXPECT_EQ(bytes.substr(1, 8), std::string("\0\0\0\0\0\0\x59\x40", 8));
  // min = max = 2.0 = 0x4000000000000000
  EXPECT_EQ(bytes.substr(9, 8), std::string("\0\0\0\0\0\0\0\x40", 8));
  EXPECT_EQ(bytes.substr(17, 8), std::string("\0\0\0\0\0\0\0\x40", 8));
  EXPECT_EQ(bytes.substr(25, 4), std::string("\x01\0\0\0", 4));  // n = 1
  EXPECT_EQ(bytes.substr(29, 8), std::string("\0\0\0\0\0\0\0\x40", 8));
  EXPECT_EQ(bytes.substr(37, 8), std::string("\0\0\0\0\0\0\xf0\x3f", 8));  // 1.0

  std::string appended = "prefix";
  d.AppendTo(&appended);
  EXPECT_EQ(appended, "prefix" + bytes);
}

TEST(TDigestSerializationTest, RoundTripIsBitExactAndDeterministic) {
  std::vector<TDigest> digests;
  digests.emplace_back();  // empty
  digests.emplace_back(50);
  digests.back().Add(-0.0);
  TDigest big(200);
  for (double x : Generate(Dist::kLognormal, 4)) big.Add(x);
  big.Add(3.5);  // leaves a pending buffer: serialization merges it first
  digests.push_back(big);
  TDigest weighted;
  for (double x : Generate(Dist::kBimodal, 5, 5000)) weighted.Add(x, 2.5);
  digests.push_back(weighted);

  for (const TDigest& d : digests) {
    const std::string bytes = d.Serialize();
    EXPECT_EQ(bytes.size(),
              TDigest::kHeaderBytes + TDigest::kCentroidBytes * d.centroids().size());
    absl::StatusOr<TDigest> parsed = TDigest::Parse(bytes);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(*parsed == d);
    EXPECT_EQ(parsed->Serialize(), bytes);
    EXPECT_EQ(parsed->compression(), d.compression());
    EXPECT_EQ(Bits(parsed->TotalWeight()), Bits(d.TotalWeight()));
    EXPECT_EQ(Bits(parsed->Min()), Bits(d.Min()));
    EXPECT_EQ(Bits(parsed->Max()), Bits(d.Max()));
    EXPECT_EQ(parsed->Empty(), d.Empty());
    ExpectSameQuantiles(*parsed, d);
    for (double x : {-1.0, 0.0, 1.0, 10.0, 20.0, 50.0, 1e3}) {
      EXPECT_EQ(Bits(parsed->Cdf(x)), Bits(d.Cdf(x))) << x;
    }
  }
  // Same input, same bytes.
  TDigest again(200);
  for (double x : Generate(Dist::kLognormal, 4)) again.Add(x);
  again.Add(3.5);
  EXPECT_EQ(again.Serialize(), big.Serialize());
  // A parsed digest keeps working.
  absl::StatusOr<TDigest> parsed = TDigest::Parse(big.Serialize());
  ASSERT_TRUE(parsed.ok());
  parsed->Merge(big);
  EXPECT_EQ(parsed->TotalWeight(), 2 * big.TotalWeight());
}

// Queries and AppendTo() merge a copy: the digest's own state, and so everything it
// answers after later Add()s, does not depend on whether or when it was asked.
TEST(TDigestTest, QueriesDoNotChangeTheState) {
  const std::vector<double> data = Generate(Dist::kLognormal, 21, 5'000);
  TDigest asked, quiet;
  for (size_t i = 0; i < data.size(); ++i) {
    asked.Add(data[i]);
    quiet.Add(data[i]);
    if (i % 97 == 0) {
      asked.Quantile(0.99);
      asked.Cdf(data[i]);
      asked.Serialize();
      asked.centroids();
    }
  }
  std::string a, q;
  asked.AppendStateTo(&a);
  quiet.AppendStateTo(&q);
  EXPECT_EQ(a, q);
  EXPECT_GT(quiet.buffered(), 0u);
}

// The state encoding keeps the buffer and the merge direction: the parsed digest is the
// original bit for bit, and stays so under the same later calls.
TEST(TDigestSerializationTest, StateRoundTripEvolvesBitForBit) {
  const std::vector<double> data = Generate(Dist::kBimodal, 22, 6'000);
  TDigest d;
  for (size_t i = 0; i < 2'345; ++i) d.Add(data[i]);
  d.Add(3.5, 2.5);  // a weighted pair in the buffer too
  std::string bytes;
  d.AppendStateTo(&bytes);
  absl::StatusOr<TDigest> back = TDigest::ParseState(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  std::string again;
  back->AppendStateTo(&again);
  EXPECT_EQ(again, bytes);
  for (size_t i = 2'345; i < data.size(); ++i) {
    d.Add(data[i]);
    back->Add(data[i]);
  }
  std::string x, y;
  d.AppendStateTo(&x);
  back->AppendStateTo(&y);
  EXPECT_EQ(x, y);
  for (size_t len = 0; len < bytes.size(); len += 13) {
    EXPECT_EQ(TDigest::ParseState(bytes.substr(0, len)).status().code(),
              absl::StatusCode::kDataLoss)
        << len;
  }
  std::string v1 = bytes;
  v1[0] = 1;
  EXPECT_EQ(TDigest::ParseState(v1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TDigestSerializationTest, RejectsEmptyAndEveryTruncation) {
  EXPECT_EQ(TDigest::Parse("").status().code(), absl::StatusCode::kDataLoss);
  TDigest d;
  for (int i = 0; i < 1000; ++i) d.Add(i * 1.5);
  const std::string bytes = d.Serialize();
  ASSERT_GT(bytes.size(), 100u);
  for (size_t len = 0; len < bytes.size(); ++len) {
    // A heap copy of exactly `len` bytes, so ASan catches any read past the end.
    const std::string prefix = bytes.substr(0, len);
    absl::StatusOr<TDigest> parsed = TDigest::Parse(prefix);
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss) << "len=" << len;
  }
  EXPECT_EQ(TDigest::Parse(bytes + '\0').status().code(), absl::StatusCode::kDataLoss);
}

TEST(TDigestSerializationTest, RejectsWrongVersion) {
  TDigest d;
  d.Add(1);
  for (char version : {'\0', '\x02', '\xff'}) {
    std::string bytes = d.Serialize();
    bytes[0] = version;
    absl::StatusOr<TDigest> parsed = TDigest::Parse(bytes);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("version"), std::string::npos);
  }
  EXPECT_EQ(TDigest::Parse(std::string("\x07", 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TDigestSerializationTest, RejectsHugeCentroidCount) {
  TDigest d;
  for (int i = 0; i < 10; ++i) d.Add(i);
  for (uint32_t n : {0xffffffffu, 0x10000000u, 11u}) {
    std::string bytes = d.Serialize();
    for (int i = 0; i < 4; ++i) bytes[25 + i] = static_cast<char>((n >> (8 * i)) & 0xff);
    absl::StatusOr<TDigest> parsed = TDigest::Parse(bytes);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_NE(parsed.status().message().find("count"), std::string::npos);
  }
}

void PutDoubleAt(std::string* bytes, size_t offset, double v) {
  const uint64_t u = std::bit_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) (*bytes)[offset + i] = static_cast<char>((u >> (8 * i)) & 0xff);
}

TEST(TDigestSerializationTest, RejectsInvalidContent) {
  TDigest d;
  for (int i = 0; i < 10; ++i) d.Add(i);  // 10 singletons, means 0..9
  const std::string good = d.Serialize();
  ASSERT_TRUE(TDigest::Parse(good).ok());
  auto code_with = [&](size_t offset, double v) {
    std::string bytes = good;
    PutDoubleAt(&bytes, offset, v);
    return TDigest::Parse(bytes).status().code();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const size_t kMean0 = 29;
  const size_t kWeight0 = 37;
  EXPECT_EQ(code_with(1, kNaN), kInvalid);    // compression
  EXPECT_EQ(code_with(1, 5), kInvalid);       // compression below kMinCompression
  EXPECT_EQ(code_with(1, 1e7), kInvalid);     // compression above kMaxCompression
  EXPECT_EQ(code_with(9, kNaN), kInvalid);    // min
  EXPECT_EQ(code_with(9, 100), kInvalid);     // min > max
  EXPECT_EQ(code_with(17, kInf), kInvalid);   // max
  EXPECT_EQ(code_with(9, 0.5), kInvalid);     // min above the first mean
  EXPECT_EQ(code_with(kMean0, kNaN), kInvalid);
  EXPECT_EQ(code_with(kMean0 + 16, -1), kInvalid);  // means not ascending
  EXPECT_EQ(code_with(kMean0 + 9 * 16, 10), kInvalid);  // mean above max
  EXPECT_EQ(code_with(kWeight0, 0), kInvalid);
  EXPECT_EQ(code_with(kWeight0, -1), kInvalid);
  EXPECT_EQ(code_with(kWeight0, kNaN), kInvalid);
  EXPECT_EQ(code_with(kWeight0, kInf), kInvalid);
  // Total weight overflowing to infinity.
  std::string overflow = good;
  PutDoubleAt(&overflow, kWeight0, 1e308);
  PutDoubleAt(&overflow, kWeight0 + 16, 1e308);
  EXPECT_EQ(TDigest::Parse(overflow).status().code(), kInvalid);
  // An empty digest must carry min = +inf, max = -inf.
  std::string empty = TDigest().Serialize();
  ASSERT_TRUE(TDigest::Parse(empty).ok());
  PutDoubleAt(&empty, 9, 0);
  EXPECT_EQ(TDigest::Parse(empty).status().code(), kInvalid);
}

// Random corruption never crashes or reads out of bounds (run under ASan/valgrind);
// whatever parses is a usable digest.
TEST(TDigestSerializationTest, CorruptInputNeverCrashes) {
  TDigest d;
  for (double x : Generate(Dist::kLognormal, 6, 3000)) d.Add(x);
  const std::string good = d.Serialize();
  std::mt19937_64 rng(17);
  int parsed_ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bytes[rng() % bytes.size()] ^= static_cast<char>(1u << (rng() % 8));
    }
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    absl::StatusOr<TDigest> parsed = TDigest::Parse(bytes);
    if (!parsed.ok()) {
      const absl::StatusCode code = parsed.status().code();
      ASSERT_TRUE(code == absl::StatusCode::kDataLoss ||
                  code == absl::StatusCode::kInvalidArgument)
          << parsed.status();
      continue;
    }
    ++parsed_ok;
    double prev = parsed->Quantile(0);
    for (int i = 1; i <= 20; ++i) {
      const double v = parsed->Quantile(i / 20.0);
      ASSERT_GE(v, prev);
      ASSERT_LE(v, parsed->Max());
      prev = v;
    }
    const double c = parsed->Cdf(parsed->Quantile(0.5));
    ASSERT_TRUE(c >= 0 && c <= 1) << c;
    parsed->Add(1.0);
    parsed->Merge(d);
  }
  EXPECT_GT(parsed_ok, 0);  // some flips (e.g. low mantissa bits) stay valid
}

}  // namespace
}  // namespace streammetrics
