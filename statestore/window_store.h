// A byte-oriented store of windowed values: (key, window start in ms) -> value.
//
// Windows are epoch-aligned and identified by their start; the store knows nothing of
// their size. Retention is the caller's policy, applied with DeleteBefore().
#ifndef STREAMMETRICS_STATESTORE_WINDOW_STORE_H_
#define STREAMMETRICS_STATESTORE_WINDOW_STORE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "statestore/state_store.h"

namespace streammetrics {

class WindowStore : public StateStore {
 public:
  virtual absl::Status Put(std::string_view key, int64_t window_start,
                           std::string_view value) = 0;
  // Returns true and fills *value when (key, window_start) is present.
  virtual absl::StatusOr<bool> Fetch(std::string_view key, int64_t window_start,
                                     std::string* value) const = 0;
  virtual absl::Status Delete(std::string_view key, int64_t window_start) = 0;

  // Calls fn(window_start, value) for key's windows with start in [from, to), in
  // ascending start order. Stops early with fn's status when fn returns non-OK.
  using KeyVisitor = std::function<absl::Status(int64_t window_start, std::string_view value)>;
  virtual absl::Status FetchRange(std::string_view key, int64_t from, int64_t to,
                                  const KeyVisitor& fn) const = 0;

  // Calls fn(key, window_start, value) for every window with start in [from, to), in
  // ascending (start, key) order.
  using Visitor = std::function<absl::Status(std::string_view key, int64_t window_start,
                                             std::string_view value)>;
  virtual absl::Status FetchAll(int64_t from, int64_t to, const Visitor& fn) const = 0;

  // Drops every window whose start is < time (retention). Cheap: whole time segments
  // go at once.
  virtual absl::Status DeleteBefore(int64_t time) = 0;

  // Applies writes in order; RocksDB does it atomically, in one WriteBatch.
  virtual absl::Status Write(std::span<const StoreWrite> writes) {
    for (const StoreWrite& w : writes) {
      absl::Status s;
      switch (w.op) {
        case StoreWrite::Op::kPut:
          s = Put(w.key, w.window_start, w.value);
          break;
        case StoreWrite::Op::kDelete:
          s = Delete(w.key, w.window_start);
          break;
        case StoreWrite::Op::kDeleteBefore:
          s = DeleteBefore(w.window_start);
          break;
      }
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_WINDOW_STORE_H_
