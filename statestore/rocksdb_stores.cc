// RocksDB-backed KeyValueStore and WindowStore. See rocksdb_stores.h for the contract
// (shared memory budget, time-first window layout, no WAL, error mapping).
#include "statestore/rocksdb_stores.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/status.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "rocksdb/write_buffer_manager.h"
#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

// LRU cache shards of at least 4 MiB (at most 64 shards). The write-buffer manager charges
// memtables as pinned 256 KiB entries spread over the shards; RocksDB's default 512 KiB
// shards would let a shard holding a few of them overflow its share, and the cache its
// capacity, even though the total is within budget.
int ShardBits(size_t cache_bytes) {
  int bits = 0;
  while (bits < 6 && (cache_bytes >> (bits + 1)) >= (size_t{4} << 20)) ++bits;
  return bits;
}

class RocksDbResourcesImpl final : public RocksDbResources {
 public:
  explicit RocksDbResourcesImpl(RocksDbBudget budget)
      : RocksDbResources(budget),
        // Not strict: a full cache evicts rather than failing reads. Besides blocks held
        // by live iterators, only the memtable reservations are pinned.
        cache_(rocksdb::NewLRUCache(budget.cache_bytes, ShardBits(budget.cache_bytes))),
        write_buffers_(std::make_shared<rocksdb::WriteBufferManager>(
            budget.write_buffer_bytes, cache_, /*allow_stall=*/false)) {}

  size_t CacheUsageBytes() const override { return cache_->GetUsage(); }

  // Per-store memtable size: half the shared write budget (within [256 KiB, 64 MiB]).
  // The write-buffer manager triggers flushes on the total, but without this every store
  // would get RocksDB's 64 MiB default: one hot store's memtables (mutable + immutable
  // being flushed) could then outgrow the whole budget, and every non-empty memtable
  // would hold 1 MiB arena blocks (the arena block is write_buffer_size / 8, max 1 MiB).
  size_t WriteBufferSize() const {
    return std::clamp<size_t>(budget().write_buffer_bytes / 2, size_t{256} << 10,
                              size_t{64} << 20);
  }

  const std::shared_ptr<rocksdb::Cache>& cache() const { return cache_; }
  const std::shared_ptr<rocksdb::WriteBufferManager>& write_buffers() const {
    return write_buffers_;
  }

 private:
  std::shared_ptr<rocksdb::Cache> cache_;
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers_;
};

// One RocksDB instance, its open/closed state and the rocksdb::Status -> absl::Status
// boundary. The two stores below add their key layouts on top.
class RocksDbInstance {
 public:
  RocksDbInstance(std::string name, std::string path,
                  std::shared_ptr<RocksDbResourcesImpl> resources)
      : name_(std::move(name)), path_(std::move(path)), resources_(std::move(resources)) {
    write_options_.disableWAL = true;  // the changelog is the source of truth
  }
  RocksDbInstance(const RocksDbInstance&) = delete;
  RocksDbInstance& operator=(const RocksDbInstance&) = delete;
  ~RocksDbInstance() {
    // Without a WAL, unflushed memtables would be lost; Close() persists them.
    if (db_ != nullptr) Close().IgnoreError();
  }

