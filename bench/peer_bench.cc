// The measuring side of bench/peers/run.sh: the engine and Kafka Streams side by side on
// one real Kafka broker (scripts/kafka.sh). Each app runs as its own process; this tool
// fills the input, watches an app from outside the same way for both, and compares their
// results.
//
//   peer_bench topics  --bootstrap B --create NAME:PARTITIONS[,NAME:PARTITIONS...]
//   peer_bench fill    --bootstrap B --topic T --partitions P --events N
//                      [--compression lz4|snappy|zstd|none] [--event-rate R (20000)]
//       T (created with P partitions) filled with N generated events, as kafka_bench's
//       drain topic: P services, one a partition, event time R events a second starting
//       30 min ago, the generator's 1% invalid, 0.5% duplicate, 0.1% late events.
//   peer_bench watch   --bootstrap B --group G --topic T --pid PID [--members M (2)]
//                      [--timeout S (900)]
//       Waits until group G's committed offsets on T reach T's end and prints the drain:
//       from the first commit after the group settled (Stable, M members, each with
//       partitions: the joins and rebalances of the start are over) to the commit of the
//       last record, the records committed in between per second, and PID's CPU time
//       (utime + stime of /proc/PID/stat: every thread of the process) per record and in
//       cores; and the same from the first commit seen (offsets above 0) on. With
//       --broker-pid, the broker's CPU per record over the settled span too.
//   peer_bench latency --bootstrap B --input T --results R [--rate X (20000)]
//                      [--seconds S (70)] [--warmup W (20)] [--services N (6)]
//                      [--group G --partitions P [--members M (2)]]
//       Once group G (the app) is Stable with M members holding T's P partitions,
//       produces X events a second to T (event time = the wall clock when produced,
//       keyed by serviceId) for S seconds and follows R (read_committed); for each result
//       (a window of 1m-10s: end + 10 s grace) whose window could close after W seconds,
//       latency = when it became visible here minus window end + grace — the moment the
//       first event that can close it was produced. Prints p50/p99/max.
//   peer_bench compare --bootstrap B --a PREFIX --b PREFIX
//       Reads PREFIX + metrics-aggregated-{1m,5m,1m-10s} and PREFIX + metrics-dead-letter
//       of both and compares every window result: count, min, max exactly, sum to a
//       relative 1e-9 (summed in another order), p50/p95/p99 (two t-digests) by their
//       relative difference. Exit 1 when any result is missing on one side or count,
//       min, max or sum differ.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "apps/event_generator.h"
#include "bench/event_pool.h"
#include "engine/kafka/admin.h"
#include "engine/kafka/kafka_common.h"
#include "engine/kafka/producer.h"
#include "engine/kafka/topic_reader.h"
#include "engine/log.h"

