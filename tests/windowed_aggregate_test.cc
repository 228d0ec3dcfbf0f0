// The windowed aggregate through the TopologyTestDriver: window boundaries, grace,
// lateness, stream slicing (hopping and long windows from panes), emit modes, state
// write-back and retention. Values are asserted exactly; quantiles are asserted exactly
// where the data makes them exact and against exact ranks otherwise.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "engine/in_memory_log.h"
#include "engine/task.h"
#include "engine/topology_test_driver.h"
#include "statestore/window_store.h"
#include "tests/aggregate_results.h"
#include "tests/test_events.h"
#include "topology/topology.h"

namespace streammetrics {
namespace {

using testing::Ev;
using testing::kT0;

using Result = testing::AggregateResult;

std::vector<Result> ParseAll(const std::vector<OutputRecord>& records) {
  return testing::ParseAggregates(records);
}

WindowSpec Tumbling(std::string name, int64_t size, int64_t grace, std::string topic) {
  WindowSpec w = WindowSpec::Tumbling(std::move(name), size, grace);
  w.topic = std::move(topic);
  return w;
}

WindowSpec Hopping(std::string name, int64_t size, int64_t advance, int64_t grace,
                   std::string topic) {
  WindowSpec w = WindowSpec::Hopping(std::move(name), size, advance, grace);
  w.topic = std::move(topic);
  return w;
}

class Harness {
 public:
  // The driver's wall clock starts at wall_clock_ms (default: an hour after kT0, so that
  // events around kT0 are old data); with a state_dir the store is RocksDB, there.
  explicit Harness(std::vector<WindowSpec> windows,
                   std::vector<std::string> dims = {"serviceId", "metricName"},
                   int64_t idle_close_ms = 0, int64_t wall_clock_ms = kT0 + 3'600'000,
                   std::string state_dir = "",
                   int64_t max_stream_skew_ms = AggregateOptions::kDefaultMaxStreamSkewMs) {
    StreamsBuilder b;
    AggregateOptions options;
    options.idle_close_ms = idle_close_ms;
    options.max_stream_skew_ms = max_stream_skew_ms;
    b.Stream("in", EventFormat::kJson)
        .GroupBy(dims)
        .WindowedBy(std::move(windows))
        .Aggregate(options, "agg", state_dir.empty() ? StoreType::kInMemory : StoreType::kRocksDb)
        .ToWindowTopics();
    absl::StatusOr<Topology> t = b.Build();
    EXPECT_TRUE(t.ok()) << t.status();
    topology_ = *std::move(t);
    options_.wall_clock_ms = wall_clock_ms;
    options_.state_dir = std::move(state_dir);
    Reopen(wall_clock_ms);
  }

  // Closes the task (its stores with it) and opens a new one on the same state, its wall
  // clock at wall_clock_ms: a restart.
  void Reopen(int64_t wall_clock_ms) {
    driver.reset();
    options_.wall_clock_ms = wall_clock_ms;
    auto d = TopologyTestDriver::Create(topology_, options_);
    ASSERT_TRUE(d.ok()) << d.status();
    driver = *std::move(d);
  }

  void Pipe(const Ev& e) { ASSERT_TRUE(driver->PipeInput("in", "", e.Json()).ok()); }
  std::vector<Result> Read(const std::string& topic) {
    return ParseAll(driver->ReadOutput(topic));
  }