  absl::Status Open() {
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    if (ec) {
      return absl::UnavailableError(Prefix("create directory") + ec.message());
    }
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = resources_->cache();
    // Index and filter blocks live in (and are charged to) the shared cache.
    table.cache_index_and_filter_blocks = true;
    table.cache_index_and_filter_blocks_with_high_priority = true;
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    rocksdb::Options options;
    options.create_if_missing = true;
    options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    options.write_buffer_manager = resources_->write_buffers();
    options.write_buffer_size = resources_->WriteBufferSize();
    // RocksDB starts max_file_opening_threads (16) threads to open a DB's table files on
    // every open, files or not: 13–17 → 9–10 ms a fresh open with one (20 opens, this VM),
    // and a task opens one DB per store in the rebalance callback (kafka_bench's drain, 24
    // tasks of two stores opened one after the other, 3 runs each: 45–54 → 33–47 ms a
    // task). A task's
    // store has tens of files at most; one thread opens them (footers only: index and
    // filter blocks load on demand, into the cache).
    options.max_file_opening_threads = 1;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, path_, &db);
    if (!s.ok()) return Convert("open", s);
    db_.reset(db);
    return absl::OkStatus();
  }

  std::string_view name() const { return name_; }

  absl::Status CheckOpen() const {
    if (db_ != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError("store " + name_ + " is closed");
  }

  absl::Status Flush() {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return Convert("flush", db_->Flush(fo));
  }

  // Idempotent, like the in-memory stores: closing a closed store is OK.
  absl::Status Close() {
    if (db_ == nullptr) return absl::OkStatus();
    rocksdb::FlushOptions fo;
    fo.wait = true;
    absl::Status result = Convert("flush", db_->Flush(fo));
    absl::Status closed = Convert("close", db_->Close());
    db_.reset();  // releases the LOCK file
    if (result.ok()) result = closed;
    return result;
  }

  // As a crash leaves the store: memtables not flushed are dropped.
  absl::Status CloseAsCrashed() {
    if (db_ == nullptr) return absl::OkStatus();
    absl::Status s =
        Convert("set options", db_->SetDBOptions({{"avoid_flush_during_shutdown", "true"}}));
    absl::Status closed = Convert("close", db_->Close());
    db_.reset();
    return s.ok() ? closed : s;
  }

  uint64_t ApproximateNumEntries() const {
    uint64_t n = 0;
    if (db_ == nullptr || !db_->GetIntProperty("rocksdb.estimate-num-keys", &n)) return 0;
    return n;
  }

  absl::Status Put(std::string_view key, std::string_view value) {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return Convert("put", db_->Put(write_options_, ToSlice(key), ToSlice(value)));
  }

  absl::StatusOr<bool> Get(std::string_view key, std::string* value) const {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    rocksdb::PinnableSlice pinned;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), ToSlice(key), &pinned);
    if (s.IsNotFound()) return false;
    if (!s.ok()) return Convert("get", s);
    value->assign(pinned.data(), pinned.size());
    return true;
  }

  absl::Status Delete(std::string_view key) {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return Convert("delete", db_->Delete(write_options_, ToSlice(key)));
  }

  // Applies a batch atomically.
  absl::Status Write(rocksdb::WriteBatch* batch) {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return Convert("write", db_->Write(write_options_, batch));
  }

  // Deletes [begin, end) with one range tombstone. Requires begin < end.
  absl::Status DeleteRange(std::string_view begin, std::string_view end) {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return Convert("delete range", db_->DeleteRange(write_options_, db_->DefaultColumnFamily(),
                                                    ToSlice(begin), ToSlice(end)));
  }

  // Calls fn(key, value) for keys in [from, to) in order (to empty = unbounded); stops
  // with fn's status when it is not OK.
  template <typename Fn>
  absl::Status Scan(std::string_view from, std::string_view to, const Fn& fn) const {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (!to.empty() && from >= to) return absl::OkStatus();
    rocksdb::Slice lower = ToSlice(from);
    rocksdb::Slice upper = ToSlice(to);
    rocksdb::ReadOptions ro;
    ro.iterate_lower_bound = &lower;
    if (!to.empty()) ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    for (it->Seek(lower); it->Valid(); it->Next()) {
      if (absl::Status s = fn(ToView(it->key()), ToView(it->value())); !s.ok()) return s;
    }
    return Convert("scan", it->status());
  }

  absl::Status Convert(std::string_view op, const rocksdb::Status& s) const {
    if (s.ok()) return absl::OkStatus();
    std::string msg = Prefix(op) + s.ToString();
    if (s.IsCorruption()) return absl::DataLossError(msg);
    if (s.IsIOError() || s.IsBusy() || s.IsTryAgain() || s.IsLockLimit()) {
      return absl::UnavailableError(msg);
    }
    return absl::InternalError(msg);
  }

 private:
  std::string Prefix(std::string_view op) const {
    return "rocksdb store " + name_ + " at " + path_ + ": " + std::string(op) + ": ";
  }

  std::string name_;
  std::string path_;
  std::shared_ptr<RocksDbResourcesImpl> resources_;
  rocksdb::WriteOptions write_options_;
  std::unique_ptr<rocksdb::DB> db_;
};

