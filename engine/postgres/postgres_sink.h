// The Postgres sink (libpq only here): aggregate results into reference/002's
// metrics.metric_aggregates, upserted on (service_id, metric_name, window_size,
// timestamp, tags); positions and fencing epochs in metrics.sink_offsets, written in the
// same transaction as the rows. No XA, no prepared transactions.
//
// A batch is one transaction per connection (its share of the batch's partitions): lock
// the partitions' rows of sink_offsets (a newer epoch there: fenced, roll back), skip records at or below their positions, COPY
// the rest into a temporary table, one INSERT ... SELECT DISTINCT ON (key, latest offset)
// ... ON CONFLICT DO UPDATE, move the positions, commit. Rows Postgres would refuse
// (values longer than their columns, NUL bytes, timestamps out of range, records that
// are not aggregates) are found before (checks) or by retrying the batch row by row under
// savepoints, and handed to the reject handler.
#ifndef STREAMMETRICS_ENGINE_POSTGRES_POSTGRES_SINK_H_
#define STREAMMETRICS_ENGINE_POSTGRES_POSTGRES_SINK_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/sinks/sink.h"

namespace streammetrics {

struct PostgresSinkOptions {
  // libpq connection string: "host=127.0.0.1 port=5432 dbname=metrics user=...".
  std::string dsn;
  // The sink's name in sink_offsets (one per consumer group of runners).
  std::string sink_name = "postgres";
  int connect_timeout_s = 5;
  // Connections a batch is spread over, whole partitions each, every one its own
  // transaction (partitions are independent: positions and keys are per partition).
  int connections = 3;
};

class PostgresSink final : public Sink {
 public:
  explicit PostgresSink(PostgresSinkOptions options);
  ~PostgresSink() override;

  absl::Status Open() override;
  absl::StatusOr<std::vector<SinkPosition>> Acquire(std::span<const TopicPartition> partitions) override;
  absl::Status Apply(std::span<const SinkRecord> batch, const RejectHandler& on_rejected) override;
  absl::StatusOr<std::vector<SinkPosition>> Positions() override;
  std::string name() const override { return "postgres"; }

 private:
  struct Conn;
  struct Share;
  absl::StatusOr<std::unique_ptr<Conn>> NewConn() const;
  absl::Status Connect();
  absl::Status ApplyShares(std::vector<Share>& shares, const RejectHandler& on_rejected, bool row_by_row);
  // Up to the upsert, the transaction left open; the outcome in share.status.
  void Prepare(Share& share, bool row_by_row);
  // Positions and COMMIT.
  absl::Status Finish(Share& share);

  PostgresSinkOptions options_;
  std::vector<std::unique_ptr<Conn>> conns_;
  Conn* conn_ = nullptr;  // conns_[0]: acquire, positions, schema
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_POSTGRES_POSTGRES_SINK_H_
