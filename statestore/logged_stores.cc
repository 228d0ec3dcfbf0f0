// The changelogging layer (see logged_stores.h).
#include "statestore/logged_stores.h"

#include <optional>
#include <type_traits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

// Staged changes in key order; nullopt = deleted.
using Staged = absl::btree_map<std::string, std::optional<std::string>, std::less<>>;

// Bookkeeping both wrappers share: the writer, the attempt, open/closed, counting.
class LoggedBase : public LoggedStore {
 public:
  LoggedBase(StateStore* local, ChangelogWriter* writer, const CommitAttempt* attempt,
             bool windowed)
      : local_base_(local), writer_(writer), attempt_(attempt), windowed_(windowed) {}

  StateStore& local() override { return *local_base_; }
  uint64_t changes_logged() const override { return changes_logged_; }

 protected:
  absl::Status CheckOpen() const {
    if (open_) return absl::OkStatus();
    return absl::FailedPreconditionError("store " + std::string(local_base_->name()) +
                                         " is closed");
  }
  void Log(ChangeType type, std::string_view key, int64_t window_start,
           std::string_view value) {
    writer_->Append(local_base_->name(), ChangeRecord{.type = type,
                                                      .key = key,
                                                      .window_start = window_start,
                                                      .value = value,
                                                      .incarnation = attempt_->incarnation,
                                                      .sequence = attempt_->sequence,
                                                      .windowed = windowed_});
    ++changes_logged_;
  }
  absl::Status CloseLocal() {
    open_ = false;
    DiscardStaged();
    return local_base_->Close();
  }

 private:
  StateStore* local_base_;
  ChangelogWriter* writer_;
  const CommitAttempt* attempt_;
  bool windowed_;
  bool open_ = true;
  uint64_t changes_logged_ = 0;
};

// The StateStore face of a wrapper around a `Store` (KeyValueStore or WindowStore).
template <typename Store>
class LoggedStoreOf : public Store, public LoggedBase {
 public:
  LoggedStoreOf(std::unique_ptr<Store> local, ChangelogWriter* writer,
                const CommitAttempt* attempt)
      : LoggedBase(local.get(), writer, attempt, std::is_same_v<Store, WindowStore>),
        local_(std::move(local)) {}

  std::string_view name() const override { return local_->name(); }
  absl::Status Flush() override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return local_->Flush();
  }
  absl::Status Close() override { return CloseLocal(); }
  uint64_t ApproximateNumEntries() const override { return local_->ApproximateNumEntries(); }

 protected:
  std::unique_ptr<Store> local_;
};

class LoggedKeyValueStore final : public LoggedStoreOf<KeyValueStore> {
 public:
  using LoggedStoreOf::LoggedStoreOf;

