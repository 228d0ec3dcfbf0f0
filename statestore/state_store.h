// Base of all state stores. A store belongs to one task and is used by that task's
// thread only: no method is thread-safe unless it says so.
//
// Lifecycle:   Open --Flush()--> Open --Close()--> Closed
// Flush() makes every write so far durable in the store's backing medium (for the
// in-memory stores a no-op); Close() flushes and releases resources. After Close()
// every call returns FailedPrecondition.
#ifndef STREAMMETRICS_STATESTORE_STATE_STORE_H_
#define STREAMMETRICS_STATESTORE_STATE_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace streammetrics {

// One write of a batch (KeyValueStore::Write, WindowStore::Write).
struct StoreWrite {
  enum class Op : uint8_t { kPut, kDelete, kDeleteBefore };
  Op op = Op::kPut;
  std::string_view key;
  int64_t window_start = 0;  // window stores: the window; kDeleteBefore: the time
  std::string_view value;    // kPut
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  // Deterministic name from the topology; it names the changelog topic too.
  virtual std::string_view name() const = 0;
  virtual absl::Status Flush() = 0;
  virtual absl::Status Close() = 0;
  // Number of live entries (exact for in-memory stores, an estimate for RocksDB).
  virtual uint64_t ApproximateNumEntries() const = 0;
};

enum class StoreType { kInMemory, kRocksDb };

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_STATE_STORE_H_
