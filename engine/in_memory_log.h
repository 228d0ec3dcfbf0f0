// An in-memory stand-in for the Kafka topics a task writes — output topics and
// changelogs — with transactions: what a task sends between two commits of its
// collector is one transaction. For fault-injection tests of recovery without a broker,
// and for offline mode.
//
// Visibility of a transaction that never committed (the task crashed or failed):
//  - kReadCommitted: invisible, as a read_committed consumer of a real broker sees it;
//  - kShowsUncommitted: visible, as the dev broker (librdkafka's mock cluster) shows
//    aborted and unfinished transactional records. Recovery must be exact here too:
//    commit markers tell committed changelog records from the rest. Such output records
//    stay marked `aborted`, so a test can tell what a real broker would have hidden.
//
// Not thread-safe: one task thread.
#ifndef STREAMMETRICS_ENGINE_IN_MEMORY_LOG_H_
#define STREAMMETRICS_ENGINE_IN_MEMORY_LOG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/record_collector.h"
#include "engine/topology_test_driver.h"
#include "statestore/changelog.h"

namespace streammetrics {

class InMemoryLog {
 public:
  enum class Visibility { kReadCommitted, kShowsUncommitted };

  explicit InMemoryLog(Visibility visibility = Visibility::kReadCommitted);

  // The task's collector: Flush() commits the open transaction (outputs and changelog
  // records together).
  RecordCollector* collector() { return &collector_; }
  // The task's changelog writer and the reader its restore uses.
  ChangelogWriter* changelog_writer() { return &writer_; }
  ChangelogReader* changelog_reader() { return &reader_; }

  // The producer died: the open transaction is aborted (kReadCommitted: dropped;
  // kShowsUncommitted: left visible, its output records marked aborted).
  void AbortOpenTransaction();
  // kShowsUncommitted: the index in Outputs() of the open transaction's first record.
  size_t open_transaction_start() const {
    return open_output_indices_.empty() ? outputs_.size() : open_output_indices_.front();
  }
  // kShowsUncommitted: a restored task found that the aborted transaction's commit
  // markers were visible, so it treats that commit as done; its outputs, from `index`
  // on, are then no longer marked aborted.
  void TreatAsCommittedSince(size_t index);

  struct Output {
    OutputRecord record;
    bool aborted = false;  // sent in a transaction that never committed
  };
  // Every visible output record of `topic` ("" = all topics), in send order.
  std::vector<Output> Outputs(std::string_view topic = "") const;
  // Visible records of `store`'s changelog.
  size_t ChangelogSize(std::string_view store) const;

 private:
  using Change = OwnedChangeRecord;
  class Collector final : public RecordCollector {
   public:
    explicit Collector(InMemoryLog* log) : log_(log) {}
    void Send(std::string_view topic, std::string_view key, std::string_view value,
              int64_t timestamp_ms, std::span<const Header> headers) override;
    absl::Status Flush() override;

   private:
    InMemoryLog* log_;
  };
  class Writer final : public ChangelogWriter {
   public:
    explicit Writer(InMemoryLog* log) : log_(log) {}
    void Append(std::string_view store, const ChangeRecord& record) override;
    absl::Status Flush() override { return absl::OkStatus(); }
    int64_t EndOffset(std::string_view store) const override;

   private:
    InMemoryLog* log_;
  };
  class Reader final : public ChangelogReader {
   public:
    explicit Reader(InMemoryLog* log) : log_(log) {}
    absl::StatusOr<int64_t> Read(std::string_view store, int64_t from,
                                 const Visitor& fn) override;
    absl::StatusOr<std::optional<CommitMarker>> LastMarker(std::string_view store,
                                                           int64_t from) override;

   private:
    InMemoryLog* log_;
  };

  void Commit();
  bool shows_uncommitted() const { return visibility_ == Visibility::kShowsUncommitted; }

  Visibility visibility_;
  Collector collector_{this};
  Writer writer_{this};
  Reader reader_{this};
  // Visible records. kShowsUncommitted: records go here when sent; the open
  // transaction's indices are remembered to mark them aborted.
  std::vector<Output> outputs_;
  std::map<std::string, std::vector<Change>, std::less<>> changelogs_;
  // kReadCommitted: the open transaction, applied at commit.
  std::vector<Output> open_outputs_;
  std::vector<std::pair<std::string, Change>> open_changes_;
  std::vector<size_t> open_output_indices_;  // kShowsUncommitted
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_IN_MEMORY_LOG_H_