  absl::Status Put(std::string_view key, std::string_view value) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Log(ChangeType::kPut, key, 0, value);
    Stage(key, value);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Get(std::string_view key, std::string* value) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    auto it = staged_.find(key);
    if (it == staged_.end()) return local_->Get(key, value);
    if (!it->second.has_value()) return false;
    value->assign(*it->second);
    return true;
  }
  absl::Status Delete(std::string_view key) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Log(ChangeType::kDelete, key, 0, {});
    Stage(key, std::nullopt);
    return absl::OkStatus();
  }
  absl::Status Range(std::string_view from, std::string_view to,
                     const Visitor& fn) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (!to.empty() && from >= to) return absl::OkStatus();
    auto it = staged_.lower_bound(from);
    const auto end = to.empty() ? staged_.end() : staged_.lower_bound(to);
    // Staged entries before `key` go first; a staged entry for `key` replaces it.
    auto emit_staged_before = [&](std::string_view key, bool bounded) -> absl::Status {
      for (; it != end && (!bounded || std::string_view(it->first) < key); ++it) {
        if (!it->second.has_value()) continue;
        if (absl::Status s = fn(it->first, *it->second); !s.ok()) return s;
      }
      return absl::OkStatus();
    };
    absl::Status s = local_->Range(from, to, [&](std::string_view k, std::string_view v) {
      if (absl::Status e = emit_staged_before(k, true); !e.ok()) return e;
      if (it != end && std::string_view(it->first) == k) {
        auto staged = it++;
        return staged->second.has_value() ? fn(staged->first, *staged->second)
                                          : absl::OkStatus();
      }
      return fn(k, v);
    });
    if (!s.ok()) return s;
    return emit_staged_before({}, false);
  }

  absl::Status ApplyStaged() override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (staged_.empty()) return absl::OkStatus();
    writes_.clear();
    for (const auto& [key, value] : staged_) {
      writes_.push_back(value.has_value()
                            ? StoreWrite{.op = StoreWrite::Op::kPut, .key = key, .value = *value}
                            : StoreWrite{.op = StoreWrite::Op::kDelete, .key = key});
    }
    if (absl::Status s = local_->Write(writes_); !s.ok()) return s;
    staged_.clear();
    return absl::OkStatus();
  }
  void DiscardStaged() override { staged_.clear(); }
  absl::Status ApplyRestored(std::span<const ChangeRecord> changes) override {
    writes_.clear();
    for (const ChangeRecord& c : changes) {
      if (c.type != ChangeType::kPut && c.type != ChangeType::kDelete) {
        return absl::DataLossError("changelog of " + std::string(name()) +
                                   ": a key-value store got a window change");
      }
      writes_.push_back(StoreWrite{.op = c.type == ChangeType::kPut ? StoreWrite::Op::kPut
                                                                      : StoreWrite::Op::kDelete,
                                   .key = c.key,
                                   .value = c.value});
    }
    return local_->Write(writes_);
  }

 private:
  void Stage(std::string_view key, std::optional<std::string_view> value) {
    auto it = staged_.find(key);
    if (it == staged_.end()) it = staged_.emplace(std::string(key), std::nullopt).first;
    if (value.has_value()) {
      it->second.emplace(*value);
    } else {
      it->second.reset();
    }
  }

  Staged staged_;
  std::vector<StoreWrite> writes_;  // scratch
};

class LoggedWindowStore final : public LoggedStoreOf<WindowStore> {
 public:
  using LoggedStoreOf::LoggedStoreOf;

