#include "absl/container/btree_map.h"
#include "statestore/in_memory_stores.h"

namespace streammetrics {
namespace {

absl::Status ClosedError(std::string_view name) {
  return absl::FailedPreconditionError(std::string("store ") + std::string(name) +
                                       " is closed");
}

class InMemoryKeyValueStore final : public KeyValueStore {
 public:
  explicit InMemoryKeyValueStore(std::string name) : name_(std::move(name)) {}

  std::string_view name() const override { return name_; }
  absl::Status Flush() override { return open_ ? absl::OkStatus() : ClosedError(name_); }
  absl::Status Close() override {
    open_ = false;
    map_.clear();
    return absl::OkStatus();
  }
  uint64_t ApproximateNumEntries() const override { return map_.size(); }

  absl::Status Put(std::string_view key, std::string_view value) override {
    if (!open_) return ClosedError(name_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      map_.emplace(std::string(key), std::string(value));
    } else {
      it->second.assign(value.data(), value.size());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Get(std::string_view key, std::string* value) const override {
    if (!open_) return ClosedError(name_);
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    value->assign(it->second);
    return true;
  }

  absl::Status Delete(std::string_view key) override {
    if (!open_) return ClosedError(name_);
    auto it = map_.find(key);
    if (it != map_.end()) map_.erase(it);
    return absl::OkStatus();
  }

  absl::Status Range(std::string_view from, std::string_view to,
                     const Visitor& fn) const override {
    if (!open_) return ClosedError(name_);
    for (auto it = map_.lower_bound(from); it != map_.end(); ++it) {
      if (!to.empty() && std::string_view(it->first) >= to) break;
      absl::Status s = fn(it->first, it->second);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::string name_;
  bool open_ = true;
  absl::btree_map<std::string, std::string, std::less<>> map_;
};

}  // namespace

std::unique_ptr<KeyValueStore> NewInMemoryKeyValueStore(std::string name) {
  return std::make_unique<InMemoryKeyValueStore>(std::move(name));
}

}  // namespace streammetrics
