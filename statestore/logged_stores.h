// The changelogging layer: wraps a KeyValueStore or WindowStore so that every change is
// appended to the store's changelog and reaches the wrapped (local) store only once the
// task's commit succeeded.
//
// Why staged. A change is applied to the local store after the commit that carries it
// is durable in the changelog (ApplyStaged, called by the task after its transaction
// committed). So the local store only ever holds committed changes — after a crash it
// is the state of some committed point plus, without a WAL, a prefix of later committed
// changes (RocksDB persists memtables in write order) — and replaying the changelog
// from a checkpoint taken at or before that point rebuilds the exact committed state
// without wiping the store (every change is a full value, so replaying one twice is
// harmless). Kafka Streams writes the local store first and so, under exactly-once,
// must wipe all state after a dirty shutdown.
//
// Reads see the store as the task's writes left it: staged changes over the local
// store. Staged changes are held in memory until the commit (the operators write once
// per dirty key per commit, so this is one commit's worth of dirty keys); reads that
// merge them allocate, which suits the engine (stores are read at restore, not per
// record).
//
// Thread safety: none; one task thread uses a store.
#ifndef STREAMMETRICS_STATESTORE_LOGGED_STORES_H_
#define STREAMMETRICS_STATESTORE_LOGGED_STORES_H_

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "statestore/changelog.h"
#include "statestore/key_value_store.h"
#include "statestore/window_store.h"

namespace streammetrics {

// The commit attempt that changes belong to; owned and advanced by the task.
struct CommitAttempt {
  uint64_t incarnation = 0;
  uint64_t sequence = 1;
};

// What the task needs of a changelogged store beside its KeyValueStore/WindowStore face.
class LoggedStore {
 public:
  virtual ~LoggedStore() = default;
  // The local store underneath.
  virtual StateStore& local() = 0;
  // After the commit that carried them succeeded: writes the staged changes to the
  // local store, in the order they were made, and clears them.
  virtual absl::Status ApplyStaged() = 0;
  // A failed commit: forgets the staged changes (they never happened).
  virtual void DiscardStaged() = 0;
  // Restore: applies committed changes read from the changelog to the local store, in
  // order (RocksDB: in one WriteBatch).
  virtual absl::Status ApplyRestored(std::span<const ChangeRecord> changes) = 0;
  // Changes appended to the changelog since the store was opened.
  virtual uint64_t changes_logged() const = 0;
};

// `writer` and `attempt` must outlive the store.
std::unique_ptr<KeyValueStore> NewLoggedKeyValueStore(std::unique_ptr<KeyValueStore> local,
                                                      ChangelogWriter* writer,
                                                      const CommitAttempt* attempt);
std::unique_ptr<WindowStore> NewLoggedWindowStore(std::unique_ptr<WindowStore> local,
                                                  ChangelogWriter* writer,
                                                  const CommitAttempt* attempt);

// The LoggedStore face of a store made by the functions above; nullptr for any other.
LoggedStore* AsLoggedStore(StateStore* store);

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_LOGGED_STORES_H_
