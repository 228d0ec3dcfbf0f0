// Operators and their building blocks: validation rules, enrichment, dimensions and
// group keys, the stable hash, window arithmetic, stats encoding, result JSON, dedupe.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "engine/topology_test_driver.h"
#include "operators/aggregate_result.h"
#include "operators/chunked_queue.h"
#include "operators/dimension.h"
#include "operators/enrich.h"
#include "operators/hash.h"
#include "operators/id_set.h"
#include "operators/metric_stats.h"
#include "operators/validate.h"
#include "operators/windows.h"
#include "statestore/key_value_store.h"
#include "tests/test_events.h"
#include "topology/topology.h"

namespace streammetrics {
namespace {

using testing::Ev;
using testing::kT0;

MetricEvent ValidEvent() {
  MetricEvent e;
  e.event_id = "id-1";
  e.has_event_id = true;
  e.service_id = "payment-service";
  e.has_service_id = true;
  e.instance_id = "payment-service-pod-1";
  e.has_instance_id = true;
  e.metric_name = "api.request.duration";
  e.has_metric_name = true;
  e.metric_type = MetricType::kHttpRequest;
  e.has_metric_type = true;
  e.timestamp_ms = kT0;
  e.has_timestamp = true;
  e.value = 245.5;
  e.has_value = true;
  return e;
}

std::string Validate(const MetricEvent& e, const ValidationRules& rules = {},
                     int64_t now = kT0) {
  absl::Status s = ValidateEvent(rules, e, now);
  if (s.ok()) return "ok";
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return std::string(Message(s));
}

TEST(Validate, AcceptsAValidEvent) { EXPECT_EQ(Validate(ValidEvent()), "ok"); }

TEST(Validate, RequiredFieldsAreNamed) {
  MetricEvent e = ValidEvent();
  e.has_event_id = false;
  EXPECT_EQ(Validate(e), "eventId: is required");
  e = ValidEvent();
  e.service_id = "  \t";
  EXPECT_EQ(Validate(e), "serviceId: must not be blank");
  e = ValidEvent();
  e.has_instance_id = false;
  EXPECT_EQ(Validate(e), "instanceId: is required");
  e = ValidEvent();
  e.metric_name = "";
  EXPECT_EQ(Validate(e), "metricName: must not be blank");
  e = ValidEvent();
  e.has_metric_type = false;
  EXPECT_EQ(Validate(e), "metricType: is required");
  e = ValidEvent();
  e.has_timestamp = false;
  EXPECT_EQ(Validate(e), "timestamp: is required");
  e = ValidEvent();
  e.has_value = false;
  EXPECT_EQ(Validate(e), "value: is required");
}

TEST(Validate, ValueMustBePositiveFiniteAndInRange) {
  MetricEvent e = ValidEvent();
  e.value = 0;
  EXPECT_EQ(Validate(e), "value: must be > 0, got 0");
  e.value = -1.5;
  EXPECT_EQ(Validate(e), "value: must be > 0, got -1.5");
  e.value = std::numeric_limits<double>::infinity();
  EXPECT_EQ(Validate(e), "value: must be finite");
  ValidationRules rules;
  rules.value_min_inclusive = true;
  rules.value_max = 1000;
  e.value = 0;
  EXPECT_EQ(Validate(e, rules), "ok");
  e.value = 1000.5;
  EXPECT_EQ(Validate(e, rules), "value: must be <= 1000, got 1000.5");
}

TEST(Validate, TimestampBoundsAgainstTheClock) {
  MetricEvent e = ValidEvent();
  e.timestamp_ms = kT0 + 300'000;  // exactly the default 5 min skew: allowed
  EXPECT_EQ(Validate(e), "ok");
  e.timestamp_ms = kT0 + 300'001;
  EXPECT_EQ(Validate(e), StrCat("timestamp: ", kT0 + 300'001,
                                " is more than 300000 ms ahead of the clock (", kT0, ")"));
  ValidationRules rules;
  rules.max_future_skew_ms = -1;  // disabled
  EXPECT_EQ(Validate(e, rules), "ok");
  rules.max_age_ms = 60'000;
  e.timestamp_ms = kT0 - 60'001;
  EXPECT_EQ(Validate(e, rules),
            StrCat("timestamp: ", kT0 - 60'001, " is more than 60000 ms old (clock ", kT0, ")"));
}

TEST(Validate, TimestampsOutsideTheDomainAndRulesNearInt64DoNotOverflow) {
  MetricEvent e = ValidEvent();
  for (int64_t ts : {INT64_MIN, INT64_MAX, kMaxEventTimeMs + 1, -kMaxEventTimeMs - 1}) {
    e.timestamp_ms = ts;
    EXPECT_EQ(Validate(e), StrCat("timestamp: ", ts,
                                  " is outside [-9999999999999999, 9999999999999999]"));
  }
  // Rules of any length: a sum with the clock would overflow; differences do not.
  ValidationRules rules;
  rules.max_future_skew_ms = INT64_MAX;
  rules.max_age_ms = INT64_MAX;
  for (int64_t ts : {-kMaxEventTimeMs, int64_t{0}, kT0, kMaxEventTimeMs}) {
    e.timestamp_ms = ts;
    EXPECT_EQ(Validate(e, rules), "ok") << ts;
  }
  rules.max_future_skew_ms = 0;
  e.timestamp_ms = kT0 + 1;
  EXPECT_EQ(Validate(e, rules),
            StrCat("timestamp: ", kT0 + 1, " is more than 0 ms ahead of the clock (", kT0, ")"));
}

TEST(Validate, LengthsFitThePostgresColumns) {
  MetricEvent e = ValidEvent();
  std::string long_service(101, 's');
  e.service_id = long_service;
  EXPECT_EQ(Validate(e), "serviceId: longer than 100 bytes (101)");
  e = ValidEvent();
  std::string long_metric(201, 'm');
  e.metric_name = long_metric;
  EXPECT_EQ(Validate(e), "metricName: longer than 200 bytes (201)");
}

TEST(Enrich, DerivesStatusClassAndIsError) {
  absl::StatusOr<Enricher> enricher = Enricher::Create({});
  ASSERT_TRUE(enricher.ok());
  MetricEvent e = ValidEvent();
  e.tags.Add("statusCode", "503");
  ASSERT_TRUE(enricher->Enrich(&e).ok());
  EXPECT_EQ(e.enriched.Find("statusClass"), "5xx");
  EXPECT_EQ(e.enriched.Find("isError"), "true");

  e = ValidEvent();
  e.tags.Add("statusCode", "204");
  ASSERT_TRUE(enricher->Enrich(&e).ok());
  EXPECT_EQ(e.enriched.Find("statusClass"), "2xx");
  EXPECT_EQ(e.enriched.Find("isError"), "false");

  e = ValidEvent();
  e.tags.Add("statusCode", "abc");
  e.tags.Add("error", "true");
  ASSERT_TRUE(enricher->Enrich(&e).ok());
  EXPECT_EQ(e.enriched.Find("statusClass"), std::nullopt);
  EXPECT_EQ(e.enriched.Find("isError"), "true");
}

TEST(Enrich, LookupTableAndDefaults) {
  EnrichOptions options;
  options.derive_status_class = false;
  options.derive_is_error = false;
  options.table["payment-service"] = {{"team", "payments"}, {"tier", "1"}};
  options.defaults = {{"team", "unknown"}};
  absl::StatusOr<Enricher> enricher = Enricher::Create(options);
  ASSERT_TRUE(enricher.ok());
  MetricEvent e = ValidEvent();
  ASSERT_TRUE(enricher->Enrich(&e).ok());
  EXPECT_EQ(e.enriched.size(), 2u);
  EXPECT_EQ(e.enriched.Find("team"), "payments");
  EXPECT_EQ(e.enriched.Find("tier"), "1");
  e = ValidEvent();
  e.service_id = "other";
  ASSERT_TRUE(enricher->Enrich(&e).ok());
  EXPECT_EQ(e.enriched.size(), 1u);
  EXPECT_EQ(e.enriched.Find("team"), "unknown");
  EXPECT_THAT(options.AttributeNames(), ::testing::ElementsAre("team", "tier"));
}

TEST(Dimensions, FieldRefsResolveEveryKind) {
  MetricEvent e = ValidEvent();
  e.tags.Add("endpoint", "/pay");
  e.metadata.Add("traceId", "t1");
  e.enriched.Add("team", "payments");
  auto get = [&](std::string_view name) { return FieldRef::Parse(name)->Get(e); };
  EXPECT_EQ(get("serviceId"), "payment-service");
  EXPECT_EQ(get("service_id"), "payment-service");
  EXPECT_EQ(get("metricType"), "HTTP_REQUEST");
  EXPECT_EQ(get("tags.endpoint"), "/pay");
  EXPECT_EQ(get("metadata.traceId"), "t1");
  EXPECT_EQ(get("team"), "payments");
  EXPECT_EQ(get("tags.missing"), std::nullopt);
  EXPECT_EQ(FieldRef::Parse("service_id")->output_name(), "serviceId");
  EXPECT_EQ(FieldRef::Parse("tags.").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldRef::Parse("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Dimensions, GroupKeysRoundTripAndPreserveOrder) {
  std::vector<FieldRef> dims = {*FieldRef::Parse("serviceId"), *FieldRef::Parse("tags.t")};
  auto key = [&](std::string_view service, std::optional<std::string_view> tag) {
    MetricEvent e = ValidEvent();
    e.service_id = service;
    if (tag) e.tags.Add("t", *tag);
    std::string k;
    AppendGroupKey(dims, e, &k);
    return k;
  };
  std::string with_nul("a\0b", 3);
  std::string k = key(with_nul, "x");
  std::vector<std::string_view> values;
  ASSERT_TRUE(DecodeGroupKey(k, 2, &values));
  EXPECT_EQ(values[0], with_nul);
  EXPECT_EQ(values[1], "x");
  // The views point into the key: it must outlive them.
  const std::string no_tag = key("svc", std::nullopt);
  ASSERT_TRUE(DecodeGroupKey(no_tag, 2, &values));
  EXPECT_EQ(values[0], "svc");
  EXPECT_EQ(values[1], "");
  EXPECT_FALSE(DecodeGroupKey(key("svc", "x"), 3, &values));
  EXPECT_FALSE(DecodeGroupKey("no terminator", 1, &values));
  // Bytewise key order is the lexicographic order of the value tuples.
  EXPECT_LT(key("alpha", "z"), key("zeta", "a"));
  EXPECT_LT(key("ab", "z"), key("abc", "a"));
  EXPECT_LT(key("a", ""), key("a", "a"));
}

TEST(StableHash128, IsStableAndSpreads) {
  // Pinned to MurmurHash3_x64_128's published output for "hello", seed 0: stored dedupe
  // state depends on these bits never changing.
  EXPECT_EQ(StableHash128("hello"), (Hash128{0xcbd8a7b341bd9b02ULL, 0x5b1e906a48ae1d19ULL}));
  absl::flat_hash_set<uint64_t> los;
  for (int i = 0; i < 10'000; ++i) los.insert(StableHash128(StrCat("event-", i)).lo);
  EXPECT_EQ(los.size(), 10'000u);
  EXPECT_NE(StableHash128(""), StableHash128(std::string_view("\0", 1)));
}

TEST(Windows, ArithmeticAroundZeroAndNegativeTimes) {
  EXPECT_EQ(WindowSpec::FloorDiv(-1, 60), -1);
  EXPECT_EQ(WindowSpec::FloorDiv(-60, 60), -1);
  EXPECT_EQ(WindowSpec::FloorDiv(59, 60), 0);
  WindowSpec h = WindowSpec::Hopping("h", 60'000, 10'000, 5'000);
  EXPECT_EQ(h.LatestStartFor(125'000), 120'000);
  EXPECT_EQ(h.EarliestStartFor(125'000), 70'000);
  EXPECT_EQ(h.CloseTime(70'000), 135'000);
  EXPECT_EQ(PaneSize({WindowSpec::Tumbling("a", 60'000), WindowSpec::Tumbling("b", 300'000),
                      WindowSpec::Hopping("c", 60'000, 10'000)}),
            10'000);
  EXPECT_EQ(PaneSize({WindowSpec::Tumbling("a", 60'000), WindowSpec::Tumbling("b", 90'000)}),
            30'000);
}

TEST(Windows, InvalidSpecsAreNamed) {
  auto err = [](const WindowSpec& w) { return std::string(Message(ValidateWindowSpec(w))); };
  EXPECT_EQ(err(WindowSpec::Tumbling("x", 0)), "window 'x': size must be in [1ms, 36500d]");
  EXPECT_EQ(err(WindowSpec::Tumbling("x", kMaxDurationMs + 1)),
            "window 'x': size must be in [1ms, 36500d]");
  EXPECT_TRUE(ValidateWindowSpec(WindowSpec::Tumbling("x", kMaxDurationMs, kMaxDurationMs)).ok());
  EXPECT_EQ(err(WindowSpec::Hopping("x", 86'400'000, 1)),
            "window 'x': size / advance must be <= 10000 (the windows each record is in), got "
            "86400000");
  EXPECT_TRUE(ValidateWindowSpec(WindowSpec::Hopping("x", 10'000, 1)).ok());
  EXPECT_EQ(err(WindowSpec::Tumbling("x", 60, INT64_MAX)), "window 'x': grace must be in [0, 36500d]");
  EXPECT_EQ(err(WindowSpec::Hopping("x", 60, 70)), "window 'x': advance must be <= size");
  EXPECT_EQ(err(WindowSpec::Hopping("x", 60, 25)), "window 'x': size must be a multiple of advance");
  EXPECT_EQ(err(WindowSpec::Tumbling("x", 60, -1)), "window 'x': grace must be in [0, 36500d]");
  std::vector<WindowSpec> many;
  for (int i = 0; i < 33; ++i) many.push_back(WindowSpec::Tumbling(StrCat("w", i), 60));
  EXPECT_EQ(std::string(Message(ValidateWindowSpecs(many))), "windows: at most 32, got 33");
  EXPECT_EQ(std::string(Message(ValidateWindowSpecs(
                {WindowSpec::Tumbling("x", 60), WindowSpec::Tumbling("x", 120)}))),
            "window 'x' defined twice");
}

TEST(MetricStats, EncodingRoundTripsAndRejectsCorruption) {
  MetricStats s;
  for (int i = 1; i <= 1000; ++i) s.Add(i);
  std::string bytes;
  s.AppendTo(&bytes);
  absl::StatusOr<MetricStats> back = MetricStats::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->count(), 1000u);
  EXPECT_EQ(back->sum(), 500500);
  EXPECT_EQ(back->min(), 1);
  EXPECT_EQ(back->max(), 1000);
  EXPECT_EQ(back->Quantile(0.5), s.Quantile(0.5));
  EXPECT_EQ(back->Quantile(0.99), s.Quantile(0.99));
  for (size_t len = 0; len < bytes.size(); len += 7) {
    EXPECT_EQ(MetricStats::Parse(bytes.substr(0, len)).status().code(),
              absl::StatusCode::kDataLoss)
        << len;
  }
  std::string bad = bytes;
  bad[0] = 9;
  EXPECT_EQ(MetricStats::Parse(bad).status().code(), absl::StatusCode::kDataLoss);
}

TEST(MetricStats, MergeEqualsAddingEverything) {
  MetricStats a, b, all;
  for (int i = 0; i < 500; ++i) {
    (i % 2 ? a : b).Add(i * 1.5);
    all.Add(i * 1.5);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.sum(), all.sum());
  EXPECT_EQ(a.min(), 0);
  EXPECT_EQ(a.max(), 499 * 1.5);
  EXPECT_TRUE(std::isnan(MetricStats().min()));
}

// percentile_disc(q) by its definition (PostgreSQL's arithmetic: the first value, in
// sorted order, whose position k satisfies k >= q * n), independent of MetricStats' code.
double PercentileDiscOracle(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  for (size_t k = 1; k <= values.size(); ++k) {
    if (static_cast<double>(k) >= q * n) return values[k - 1];
  }
  return values.back();
}

std::string Encoded(const MetricStats& s) {
  std::string out;
  s.AppendTo(&out);
  return out;
}

// What `SELECT percentile_disc(q) WITHIN GROUP (ORDER BY v)` returns, checked by hand.
TEST(MetricStats, SmallSetsAnswerWhatSqlsPercentileDiscAnswers) {
  MetricStats two;
  two.Add(30);
  two.Add(10);
  EXPECT_EQ(two.Quantile(0.5), 10);  // the cumulative share of 10 is 0.5: reaches 0.5
  EXPECT_EQ(two.Quantile(0.51), 30);
  EXPECT_EQ(two.Quantile(0), 10);
  EXPECT_EQ(two.Quantile(1), 30);
  MetricStats four;
  for (double v : {4, 1, 3, 2}) four.Add(v);
  EXPECT_EQ(four.Quantile(0.25), 1);
  EXPECT_EQ(four.Quantile(0.5), 2);
  EXPECT_EQ(four.Quantile(0.75), 3);
  EXPECT_EQ(four.Quantile(0.76), 4);
  EXPECT_EQ(four.Quantile(0.99), 4);
  MetricStats twenty;  // 0.95 * 20 is 19 in doubles too: the 19th value
  for (int i = 1; i <= 20; ++i) twenty.Add(i);
  EXPECT_EQ(twenty.Quantile(0.95), 19);
  EXPECT_EQ(twenty.Quantile(0.99), 20);
  EXPECT_TRUE(std::isnan(MetricStats().Quantile(0.5)));
  EXPECT_TRUE(std::isnan(two.Quantile(std::numeric_limits<double>::quiet_NaN())));
}

TEST(MetricStats, ExactQuantilesMatchTheOracleOnRandomInputsWithTies) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 2'000; ++trial) {
    const size_t n = 1 + rng() % MetricStats::kDefaultExactUpTo;
    const uint64_t distinct = 1 + rng() % 20;  // few distinct values: many ties
    std::vector<double> values;
    MetricStats s;
    for (size_t i = 0; i < n; ++i) {
      values.push_back(static_cast<double>(rng() % distinct) * 0.5 - 3);
      s.Add(values.back());
    }
    ASSERT_TRUE(s.exact());
    std::vector<double> qs = {0.5, 0.95, 0.99, 0.001, 0.999};
    for (size_t k = 0; k <= n; ++k) qs.push_back(static_cast<double>(k) / static_cast<double>(n));
    for (int i = 0; i < 8; ++i) qs.push_back(static_cast<double>(rng() % 10'001) / 10'000);
    std::vector<double> got(qs.size());
    s.Quantiles(qs, got);
    for (size_t i = 0; i < qs.size(); ++i) {
      ASSERT_EQ(got[i], PercentileDiscOracle(values, qs[i])) << "n=" << n << " q=" << qs[i];
      ASSERT_EQ(s.Quantile(qs[i]), got[i]);
    }
  }
}

// Above the threshold the t-digest estimates the same percentile_disc, within its
// documented rank error (docs/SEMANTICS.md, "Aggregates").
TEST(MetricStats, EstimatesAboveTheThresholdStayWithinTheirRankBounds) {
  std::mt19937_64 rng(4);
  std::lognormal_distribution<double> latency(4.0, 0.6);
  std::vector<double> values;
  MetricStats s;
  for (int i = 0; i < 100'000; ++i) {
    values.push_back(std::round(latency(rng) * 100) / 100);
    s.Add(values.back());
  }
  ASSERT_FALSE(s.exact());
  std::sort(values.begin(), values.end());
  for (auto [q, bound] : {std::pair{0.5, 0.005}, {0.95, 0.002}, {0.99, 0.002}}) {
    const double v = s.Quantile(q);
    const double lo = double(std::lower_bound(values.begin(), values.end(), v) - values.begin());
    const double hi = double(std::upper_bound(values.begin(), values.end(), v) - values.begin());
    const double n = double(values.size());
    EXPECT_LE(lo / n, q + bound) << q;  // v's ranks [lo, hi] come within bound of q
    EXPECT_GE(hi / n, q - bound) << q;
  }
}

// The representation switches at N + 1 values, in one pane and in a merge; a digest made
// from exact values is the digest of those values added in order.
TEST(MetricStats, SwitchesToADigestPastTheThreshold) {
  constexpr uint32_t kN = 10;
  std::vector<double> values;
  MetricStats s(100, kN);
  TDigest reference(100);
  for (uint32_t i = 0; i < kN + 1; ++i) {
    values.push_back(static_cast<double>((i * 7) % 5));
    s.Add(values.back());
    reference.Add(values.back());
    EXPECT_EQ(s.exact(), i + 1 <= kN) << i;
    if (s.exact()) {
      EXPECT_EQ(s.Quantile(0.5), PercentileDiscOracle(values, 0.5));
      EXPECT_EQ(s.digest(), nullptr);
    }
  }
  ASSERT_NE(s.digest(), nullptr);
  std::string want, got;
  reference.AppendStateTo(&want);
  s.digest()->AppendStateTo(&got);
  EXPECT_EQ(got, want);
  EXPECT_EQ(s.Quantile(0.5), reference.Quantile(0.5));

  // Merges: N - 1 + 1 and N + 0 stay exact, N + 1 does not.
  for (uint32_t left : {kN - 2, kN - 1, kN}) {
    MetricStats a(100, kN), b(100, kN);
    std::vector<double> all;
    for (uint32_t i = 0; i < left; ++i) {
      a.Add(i * 1.5);
      all.push_back(i * 1.5);
    }
    b.Add(-1);
    all.push_back(-1);
    a.Merge(b);
    EXPECT_EQ(a.count(), left + 1);
    EXPECT_EQ(a.exact(), left + 1 <= kN) << left;
    if (a.exact()) {
      for (double q : {0.1, 0.5, 0.9}) EXPECT_EQ(a.Quantile(q), PercentileDiscOracle(all, q));
    } else {
      TDigest d(100);
      for (double v : all) d.Add(v);
      std::string want_merged, got_merged;
      d.AppendStateTo(&want_merged);
      a.digest()->AppendStateTo(&got_merged);
      EXPECT_EQ(got_merged, want_merged);
    }
  }
}

// A parsed pane is the original bit for bit, buffer included: it encodes the same bytes,
// answers the same and, given the same later values, becomes the same. Queries change
// nothing.
TEST(MetricStats, ParsedStatsEvolveBitForBitLikeTheOriginal) {
  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> latency(4.0, 0.6);
  for (int n : {0, 1, 2, 3, 99, 100, 101, 799, 800, 801, 1'234, 5'000}) {
    MetricStats s;
    for (int i = 0; i < n; ++i) s.Add(latency(rng));
    const std::string before = Encoded(s);
    s.Quantile(0.99);  // const: must not merge anything
    ASSERT_EQ(Encoded(s), before) << n;
    absl::StatusOr<MetricStats> back = MetricStats::Parse(before);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(Encoded(*back), before) << n;
    EXPECT_EQ(back->exact(), s.exact());
    for (int i = 0; i < 1'500; ++i) {
      const double v = latency(rng);
      s.Add(v);
      back->Add(v);
    }
    ASSERT_EQ(Encoded(*back), Encoded(s)) << n;
    for (double q : {0.5, 0.95, 0.99}) EXPECT_EQ(back->Quantile(q), s.Quantile(q)) << n;
  }
}

// Stores written before exact panes existed hold version 2 (a merged digest and its
// merge parity): they are read, as digests.
TEST(MetricStats, ReadsTheVersion2Encoding) {
  TDigest d;
  for (int i = 1; i <= 1000; ++i) d.Add(i);
  std::string v2;
  v2.push_back(2);
  for (double x : {0.0, 500500.0, 1.0, 1000.0}) {  // count (as u64), sum, min, max
    if (x == 0.0) {
      const uint64_t count = 1000;
      v2.append(reinterpret_cast<const char*>(&count), 8);
    } else {
      v2.append(reinterpret_cast<const char*>(&x), 8);
    }
  }
  v2.push_back(1);  // parity
  d.AppendTo(&v2);
  absl::StatusOr<MetricStats> s = MetricStats::Parse(v2);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->exact());
  EXPECT_EQ(s->count(), 1000u);
  EXPECT_EQ(s->sum(), 500500);
  EXPECT_EQ(s->Quantile(0.5), d.Quantile(0.5));
  v2[v2.size() - 1] ^= 0;  // still fine; a bad parity flag is not
  v2[1 + 32] = 2;
  EXPECT_EQ(MetricStats::Parse(v2).status().code(), absl::StatusCode::kDataLoss);
}

TEST(MetricStats, MemoryFollowsTheValues) {
  MetricStats one;
  one.Add(1);
  EXPECT_EQ(one.MemoryBytes(), sizeof(MetricStats));  // two values fit inline
  MetricStats hundred;
  for (int i = 0; i < 100; ++i) hundred.Add(i);
  hundred.Compact();
  EXPECT_EQ(hundred.MemoryBytes(), sizeof(MetricStats) + 100 * sizeof(double));
  EXPECT_LE(sizeof(MetricStats), 80u);
}

TEST(AggregateJson, ExactDocument) {
  MetricStats stats;
  stats.Add(10);
  stats.Add(30);
  WindowSpec w = WindowSpec::Tumbling("1m", 60'000);
  std::vector<std::string> names = {"serviceId", "metricName", "endpoint"};
  std::vector<std::string_view> values = {"pay\"ment", "api.request.duration", "/v1"};
  std::vector<QuantileSpec> quantiles = *MakeQuantileSpecs({0.5, 0.999});
  WindowedAggregate r;
  r.window = &w;
  r.window_start = kT0;
  r.window_end = kT0 + 60'000;
  r.dim_names = &names;
  r.dim_values = &values;
  r.stats = &stats;
  r.quantiles = &quantiles;
  r.quantile_values = {20, 30};
  r.rate = 2.0 / 60;
  std::string json, key;
  AppendAggregateJson(r, &json);
  AppendAggregateKey(r, &key);
  EXPECT_EQ(json,
            "{\"serviceId\":\"pay\\\"ment\",\"metricName\":\"api.request.duration\","
            "\"window\":\"1m\",\"windowStart\":1707267600000,\"windowEnd\":1707267660000,"
            "\"count\":2,\"sum\":40,\"avg\":20,\"min\":10,\"max\":30,\"p50\":20,\"p99.9\":30,"
            "\"rate\":0.03333333333333333,\"tags\":{\"endpoint\":\"/v1\"}}");
  EXPECT_EQ(key, "pay\"ment");
}

// AppendJsonDouble prints short decimals itself: byte for byte what std::to_chars prints.
TEST(AggregateJson, DoublesAreToCharsShortestForm) {
  auto expect_same = [](double v) {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    std::string got;
    AppendJsonDouble(v, &got);
    ASSERT_EQ(got, std::string(buf, end)) << v;
  };
  for (double v : {0.0, -0.0, 0.001, -0.001, 0.0001, 0.002, 0.01, 0.1, 0.5, 1.0, 10.0, 100.0,
                   1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e11, 1e12, 1e15, 1e16, 1e21, 123456.0,
                   1234567.0, 12345678.0, 120000.0, 1200000.0, 12000000.0, 999999999999.999,
                   0.999, 45.123, 1e-3 * 7, 2.0 / 60, 0.03333333333333333, 4503599627370496.5,
                   9007199254740993.0, std::numeric_limits<double>::min(),
                   std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min()}) {
    expect_same(v);
    expect_same(-v);
    expect_same(std::nextafter(v, 0.0));
    expect_same(std::nextafter(v, 1e300));
  }
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2'000'000; ++i) {
    // Decimals of 0 to 4 fractional digits over every magnitude up to 1e16, sums of them,
    // their averages, and arbitrary bit patterns.
    const int scale = static_cast<int>(rng() % 5);
    const uint64_t m = rng() >> (rng() % 64);
    const double v = static_cast<double>(m % 10'000'000'000'000'000ULL) / std::pow(10.0, scale);
    expect_same(v);
    expect_same(v / static_cast<double>(1 + rng() % 1000));
    expect_same(v + static_cast<double>(rng() % 100'000) / 1000.0);
    double bits;
    const uint64_t r = rng();
    std::memcpy(&bits, &r, sizeof(bits));
    if (std::isfinite(bits)) expect_same(bits);
  }
}

TEST(Quantiles, NamesAndValidation) {
  EXPECT_EQ(QuantileName(0.5), "p50");
  EXPECT_EQ(QuantileName(0.95), "p95");
  EXPECT_EQ(QuantileName(0.99), "p99");
  EXPECT_EQ(QuantileName(0.999), "p99.9");
  EXPECT_EQ(MakeQuantileSpecs({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(Message(MakeQuantileSpecs({0.5, 1.0}).status())),
            "quantiles: 1 is not in (0, 1)");
  EXPECT_EQ(std::string(Message(MakeQuantileSpecs({0.5, 0.5}).status())),
            "quantiles: 0.5 given twice");
}

TEST(ChunkedQueue, BehavesLikeADequeAcrossChunkBoundaries) {
  ChunkedQueue<int, 4> q;
  std::deque<int> model;
  std::mt19937 rng(3);
  int next = 0;
  for (int step = 0; step < 20'000; ++step) {
    // Phases of growth and of draining, so chunks are used up, freed and reused.
    bool push = model.empty() || ((step / 500) % 2 == 0 ? rng() % 4 != 0 : rng() % 4 == 0);
    if (push) {
      q.push_back(next);
      model.push_back(next++);
    } else {
      ASSERT_EQ(q.front(), model.front()) << step;
      const size_t i = rng() % model.size();
      ASSERT_EQ(q[i], model[i]) << step;
      q.pop_front();
      model.pop_front();
    }
    ASSERT_EQ(q.size(), model.size());
    ASSERT_EQ(q.empty(), model.empty());
  }
  while (!model.empty()) {
    ASSERT_EQ(q.front(), model.front());
    q.pop_front();
    model.pop_front();
  }
  EXPECT_TRUE(q.empty());
}

// IdSet against a model, through growth and phases of inserting and erasing. The ids
// share their low 64 bits in groups of 16 (the slot comes from those alone), so runs of
// colliding entries are long and the backward shift of erase, wrapping at the table's
// end included, is exercised on every step.
TEST(IdSet, BehavesLikeASetUnderCollisionsAndErases) {
  IdSet set;
  absl::flat_hash_set<std::pair<uint64_t, uint64_t>> model;
  std::vector<Hash128> live;
  std::mt19937_64 rng(7);
  size_t peak = 0;
  auto random_id = [&] { return Hash128{rng() % 2'000 * 0x9e3779b97f4a7c15ULL, rng() % 16}; };
  for (int step = 0; step < 200'000; ++step) {
    const bool insert = live.empty() || ((step / 20'000) % 2 == 0 ? rng() % 3 != 0 : rng() % 3 == 0);
    if (insert) {
      const Hash128 id = random_id();
      const bool fresh = model.insert({id.lo, id.hi}).second;
      ASSERT_EQ(set.Insert(id), fresh) << step;
      if (fresh) live.push_back(id);
      peak = std::max(peak, live.size());
    } else if (rng() % 4 == 0) {
      const Hash128 id = random_id();  // maybe absent
      const bool present = model.erase({id.lo, id.hi}) == 1;
      ASSERT_EQ(set.Erase(id), present) << step;
      if (present) live.erase(std::find(live.begin(), live.end(), id));
    } else {
      const size_t i = rng() % live.size();
      set.Prefetch(live[i]);
      ASSERT_TRUE(set.Erase(live[i])) << step;
      model.erase({live[i].lo, live[i].hi});
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(set.size(), model.size()) << step;
    if (step % 1'000 == 0) {
      for (const Hash128& id : live) ASSERT_TRUE(set.Contains(id)) << step;
      for (int k = 0; k < 100; ++k) {
        const Hash128 id = random_id();
        ASSERT_EQ(set.Contains(id), model.contains({id.lo, id.hi})) << step;
      }
    }
  }
  // Grown while the live size peaked, to the smallest power of two from 1,024 up that
  // holds the peak at a load of at most 3/4, and never shrunk.
  size_t expected = 1024;
  while (peak * 4 > expected * 3) expected *= 2;
  EXPECT_GT(peak, 5'000u);  // grown four times at least
  EXPECT_EQ(set.capacity(), expected);
}

// Past 1 MiB of slots the table is mmapped (populated) instead of calloc'ed: growth
// across that line keeps every id, and erasing all of them leaves an empty set.
TEST(IdSet, GrowsPastTheMappedSizeAndKeepsEveryId) {
  IdSet set;
  std::vector<Hash128> ids;
  for (uint64_t i = 0; i < 200'000; ++i) ids.push_back(StableHash128(StrCat("id-", i)));
  for (const Hash128& id : ids) ASSERT_TRUE(set.Insert(id));
  EXPECT_EQ(set.size(), 200'000u);
  EXPECT_EQ(set.capacity(), 524'288u);  // 8 MiB: 200,000 > 3/4 of 262,144
  for (const Hash128& id : ids) ASSERT_FALSE(set.Insert(id));
  for (size_t i = 0; i < ids.size(); i += 2) ASSERT_TRUE(set.Erase(ids[i]));
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(set.Contains(ids[i]), i % 2 == 1) << i;
  for (size_t i = 1; i < ids.size(); i += 2) ASSERT_TRUE(set.Erase(ids[i]));
  EXPECT_EQ(set.size(), 0u);
  EXPECT_FALSE(set.Contains(ids[0]));
}

// Doubling is incremental: right after the table doubles the old one is still there,
// every id stays findable while its slots move across, erases reach ids on either side,
// and the move is over within a quarter of the old capacity in operations.
TEST(IdSet, DoublesIncrementallyAndFindsEveryIdMeanwhile) {
  IdSet set;
  std::vector<Hash128> ids;
  for (uint64_t i = 0; i < 20'000; ++i) ids.push_back(StableHash128(StrCat("grow-", i)));
  size_t next = 0;
  while (set.capacity() < 8'192 || !set.growing()) ASSERT_TRUE(set.Insert(ids[next++]));
  // The insert that doubled 4,096 -> 8,192: 3,073 ids, the old table of 4,096 slots
  // moved 4 slots (rounded up to a run's end) per operation from the next one on.
  EXPECT_EQ(set.capacity(), 8'192u);
  EXPECT_EQ(next, 3'073u);
  size_t ops = 0;
  while (set.growing()) {
    ++ops;
    if (ops % 3 == 0) {
      ASSERT_TRUE(set.Erase(ids[ops]));  // ids inserted before the doubling: old side
      ASSERT_FALSE(set.Contains(ids[ops]));
    } else {
      ASSERT_TRUE(set.Insert(ids[next++]));
    }
    for (size_t i = 0; i < next; i += 97) {
      ASSERT_EQ(set.Contains(ids[i]), !(i <= ops && i % 3 == 0 && i > 0)) << i << " " << ops;
    }
  }
  EXPECT_LE(ops, 4'096u / 4);
  EXPECT_GT(ops, 100u);
  EXPECT_EQ(set.size(), next - ops / 3);
  for (size_t i = 0; i < next; ++i) {
    ASSERT_EQ(set.Contains(ids[i]), !(i <= ops && i % 3 == 0 && i > 0)) << i;
  }
}

// Regression: an id already in the set, inserted again by the insert that makes the set
// grow, was taken for new — the table it was in had just become the old one, which that
// insert no longer looked in. Dedupe let one duplicate through per doubling.
TEST(IdSet, ADuplicateThatMakesTheSetGrowIsStillADuplicate) {
  for (size_t doubling = 1'024; doubling <= 16'384; doubling *= 2) {
    IdSet set;
    size_t n = 0;
    while (set.size() + 1 <= (set.capacity() >> 2) * 3 || set.capacity() < doubling) {
      ASSERT_TRUE(set.Insert(StableHash128(StrCat("id-", n++))));
      if (set.growing()) {
        while (set.growing()) ASSERT_TRUE(set.Insert(StableHash128(StrCat("id-", n++))));
      }
    }
    // The next insert grows the set: each id already in it must be refused, the first one
    // and the last one alike.
    const size_t capacity = set.capacity();
    EXPECT_FALSE(set.Insert(StableHash128("id-0"))) << doubling;
    EXPECT_FALSE(set.Insert(StableHash128(StrCat("id-", n - 1)))) << doubling;
    EXPECT_EQ(set.size(), n);
    EXPECT_TRUE(set.Insert(StableHash128(StrCat("id-", n)))) << doubling;  // grows now
    EXPECT_EQ(set.capacity(), 2 * capacity);
    EXPECT_FALSE(set.Insert(StableHash128("id-0")));
  }
}

TEST(IdSet, TheEmptyMarkerIsAnIdLikeAnyOther) {
  IdSet set;
  EXPECT_FALSE(set.Contains(Hash128{0, 0}));
  EXPECT_FALSE(set.Erase(Hash128{0, 0}));
  EXPECT_TRUE(set.Insert(Hash128{0, 0}));
  EXPECT_FALSE(set.Insert(Hash128{0, 0}));
  EXPECT_TRUE(set.Contains(Hash128{0, 0}));
  EXPECT_EQ(set.size(), 1u);
  EXPECT_TRUE(set.Erase(Hash128{0, 0}));
  EXPECT_EQ(set.size(), 0u);
  EXPECT_FALSE(set.Contains(Hash128{0, 0}));
}

// Dedupe through a real topology: source -> dedupe -> sink of event ids.
class DedupeTest : public ::testing::Test {
 protected:
  void SetUp() override { Build({.within_ms = 60'000}); }
  void Build(DedupeOptions options) {
    StreamsBuilder b;
    b.Stream("in", EventFormat::kJson)
        .Dedupe(options, "dd")
        .To("out", [](const Record<MetricEvent>& r, std::string*, std::string* value) {
          value->assign(r.value->event_id);
        });
    absl::StatusOr<Topology> t = b.Build();
    ASSERT_TRUE(t.ok()) << t.status();
    topology_ = *std::move(t);
    TopologyTestDriver::Options o;
    o.wall_clock_ms = kT0;
    driver_ = *TopologyTestDriver::Create(topology_, o);
  }
  void Pipe(std::string id, int64_t ts) {
    ASSERT_TRUE(driver_->PipeInput("in", "", Ev{.id = id, .ts = ts}.Json()).ok());
  }
  std::vector<std::string> Ids() {
    std::vector<std::string> ids;
    for (const OutputRecord& r : driver_->ReadOutput("out")) ids.push_back(r.value);
    return ids;
  }
  Topology topology_;
  std::unique_ptr<TopologyTestDriver> driver_;
};

TEST_F(DedupeTest, DropsRepeatsWithinTheWindowOnly) {
  Pipe("a", kT0);
  Pipe("b", kT0 + 1'000);
  Pipe("a", kT0 + 2'000);       // duplicate
  Pipe("a", kT0 + 59'000);      // still within 60 s of first sight
  EXPECT_THAT(Ids(), ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(driver_->counters().duplicates_dropped, 2u);
  Pipe("c", kT0 + 60'000);      // stream time reaches first-seen(a) + 60 s: a expires
  Pipe("a", kT0 + 60'001);
  EXPECT_THAT(Ids(), ::testing::ElementsAre("c", "a"));
}

TEST_F(DedupeTest, CommitWritesOneBlockOfNewIdsAndDropsExpiredBlocks) {
  Pipe("a", kT0);
  Pipe("b", kT0 + 1'000);
  Pipe("a", kT0 + 2'000);  // duplicate: not stored again
  ASSERT_TRUE(driver_->Commit().ok());
  auto* store = dynamic_cast<KeyValueStore*>(driver_->GetStateStore("dd-store"));
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(store->ApproximateNumEntries(), 2u);  // block 0 + the operator's "meta" entry
  std::string block;
  ASSERT_TRUE(*store->Get(std::string(8, '\0'), &block));  // block 0
  ASSERT_EQ(block.size(), 48u);
  auto entry = [&](size_t i) {
    Hash128 h;
    int64_t first_seen;
    std::memcpy(&h.lo, block.data() + 24 * i, 8);
    std::memcpy(&h.hi, block.data() + 24 * i + 8, 8);
    std::memcpy(&first_seen, block.data() + 24 * i + 16, 8);
    return std::pair{h, first_seen};
  };
  EXPECT_EQ(entry(0), (std::pair{StableHash128("a"), kT0}));
  EXPECT_EQ(entry(1), (std::pair{StableHash128("b"), kT0 + 1'000}));
  ASSERT_TRUE(driver_->Commit().ok());  // nothing new: no new block
  EXPECT_EQ(store->ApproximateNumEntries(), 2u);
  Pipe("c", kT0 + 61'000);  // a and b expire (first seen + 60 s <= stream time)
  ASSERT_TRUE(driver_->Commit().ok());
  EXPECT_EQ(store->ApproximateNumEntries(), 2u);  // block 0 gone, block 1 = {c}, meta
  EXPECT_FALSE(*store->Get(std::string(8, '\0'), &block));
  ASSERT_TRUE(*store->Get(std::string("\0\0\0\0\0\0\0\x01", 8), &block));
  EXPECT_EQ(block.size(), 24u);
  EXPECT_EQ(entry(0), (std::pair{StableHash128("c"), kT0 + 61'000}));
}

// A wild timestamp does not move dedupe's stream time (it would expire every id, and keep
// every later one until stream time caught up): the window operator's rule, two records in
// a row that far ahead and close together move it.
TEST_F(DedupeTest, ARecordFarAheadDoesNotMoveStreamTimeUnlessTheNextConfirmsIt) {
  Build({.within_ms = 60'000, .max_stream_skew_ms = 3'600'000});
  Pipe("a", kT0);
  Pipe("wild", 253'402'300'799'000);  // year 9999: passed on, stream time stays
  Pipe("a", kT0 + 1'000);             // still a duplicate: a did not expire
  Pipe("b", kT0 + 2'000);
  EXPECT_THAT(Ids(), ::testing::ElementsAre("a", "wild", "b"));
  EXPECT_EQ(driver_->counters().duplicates_dropped, 1u);
  // Two records in a row a day ahead, within the skew of each other: the stream moved.
  Pipe("c", kT0 + 86'400'000);
  Pipe("a", kT0 + 86'400'000 + 1'000);  // a expired: the stream time moved
  EXPECT_THAT(Ids(), ::testing::ElementsAre("c", "a"));
  ASSERT_TRUE(driver_->Commit().ok());
  auto* store = dynamic_cast<KeyValueStore*>(driver_->GetStateStore("dd-store"));
  ASSERT_NE(store, nullptr);
  std::string meta;
  ASSERT_TRUE(*store->Get("meta", &meta));
  ASSERT_EQ(meta.size(), 25u);  // version 2: u8, i64 stream time, u64 next block, i64 pending
  EXPECT_EQ(meta[0], 2);
}

// Proves a commit with more new ids than block_ids writes several blocks (each a
// changelog record of bounded size), the meta entry counts them all, and each block is
// deleted as its own ids expire.
TEST_F(DedupeTest, ACommitWithManyNewIdsWritesSeveralBlocks) {
  Build({.within_ms = 60'000, .block_ids = 2});
  Pipe("a", kT0);
  Pipe("b", kT0 + 1'000);
  Pipe("c", kT0 + 2'000);
  Pipe("b", kT0 + 2'500);  // duplicate
  ASSERT_TRUE(driver_->Commit().ok());
  auto* store = dynamic_cast<KeyValueStore*>(driver_->GetStateStore("dd-store"));
  ASSERT_NE(store, nullptr);
  const std::string block0(8, '\0'), block1("\0\0\0\0\0\0\0\x01", 8),
      block2("\0\0\0\0\0\0\0\x02", 8);
  std::string block;
  ASSERT_TRUE(*store->Get(block0, &block));
  EXPECT_EQ(block.size(), 48u);  // a, b
  ASSERT_TRUE(*store->Get(block1, &block));
  EXPECT_EQ(block.size(), 24u);  // c
  Hash128 h;
  std::memcpy(&h.lo, block.data(), 8);
  std::memcpy(&h.hi, block.data() + 8, 8);
  EXPECT_EQ(h, StableHash128("c"));
  EXPECT_EQ(store->ApproximateNumEntries(), 3u);  // two blocks, meta
  std::string meta;
  ASSERT_TRUE(*store->Get("meta", &meta));
  uint64_t next_block = 0;
  ASSERT_EQ(meta.size(), 25u);  // u8 version, i64 stream time, u64 next block, i64 pending
  std::memcpy(&next_block, meta.data() + 9, 8);
  EXPECT_EQ(next_block, 2u);
  Pipe("d", kT0 + 61'000);  // a and b expire, c does not
  ASSERT_TRUE(driver_->Commit().ok());
  EXPECT_FALSE(*store->Get(block0, &block));
  EXPECT_TRUE(*store->Get(block1, &block));
  ASSERT_TRUE(*store->Get(block2, &block));
  EXPECT_EQ(block.size(), 24u);  // d
  EXPECT_EQ(store->ApproximateNumEntries(), 3u);
  Pipe("c", kT0 + 61'500);  // still live: duplicate
  EXPECT_THAT(Ids(), ::testing::ElementsAre("a", "b", "c", "d"));
}

// Dedupe with max_ids: past the bound the oldest ids are forgotten before their time
// (counted), so their duplicates pass; blocks holding only forgotten ids are deleted.
class BoundedDedupeTest : public DedupeTest {
 protected:
  void SetUp() override { Build({.within_ms = 60'000, .max_ids = 2}); }
};

TEST_F(BoundedDedupeTest, ForgetsTheOldestIdsPastTheBound) {
  Pipe("a", kT0);
  Pipe("b", kT0 + 1);
  Pipe("b", kT0 + 2);  // duplicate
  Pipe("c", kT0 + 3);  // a third live id: a is forgotten
  EXPECT_EQ(driver_->counters().dedupe_ids_evicted, 1u);
  Pipe("a", kT0 + 4);  // passes (forgotten); b is forgotten
  Pipe("c", kT0 + 5);  // still live: duplicate
  Pipe("b", kT0 + 6);  // passes; c is forgotten
  EXPECT_THAT(Ids(), ::testing::ElementsAre("a", "b", "c", "a", "b"));
  EXPECT_EQ(driver_->counters().duplicates_dropped, 2u);
  EXPECT_EQ(driver_->counters().dedupe_ids_evicted, 3u);
}

TEST_F(BoundedDedupeTest, BlocksOfForgottenIdsAreDeleted) {
  auto* store = dynamic_cast<KeyValueStore*>(driver_->GetStateStore("dd-store"));
  ASSERT_NE(store, nullptr);
  Pipe("a", kT0);
  Pipe("b", kT0 + 1);
  ASSERT_TRUE(driver_->Commit().ok());  // block 0 = {a, b}
  Pipe("c", kT0 + 2);                   // forgets a
  Pipe("d", kT0 + 3);                   // forgets b
  ASSERT_TRUE(driver_->Commit().ok());  // block 1 = {c, d}
  std::string block;
  // Kept: its newest id was first seen when the last forgotten one was (ids of the same
  // millisecond may still be live).
  EXPECT_TRUE(*store->Get(std::string(8, '\0'), &block));
  Pipe("e", kT0 + 4);                   // forgets c, first seen after all of block 0
  ASSERT_TRUE(driver_->Commit().ok());  // block 2 = {e}
  EXPECT_FALSE(*store->Get(std::string(8, '\0'), &block));
  EXPECT_TRUE(*store->Get(std::string("\0\0\0\0\0\0\0\x01", 8), &block));
  EXPECT_EQ(store->ApproximateNumEntries(), 3u);  // blocks 1 and 2, meta
  EXPECT_EQ(driver_->counters().dedupe_ids_evicted, 3u);
}

}  // namespace
}  // namespace streammetrics