class RocksDbKeyValueStore final : public KeyValueStore {
 public:
  explicit RocksDbKeyValueStore(std::unique_ptr<RocksDbInstance> db) : db_(std::move(db)) {}
  RocksDbInstance& instance() { return *db_; }

  std::string_view name() const override { return db_->name(); }
  absl::Status Flush() override { return db_->Flush(); }
  absl::Status Close() override { return db_->Close(); }
  uint64_t ApproximateNumEntries() const override { return db_->ApproximateNumEntries(); }

  absl::Status Put(std::string_view key, std::string_view value) override {
    return db_->Put(key, value);
  }
  absl::StatusOr<bool> Get(std::string_view key, std::string* value) const override {
    return db_->Get(key, value);
  }
  absl::Status Delete(std::string_view key) override { return db_->Delete(key); }
  absl::Status Write(std::span<const StoreWrite> writes) override {
    rocksdb::WriteBatch batch;
    for (const StoreWrite& w : writes) {
      rocksdb::Status s;
      switch (w.op) {
        case StoreWrite::Op::kPut:
          s = batch.Put(ToSlice(w.key), ToSlice(w.value));
          break;
        case StoreWrite::Op::kDelete:
          s = batch.Delete(ToSlice(w.key));
          break;
        case StoreWrite::Op::kDeleteBefore:
          return absl::InvalidArgumentError("store " + std::string(name()) +
                                            ": a key-value store has no DeleteBefore");
      }
      if (!s.ok()) return db_->Convert("batch", s);
    }
    return db_->Write(&batch);
  }
  absl::Status Range(std::string_view from, std::string_view to,
                     const Visitor& fn) const override {
    return db_->Scan(from, to, fn);
  }

 private:
  std::unique_ptr<RocksDbInstance> db_;
};

// Window key: the window start, order-preserving (statestore/fixed_encoding.h), then the
// group key.
constexpr size_t kStartBytes = kOrderedInt64Bytes;

std::string EncodeStart(int64_t start) {
  std::string out;
  out.reserve(kStartBytes);
  AppendOrderedInt64(start, &out);
  return out;
}

std::string EncodeWindowKey(std::string_view key, int64_t start) {
  std::string out;
  out.reserve(kStartBytes + key.size());
  AppendOrderedInt64(start, &out);
  out.append(key.data(), key.size());
  return out;
}

int64_t DecodeStart(std::string_view encoded) { return DecodeOrderedInt64(encoded); }

class RocksDbWindowStore final : public WindowStore {
 public:
  explicit RocksDbWindowStore(std::unique_ptr<RocksDbInstance> db) : db_(std::move(db)) {}
  RocksDbInstance& instance() { return *db_; }

  std::string_view name() const override { return db_->name(); }
  absl::Status Flush() override { return db_->Flush(); }
  absl::Status Close() override { return db_->Close(); }
  uint64_t ApproximateNumEntries() const override { return db_->ApproximateNumEntries(); }

  absl::Status Put(std::string_view key, int64_t window_start,
                   std::string_view value) override {
    return db_->Put(EncodeWindowKey(key, window_start), value);
  }
  absl::StatusOr<bool> Fetch(std::string_view key, int64_t window_start,
                             std::string* value) const override {
    return db_->Get(EncodeWindowKey(key, window_start), value);
  }
  absl::Status Delete(std::string_view key, int64_t window_start) override {
    return db_->Delete(EncodeWindowKey(key, window_start));
  }

  // Scans every window in [from, to) and keeps `key`'s: O(entries in the time range).
  absl::Status FetchRange(std::string_view key, int64_t from, int64_t to,
                          const KeyVisitor& fn) const override {
    return ScanTime(from, to, [&](std::string_view k, int64_t start, std::string_view v) {
      return k == key ? fn(start, v) : absl::OkStatus();
    });
  }

  absl::Status FetchAll(int64_t from, int64_t to, const Visitor& fn) const override {
    return ScanTime(from, to, fn);
  }