  absl::Status Put(std::string_view key, int64_t start, std::string_view value) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Log(ChangeType::kPut, key, start, value);
    Stage(key, start, value);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Fetch(std::string_view key, int64_t start,
                             std::string* value) const override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    auto it = staged_.find(Encode(key, start));
    if (it != staged_.end()) {
      if (!it->second.has_value()) return false;
      value->assign(*it->second);
      return true;
    }
    if (start < delete_before_) return false;
    return local_->Fetch(key, start, value);
  }
  absl::Status Delete(std::string_view key, int64_t start) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Log(ChangeType::kDelete, key, start, {});
    Stage(key, start, std::nullopt);
    return absl::OkStatus();
  }
  absl::Status FetchRange(std::string_view key, int64_t from, int64_t to,
                          const KeyVisitor& fn) const override {
    return Merge(from, to, key, [&](std::string_view, int64_t start, std::string_view v) {
      return fn(start, v);
    });
  }
  absl::Status FetchAll(int64_t from, int64_t to, const Visitor& fn) const override {
    return Merge(from, to, std::nullopt, fn);
  }
  absl::Status DeleteBefore(int64_t time) override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (time <= delete_before_) return absl::OkStatus();
    Log(ChangeType::kDeleteBefore, {}, time, {});
    staged_.erase(staged_.begin(), staged_.lower_bound(EncodeStart(time)));
    delete_before_ = time;
    return absl::OkStatus();
  }

  absl::Status ApplyStaged() override {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    writes_.clear();
    if (delete_before_ != INT64_MIN) {
      writes_.push_back(
          StoreWrite{.op = StoreWrite::Op::kDeleteBefore, .window_start = delete_before_});
    }
    for (const auto& [encoded, value] : staged_) {
      const int64_t start = DecodeOrderedInt64(encoded);
      const std::string_view key = std::string_view(encoded).substr(kOrderedInt64Bytes);
      writes_.push_back(value.has_value() ? StoreWrite{.op = StoreWrite::Op::kPut,
                                                       .key = key,
                                                       .window_start = start,
                                                       .value = *value}
                                          : StoreWrite{.op = StoreWrite::Op::kDelete,
                                                       .key = key,
                                                       .window_start = start});
    }
    if (!writes_.empty()) {
      if (absl::Status s = local_->Write(writes_); !s.ok()) return s;
    }
    DiscardStaged();
    return absl::OkStatus();
  }
  void DiscardStaged() override {
    staged_.clear();
    delete_before_ = INT64_MIN;
  }
  absl::Status ApplyRestored(std::span<const ChangeRecord> changes) override {
    writes_.clear();
    for (const ChangeRecord& c : changes) {
      StoreWrite w{.key = c.key, .window_start = c.window_start, .value = c.value};
      switch (c.type) {
        case ChangeType::kPut:
          w.op = StoreWrite::Op::kPut;
          break;
        case ChangeType::kDelete:
          w.op = StoreWrite::Op::kDelete;
          break;
        case ChangeType::kDeleteBefore:
          w.op = StoreWrite::Op::kDeleteBefore;
          break;
        default:
          return absl::DataLossError("changelog of " + std::string(name()) +
                                     ": unexpected change type");
      }
      writes_.push_back(w);
    }
    return local_->Write(writes_);
  }

 private:
  static std::string EncodeStart(int64_t start) {
    std::string out;
    AppendOrderedInt64(start, &out);
    return out;
  }
  static std::string Encode(std::string_view key, int64_t start) {
    std::string out;
    out.reserve(kOrderedInt64Bytes + key.size());
    AppendOrderedInt64(start, &out);
    out.append(key.data(), key.size());
    return out;
  }
  void Stage(std::string_view key, int64_t start, std::optional<std::string_view> value) {
    auto [it, inserted] = staged_.try_emplace(Encode(key, start), std::nullopt);
    if (value.has_value()) {
      it->second.emplace(*value);
    } else {
      it->second.reset();
    }
  }

  // Visits windows with start in [from, to) — of `only_key` when given — in (start, key)
  // order: the local store's, less those staged away, merged with the staged ones.
  absl::Status Merge(int64_t from, int64_t to, std::optional<std::string_view> only_key,
                     const Visitor& fn) const {
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    if (from >= to) return absl::OkStatus();
    auto it = staged_.lower_bound(EncodeStart(from));
    const auto end = staged_.lower_bound(EncodeStart(to));
    std::string probe;
    auto emit_staged_before = [&](const std::string* bound) -> absl::Status {
      for (; it != end && (bound == nullptr || it->first < *bound); ++it) {
        if (!it->second.has_value()) continue;
        std::string_view key = std::string_view(it->first).substr(kOrderedInt64Bytes);
        if (only_key.has_value() && key != *only_key) continue;
        if (absl::Status s = fn(key, DecodeOrderedInt64(it->first), *it->second); !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    };
    auto visit = [&](std::string_view k, int64_t start, std::string_view v) -> absl::Status {
      if (start < delete_before_) return absl::OkStatus();
      probe = Encode(k, start);
      if (absl::Status e = emit_staged_before(&probe); !e.ok()) return e;
      if (it != end && it->first == probe) {
        auto staged = it++;
        return staged->second.has_value() ? fn(k, start, *staged->second) : absl::OkStatus();
      }
      return fn(k, start, v);
    };
    absl::Status s =
        only_key.has_value()
            ? local_->FetchRange(*only_key, from, to,
                                 [&](int64_t start, std::string_view v) {
                                   return visit(*only_key, start, v);
                                 })
            : local_->FetchAll(from, to, visit);
    if (!s.ok()) return s;
    return emit_staged_before(nullptr);
  }

  Staged staged_;  // keyed by (ordered start, key)
  std::vector<StoreWrite> writes_;  // scratch
  int64_t delete_before_ = INT64_MIN;  // staged DeleteBefore
};

}  // namespace

std::unique_ptr<KeyValueStore> NewLoggedKeyValueStore(std::unique_ptr<KeyValueStore> local,
                                                      ChangelogWriter* writer,
                                                      const CommitAttempt* attempt) {
  return std::make_unique<LoggedKeyValueStore>(std::move(local), writer, attempt);
}

std::unique_ptr<WindowStore> NewLoggedWindowStore(std::unique_ptr<WindowStore> local,
                                                  ChangelogWriter* writer,
                                                  const CommitAttempt* attempt) {
  return std::make_unique<LoggedWindowStore>(std::move(local), writer, attempt);
}

LoggedStore* AsLoggedStore(StateStore* store) { return dynamic_cast<LoggedStore*>(store); }

}  // namespace streammetrics