namespace streammetrics::kafka {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using Flags = std::map<std::string, std::string>;

std::string Flag(const Flags& f, const std::string& name, const std::string& def = "") {
  auto it = f.find(name);
  return it == f.end() ? def : it->second;
}

int Topics(const Properties& props, const Flags& f) {
  std::vector<TopicSpec> specs;
  std::stringstream list(Flag(f, "create"));
  for (std::string item; std::getline(list, item, ',');) {
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "--create: NAME:PARTITIONS, not %s\n", item.c_str());
      return 2;
    }
    specs.push_back({.name = item.substr(0, colon), .partitions = std::atoi(item.c_str() + colon + 1)});
  }
  if (absl::Status s = CreateTopics(props, specs); !s.ok()) {
    std::fprintf(stderr, "creating topics: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

int Fill(const Properties& props, const Flags& f) {
  const std::string topic = Flag(f, "topic");
  const int partitions = std::atoi(Flag(f, "partitions", "12").c_str());
  const int64_t events = std::atoll(Flag(f, "events", "3000000").c_str());
  if (absl::Status s = CreateTopics(props, {{.name = topic, .partitions = partitions}}); !s.ok()) {
    std::fprintf(stderr, "creating %s: %s\n", topic.c_str(), std::string(s.message()).c_str());
    return 1;
  }
  Properties producer_props = props;
  producer_props.emplace_back("compression.type", Flag(f, "compression", "lz4"));
  producer_props.emplace_back("linger.ms", "20");
  auto producer = Producer::Create({.properties = producer_props});
  if (!producer.ok()) return 1;
  // One service a partition (keyed by serviceId, but evenly), the invalid events (no key)
  // round-robin, as kafka_bench's drain topic.
  EventPool pool(std::atof(Flag(f, "event-rate", "20000").c_str()), partitions);
  absl::flat_hash_map<std::string, int32_t> partition_of;
  std::string doc;
  int32_t keyless = 0;
  const auto start = Clock::now();
  for (int64_t i = 0; i < events; ++i) {
    const std::string_view key = pool.Next(&doc);
    int32_t partition = 0;
    if (key.empty()) {
      partition = keyless++ % partitions;
    } else {
      auto [it, added] = partition_of.try_emplace(std::string(key), 0);
      if (added) it->second = static_cast<int32_t>((partition_of.size() - 1) % partitions);
      partition = it->second;
    }
    (*producer)->Send(topic, partition, key, doc, 0, {});
    if (i % 100'000 == 99'999) {
      if (absl::Status s = (*producer)->Flush(); !s.ok()) {
        std::fprintf(stderr, "fill: %s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
  }
  if (absl::Status s = (*producer)->Flush(); !s.ok()) {
    std::fprintf(stderr, "fill: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("fill: %lld events into %s (%d partitions, %s) in %.1f s\n",
              static_cast<long long>(events), topic.c_str(), partitions,
              Flag(f, "compression", "lz4").c_str(),
              std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

// utime + stime of every thread of `pid`, in seconds; -1 when it is gone.
double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> v;
  for (std::string s; fields >> s;) v.push_back(s);
  if (v.size() < 13) return -1;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return (std::atof(v[14 - 3].c_str()) + std::atof(v[15 - 3].c_str())) / tick;
}

// Peak resident memory of `pid` (VmHWM), in MiB.
double PeakRssMiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024;
  }
  return -1;
}

// Group `group` is Stable with `members` members that hold `partitions` partitions in all.
bool GroupSettled(rd_kafka_t* rk, const std::string& group, int members, int partitions) {
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  const char* groups[] = {group.c_str()};
  rd_kafka_DescribeConsumerGroups(rk, groups, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 5'000);
  bool settled = false;
  if (ev != nullptr && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const rd_kafka_DescribeConsumerGroups_result_t* res = rd_kafka_event_DescribeConsumerGroups_result(ev);
    size_t n = 0;
    const rd_kafka_ConsumerGroupDescription_t** descs =
        res == nullptr ? nullptr : rd_kafka_DescribeConsumerGroups_result_groups(res, &n);
    if (n == 1 && rd_kafka_ConsumerGroupDescription_error(descs[0]) == nullptr &&
        rd_kafka_ConsumerGroupDescription_state(descs[0]) == RD_KAFKA_CONSUMER_GROUP_STATE_STABLE &&
        static_cast<int>(rd_kafka_ConsumerGroupDescription_member_count(descs[0])) == members) {
      int assigned = 0;
      bool each = true;
      for (int i = 0; i < members; ++i) {
        const rd_kafka_MemberDescription_t* m = rd_kafka_ConsumerGroupDescription_member(descs[0], i);
        const rd_kafka_topic_partition_list_t* parts =
            rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
        const int count = parts == nullptr ? 0 : parts->cnt;
        each = each && count > 0;
        assigned += count;
      }
      settled = each && assigned >= partitions;
    }
  }
  if (ev != nullptr) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  return settled;
}

int Watch(const Properties& props, const Flags& f) {
  const std::string group = Flag(f, "group"), topic = Flag(f, "topic");
  const int pid = std::atoi(Flag(f, "pid", "0").c_str());
  const double timeout_s = std::atof(Flag(f, "timeout", "900").c_str());
  const int members = std::atoi(Flag(f, "members", "2").c_str());
  const int broker_pid = std::atoi(Flag(f, "broker-pid", "0").c_str());
  Properties own = props;
  own.emplace_back("group.id", group);
  own.emplace_back("enable.auto.commit", "false");
  // OffsetFetch without require_stable: offsets of committed transactions only, and no
  // "unstable offset" errors while one is open.
  own.emplace_back("isolation.level", "read_uncommitted");
  own.emplace_back("log_level", "3");
  auto rk = NewClient(RD_KAFKA_CONSUMER, own);
  if (!rk.ok()) return 1;
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk->get(), topic.c_str(), nullptr);
  if (rd_kafka_metadata(rk->get(), 0, rkt, &md, 10'000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      md->topic_cnt != 1 || md->topics[0].partition_cnt <= 0) {
    std::fprintf(stderr, "watch: no metadata for %s\n", topic.c_str());
    return 1;
  }
  const int partitions = md->topics[0].partition_cnt;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  int64_t end = 0;
  for (int p = 0; p < partitions; ++p) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk->get(), topic.c_str(), p, &lo, &hi, 10'000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "watch: no end offset for %s [%d]\n", topic.c_str(), p);
      return 1;
    }
    end += hi;
  }
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  const auto committed = [&]() -> int64_t {
    for (int p = 0; p < partitions; ++p) list->elems[p].offset = RD_KAFKA_OFFSET_INVALID;
    if (rd_kafka_committed(rk->get(), list, 5'000) != RD_KAFKA_RESP_ERR_NO_ERROR) return -1;
    int64_t sum = 0;
    for (int p = 0; p < partitions; ++p) {
      if (list->elems[p].err == RD_KAFKA_RESP_ERR_NO_ERROR && list->elems[p].offset > 0) {
        sum += list->elems[p].offset;
      }
    }
    return sum;
  };
  const auto started = Clock::now();
  const double cpu_at_start = ProcessCpuSeconds(pid);
  // Two spans: from the first commit seen (offsets above 0), and from the first commit
  // after the group settled (--members members, every partition assigned): the steady
  // drain, without the joins and rebalances of the start.
  int64_t c0 = 0, cs = 0, c = 0;
  Clock::time_point t0, ts, t1;
  double cpu0 = 0, cpus = 0, cpu1 = 0, bcpus = 0, bcpu1 = 0;
  bool first = false, settled = false;
  int64_t at_settled = -1;
  double settled_after = 0;
  while (true) {
    c = committed();
    if (!settled && GroupSettled(rk->get(), group, members, partitions)) {
      settled = true;
      at_settled = std::max<int64_t>(c, 0);
      settled_after = std::chrono::duration<double>(Clock::now() - started).count();
    }
    const auto now = Clock::now();
    const double cpu = ProcessCpuSeconds(pid);
    if (cpu < 0) {
      std::fprintf(stderr, "watch: process %d is gone (%lld of %lld committed)\n", pid,
                   static_cast<long long>(c), static_cast<long long>(end));
      return 1;
    }
    if (!first && c > 0) {
      first = true;
      c0 = c;
      t0 = now;
      cpu0 = cpu;
    }
    if (settled && at_settled >= 0 && c > at_settled) {
      at_settled = -1;
      cs = c;
      ts = now;
      cpus = cpu;
      if (broker_pid > 0) bcpus = ProcessCpuSeconds(broker_pid);
    }
    if (c >= end) {
      t1 = now;
      cpu1 = cpu;
      if (broker_pid > 0) bcpu1 = ProcessCpuSeconds(broker_pid);
      break;
    }
    if (std::chrono::duration<double>(now - started).count() > timeout_s) {
      std::fprintf(stderr, "watch: %lld of %lld committed after %.0f s\n", static_cast<long long>(c),
                   static_cast<long long>(end), timeout_s);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  rd_kafka_topic_partition_list_destroy(list);
  if (ts == Clock::time_point{}) {
    std::fprintf(stderr, "watch: the group did not settle before the end (%.0f s)\n", settled_after);
    ts = t0, cs = c0, cpus = cpu0;
  }
  const double s = std::chrono::duration<double>(t1 - ts).count();
  const double n = static_cast<double>(end - cs);
  const double all_s = std::chrono::duration<double>(t1 - t0).count();
  const double all_n = static_cast<double>(end - c0);
  // One line of key=value for run.sh: the steady drain, then the whole one.
  std::printf("group=%s events=%lld settled_at=%lld seconds=%.3f events_per_s=%.0f "
              "cpu_us_per_event=%.2f cores=%.2f events_per_s_per_core=%.0f "
              "whole_from=%lld whole_seconds=%.3f whole_events_per_s=%.0f whole_cpu_us_per_event=%.2f "
              "cpu_total_s=%.1f peak_rss_mib=%.0f broker_cpu_us_per_event=%.2f\n",
              group.c_str(), static_cast<long long>(end), static_cast<long long>(cs), s, n / s,
              (cpu1 - cpus) * 1e6 / n, (cpu1 - cpus) / s, n / (cpu1 - cpus),
              static_cast<long long>(c0), all_s, all_n / all_s, (cpu1 - cpu0) * 1e6 / all_n,
              cpu1 - cpu_at_start, PeakRssMiB(pid), (bcpu1 - bcpus) * 1e6 / n);
  return 0;
}

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// The number after "name": in a flat JSON object; NaN when absent.
double NumberField(std::string_view json, std::string_view name) {
  const std::string pattern = "\"" + std::string(name) + "\":";
  const size_t at = json.find(pattern);
  if (at == std::string_view::npos) return std::nan("");
  const char* begin = json.data() + at + pattern.size();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  return end == begin ? std::nan("") : v;
}

std::string StringField(std::string_view json, std::string_view name) {
  const std::string pattern = "\"" + std::string(name) + "\":\"";
  const size_t at = json.find(pattern);
  if (at == std::string_view::npos) return {};
  const size_t begin = at + pattern.size();
  const size_t end = json.find('"', begin);
  return std::string(json.substr(begin, end - begin));
}

int Latency(const Properties& props, const Flags& f) {
  const std::string input = Flag(f, "input"), results = Flag(f, "results");
  const double rate = std::atof(Flag(f, "rate", "20000").c_str());
  const double seconds = std::atof(Flag(f, "seconds", "70").c_str());
  const double warmup = std::atof(Flag(f, "warmup", "20").c_str());
  const int services = std::atoi(Flag(f, "services", "6").c_str());
  const int64_t grace_ms = 10'000;
  auto follower = TopicFollower::Create(props, results, /*from_start=*/false);
  if (!follower.ok()) {
    std::fprintf(stderr, "latency: %s\n", std::string(follower.status().message()).c_str());
    return 1;
  }
  (*follower)->Poll(1'000);  // assigned, at the end
  if (const std::string group = Flag(f, "group"); !group.empty()) {
    // The app's group settled first (its joins and first assignment are not measured).
    auto rk = NewClient(RD_KAFKA_CONSUMER, {props[0], {"group.id", group + "-latency-probe"},
                                            {"log_level", "3"}});
    if (!rk.ok()) return 1;
    const int partitions = std::atoi(Flag(f, "partitions", "1").c_str());
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (!GroupSettled(rk->get(), group, std::atoi(Flag(f, "members", "2").c_str()), partitions)) {
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "latency: group %s did not settle in 120 s\n", group.c_str());
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> produced{0};
  const int64_t start_ms = NowMs();
  std::thread feeder([&] {
    Properties pp = props;
    pp.emplace_back("linger.ms", "5");
    auto producer = Producer::Create({.properties = pp});
    if (!producer.ok()) return;
    GeneratorOptions go;
    go.services = services;
    go.start_ms = NowMs();
    go.events_per_second = rate;
    go.jitter_ms = 0;      // event time = when it is produced
    go.late_fraction = 0;  // late events are stamped 15 min back
    EventGenerator generator(go);
    std::string doc;
    const auto start = Clock::now();
    uint64_t n = 0;
    while (!stop.load()) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      for (const auto due = static_cast<uint64_t>(elapsed * rate); n < due; ++n) {
        doc.clear();
        generator.Next(&doc);
        (*producer)->Send(input, -1, GeneratedServiceId(doc), doc, 0, {});
      }
      produced = n;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    (void)(*producer)->Flush();
  });
  std::vector<double> latencies;
  size_t skipped = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    for (const OutputRecord& r : (*follower)->Poll(5)) {
      const int64_t now = NowMs();
      const int64_t closable = r.timestamp_ms + 1 + grace_ms;  // timestamp: window end - 1
      if (closable < start_ms + static_cast<int64_t>(warmup * 1000)) {
        ++skipped;
        continue;
      }
      latencies.push_back(static_cast<double>(now - closable));
    }
  }
  stop = true;
  feeder.join();
  std::sort(latencies.begin(), latencies.end());
  std::printf("results=%s produced=%llu rate=%.0f measured=%zu skipped_warmup=%zu p50_ms=%.0f "
              "p99_ms=%.0f max_ms=%.0f\n",
              results.c_str(), static_cast<unsigned long long>(produced.load()), rate,
              latencies.size(), skipped, Percentile(latencies, 0.5), Percentile(latencies, 0.99),
              latencies.empty() ? 0.0 : latencies.back());
  return latencies.empty() ? 1 : 0;
}

int Compare(const Properties& props, const Flags& f) {
  const std::string a = Flag(f, "a"), b = Flag(f, "b");
  bool ok = true;
  for (const char* window : {"1m", "5m", "1m-10s"}) {
    using Key = std::tuple<std::string, std::string, int64_t>;  // service, metric, start
    std::map<Key, std::string> side[2];
    for (int i = 0; i < 2; ++i) {
      const std::string topic = (i == 0 ? a : b) + "metrics-aggregated-" + window;
      auto records = ReadTopic(props, topic);
      if (!records.ok()) {
        std::fprintf(stderr, "compare: %s: %s\n", topic.c_str(),
                     std::string(records.status().message()).c_str());
        return 1;
      }
      for (OutputRecord& r : *records) {
        Key k{StringField(r.value, "serviceId"), StringField(r.value, "metricName"),
              static_cast<int64_t>(NumberField(r.value, "windowStart"))};
        if (!side[i].emplace(k, std::move(r.value)).second) {
          std::printf("  %s: %s has two results for one window\n", window, topic.c_str());
          ok = false;
        }
      }
    }
    size_t both = 0, only_a = 0, only_b = 0, exact = 0, sum_bits = 0, differ = 0;
    std::vector<double> rel[3];
    for (const auto& [k, va] : side[0]) {
      auto it = side[1].find(k);
      if (it == side[1].end()) {
        ++only_a;
        continue;
      }
      ++both;
      const std::string& vb = it->second;
      bool same = true;
      for (const char* field : {"count", "min", "max"}) {
        if (NumberField(va, field) != NumberField(vb, field)) same = false;
      }
      const double sa = NumberField(va, "sum"), sb = NumberField(vb, "sum");
      if (std::fabs(sa - sb) > 1e-9 * std::max(std::fabs(sa), std::fabs(sb))) same = false;
      if (sa == sb) ++sum_bits;
      if (same) {
        ++exact;
      } else if (++differ <= 3) {
        std::printf("  %s differs:\n    %s\n    %s\n", window, va.c_str(), vb.c_str());
      }
      int q = 0;
      for (const char* field : {"p50", "p95", "p99"}) {
        const double x = NumberField(va, field), y = NumberField(vb, field);
        rel[q++].push_back(std::fabs(x - y) / std::max(std::fabs(x), 1e-12));
      }
    }
    for (const auto& [k, vb] : side[1]) only_b += side[0].count(k) == 0;
    for (auto& r : rel) std::sort(r.begin(), r.end());
    std::printf("%-6s results %zu / %zu: %zu in both, %zu only in %s, %zu only in %s; "
                "count/min/max/sum equal in %zu (sum bit for bit in %zu), differ in %zu; "
                "relative difference p50 median %.4f max %.4f, p95 median %.4f max %.4f, "
                "p99 median %.4f max %.4f\n",
                window, side[0].size(), side[1].size(), both, only_a, a.c_str(), only_b,
                b.c_str(), exact, sum_bits, differ, Percentile(rel[0], 0.5),
                rel[0].empty() ? 0 : rel[0].back(), Percentile(rel[1], 0.5),
                rel[1].empty() ? 0 : rel[1].back(), Percentile(rel[2], 0.5),
                rel[2].empty() ? 0 : rel[2].back());
    if (only_a || only_b || differ || both == 0) ok = false;
  }
  for (const std::string& prefix : {a, b}) {
    auto records = ReadTopic(props, prefix + "metrics-dead-letter");
    if (!records.ok()) return 1;
    std::map<std::string, int64_t> reasons;
    for (const OutputRecord& r : *records) ++reasons[r.Header("dlq.reason").value_or("?")];
    std::string line;
    for (const auto& [reason, n] : reasons) line += " " + reason + "=" + std::to_string(n);
    std::printf("dead letters %s: %zu (%s )\n", (prefix + "metrics-dead-letter").c_str(),
                records->size(), line.c_str());
  }
  std::printf("compare: %s\n", ok ? "the same results" : "DIFFERENT results");
  return ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: peer_bench topics|fill|watch|latency|compare --bootstrap B ...\n");
    return 2;
  }
  const std::string command = argv[1];
  Flags f;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) {
      std::fprintf(stderr, "unexpected %s\n", argv[i]);
      return 2;
    }
    f[argv[i] + 2] = argv[i + 1];
  }
  SetMinLogLevel(LogLevel::kWarning);
  const Properties props = {{"bootstrap.servers", Flag(f, "bootstrap", "127.0.0.1:9092")}};
  if (command == "topics") return Topics(props, f);
  if (command == "fill") return Fill(props, f);
  if (command == "watch") return Watch(props, f);
  if (command == "latency") return Latency(props, f);
  if (command == "compare") return Compare(props, f);
  std::fprintf(stderr, "unknown command %s\n", command.c_str());
  return 2;
}

}  // namespace
}  // namespace streammetrics::kafka

int main(int argc, char** argv) { return streammetrics::kafka::Main(argc, argv); }