  Topology topology_;
  TopologyTestDriver::Options options_;
  std::unique_ptr<TopologyTestDriver> driver;
};

TEST(WindowedAggregate, TumblingWindowExactValuesAtClose) {
  Harness h({Tumbling("1m", 60'000, 5'000, "out-1m")});
  h.Pipe({.id = "a", .ts = kT0 + 1'000, .value = 10});
  h.Pipe({.id = "b", .ts = kT0 + 59'999, .value = 30});  // last ms of [T0, T0+60s)
  h.Pipe({.id = "c", .ts = kT0 + 60'000, .value = 99});  // first ms of the next window
  h.Pipe({.id = "d", .ts = kT0 + 20'000, .value = 20});  // out of order, within grace
  // Stream time T0+64.999s: end + grace = T0+65s not reached, nothing emitted yet.
  h.Pipe({.id = "e", .ts = kT0 + 64'999, .value = 1});
  EXPECT_TRUE(h.Read("out-1m").empty());
  h.Pipe({.id = "f", .ts = kT0 + 65'000, .value = 1});  // closes [T0, T0+60s)
  std::vector<Result> out = h.Read("out-1m");
  ASSERT_EQ(out.size(), 1u);
  const Result& r = out[0];
  EXPECT_EQ(r.key, "payment-service");
  EXPECT_EQ(r.service, "payment-service");
  EXPECT_EQ(r.metric, "api.request.duration");
  EXPECT_EQ(r.window, "1m");
  EXPECT_EQ(r.start, kT0);
  EXPECT_EQ(r.end, kT0 + 60'000);
  EXPECT_EQ(r.timestamp, kT0 + 59'999);
  EXPECT_EQ(r.count, 3u);
  EXPECT_EQ(r.sum, 60);
  EXPECT_EQ(r.avg, 20);
  EXPECT_EQ(r.min, 10);
  EXPECT_EQ(r.max, 30);
  EXPECT_EQ(r.p50, 20);
  EXPECT_EQ(r.rate, 3.0 / 60.0);
  EXPECT_EQ(r.tags, "{}");
  EXPECT_EQ(h.driver->counters().windows_emitted, 1u);
}

TEST(WindowedAggregate, RecordAfterCloseIsLateDroppedAndDeadLettered) {
  Harness h({Tumbling("1m", 60'000, 0, "out-1m")});
  h.Pipe({.id = "a", .ts = kT0 + 1'000, .value = 10});
  h.Pipe({.id = "b", .ts = kT0 + 60'000, .value = 10});  // closes [T0, T0+60s), grace 0
  ASSERT_EQ(h.Read("out-1m").size(), 1u);
  Ev late{.id = "late", .ts = kT0 + 59'000, .value = 5};
  h.Pipe(late);
  EXPECT_EQ(h.driver->counters().late_dropped, 1u);
  EXPECT_EQ(h.driver->counters().dead_letters[static_cast<int>(DeadLetterReason::kLate)], 1u);
  std::vector<OutputRecord> dlq = h.driver->ReadOutput("metrics-dead-letter");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].value, late.Json());  // the original bytes, unchanged
  EXPECT_EQ(dlq[0].Header("dlq.reason"), "late");
  EXPECT_EQ(dlq[0].Header("dlq.topic"), "in");
  EXPECT_EQ(dlq[0].Header("dlq.partition"), "0");
  EXPECT_EQ(dlq[0].Header("dlq.offset"), "2");
  EXPECT_EQ(dlq[0].Header("dlq.error"), "late: every window containing the event has closed");
  // The late record changed nothing: the next window holds only "b".
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("out-1m");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].start, kT0 + 60'000);
  EXPECT_EQ(out[0].count, 1u);
}

TEST(WindowedAggregate, LateForOneWindowStillCountsInTheOpenOne) {
  Harness h({Tumbling("1m", 60'000, 0, "out-1m"), Tumbling("5m", 300'000, 0, "out-5m")});
  h.Pipe({.id = "a", .ts = kT0 + 1'000, .value = 1});
  h.Pipe({.id = "b", .ts = kT0 + 61'000, .value = 2});  // closes 1m [T0, T0+60s)
  h.Pipe({.id = "c", .ts = kT0 + 2'000, .value = 4});   // late for 1m, not for 5m
  EXPECT_EQ(h.driver->counters().late_dropped, 0u);
  EXPECT_EQ(h.driver->counters().late_window_updates, 1u);
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> one = h.Read("out-1m");
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[0].count, 1u);  // a only
  EXPECT_EQ(one[0].sum, 1);
  EXPECT_EQ(one[1].count, 1u);  // b
  std::vector<Result> five = h.Read("out-5m");
  ASSERT_EQ(five.size(), 1u);
  EXPECT_EQ(five[0].count, 3u);
  EXPECT_EQ(five[0].sum, 7);
}

TEST(WindowedAggregate, HoppingWindowEventLandsInEverySlidingWindow) {
  Harness h({Hopping("1m-10s", 60'000, 10'000, 0, "out")});
  h.Pipe({.id = "a", .ts = kT0 + 125'000, .value = 7});  // in windows starting T0+70s..T0+120s
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("out");
  ASSERT_EQ(out.size(), 6u);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].start, kT0 + 70'000 + static_cast<int64_t>(i) * 10'000);
    EXPECT_EQ(out[i].end, out[i].start + 60'000);
    EXPECT_EQ(out[i].count, 1u);
    EXPECT_EQ(out[i].sum, 7);
    EXPECT_EQ(out[i].p99, 7);
  }
}

TEST(WindowedAggregate, HoppingWindowsMergePanes) {
  Harness h({Hopping("1m-10s", 60'000, 10'000, 0, "out")});
  // One event per 10-second pane from T0 to T0+110s, value = pane index + 1.
  for (int i = 0; i < 12; ++i) {
    h.Pipe({.id = StrCat("e", i), .ts = kT0 + i * 10'000 + 5'000, .value = double(i + 1)});
  }
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("out");
  // Windows starting T0-50s .. T0+110s: 17 windows hold data.
  ASSERT_EQ(out.size(), 17u);
  for (const Result& r : out) {
    double sum = 0;
    uint64_t count = 0;
    double lo = 1e9, hi = -1e9;
    for (int i = 0; i < 12; ++i) {
      int64_t ts = kT0 + i * 10'000 + 5'000;
      if (ts >= r.start && ts < r.end) {
        sum += i + 1;
        ++count;
        lo = std::min(lo, double(i + 1));
        hi = std::max(hi, double(i + 1));
      }
    }
    EXPECT_EQ(r.count, count) << r.start;
    EXPECT_EQ(r.sum, sum) << r.start;
    EXPECT_EQ(r.min, lo) << r.start;
    EXPECT_EQ(r.max, hi) << r.start;
  }
}

// The heart of stream slicing: every window of three overlapping definitions must equal a
// brute-force computation over the raw events. Counts, sums, min and max exactly;
// quantiles by rank against the exact sorted values.
TEST(WindowedAggregate, SlicedWindowsEqualBruteForce) {
  std::vector<WindowSpec> windows = {Tumbling("1m", 60'000, 10'000, "o1"),
                                     Tumbling("5m", 300'000, 10'000, "o5"),
                                     Hopping("1m-10s", 60'000, 10'000, 10'000, "oh")};
  Harness h(windows);
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> latency(4.0, 0.6);
  struct Raw {
    int64_t ts;
    std::string service;
    double value;
  };
  std::vector<Raw> raw;
  const char* services[] = {"a-svc", "b-svc", "c-svc"};
  int64_t max_ts = INT64_MIN;
  for (int i = 0; i < 20'000; ++i) {
    // 10 minutes of events, jittered by up to 5 s (inside the 10 s grace).
    int64_t ts = kT0 + i * 30 + static_cast<int64_t>(rng() % 5'000);
    Raw r{ts, services[rng() % 3], std::round(latency(rng) * 100) / 100};
    raw.push_back(r);
    max_ts = std::max(max_ts, ts);
    h.Pipe({.id = StrCat("e", i), .ts = r.ts, .value = r.value, .service = r.service});
  }
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  EXPECT_EQ(h.driver->counters().late_dropped, 0u);
  EXPECT_EQ(h.driver->counters().records_processed, 20'000u);
  size_t total = 0;
  for (const WindowSpec& w : windows) {
    std::vector<Result> out = h.Read(w.topic);
    ASSERT_FALSE(out.empty());
    total += out.size();
    std::set<std::pair<int64_t, std::string>> seen;
    for (const Result& r : out) {
      EXPECT_EQ(r.end - r.start, w.size_ms);
      EXPECT_EQ(r.start % w.advance_ms, 0);
      EXPECT_TRUE(seen.insert({r.start, r.service}).second) << "emitted twice";
      std::vector<double> values;
      double sum = 0;
      for (const Raw& e : raw) {
        if (e.service == r.service && e.ts >= r.start && e.ts < r.end) {
          values.push_back(e.value);
          sum += e.value;
        }
      }
      std::sort(values.begin(), values.end());
      ASSERT_EQ(r.count, values.size()) << w.name << " " << r.start << " " << r.service;
      EXPECT_NEAR(r.sum, sum, 1e-6 * sum);
      EXPECT_EQ(r.min, values.front());
      EXPECT_EQ(r.max, values.back());
      if (values.size() <= MetricStats::kDefaultExactUpTo) {
        for (auto [q, v] : {std::pair{0.5, r.p50}, {0.95, r.p95}, {0.99, r.p99}}) {
          EXPECT_EQ(v, values[std::max(1.0, std::ceil(q * double(values.size()))) - 1]);
        }
      } else if (values.size() >= 200) {
        for (auto [q, v] : {std::pair{0.5, r.p50}, {0.95, r.p95}, {0.99, r.p99}}) {
          double rank = double(std::upper_bound(values.begin(), values.end(), v) - values.begin()) /
                        double(values.size());
          EXPECT_NEAR(rank, q, 0.02) << w.name << " q=" << q << " n=" << values.size();
        }
      }
    }
    // Every (window, service) that holds events was emitted.
    std::set<std::pair<int64_t, std::string>> expected;
    for (const Raw& e : raw) {
      for (int64_t s = w.EarliestStartFor(e.ts); s <= w.LatestStartFor(e.ts); s += w.advance_ms) {
        expected.insert({s, e.service});
      }
    }
    EXPECT_EQ(seen, expected) << w.name;
  }
  EXPECT_EQ(h.driver->counters().windows_emitted, total);
}

TEST(WindowedAggregate, ResultsComeInWindowThenKeyOrder) {
  Harness h({Tumbling("1m", 60'000, 0, "o")});
  h.Pipe({.id = "1", .ts = kT0 + 1, .service = "zeta"});
  h.Pipe({.id = "2", .ts = kT0 + 2, .service = "alpha"});
  h.Pipe({.id = "3", .ts = kT0 + 60'001, .service = "mid"});
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("o");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].service, "alpha");
  EXPECT_EQ(out[1].service, "zeta");
  EXPECT_EQ(out[2].service, "mid");
  EXPECT_EQ(out[2].start, kT0 + 60'000);
}

// A closing window's keys come in byte order from the ordered key index when many of
// the live keys have data in it, and are sorted when few do; its panes are grouped by
// key. Both ways give the brute-force answer, in the same order.
TEST(WindowedAggregate, ResultsComeInKeyOrderWhetherTheWindowsKeysAreWalkedOrSorted) {
  Harness h({Hopping("1m-10s", 60'000, 10'000, 30'000, "oh")});
  std::vector<Ev> events;
  // Two keys in pane T0 only (the first window to close holds just them, while 43 keys
  // are live: sorted), then 40 keys in panes T0+20s and T0+30s (later windows hold 42 of
  // the 43: walked), arriving in an order that is not theirs.
  events.push_back({.id = "a1", .ts = kT0 + 1'000, .value = 1, .service = "zz-a"});
  events.push_back({.id = "a2", .ts = kT0 + 1'500, .value = 2, .service = "aa-a"});
  events.push_back({.id = "a3", .ts = kT0 + 2'000, .value = 3, .service = "aa-a"});
  std::vector<int> order(40);
  for (int i = 0; i < 40; ++i) order[i] = (i * 17) % 40;  // 17 is prime to 40: a permutation
  for (int i = 0; i < 40; ++i) {
    const std::string service = StrCat("svc-", order[i] < 10 ? "0" : "", order[i]);
    events.push_back({.id = StrCat("b", i), .ts = kT0 + 20'000 + i * 400,
                      .value = double(10 + order[i]), .service = service});
    if (order[i] % 3 == 0) {  // a second pane for some
      events.push_back({.id = StrCat("c", i), .ts = kT0 + 35'000 + i * 100,
                        .value = double(100 + order[i]), .service = service});
    }
  }
  events.push_back({.id = "m", .ts = kT0 + 61'000, .value = 7, .service = "mid"});
  for (const Ev& e : events) h.Pipe(e);
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  const std::vector<Result> out = h.Read("oh");

  struct Want {
    int64_t start;
    std::string service;
    uint64_t count;
    double sum, min, max;
  };
  std::vector<Want> want;
  for (int64_t start = kT0 - 50'000; start <= kT0 + 60'000; start += 10'000) {
    std::map<std::string, Want> by_service;  // byte order
    for (const Ev& e : events) {
      if (e.ts < start || e.ts >= start + 60'000) continue;
      auto [it, fresh] = by_service.try_emplace(e.service, Want{start, e.service, 0, 0, 1e300, -1e300});
      it->second.count += 1;
      it->second.sum += e.value;
      it->second.min = std::min(it->second.min, e.value);
      it->second.max = std::max(it->second.max, e.value);
    }
    for (const auto& [service, w] : by_service) want.push_back(w);
  }
  // The first window holds 2 keys of 43 live (sorted), the one at T0-20s all but "mid"
  // (walked).
  ASSERT_EQ(std::count_if(want.begin(), want.end(),
                          [](const Want& w) { return w.start == kT0 - 50'000; }),
            2);
  ASSERT_EQ(std::count_if(want.begin(), want.end(),
                          [](const Want& w) { return w.start == kT0 - 20'000; }),
            42);
  ASSERT_EQ(out.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(out[i].start, want[i].start) << i;
    EXPECT_EQ(out[i].service, want[i].service) << i;
    EXPECT_EQ(out[i].count, want[i].count) << i;
    EXPECT_EQ(out[i].sum, want[i].sum) << i;
    EXPECT_EQ(out[i].min, want[i].min) << i;
    EXPECT_EQ(out[i].max, want[i].max) << i;
  }
  EXPECT_EQ(out[0].service, "aa-a");
  EXPECT_EQ(out[0].count, 2u);
  EXPECT_EQ(out[1].service, "zz-a");
}

TEST(WindowedAggregate, GroupByTagsPutsThemInTheResultTags) {
  Harness h({Tumbling("1m", 60'000, 0, "o")}, {"serviceId", "metricName", "tags.endpoint"});
  h.Pipe({.id = "1", .ts = kT0, .value = 1, .tags = {{"endpoint", "/a"}}});
  h.Pipe({.id = "2", .ts = kT0, .value = 2, .tags = {{"endpoint", "/b"}}});
  h.Pipe({.id = "3", .ts = kT0, .value = 4, .tags = {{"endpoint", "/a"}}});
  h.Pipe({.id = "4", .ts = kT0, .value = 8});  // no endpoint: its own group, ""
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("o");
  ASSERT_EQ(out.size(), 3u);
  std::map<std::string, double> sums;
  for (const Result& r : out) sums[r.tags] = r.sum;
  EXPECT_EQ(sums["{\"endpoint\":\"/a\"}"], 5);
  EXPECT_EQ(sums["{\"endpoint\":\"/b\"}"], 2);
  EXPECT_EQ(sums["{\"endpoint\":\"\"}"], 8);
}

TEST(WindowedAggregate, LongGapsCloseOnlyWindowsWithData) {
  // Stream skew off: a record 30 days ahead is taken at once.
  Harness h({Hopping("1m-10s", 60'000, 10'000, 0, "o")}, {"serviceId", "metricName"}, 0,
            kT0 + 3'600'000, "", /*max_stream_skew_ms=*/0);
  h.Pipe({.id = "1", .ts = kT0});
  h.Pipe({.id = "2", .ts = kT0 + 30LL * 86'400'000});  // 30 days later
  std::vector<Result> out = h.Read("o");
  ASSERT_EQ(out.size(), 6u);  // the six windows of the first event, no empty ones
  EXPECT_EQ(out.front().start, kT0 - 50'000);
  EXPECT_EQ(out.back().start, kT0);
}

// The reference windows: 1m and 5m tumbling, 1m/10s hopping, 10 s grace.
std::vector<WindowSpec> ReferenceWindows() {
  return {Tumbling("1m", 60'000, 10'000, "o-1m"), Tumbling("5m", 300'000, 10'000, "o-5m"),
          Hopping("1m-10s", 60'000, 10'000, 10'000, "o-1m-10s")};
}

constexpr int64_t kYear1 = -62'135'596'800'000;      // 0001-01-01T00:00:00Z
constexpr int64_t kYear9999 = 253'402'300'799'000;  // 9999-12-31T23:59:59Z

TEST(WindowedAggregate, ClosingAfterAJumpOfDecadesCostsTheWindowsWithData) {
  // Stream skew off: the jump from 1970 to now is taken, and closing costs one step per
  // window holding data plus one jump per definition — not one per 10 s slot between.
  Harness h(ReferenceWindows(), {"serviceId", "metricName"}, 0, kT0 + 3'600'000, "",
            /*max_stream_skew_ms=*/0);
  h.Pipe({.id = "old", .ts = 0, .value = 7});
  h.Pipe({.id = "now", .ts = kT0, .value = 1});
  auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
  ASSERT_NE(agg, nullptr);
  // 1m: emit + jump; 5m: emit + jump; 1m-10s: six windows + jump.
  EXPECT_EQ(agg->close_steps(), 11u);
  EXPECT_EQ(h.driver->counters().windows_emitted, 8u);
  std::vector<Result> one = h.Read("o-1m");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].start, 0);
  EXPECT_EQ(one[0].sum, 7);
  std::vector<Result> hop = h.Read("o-1m-10s");
  ASSERT_EQ(hop.size(), 6u);
  EXPECT_EQ(hop.front().start, -50'000);
  EXPECT_EQ(hop.back().start, 0);
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  // now's windows: per definition a jump to the first window holding it, its windows
  // (1 + 1 + 6), and for 1m and 1m-10s a jump past the last (5m's next closes later).
  EXPECT_EQ(agg->close_steps(), 11u + 3u + 8u + 2u);
  EXPECT_EQ(h.driver->counters().windows_emitted, 16u);
}

TEST(WindowedAggregate, ClosingIsBoundedByDataForPanesScatteredOverMillennia) {
  // Panes far apart on both sides of the windows being closed: every close step emits a
  // window or jumps to the next one holding data.
  Harness h({Hopping("1m-10s", 60'000, 10'000, 0, "o")}, {"serviceId", "metricName"}, 0,
            kT0 + 3'600'000, "", /*max_stream_skew_ms=*/0);
  const std::vector<int64_t> times = {kYear1, -1'000'000'000'000, 0, kT0, kYear9999};
  for (size_t i = 0; i < times.size(); ++i) h.Pipe({.id = StrCat(i), .ts = times[i]});
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
  ASSERT_NE(agg, nullptr);
  EXPECT_EQ(h.driver->counters().windows_emitted, 30u);  // six per record
  // Six emits per record, and at most one jump before each record's windows and one at
  // the end of every close.
  EXPECT_LE(agg->close_steps(), 30u + 2u * times.size());
  EXPECT_EQ(h.Read("o").size(), 30u);
}

TEST(WindowedAggregate, ARecordFarAheadOfTheStreamIsDeadLetteredUnlessTheNextConfirmsIt) {
  Harness h(ReferenceWindows());  // max_stream_skew: the default, 1 day
  // The first record sets the stream time, however old.
  h.Pipe({.id = "ancient", .ts = kYear1, .value = 3});
  Ev first_now{.id = "n1", .ts = kT0, .value = 1};
  h.Pipe(first_now);
  auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
  ASSERT_NE(agg, nullptr);
  EXPECT_EQ(agg->stream_time(), kYear1);
  std::vector<OutputRecord> dlq = h.driver->ReadOutput("metrics-dead-letter");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].value, first_now.Json());
  EXPECT_EQ(dlq[0].Header("dlq.reason"), "stream_skew");
  EXPECT_EQ(dlq[0].Header("dlq.error"),
            StrCat("timestamp: ", kT0, " is more than 86400000 ms ahead of the stream time (",
                   kYear1, ")"));
  // The next record, as far ahead and within a day of it: the stream moved. Its windows
  // open; the ancient record's close, at a cost of the windows holding data.
  h.Pipe({.id = "n2", .ts = kT0 + 1'000, .value = 2});
  EXPECT_EQ(agg->stream_time(), kT0 + 1'000);
  EXPECT_EQ(agg->close_steps(), 11u);
  std::vector<Result> ancient = h.Read("o-1m");
  ASSERT_EQ(ancient.size(), 1u);
  EXPECT_EQ(ancient[0].start, kYear1);
  EXPECT_EQ(ancient[0].sum, 3);
  // A wild record is dead-lettered; a normal record after it clears it, so a second wild
  // one is dead-lettered again rather than confirming the first.
  h.Pipe({.id = "w1", .ts = kYear9999});
  h.Pipe({.id = "n3", .ts = kT0 + 2'000, .value = 4});
  h.Pipe({.id = "w2", .ts = kYear9999 - 1'000});
  EXPECT_EQ(agg->stream_time(), kT0 + 2'000);
  EXPECT_EQ(h.driver->counters().dead_letters[static_cast<int>(DeadLetterReason::kStreamSkew)],
            3u);
  dlq = h.driver->ReadOutput("metrics-dead-letter");
  ASSERT_EQ(dlq.size(), 2u);
  EXPECT_EQ(dlq[0].Header("dlq.offset"), "3");
  EXPECT_EQ(dlq[1].Header("dlq.offset"), "5");
  EXPECT_EQ(dlq[1].Header("dlq.error"),
            StrCat("timestamp: ", kYear9999 - 1'000,
                   " is more than 86400000 ms ahead of the stream time (", kT0 + 2'000, ")"));
  // Ahead within the skew moves the stream as before.
  h.Pipe({.id = "n4", .ts = kT0 + 86'400'000, .value = 8});
  EXPECT_EQ(agg->stream_time(), kT0 + 86'400'000);
  std::vector<Result> now = h.Read("o-1m");
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].start, kT0);
  EXPECT_EQ(now[0].sum, 6);  // n2 + n3; n1 was dead-lettered
}

TEST(WindowedAggregate, APendingStreamSkewSurvivesARestart) {
  const auto dir = std::filesystem::temp_directory_path() /
                   StrCat("sm-stream-skew-", ::getpid());
  std::filesystem::remove_all(dir);
  {
    Harness h({Tumbling("1m", 60'000, 0, "o")}, {"serviceId", "metricName"}, 0,
              kT0 + 3'600'000, dir.string(), /*max_stream_skew_ms=*/3'600'000);
    h.Pipe({.id = "a", .ts = kT0});
    h.Pipe({.id = "b", .ts = kT0 + 7'200'000});  // 2 h ahead: dead-lettered, pending
    ASSERT_TRUE(h.driver->Commit().ok());
    h.Reopen(kT0 + 3'600'000);
    ASSERT_NE(h.driver, nullptr);
    h.Pipe({.id = "c", .ts = kT0 + 7'300'000});  // confirms b, as without the restart
    auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
    ASSERT_NE(agg, nullptr);
    EXPECT_EQ(agg->stream_time(), kT0 + 7'300'000);
    EXPECT_EQ(h.driver->counters().dead_letters[static_cast<int>(DeadLetterReason::kStreamSkew)],
              0u);  // the new task's counters: c was accepted
    std::vector<Result> out = h.Read("o");
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].start, kT0);
  }
  std::filesystem::remove_all(dir);
}

TEST(WindowedAggregate, OperatorStateOfVersionTwoIsReadWithoutAPendingSkew) {
  const auto dir = std::filesystem::temp_directory_path() /
                   StrCat("sm-stream-skew-v2-", ::getpid());
  std::filesystem::remove_all(dir);
  {
    Harness h({Tumbling("1m", 60'000, 0, "o")}, {"serviceId", "metricName"}, 0,
              kT0 + 3'600'000, dir.string(), /*max_stream_skew_ms=*/3'600'000);
    h.Pipe({.id = "a", .ts = kT0});
    h.Pipe({.id = "b", .ts = kT0 + 7'200'000});  // dead-lettered, pending
    ASSERT_TRUE(h.driver->Commit().ok());
    auto* store = dynamic_cast<WindowStore*>(h.driver->GetStateStore("agg-store"));
    ASSERT_NE(store, nullptr);
    std::string meta;
    ASSERT_TRUE(*store->Fetch("", INT64_MAX, &meta));
    ASSERT_EQ(meta[0], 3);
    int64_t pending = 0;
    std::memcpy(&pending, meta.data() + 33, 8);  // after the compaction boundary
    EXPECT_EQ(pending, kT0 + 7'200'000);
    meta[0] = 2;
    meta.erase(33, 8);
    ASSERT_TRUE(store->Put("", INT64_MAX, meta).ok());
    ASSERT_TRUE(store->Flush().ok());
    h.Reopen(kT0 + 3'600'000);
    ASSERT_NE(h.driver, nullptr);
    // No pending timestamp in version 2: c is the first of a new pair, dead-lettered.
    h.Pipe({.id = "c", .ts = kT0 + 7'300'000});
    EXPECT_EQ(h.driver->counters().dead_letters[static_cast<int>(DeadLetterReason::kStreamSkew)],
              1u);
    auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
    ASSERT_NE(agg, nullptr);
    EXPECT_EQ(agg->stream_time(), kT0);
  }
  std::filesystem::remove_all(dir);
}

TEST(WindowedAggregate, TimestampsOutsideTheEventTimeDomainAreDeadLettered) {
  // Protobuf carries any int64 timestamp (JSON stops below 10^16 ms).
  StreamsBuilder b;
  b.Stream("in", EventFormat::kProtobuf)
      .GroupBy({"serviceId", "metricName"})
      .WindowedBy(ReferenceWindows())
      .Aggregate({}, "agg")
      .ToWindowTopics();
  absl::StatusOr<Topology> t = b.Build();
  ASSERT_TRUE(t.ok()) << t.status();
  TopologyTestDriver::Options o;
  o.wall_clock_ms = kT0;
  auto d = TopologyTestDriver::Create(*t, o);
  ASSERT_TRUE(d.ok()) << d.status();
  auto event = [](int64_t ts) {
    MetricEvent e;
    e.event_id = "e";
    e.has_event_id = true;
    e.timestamp_ms = ts;
    e.has_timestamp = true;
    e.service_id = "svc";
    e.has_service_id = true;
    e.metric_name = "m";
    e.has_metric_name = true;
    e.value = 1;
    e.has_value = true;
    std::string out;
    AppendMetricEventProtobuf(e, &out);
    return out;
  };
  for (int64_t ts : {INT64_MIN, INT64_MAX, kMaxEventTimeMs + 1, -kMaxEventTimeMs - 1}) {
    ASSERT_TRUE((*d)->PipeInput("in", "", event(ts)).ok());
  }
  // The domain's edges are events like others (the first sets the stream time).
  ASSERT_TRUE((*d)->PipeInput("in", "", event(-kMaxEventTimeMs)).ok());
  ASSERT_TRUE((*d)->PipeInput("in", "", event(kMaxEventTimeMs)).ok());  // stream skew
  std::vector<OutputRecord> dlq = (*d)->ReadOutput("metrics-dead-letter");
  ASSERT_EQ(dlq.size(), 5u);
  EXPECT_EQ(dlq[0].Header("dlq.reason"), "processing");
  EXPECT_EQ(dlq[0].Header("dlq.error"),
            StrCat("aggregate: timestamp ", INT64_MIN,
                   " is outside [-9999999999999999, 9999999999999999]"));
  EXPECT_EQ(dlq[3].Header("dlq.reason"), "processing");
  EXPECT_EQ(dlq[4].Header("dlq.reason"), "stream_skew");
  ASSERT_TRUE((*d)->EndOfInput().ok());
  EXPECT_EQ((*d)->counters().windows_emitted, 8u);  // the record at -kMaxEventTimeMs
  EXPECT_EQ((*d)->counters().records_processed, 1u);
}

TEST(WindowedAggregate, UpdateResultsOfALongWindowOverFinePanesCostTheData) {
  // Pane size 1 ms under a 1-day window: an update result looks up the panes holding
  // data, not the 86,400,000 pane slots of the window.
  WindowSpec day = Tumbling("1d", 86'400'000, 0, "o-1d");
  day.emit = EmitMode::kUpdate;
  Harness h({day, Tumbling("1ms", 1, 0, "o-1ms")});
  h.Pipe({.id = "a", .ts = kT0 + 5, .value = 2});
  h.Pipe({.id = "b", .ts = kT0 + 3'600'007, .value = 5});
  ASSERT_TRUE(h.driver->Commit().ok());
  std::vector<Result> out = h.Read("o-1d");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].start, kT0 - kT0 % 86'400'000);
  EXPECT_EQ(out[0].count, 2u);
  EXPECT_EQ(out[0].sum, 7);
}

TEST(WindowedAggregate, EmitOnUpdateEmitsChangedWindowsAtCommit) {
  WindowSpec w = Tumbling("1m", 60'000, 0, "o");
  w.emit = EmitMode::kUpdate;
  Harness h({w});
  h.Pipe({.id = "1", .ts = kT0 + 1'000, .value = 1});
  h.Pipe({.id = "2", .ts = kT0 + 2'000, .value = 2, .service = "other"});
  EXPECT_TRUE(h.Read("o").empty());  // nothing until the commit
  ASSERT_TRUE(h.driver->Commit().ok());
  std::vector<Result> first = h.Read("o");
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].service, "other");
  EXPECT_EQ(first[1].service, "payment-service");
  EXPECT_EQ(first[1].sum, 1);
  ASSERT_TRUE(h.driver->Commit().ok());
  EXPECT_TRUE(h.Read("o").empty());  // nothing changed
  h.Pipe({.id = "3", .ts = kT0 + 3'000, .value = 4});
  ASSERT_TRUE(h.driver->Commit().ok());
  std::vector<Result> second = h.Read("o");
  ASSERT_EQ(second.size(), 1u);  // only the changed group
  EXPECT_EQ(second[0].service, "payment-service");
  EXPECT_EQ(second[0].count, 2u);
  EXPECT_EQ(second[0].sum, 5);
  // A change after the last commit is emitted when the window closes.
  h.Pipe({.id = "4", .ts = kT0 + 4'000, .value = 8});
  h.Pipe({.id = "5", .ts = kT0 + 60'000, .value = 1, .service = "other"});  // closes it
  std::vector<Result> at_close = h.Read("o");
  ASSERT_EQ(at_close.size(), 1u);
  EXPECT_EQ(at_close[0].sum, 13);
}

TEST(WindowedAggregate, CommitWritesPanesToTheStoreAndRetentionDropsThem) {
  Harness h({Tumbling("1m", 60'000, 0, "o"), Hopping("h", 60'000, 20'000, 0, "p")});
  h.Pipe({.id = "1", .ts = kT0 + 1'000, .value = 3});
  h.Pipe({.id = "2", .ts = kT0 + 25'000, .value = 5});
  ASSERT_TRUE(h.driver->Commit().ok());
  auto* store = dynamic_cast<WindowStore*>(h.driver->GetStateStore("agg-store"));
  ASSERT_NE(store, nullptr);
  // Pane size gcd(60s, 20s) = 20 s: two panes, [T0, T0+20s) and [T0+20s, T0+40s), and
  // the operator's own state entry.
  EXPECT_EQ(store->ApproximateNumEntries(), 3u);
  std::vector<std::pair<int64_t, uint64_t>> panes;
  ASSERT_TRUE(store
                  ->FetchAll(INT64_MIN, INT64_MAX,
                             [&](std::string_view, int64_t start, std::string_view value) {
                               absl::StatusOr<MetricStats> s = MetricStats::Parse(value);
                               if (!s.ok()) return s.status();
                               panes.emplace_back(start, s->count());
                               return absl::OkStatus();
                             })
                  .ok());
  EXPECT_EQ(panes, (std::vector<std::pair<int64_t, uint64_t>>{{kT0, 1}, {kT0 + 20'000, 1}}));
  // Far ahead: every window holding those panes closes and the panes expire.
  h.Pipe({.id = "3", .ts = kT0 + 10 * 60'000, .value = 1});
  ASSERT_TRUE(h.driver->Commit().ok());
  EXPECT_EQ(store->ApproximateNumEntries(), 2u);  // the new event's pane + state entry
}

// ★ A quiet partition still gets its window: after idle_close of wall-clock silence,
// stream time follows the wall clock from the last record's — here the input is live
// (read half a second after its event time).
TEST(WindowedAggregate, IdlenessClosesWindowsOnTheWallClock) {
  Harness h({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 5'000,
            /*wall_clock_ms=*/kT0 + 30'500);
  h.Pipe({.id = "a", .ts = kT0 + 30'000, .value = 4});
  // Wall-clock ticks every second; the first notes the record (stream time T0+30s). The
  // window [T0, T0+60s) closes at stream time T0+70s: 40 s of wall clock after that tick.
  for (int tick = 1; tick <= 40; ++tick) {
    ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
    ASSERT_TRUE(h.Read("o").empty()) << "tick " << tick;
  }
  ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());  // tick 41: idle 40 s
  std::vector<Result> out = h.Read("o");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].start, kT0);
  EXPECT_EQ(out[0].count, 1u);
  EXPECT_EQ(out[0].sum, 4);
  // A record for the window closed by idleness is late.
  h.Pipe({.id = "b", .ts = kT0 + 50'000, .value = 1});
  EXPECT_EQ(h.driver->counters().late_dropped, 1u);
}

// Regression (old data replayed with a 40 s pause halfway came out 75 windows short:
// idle close advanced stream time by the wall clock and the rest of the replay was
// late): a replay of hour-old data, one event a second over 90 s of event time, pauses
// 60 s of wall clock after its first 30 events — twelve times idle_close — then goes on.
// No window closes early: both windows are exact, nothing is late.
TEST(WindowedAggregate, AReplayOfOldDataThatPausesClosesNoWindowEarly) {
  Harness h({Tumbling("1m", 60'000, 10'000, "o"), Hopping("h", 20'000, 10'000, 0, "p")},
            {"serviceId", "metricName"}, 5'000, /*wall_clock_ms=*/kT0 + 3'600'000);
  for (int i = 0; i < 30; ++i) h.Pipe({.id = StrCat("e", i), .ts = kT0 + i * 1'000, .value = 1});
  ASSERT_TRUE(h.driver->Commit().ok());
  // Windows of [T0, T0+20s) are out on stream time; nothing else may close in the pause.
  EXPECT_EQ(h.Read("o").size(), 0u);
  EXPECT_EQ(h.Read("p").size(), 2u);  // [T0-10s, T0+10s), [T0, T0+20s)
  for (int tick = 0; tick < 60; ++tick) ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
  ASSERT_TRUE(h.driver->Commit().ok());
  EXPECT_EQ(h.Read("o").size(), 0u);
  EXPECT_EQ(h.Read("p").size(), 0u);
  for (int i = 30; i < 90; ++i) {
    h.Pipe({.id = StrCat("e", i), .ts = kT0 + i * 1'000, .value = 1});
    ASSERT_TRUE(h.driver->AdvanceWallClock(100).ok());  // the replay's own pace
  }
  ASSERT_TRUE(h.driver->EndOfInput().ok());  // closes the last windows
  std::vector<Result> minutes = h.Read("o");
  ASSERT_EQ(minutes.size(), 2u);
  EXPECT_EQ(minutes[0].start, kT0);
  EXPECT_EQ(minutes[0].count, 60u);
  EXPECT_EQ(minutes[1].start, kT0 + 60'000);
  EXPECT_EQ(minutes[1].count, 30u);
  std::vector<Result> hops = h.Read("p");
  ASSERT_EQ(hops.size(), 8u);  // [T0+10s, T0+30s) ... [T0+80s, T0+100s)
  for (size_t i = 0; i < hops.size(); ++i) {
    EXPECT_EQ(hops[i].start, kT0 + 10'000 * static_cast<int64_t>(i + 1));
    EXPECT_EQ(hops[i].count, i + 1 < hops.size() ? 20u : 10u) << i;
  }
  EXPECT_EQ(h.driver->counters().late_dropped, 0u);
  EXPECT_EQ(h.driver->counters().late_window_updates, 0u);
  EXPECT_EQ(h.driver->counters().dead_letters_total(), 0u);
}

// Input that falls behind the wall clock by more than idle_close stops being live, even
// after a live stretch: a record a second of wall clock, each 200 ms of event time after
// the last, from 1 s behind to 21 s behind; then two minutes of silence close nothing.
TEST(WindowedAggregate, IdlenessStopsOnceTheInputFallsBehindTheWallClock) {
  Harness h({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 5'000,
            /*wall_clock_ms=*/kT0 + 1'000);
  for (int k = 0; k <= 20; ++k) {
    h.Pipe({.id = StrCat("e", k), .ts = kT0 + k * 200, .value = 1});
    ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
  }
  for (int tick = 0; tick < 120; ++tick) ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
  EXPECT_TRUE(h.Read("o").empty());
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  std::vector<Result> out = h.Read("o");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].count, 21u);
}

// Regression (a kill or clean restart after the last record, before the last windows
// closed: those windows never came out, as the idle clock started only at the first
// record a new task saw): the idle clock is part of the operator's state. A live record,
// committed; the task stops; 20 s later a new task opens on the same store and closes
// the window at the same wall time the first would have.
TEST(WindowedAggregate, ARestoredOperatorContinuesTheIdleClock) {
  const auto dir = std::filesystem::temp_directory_path() /
                   StrCat("sm-idle-restore-", ::getpid());
  std::filesystem::remove_all(dir);
  {
    Harness h({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 5'000,
              /*wall_clock_ms=*/kT0 + 30'500, dir.string());
    h.Pipe({.id = "a", .ts = kT0 + 30'000, .value = 4});
    h.Pipe({.id = "b", .ts = kT0 + 29'000, .value = 2});
    // The commit notes the records: wall T0+30.5s, stream time T0+30s — the window
    // [T0, T0+60s) closes at stream time T0+70s, at wall T0+70.5s.
    ASSERT_TRUE(h.driver->Commit().ok());
    EXPECT_TRUE(h.Read("o").empty());
    h.Reopen(kT0 + 50'500);  // down 20 s
    // Ticks at T0+51.5s, 52.5s, ...: the 20th is at T0+70.5s.
    for (int tick = 1; tick < 20; ++tick) {
      ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
      ASSERT_TRUE(h.Read("o").empty()) << "tick " << tick;
    }
    ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
    std::vector<Result> out = h.Read("o");
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].start, kT0);
    EXPECT_EQ(out[0].count, 2u);
    EXPECT_EQ(out[0].sum, 6);
  }
  std::filesystem::remove_all(dir);
}

// The same for a replay: restored, the idle clock still says "not live", and a long
// silence after the restart closes nothing.
TEST(WindowedAggregate, ARestoredReplayStaysOpenThroughSilence) {
  const auto dir = std::filesystem::temp_directory_path() /
                   StrCat("sm-idle-restore-replay-", ::getpid());
  std::filesystem::remove_all(dir);
  {
    Harness h({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 5'000,
              /*wall_clock_ms=*/kT0 + 3'600'000, dir.string());
    h.Pipe({.id = "a", .ts = kT0 + 30'000, .value = 4});
    ASSERT_TRUE(h.driver->Commit().ok());
    h.Reopen(kT0 + 3'700'000);
    for (int tick = 0; tick < 300; ++tick) ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
    EXPECT_TRUE(h.Read("o").empty());
    h.Pipe({.id = "b", .ts = kT0 + 59'000, .value = 1});  // not late
    ASSERT_TRUE(h.driver->EndOfInput().ok());
    std::vector<Result> out = h.Read("o");
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].count, 2u);
    EXPECT_EQ(h.driver->counters().late_dropped, 0u);
  }
  std::filesystem::remove_all(dir);
}

// Operator state written before the idle clock existed (version 1) is still read: stream
// time and the windows to close come back, the idle clock starts at the next record.
// An unknown version is DataLoss naming it.
TEST(WindowedAggregate, OperatorStateOfVersionOneIsReadAndUnknownVersionsAreRejected) {
  const auto dir = std::filesystem::temp_directory_path() /
                   StrCat("sm-idle-meta-v1-", ::getpid());
  std::filesystem::remove_all(dir);
  {
    Harness h({Tumbling("1m", 60'000, 0, "o")}, {"serviceId", "metricName"}, 5'000,
              /*wall_clock_ms=*/kT0 + 30'500, dir.string());
    h.Pipe({.id = "a", .ts = kT0 + 30'000, .value = 4});
    ASSERT_TRUE(h.driver->Commit().ok());
    auto* store = dynamic_cast<WindowStore*>(h.driver->GetStateStore("agg-store"));
    ASSERT_NE(store, nullptr);
    std::string meta;
    ASSERT_TRUE(*store->Fetch("", INT64_MAX, &meta));
    ASSERT_EQ(meta[0], 3);
    // Version 1: the same without the two idle-clock fields, the compaction boundary and
    // the pending stream-skew timestamp (bytes 9..40).
    std::string v1 = meta;
    v1[0] = 1;
    v1.erase(9, 32);
    ASSERT_TRUE(store->Put("", INT64_MAX, v1).ok());
    ASSERT_TRUE(store->Flush().ok());
    h.Reopen(kT0 + 31'000);
    ASSERT_NE(h.driver, nullptr);
    auto* agg = h.driver->FindProcessor<WindowedAggregateProcessor>();
    ASSERT_NE(agg, nullptr);
    EXPECT_EQ(agg->stream_time(), kT0 + 30'000);
    // No idle clock: silence closes nothing until a record is noted.
    for (int tick = 0; tick < 60; ++tick) ASSERT_TRUE(h.driver->AdvanceWallClock(1'000).ok());
    EXPECT_TRUE(h.Read("o").empty());
    h.Pipe({.id = "b", .ts = kT0 + 59'000, .value = 1});
    EXPECT_TRUE(h.Read("o").empty());
    ASSERT_TRUE(h.driver->EndOfInput().ok());
    std::vector<Result> out = h.Read("o");
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].sum, 5);

    store = dynamic_cast<WindowStore*>(h.driver->GetStateStore("agg-store"));
    ASSERT_TRUE(*store->Fetch("", INT64_MAX, &meta));
    meta[0] = 4;
    ASSERT_TRUE(store->Put("", INT64_MAX, meta).ok());
    ASSERT_TRUE(store->Flush().ok());
    h.driver.reset();
    TopologyTestDriver::Options o = h.options_;
    auto d = TopologyTestDriver::Create(h.topology_, o);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(std::string(Message(d.status())),
              "aggregate: store agg-store: operator state of unknown version 4 (written by a "
              "newer release?); the store must be rebuilt");
  }
  std::filesystem::remove_all(dir);
}

TEST(WindowedAggregate, IdlenessIsIgnoredWhileRecordsFlowOrWhenDisabled) {
  Harness busy({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 5'000);
  Harness off({Tumbling("1m", 60'000, 10'000, "o")}, {"serviceId", "metricName"}, 0);
  for (int tick = 0; tick < 100; ++tick) {
    // One record a second, all in the same minute's event time: never idle.
    busy.Pipe({.id = StrCat("e", tick), .ts = kT0 + 30'000, .value = 1});
    ASSERT_TRUE(busy.driver->AdvanceWallClock(1'000).ok());
    if (tick == 0) off.Pipe({.id = "a", .ts = kT0 + 30'000, .value = 1});
    ASSERT_TRUE(off.driver->AdvanceWallClock(1'000).ok());
  }
  EXPECT_TRUE(busy.Read("o").empty());
  EXPECT_TRUE(off.Read("o").empty());
}

// percentile_disc(q) of `values` as PostgreSQL computes it, by its definition: the first
// value, in sorted order, whose position k satisfies k >= q * n.
double PercentileDisc(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  for (size_t k = 1; k <= values.size(); ++k) {
    if (static_cast<double>(k) >= q * n) return values[k - 1];
  }
  return values.back();
}

// Windows of N - 1, N and N + 1 values (N = exact_quantiles_up_to, 100 by default), both
// within one pane (a 10 s window) and merged from six panes (a 1m window): up to N the
// quantiles are exactly percentile_disc's; at N + 1 they are t-digest estimates.
TEST(WindowedAggregate, ExactQuantilesUpToTheThresholdInPanesAndMergedWindows) {
  constexpr size_t kN = MetricStats::kDefaultExactUpTo;
  // Grace 1m: every service's values start again at T0.
  Harness h({Tumbling("10s", 10'000, 60'000, "o10"), Tumbling("1m", 60'000, 60'000, "o1m")});
  std::mt19937_64 rng(11);
  std::map<std::string, std::vector<double>> pane_values, window_values;
  int id = 0;
  for (size_t n : {kN - 1, kN, kN + 1}) {
    // One pane: n values in [T0, T0 + 10 s), with ties.
    const std::string one = StrCat("pane-", n);
    for (size_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(rng() % 40);
      pane_values[one].push_back(v);
      h.Pipe({.id = StrCat("e", id++), .ts = kT0 + static_cast<int64_t>(i * 90), .value = v,
              .service = one});
    }
    // Six panes of [T0, T0 + 1m): n values spread over them.
    const std::string six = StrCat("window-", n);
    for (size_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(rng() % 1000) / 8;
      window_values[six].push_back(v);
      h.Pipe({.id = StrCat("e", id++), .ts = kT0 + static_cast<int64_t>(i * 590), .value = v,
              .service = six});
    }
  }
  ASSERT_TRUE(h.driver->EndOfInput().ok());
  auto check = [&](const Result& r, const std::vector<double>& values) {
    ASSERT_EQ(r.count, values.size()) << r.service;
    for (auto [q, v] : {std::pair{0.5, r.p50}, {0.95, r.p95}, {0.99, r.p99}}) {
      const double exact = PercentileDisc(values, q);
      if (values.size() <= kN) {
        EXPECT_EQ(v, exact) << r.service << " q=" << q;
      } else {
        // Estimates: within one rank of percentile_disc here (n ~ compression).
        std::vector<double> sorted = values;
        std::sort(sorted.begin(), sorted.end());
        const size_t k = static_cast<size_t>(std::ceil(q * double(sorted.size())));
        EXPECT_GE(v, sorted[k >= 2 ? k - 2 : 0]) << r.service << " q=" << q;
        EXPECT_LE(v, sorted[std::min(k, sorted.size() - 1)]) << r.service << " q=" << q;
      }
    }
  };
  size_t checked = 0;
  for (const Result& r : h.Read("o10")) {
    if (r.start == kT0 && pane_values.contains(r.service)) {
      check(r, pane_values[r.service]);
      ++checked;
    }
  }
  for (const Result& r : h.Read("o1m")) {
    if (window_values.contains(r.service)) {
      check(r, window_values[r.service]);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6u);
}

// The deterministic-results promise (docs/SEMANTICS.md, "State and commits"). Before,
// serializing a pane at a commit merged its t-digest's buffer, so the same input gave
// quantiles (p99s up to ~6% apart) that depended on where commits fell: on the commit
// interval, on crashes and restores, on replays. One input — panes from a few values
// (exact) to several t-digest buffers' worth, records out of order so panes past their
// grace still take records for the 5m window — run with commits every record, every 10
// and every 10,000 records, and with crashes (no checkpoint, uncommitted work lost,
// state restored from the changelog) at several points, on in-memory and RocksDB
// stores: every output record is the same, byte for byte.
class DeterminismTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(2026);
    std::lognormal_distribution<double> latency(4.0, 0.6);
    for (int i = 0; i < 8'000; ++i) {
      const uint64_t pick = rng() % 100;
      const char* service = pick < 69 ? "heavy" : pick < 94 ? "medium" : pick < 99 ? "light" : "tiny";
      const int64_t ts = kT0 + i * 25 / 2 - static_cast<int64_t>(rng() % 12'000);
      events_.push_back(Ev{.id = StrCat("e", i), .ts = ts,
                           .value = std::round(latency(rng) * 100) / 100, .service = service}
                            .Json());
    }
  }

  Topology Build(StoreType store) {
    StreamsBuilder b;
    AggregateOptions options;
    options.compression = 50;  // a 400-value buffer: merged several times per heavy pane
    b.Stream("in", EventFormat::kJson)
        .GroupBy({"serviceId", "metricName"})
        .WindowedBy({Tumbling("1m", 60'000, 10'000, "o1m"), Tumbling("5m", 300'000, 10'000, "o5m"),
                     Hopping("1m-10s", 60'000, 10'000, 10'000, "oh")})
        .Aggregate(options, "agg", store)
        .ToWindowTopics();
    absl::StatusOr<Topology> t = b.Build();
    EXPECT_TRUE(t.ok()) << t.status();
    return *std::move(t);
  }

  // Every output record the committed transactions hold, in order, as bytes.
  std::vector<std::string> Run(StoreType store, uint64_t commit_every,
                               std::vector<size_t> crash_after = {}) {
    const Topology topology = Build(store);
    const auto dir = std::filesystem::temp_directory_path() /
                     StrCat("sm-determinism-", getpid());
    std::filesystem::remove_all(dir);
    InMemoryLog log;
    TaskConfig tc;
    tc.wall_clock = [] { return kT0 + 3'600'000; };
    tc.changelog = log.changelog_writer();
    tc.changelog_reader = log.changelog_reader();
    if (store == StoreType::kRocksDb) tc.state_dir = (dir / TaskId(0)).string();
    tc.checkpoint_every_changes = 500;
    size_t crash = 0;
    for (int incarnation = 0;; ++incarnation) {
      absl::StatusOr<std::unique_ptr<Task>> task = Task::Create(topology, tc, log.collector());
      EXPECT_TRUE(task.ok()) << task.status();
      if (!task.ok()) return {};
      int64_t next = 0;
      for (const InputOffset& o : (*task)->committed_offsets()) {
        if (o.topic == "in") next = o.next_offset;
      }
      uint64_t since_commit = 0;
      bool crashed = false;
      for (; next < static_cast<int64_t>(events_.size()); ++next) {
        EXPECT_TRUE((*task)
                        ->Process({.topic = "in", .offset = next, .value = events_[next]})
                        .ok());
        if (++since_commit == commit_every) {
          EXPECT_TRUE((*task)->Commit().ok());
          since_commit = 0;
        }
        if (crash < crash_after.size() && static_cast<size_t>(next) + 1 == crash_after[crash]) {
          ++crash;
          (*task)->CloseAsCrashed();
          log.AbortOpenTransaction();
          crashed = true;
          break;
        }
      }
      if (crashed) continue;
      EXPECT_TRUE((*task)->EndOfInput().ok());
      EXPECT_TRUE((*task)->Close().ok());
      EXPECT_EQ(crash, crash_after.size());
      break;
    }
    std::vector<std::string> out;
    for (const InMemoryLog::Output& o : log.Outputs()) {
      out.push_back(StrCat(o.record.topic, " ", o.record.key, " ", o.record.timestamp_ms, " ",
                           o.record.value));
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
    return out;
  }

  void ExpectSame(const std::vector<std::string>& want, const std::vector<std::string>& got,
                  std::string_view what) {
    ASSERT_EQ(want.size(), got.size()) << what;
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(want[i], got[i]) << what << ": record " << i;
  }

  std::vector<std::string> events_;
};

TEST_F(DeterminismTest, ResultsDoNotDependOnCommitsCrashesOrRestores) {
  const std::vector<std::string> every_record = Run(StoreType::kInMemory, 1);
  size_t results = 0;
  for (const std::string& r : every_record) results += r.rfind("o", 0) == 0;
  ASSERT_GT(results, 60u);
  ExpectSame(every_record, Run(StoreType::kInMemory, 10), "commits every 10 records");
  ExpectSame(every_record, Run(StoreType::kInMemory, 10'000), "commits every 10,000 records");
  ExpectSame(every_record, Run(StoreType::kInMemory, 10, {5, 1'234, 1'240, 4'567, 7'999}),
             "crashes, in-memory stores restored from the changelog");
  ExpectSame(every_record, Run(StoreType::kRocksDb, 7, {999, 3'001, 6'500}),
             "crashes, RocksDB stores restored from checkpoint and changelog");
}

}  // namespace
}  // namespace streammetrics
