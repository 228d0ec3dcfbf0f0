// RocksDB implementations of KeyValueStore and WindowStore: one RocksDB instance per
// store per task, under <state.dir>/<application.id>/<task>/<store>. RocksDB types never
// appear outside statestore/*.cc.
//
// Memory: every store of the process draws on one RocksDbResources — a shared block
// cache and a write-buffer manager charged to that cache — so RocksDB's memory is capped
// by one number however many tasks and stores there are (Kafka Streams needs a custom
// RocksDBConfigSetter for this). Memory ≈ budget + per-instance table-reader overhead.
//
// Window store layout: key = <8-byte big-endian window start with the sign bit flipped>
// <group key>. Time-first order makes retention one DeleteRange (a range tombstone,
// reclaimed by compaction) and restore a single ordered scan; a point Fetch is one Get.
// FetchRange(key, from, to) scans the time range [from, to) and filters by key: it costs
// O(entries in the range), which suits the engine (panes are point-fetched) but not a
// per-key scan over a long history.
//
// Durability: writes go to the memtable (no WAL: the changelog is the source of truth
// for recovery); Flush() persists memtables to SST files. Thread safety: one task thread
// uses a store; RocksDbResources may be shared across threads.
#ifndef STREAMMETRICS_STATESTORE_ROCKSDB_STORES_H_
#define STREAMMETRICS_STATESTORE_ROCKSDB_STORES_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "statestore/key_value_store.h"
#include "statestore/window_store.h"

namespace streammetrics {

struct RocksDbBudget {
  // Shared block cache, including memtables (charged through the write-buffer manager).
  // Default: 256 MiB.
  size_t cache_bytes = 256 << 20;
  // Part of cache_bytes that memtables of all stores together may use. Default: 64 MiB.
  size_t write_buffer_bytes = 64 << 20;
};

// Process-wide RocksDB resources: the shared cache and write-buffer manager.
class RocksDbResources {
 public:
  static std::shared_ptr<RocksDbResources> Create(RocksDbBudget budget);
  virtual ~RocksDbResources() = default;
  // Bytes in the shared cache now (blocks + charged memtables).
  virtual size_t CacheUsageBytes() const = 0;
  const RocksDbBudget& budget() const { return budget_; }

 protected:
  explicit RocksDbResources(RocksDbBudget budget) : budget_(budget) {}

 private:
  RocksDbBudget budget_;
};

// Opens (creating if missing) the store at `path`. Errors: Unavailable when the
// directory cannot be created or is locked by another process; DataLoss when RocksDB
// reports corruption (the caller wipes and restores from the changelog).
absl::StatusOr<std::unique_ptr<KeyValueStore>> OpenRocksDbKeyValueStore(
    std::string name, std::string path, std::shared_ptr<RocksDbResources> resources);
absl::StatusOr<std::unique_ptr<WindowStore>> OpenRocksDbWindowStore(
    std::string name, std::string path, std::shared_ptr<RocksDbResources> resources);

// Fault injection: closes `store`, a RocksDB store, as a kill -9 leaves it: the writes
// since its last Flush() are lost (the stores keep no WAL), flushed ones stay.
// InvalidArgument when `store` is not a RocksDB store.
absl::Status CloseRocksDbStoreAsCrashed(StateStore* store);

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_ROCKSDB_STORES_H_
