// The process-wide budget of the operators' write-back caches (window panes and the like
// kept in memory between commits), beside RocksDbResources' block cache and write
// buffers: together they cap the state's memory with a few numbers, however many tasks
// and keys there are (statestore.cache.max.bytes in Kafka Streams, which it does not
// share with RocksDB).
//
// Operators charge what they hold at each commit and, while the budget is exceeded,
// evict what they can re-read from their store (see WindowedAggregateProcessor). What
// cannot be evicted (state still taking records) stays, so `used` may exceed `limit`.
//
// Thread-safe: tasks on every thread share one.
#ifndef STREAMMETRICS_STATESTORE_CACHE_BUDGET_H_
#define STREAMMETRICS_STATESTORE_CACHE_BUDGET_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace streammetrics {

class CacheBudget {
 public:
  explicit CacheBudget(size_t limit_bytes) : limit_(static_cast<int64_t>(limit_bytes)) {}

  // Adds delta (negative: releases) to what is used.
  void Charge(int64_t delta) { used_.fetch_add(delta, std::memory_order_relaxed); }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_; }
  // Bytes over the limit now (0 when within it).
  int64_t excess() const {
    const int64_t over = used() - limit_;
    return over > 0 ? over : 0;
  }

 private:
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_CACHE_BUDGET_H_