  absl::Status DeleteBefore(int64_t time) override {
    if (absl::Status s = db_->CheckOpen(); !s.ok()) return s;
    if (time == INT64_MIN) return absl::OkStatus();  // empty range
    return db_->DeleteRange(EncodeStart(INT64_MIN), EncodeStart(time));
  }

  absl::Status Write(std::span<const StoreWrite> writes) override {
    rocksdb::WriteBatch batch;
    std::string key;
    for (const StoreWrite& w : writes) {
      rocksdb::Status s;
      if (w.op == StoreWrite::Op::kDeleteBefore) {
        if (w.window_start == INT64_MIN) continue;  // empty range
        s = batch.DeleteRange(ToSlice(EncodeStart(INT64_MIN)), ToSlice(EncodeStart(w.window_start)));
      } else {
        key.clear();
        AppendOrderedInt64(w.window_start, &key);
        key.append(w.key.data(), w.key.size());
        s = w.op == StoreWrite::Op::kPut ? batch.Put(ToSlice(key), ToSlice(w.value))
                                         : batch.Delete(ToSlice(key));
      }
      if (!s.ok()) return db_->Convert("batch", s);
    }
    return db_->Write(&batch);
  }

 private:
  // One ordered scan of starts in [from, to): (start, key) order.
  template <typename Fn>
  absl::Status ScanTime(int64_t from, int64_t to, const Fn& fn) const {
    if (absl::Status s = db_->CheckOpen(); !s.ok()) return s;
    if (from >= to) return absl::OkStatus();
    // `to` > from >= INT64_MIN, so EncodeStart(to) is a non-empty, finite upper bound.
    return db_->Scan(EncodeStart(from), EncodeStart(to),
                     [&](std::string_view k, std::string_view v) -> absl::Status {
                       if (k.size() < kStartBytes) {
                         return absl::DataLossError("rocksdb store " + std::string(name()) +
                                                    ": malformed window key");
                       }
                       return fn(k.substr(kStartBytes), DecodeStart(k), v);
                     });
  }

  std::unique_ptr<RocksDbInstance> db_;
};

absl::StatusOr<std::unique_ptr<RocksDbInstance>> OpenInstance(
    std::string name, std::string path, std::shared_ptr<RocksDbResources> resources) {
  auto impl = std::dynamic_pointer_cast<RocksDbResourcesImpl>(resources);
  if (impl == nullptr) {
    return absl::InvalidArgumentError("rocksdb store " + name + " at " + path +
                                      ": resources must come from RocksDbResources::Create");
  }
  auto db = std::make_unique<RocksDbInstance>(std::move(name), std::move(path), std::move(impl));
  if (absl::Status s = db->Open(); !s.ok()) return s;
  return db;
}

}  // namespace

std::shared_ptr<RocksDbResources> RocksDbResources::Create(RocksDbBudget budget) {
  return std::make_shared<RocksDbResourcesImpl>(budget);
}

absl::StatusOr<std::unique_ptr<KeyValueStore>> OpenRocksDbKeyValueStore(
    std::string name, std::string path, std::shared_ptr<RocksDbResources> resources) {
  auto db = OpenInstance(std::move(name), std::move(path), std::move(resources));
  if (!db.ok()) return db.status();
  return std::make_unique<RocksDbKeyValueStore>(*std::move(db));
}

absl::StatusOr<std::unique_ptr<WindowStore>> OpenRocksDbWindowStore(
    std::string name, std::string path, std::shared_ptr<RocksDbResources> resources) {
  auto db = OpenInstance(std::move(name), std::move(path), std::move(resources));
  if (!db.ok()) return db.status();
  return std::make_unique<RocksDbWindowStore>(*std::move(db));
}

absl::Status CloseRocksDbStoreAsCrashed(StateStore* store) {
  if (auto* kv = dynamic_cast<RocksDbKeyValueStore*>(store)) return kv->instance().CloseAsCrashed();
  if (auto* w = dynamic_cast<RocksDbWindowStore*>(store)) return w->instance().CloseAsCrashed();
  return absl::InvalidArgumentError("not a RocksDB store");
}

}  // namespace streammetrics
