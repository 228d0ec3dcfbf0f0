#include "statestore/changelog.h"

#include <algorithm>
#include <utility>

#include "statestore/fixed_encoding.h"

namespace streammetrics {
namespace {

// Layout: u8 version, u64 incarnation, u64 sequence, u32 n,
//         n x {u32 topic length, topic bytes, i32 partition, i64 next offset}.
constexpr uint8_t kMarkerVersion = 1;

absl::Status Corrupt(std::string_view why) {
  return absl::DataLossError(std::string("changelog: unreadable commit marker: ") +
                             std::string(why));
}

}  // namespace

std::string CommitMarker::Encode() const {
  std::string out;
  AppendFixed<uint8_t>(kMarkerVersion, &out);
  AppendFixed<uint64_t>(incarnation, &out);
  AppendFixed<uint64_t>(sequence, &out);
  AppendFixed<uint32_t>(static_cast<uint32_t>(offsets.size()), &out);
  for (const InputOffset& o : offsets) {
    AppendFixed<uint32_t>(static_cast<uint32_t>(o.topic.size()), &out);
    out.append(o.topic);
    AppendFixed<int32_t>(o.partition, &out);
    AppendFixed<int64_t>(o.next_offset, &out);
  }
  return out;
}

absl::StatusOr<CommitMarker> CommitMarker::Decode(std::string_view in) {
  CommitMarker m;
  uint8_t version;
  uint32_t n;
  if (!ReadFixed(&in, &version)) return Corrupt("empty");
  if (version != kMarkerVersion) return Corrupt("unknown version");
  if (!ReadFixed(&in, &m.incarnation) || !ReadFixed(&in, &m.sequence) || !ReadFixed(&in, &n)) {
    return Corrupt("truncated");
  }
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len;
    InputOffset o;
    if (!ReadFixed(&in, &len) || in.size() < len) return Corrupt("truncated");
    o.topic.assign(in.data(), len);
    in.remove_prefix(len);
    if (!ReadFixed(&in, &o.partition) || !ReadFixed(&in, &o.next_offset)) {
      return Corrupt("truncated");
    }
    m.offsets.push_back(std::move(o));
  }
  if (!in.empty()) return Corrupt("trailing bytes");
  return m;
}

absl::Status ChangelogBehindCheckpoint(std::string_view changelog, int64_t end, int64_t from) {
  return absl::DataLossError(
      std::string("changelog ").append(changelog) + " ends at offset " + std::to_string(end) +
      ", before the local checkpoint's " + std::to_string(from) +
      ": the local state is not from this changelog (recreated topics, or another cluster)");
}

absl::StatusOr<RestoreStats> RestoreFromChangelog(
    ChangelogReader& reader, std::string_view store, int64_t from, uint64_t max_sequence,
    const std::function<absl::Status(std::span<const ChangeRecord>)>& apply) {
  // A commit attempt's changes are applied when the NEXT marker shows that no later
  // attempt superseded it (a marker with a sequence at or below its own: a restarted
  // task redid that commit, see RestoreTask), or at the end of the log. So at most two
  // commits' changes are held: the pending commit's and those read since its marker.
  RestoreStats stats;
  std::vector<OwnedChangeRecord> since_marker;
  std::vector<OwnedChangeRecord> pending;
  std::optional<CommitMarker> pending_marker;
  uint64_t applied_sequence = 0;
  bool applied_any = false;

  std::vector<ChangeRecord> views;
  auto apply_pending = [&]() -> absl::Status {
    views.clear();
    for (const OwnedChangeRecord& b : pending) views.push_back(b.View());
    if (!views.empty()) {
      if (absl::Status s = apply(views); !s.ok()) return s;
    }
    stats.records_applied += pending.size();
    applied_sequence = pending_marker->sequence;
    applied_any = true;
    stats.last_marker = std::move(pending_marker);
    pending.clear();
    pending_marker.reset();
    return absl::OkStatus();
  };

  absl::StatusOr<int64_t> end =
      reader.Read(store, from, [&](int64_t offset, const ChangeRecord& r) -> absl::Status {
        if (r.type != ChangeType::kCommit) {
          since_marker.push_back(OwnedChangeRecord::Copy(r));
          return absl::OkStatus();
        }
        absl::StatusOr<CommitMarker> marker = CommitMarker::Decode(r.value);
        if (!marker.ok()) {
          return absl::DataLossError(std::string("changelog of ") + std::string(store) +
                                     " at offset " + std::to_string(offset) + ": " +
                                     std::string(marker.status().message()));
        }
        ++stats.commits;
        if (pending_marker.has_value()) {
          if (marker->sequence > pending_marker->sequence) {
            if (absl::Status s = apply_pending(); !s.ok()) return s;
          } else {  // superseded: a restarted task redid this commit
            stats.records_discarded += pending.size();
            pending.clear();
            pending_marker.reset();
          }
        }
        if (applied_any && marker->sequence <= applied_sequence) {
          return absl::DataLossError(
              std::string("changelog of ") + std::string(store) + " at offset " +
              std::to_string(offset) + ": commit " + std::to_string(marker->sequence) +
              " redone after commit " + std::to_string(applied_sequence) +
              " was applied; the store must be rebuilt from an earlier position");
        }
        for (OwnedChangeRecord& b : since_marker) {
          if (b.incarnation == marker->incarnation && b.sequence <= marker->sequence &&
              (!applied_any || b.sequence > applied_sequence)) {
            pending.push_back(std::move(b));
          } else {
            ++stats.records_discarded;
          }
        }
        since_marker.clear();
        pending_marker = *std::move(marker);
        return absl::OkStatus();
      });
  if (!end.ok()) return end.status();
  if (pending_marker.has_value()) {
    if (pending_marker->sequence <= max_sequence) {
      if (absl::Status s = apply_pending(); !s.ok()) return s;
    } else {
      stats.records_discarded += pending.size();
    }
  }
  stats.records_discarded += since_marker.size();
  stats.end_offset = *end;
  return stats;
}

}  // namespace streammetrics
