// A byte-oriented key-value store. Keys are ordered bytewise (memcmp order).
#ifndef STREAMMETRICS_STATESTORE_KEY_VALUE_STORE_H_
#define STREAMMETRICS_STATESTORE_KEY_VALUE_STORE_H_

#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "statestore/state_store.h"

namespace streammetrics {

class KeyValueStore : public StateStore {
 public:
  // Stores value under key, replacing any previous value.
  virtual absl::Status Put(std::string_view key, std::string_view value) = 0;
  // Returns true and fills *value when key is present; false when absent.
  virtual absl::StatusOr<bool> Get(std::string_view key, std::string* value) const = 0;
  // Removes key; deleting an absent key is OK.
  virtual absl::Status Delete(std::string_view key) = 0;
  // Calls fn for every key in [from, to) in key order (to empty = unbounded). Stops
  // early, returning fn's status, when fn returns non-OK.
  using Visitor = std::function<absl::Status(std::string_view key, std::string_view value)>;
  virtual absl::Status Range(std::string_view from, std::string_view to,
                             const Visitor& fn) const = 0;

  // Applies kPut/kDelete writes in order (window_start ignored); RocksDB does it
  // atomically, in one WriteBatch. kDeleteBefore is InvalidArgument, checked first.
  virtual absl::Status Write(std::span<const StoreWrite> writes) {
    for (const StoreWrite& w : writes) {
      if (w.op == StoreWrite::Op::kDeleteBefore) {
        return absl::InvalidArgumentError("store " + std::string(name()) +
                                          ": a key-value store has no DeleteBefore");
      }
    }
    for (const StoreWrite& w : writes) {
      absl::Status s = w.op == StoreWrite::Op::kPut ? Put(w.key, w.value) : Delete(w.key);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_KEY_VALUE_STORE_H_
