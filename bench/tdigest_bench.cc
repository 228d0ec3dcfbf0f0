// Benchmarks of operators/tdigest.h: the per-event Add() cost, Merge() of two 10K-value
// digests, Quantile()/Cdf() on a merged digest, and the rank error on lognormal data
// (reported as counters).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "operators/tdigest.h"

namespace streammetrics {
namespace {

constexpr size_t kPoolSize = size_t{1} << 20;  // power of two: index with a mask

const std::vector<double>& LognormalPool() {
  static const std::vector<double>* pool = [] {
    auto* v = new std::vector<double>(kPoolSize);
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> dist(3.0, 1.0);  // latencies, median ~20 ms
    for (double& x : *v) x = dist(rng);
    return v;
  }();
  return *pool;
}

TDigest Build(size_t n, size_t offset, double compression = 100) {
  const std::vector<double>& pool = LognormalPool();
  TDigest d(compression);
  for (size_t i = 0; i < n; ++i) d.Add(pool[(offset + i) & (kPoolSize - 1)]);
  d.Compact();
  return d;
}

// Steady state: the buffer is at capacity before timing starts, so the loop measures
// the amortized append + periodic sort/merge cost, with no allocation.
void BM_Add(benchmark::State& state) {
  const std::vector<double>& pool = LognormalPool();
  TDigest d(static_cast<double>(state.range(0)));
  for (size_t i = 0; i < 4 * d.buffer_capacity(); ++i) d.Add(pool[i]);
  size_t i = 0;
  for (auto _ : state) {
    d.Add(pool[i++ & (kPoolSize - 1)]);
  }
  benchmark::DoNotOptimize(d.Quantile(0.5));
  state.SetItemsProcessed(state.iterations());
  state.counters["centroids"] = static_cast<double>(d.centroids().size());
  state.counters["bytes"] = static_cast<double>(d.MemoryBytes());
}
BENCHMARK(BM_Add)->Arg(100)->Arg(200)->Arg(500);

// Pre-aggregated counts (weight != 1): the second buffer.
void BM_AddWeighted(benchmark::State& state) {
  const std::vector<double>& pool = LognormalPool();
  TDigest d;
  for (size_t i = 0; i < 4 * d.buffer_capacity(); ++i) d.Add(pool[i], 3);
  size_t i = 0;
  for (auto _ : state) {
    d.Add(pool[i & (kPoolSize - 1)], static_cast<double>(1 + (i & 7)) + 0.5);
    ++i;
  }
  benchmark::DoNotOptimize(d.Quantile(0.5));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AddWeighted);

// Copy of a 10K-value digest + Merge() of another + the merge pass (forced by
// centroids()). Subtract BM_Copy10K for the cost of Merge alone.
void BM_Merge10K(benchmark::State& state) {
  const TDigest a = Build(10000, 0);
  const TDigest b = Build(10000, 500000);
  for (auto _ : state) {
    TDigest c = a;
    c.Merge(b);
    benchmark::DoNotOptimize(c.centroids().data());
  }
  state.counters["centroids_a"] = static_cast<double>(a.centroids().size());
}
BENCHMARK(BM_Merge10K);

void BM_Copy10K(benchmark::State& state) {
  const TDigest a = Build(10000, 0);
  for (auto _ : state) {
    TDigest c = a;
    benchmark::DoNotOptimize(c.centroids().data());
  }
}
BENCHMARK(BM_Copy10K);

// A 5-minute window from 30 ten-second panes of 5K values each.
void BM_MergeWindow30Panes(benchmark::State& state) {
  std::vector<TDigest> panes;
  for (size_t p = 0; p < 30; ++p) panes.push_back(Build(5000, p * 5000));
  for (auto _ : state) {
    TDigest window;
    for (const TDigest& pane : panes) window.Merge(pane);
    benchmark::DoNotOptimize(window.Quantile(0.99));
  }
}
BENCHMARK(BM_MergeWindow30Panes);

void BM_Quantile(benchmark::State& state) {
  const TDigest d = Build(100000, 0);
  const double qs[] = {0.5, 0.9, 0.95, 0.99, 0.999, 0.1, 0.25, 0.75};
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(d.Quantile(qs[i++ & 7]));
  }
  state.counters["centroids"] = static_cast<double>(d.centroids().size());
}
BENCHMARK(BM_Quantile);

void BM_Cdf(benchmark::State& state) {
  const TDigest d = Build(100000, 0);
  const double xs[] = {5, 10, 20, 30, 50, 100, 200, 400};
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(d.Cdf(xs[i++ & 7]));
  }
}
BENCHMARK(BM_Cdf);

void BM_Serialize(benchmark::State& state) {
  const TDigest d = Build(100000, 0);
  std::string out;
  for (auto _ : state) {
    out.clear();
    d.AppendTo(&out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_Serialize);

void BM_Parse(benchmark::State& state) {
  const std::string bytes = Build(100000, 0).Serialize();
  for (auto _ : state) {
    auto d = TDigest::Parse(bytes);
    benchmark::DoNotOptimize(d.ok());
  }
}
BENCHMARK(BM_Parse);

// Rank error |exact CDF(Quantile(q)) - q| on 100K lognormal values, one digest
// (merged=0) or 60 one-second digests merged (merged=1). Time is the build cost.
void BM_RankErrorLognormal(benchmark::State& state) {
  const bool merged = state.range(0) != 0;
  const std::vector<double>& pool = LognormalPool();
  const size_t n = 100000;
  std::vector<double> sorted(pool.begin(), pool.begin() + n);
  std::sort(sorted.begin(), sorted.end());
  auto exact_rank = [&](double v) {
    const auto lo = std::lower_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
    const auto hi = std::upper_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
    return static_cast<double>(lo + hi) / 2 / static_cast<double>(n);
  };
  TDigest d;
  for (auto _ : state) {
    d = TDigest();
    if (merged) {
      for (size_t p = 0; p < 60; ++p) {
        TDigest slice;
        for (size_t i = n * p / 60; i < n * (p + 1) / 60; ++i) slice.Add(pool[i]);
        d.Merge(slice);
      }
    } else {
      for (size_t i = 0; i < n; ++i) d.Add(pool[i]);
    }
    benchmark::DoNotOptimize(d.Quantile(0.5));
  }
  state.counters["err_p50"] = std::abs(exact_rank(d.Quantile(0.50)) - 0.50);
  state.counters["err_p95"] = std::abs(exact_rank(d.Quantile(0.95)) - 0.95);
  state.counters["err_p99"] = std::abs(exact_rank(d.Quantile(0.99)) - 0.99);
  state.counters["centroids"] = static_cast<double>(d.centroids().size());
}
BENCHMARK(BM_RankErrorLognormal)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace streammetrics

BENCHMARK_MAIN();
