#include "absl/container/btree_map.h"
#include "statestore/in_memory_stores.h"

namespace streammetrics {
namespace {

// Segmented by window start: each start owns an ordered map of keys, so retention
// (DeleteBefore) drops whole segments and FetchAll visits in (start, key) order.
class InMemoryWindowStore final : public WindowStore {
 public:
  explicit InMemoryWindowStore(std::string name) : name_(std::move(name)) {}

  std::string_view name() const override { return name_; }
  absl::Status Flush() override { return CheckOpen(); }
  absl::Status Close() override {
    open_ = false;
    segments_.clear();
    entries_ = 0;
    return absl::OkStatus();
  }
  uint64_t ApproximateNumEntries() const override { return entries_; }

  absl::Status Put(std::string_view key, int64_t window_start,
                   std::string_view value) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Segment& seg = segments_[window_start];
    auto it = seg.lower_bound(key);  // one search, whether the key is new or not
    if (it == seg.end() || it->first != key) {
      seg.emplace_hint(it, std::string(key), std::string(value));
      ++entries_;
    } else {
      it->second.assign(value.data(), value.size());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Fetch(std::string_view key, int64_t window_start,
                             std::string* value) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    auto seg = segments_.find(window_start);
    if (seg == segments_.end()) return false;
    auto it = seg->second.find(key);
    if (it == seg->second.end()) return false;
    value->assign(it->second);
    return true;
  }

  absl::Status Delete(std::string_view key, int64_t window_start) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    auto seg = segments_.find(window_start);
    if (seg == segments_.end()) return absl::OkStatus();
    auto it = seg->second.find(key);
    if (it == seg->second.end()) return absl::OkStatus();
    seg->second.erase(it);
    --entries_;
    if (seg->second.empty()) segments_.erase(seg);
    return absl::OkStatus();
  }

  absl::Status FetchRange(std::string_view key, int64_t from, int64_t to,
                          const KeyVisitor& fn) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    for (auto seg = segments_.lower_bound(from); seg != segments_.end() && seg->first < to;
         ++seg) {
      auto it = seg->second.find(key);
      if (it == seg->second.end()) continue;
      if (absl::Status s = fn(seg->first, it->second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status FetchAll(int64_t from, int64_t to, const Visitor& fn) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    for (auto seg = segments_.lower_bound(from); seg != segments_.end() && seg->first < to;
         ++seg) {
      for (const auto& [key, value] : seg->second) {
        if (absl::Status s = fn(key, seg->first, value); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status DeleteBefore(int64_t time) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    auto end = segments_.lower_bound(time);
    for (auto it = segments_.begin(); it != end; ++it) entries_ -= it->second.size();
    segments_.erase(segments_.begin(), end);
    return absl::OkStatus();
  }

 private:
  using Segment = absl::btree_map<std::string, std::string, std::less<>>;

  absl::Status CheckOpen() const {
    if (open_) return absl::OkStatus();
    return absl::FailedPreconditionError("store " + name_ + " is closed");
  }

  std::string name_;
  bool open_ = true;
  uint64_t entries_ = 0;
  absl::btree_map<int64_t, Segment> segments_;
};

}  // namespace

std::unique_ptr<WindowStore> NewInMemoryWindowStore(std::string name) {
  return std::make_unique<InMemoryWindowStore>(std::move(name));
}

}  // namespace streammetrics
