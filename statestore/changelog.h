// Changelogs: every change a task commits to a store is also appended to the store's
// changelog (topic <application.id>-<store>-changelog, the task's partition), and the
// changelog, not the local store, is the source of truth for recovery. The engine
// implements the writer and reader (on Kafka; in memory for tests and offline mode);
// statestore never includes the engine.
//
// Commit markers (DESIGN.md ★). Each commit of a task appends, after its changes, one
// marker to every changelog of the task: {incarnation, sequence, input offsets}. The
// incarnation is random per task instance (a restart or rebuild gets a new one); the
// sequence counts the task's commits and goes on across incarnations (a restored task
// continues from the last committed sequence). A change belongs to committed work iff a
// marker of the same incarnation with a sequence at or above its own follows it. So a
// restore applies exactly the committed changes even where a broker shows records of
// aborted or unfinished transactions (the dev broker does), and the task resumes its
// input from the marker's offsets even where a broker drops transactional offsets.
#ifndef STREAMMETRICS_STATESTORE_CHANGELOG_H_
#define STREAMMETRICS_STATESTORE_CHANGELOG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streammetrics {

enum class ChangeType : uint8_t {
  kPut = 1,           // key (and window start) -> value
  kDelete = 2,        // key (and window start) removed
  kDeleteBefore = 3,  // window stores: every window with start < window_start removed
  kCommit = 4,        // a commit marker: value is CommitMarker::Encode()
};

// One changelog record as the stores write and read it. Views: valid during the call.
struct ChangeRecord {
  ChangeType type = ChangeType::kPut;
  std::string_view key;
  int64_t window_start = 0;  // window stores only
  std::string_view value;
  uint64_t incarnation = 0;  // the commit attempt that wrote it
  uint64_t sequence = 0;
  bool windowed = false;     // written by a window store: (key, window_start) is the entry
};

// A ChangeRecord that owns its bytes.
struct OwnedChangeRecord {
  ChangeType type = ChangeType::kPut;
  std::string key;
  int64_t window_start = 0;
  std::string value;
  uint64_t incarnation = 0;
  uint64_t sequence = 0;
  bool windowed = false;

  static OwnedChangeRecord Copy(const ChangeRecord& r) {
    return OwnedChangeRecord{r.type,        std::string(r.key), r.window_start, std::string(r.value),
                             r.incarnation, r.sequence,         r.windowed};
  }
  ChangeRecord View() const {
    return ChangeRecord{.type = type,
                        .key = key,
                        .window_start = window_start,
                        .value = value,
                        .incarnation = incarnation,
                        .sequence = sequence,
                        .windowed = windowed};
  }
};

struct InputOffset {
  std::string topic;
  int32_t partition = 0;
  int64_t next_offset = 0;  // the first offset not yet processed
  friend bool operator==(const InputOffset&, const InputOffset&) = default;
};

struct CommitMarker {
  uint64_t incarnation = 0;
  uint64_t sequence = 0;
  std::vector<InputOffset> offsets;  // sorted by (topic, partition)

  std::string Encode() const;
  // DataLoss when `bytes` is not a marker this version wrote.
  static absl::StatusOr<CommitMarker> Decode(std::string_view bytes);
  friend bool operator==(const CommitMarker&, const CommitMarker&) = default;
};

class ChangelogWriter {
 public:
  virtual ~ChangelogWriter() = default;
  // Queues `record` for `store`'s changelog; copies what it keeps. Queued records become
  // durable (and, under exactly-once, visible) with the task's next successful commit of
  // its RecordCollector; failures surface in Flush() or that commit.
  virtual void Append(std::string_view store, const ChangeRecord& record) = 0;
  // Returns once every queued record is acknowledged, or the first failure.
  virtual absl::Status Flush() = 0;
  // The offset after the last record of `store`'s changelog this writer had
  // acknowledged (a checkpoint position). Valid after a successful commit.
  virtual int64_t EndOffset(std::string_view store) const = 0;
};

class ChangelogReader {
 public:
  virtual ~ChangelogReader() = default;
  using Visitor = std::function<absl::Status(int64_t offset, const ChangeRecord& record)>;
  // Calls fn for every record of `store`'s changelog from offset `from` to the end as of
  // the call, in offset order, and returns the offset after the last record read (the
  // end). An absent changelog is empty. Stops early with fn's status when it is not OK.
  virtual absl::StatusOr<int64_t> Read(std::string_view store, int64_t from,
                                       const Visitor& fn) = 0;
  // The last commit marker at an offset >= from, or nullopt when there is none. An
  // implementation may read backwards from the end. DataLoss (ChangelogBehindCheckpoint)
  // when the changelog ends before `from`: a checkpoint there was not written from this
  // changelog (the topic was recreated, or the state dir comes from another cluster, as
  // every run of the in-process dev broker is), so the local state must be rebuilt.
  virtual absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view store,
                                                                 int64_t from) = 0;
};

absl::Status ChangelogBehindCheckpoint(std::string_view changelog, int64_t end, int64_t from);

// What RestoreFromChangelog did.
struct RestoreStats {
  int64_t end_offset = 0;          // the changelog's end: the store's new checkpoint
  uint64_t records_applied = 0;    // changes applied to the store
  uint64_t records_discarded = 0;  // changes of attempts that never committed
  uint64_t commits = 0;            // markers seen
  std::optional<CommitMarker> last_marker;  // the last commit applied
};

// Replays `store`'s changelog from `from` into `apply`, applying the changes of commit
// attempts up to and including sequence `max_sequence`, each once its marker is read,
// in log order; changes of attempts without a (later) marker are discarded, and so are
// those of attempts after max_sequence (a commit not every store of the task saw).
// `apply` gets the kPut/kDelete/kDeleteBefore records of one commit per call.
absl::StatusOr<RestoreStats> RestoreFromChangelog(
    ChangelogReader& reader, std::string_view store, int64_t from, uint64_t max_sequence,
    const std::function<absl::Status(std::span<const ChangeRecord>)>& apply);

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_CHANGELOG_H_
