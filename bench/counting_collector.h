// A record collector that counts what the benchmarks' tasks send and keeps nothing.
#ifndef STREAMMETRICS_BENCH_COUNTING_COLLECTOR_H_
#define STREAMMETRICS_BENCH_COUNTING_COLLECTOR_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "engine/record_collector.h"

namespace streammetrics {

class CountingCollector final : public RecordCollector {
 public:
  void Send(std::string_view, std::string_view, std::string_view value, int64_t,
            std::span<const Header>) override {
    ++records;
    bytes += value.size();
  }
  absl::Status Flush() override { return absl::OkStatus(); }
  uint64_t records = 0;
  uint64_t bytes = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_BENCH_COUNTING_COLLECTOR_H_
