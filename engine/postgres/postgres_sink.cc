#include "engine/postgres/postgres_sink.h"

#include <optional>
#include <thread>

#include <libpq-fe.h>

#include <charconv>
#include <cmath>
#include <set>

#include "operators/strings.h"

namespace streammetrics {
namespace {

constexpr std::string_view kSchema = R"sql(
SELECT pg_advisory_xact_lock(hashtext('streammetrics-schema'));
CREATE SCHEMA IF NOT EXISTS metrics;
CREATE TABLE IF NOT EXISTS metrics.metric_aggregates (
    id BIGSERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    service_id VARCHAR(100) NOT NULL,
    metric_name VARCHAR(200) NOT NULL,
    window_size VARCHAR(10) NOT NULL,
    count BIGINT,
    sum DOUBLE PRECISION,
    avg DOUBLE PRECISION,
    min DOUBLE PRECISION,
    max DOUBLE PRECISION,
    p50 DOUBLE PRECISION,
    p95 DOUBLE PRECISION,
    p99 DOUBLE PRECISION,
    tags JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_metrics_lookup
    ON metrics.metric_aggregates(service_id, metric_name, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_metrics_tags ON metrics.metric_aggregates USING GIN(tags);
CREATE INDEX IF NOT EXISTS idx_metrics_timestamp ON metrics.metric_aggregates(timestamp DESC);
CREATE UNIQUE INDEX IF NOT EXISTS metric_aggregates_upsert_key
    ON metrics.metric_aggregates(service_id, metric_name, window_size, timestamp, tags)
    NULLS NOT DISTINCT;
CREATE TABLE IF NOT EXISTS metrics.sink_offsets (
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INT NOT NULL,
    next_offset BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (sink, topic, partition)
);
)sql";

constexpr std::string_view kStaging = R"sql(
CREATE TEMP TABLE IF NOT EXISTS sm_staging (
    ord BIGINT, ts_ms BIGINT, service_id TEXT, metric_name TEXT, window_size TEXT,
    count BIGINT, sum FLOAT8, avg FLOAT8, min FLOAT8, max FLOAT8,
    p50 FLOAT8, p95 FLOAT8, p99 FLOAT8, tags TEXT) ON COMMIT DELETE ROWS
)sql";

constexpr std::string_view kUpsert = R"sql(
INSERT INTO metrics.metric_aggregates
    (timestamp, service_id, metric_name, window_size, count, sum, avg, min, max, p50, p95, p99, tags)
SELECT DISTINCT ON (service_id, metric_name, window_size, ts_ms, tags)
    to_timestamp(ts_ms / 1000.0), service_id, metric_name, window_size,
    count, sum, avg, min, max, p50, p95, p99, tags
FROM (SELECT ord, ts_ms, service_id, metric_name, window_size, count, sum, avg, min, max,
             p50, p95, p99, tags::jsonb AS tags FROM sm_staging) s
ORDER BY service_id, metric_name, window_size, ts_ms, tags, ord DESC
ON CONFLICT (service_id, metric_name, window_size, timestamp, tags) DO UPDATE SET
    count = EXCLUDED.count, sum = EXCLUDED.sum, avg = EXCLUDED.avg, min = EXCLUDED.min,
    max = EXCLUDED.max, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
    created_at = NOW()
)sql";

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// What a failed statement means for the caller: Unavailable (connection, server shutting
// down, resources, serialization: retry), InvalidArgument (data refused: class 22/23),
// Internal otherwise.
absl::Status StatusOf(PGconn* conn, const PGresult* r, std::string_view what) {
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(conn);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  std::string text = StrCat("postgres: ", what, ": ", message);
  if (PQstatus(conn) != CONNECTION_OK || state == nullptr) return absl::UnavailableError(text);
  std::string_view cls(state, 2);
  if (cls == "08" || cls == "57" || cls == "53" || cls == "40") return absl::UnavailableError(text);
  if (cls == "22" || cls == "23") return absl::InvalidArgumentError(text);
  return absl::InternalError(text);
}

void AppendCopyText(std::string_view s, std::string* out) {
  for (char c : s) {
    switch (c) {
      case '\\': out->append("\\\\"); break;
      case '\t': out->append("\\t"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      default: out->push_back(c);
    }
  }
}

void AppendCopyInt(int64_t v, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, end);
}

void AppendCopyDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("NaN");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "Infinity" : "-Infinity");
  } else {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round trip
    out->append(buf, end);
  }
}

// Characters (UTF-8 code points) of a valid UTF-8 string.
size_t Chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Why Postgres would refuse the row, or "" (lengths of the VARCHAR columns, NUL bytes).
std::string CheckRow(const AggregateRow& r) {
  struct Column {
    const char* name;
    const std::string* value;
    size_t max;
  };
  for (const Column& c : {Column{"service_id", &r.service_id, 100},
                          Column{"metric_name", &r.metric_name, 200},
                          Column{"window_size", &r.window, 10}}) {
    if (c.value->find('\0') != std::string::npos) return StrCat(c.name, ": contains a NUL byte");
    if (Chars(*c.value) > c.max) {
      return StrCat(c.name, ": longer than ", c.max, " characters");
    }
  }
  if (r.tags_json.find("\\u0000") != std::string::npos) return "tags: contains a NUL character";
  return "";
}

void AppendCopyRow(int64_t ord, const AggregateRow& r, std::string* out) {
  AppendCopyInt(ord, out);
  out->push_back('\t');
  AppendCopyInt(r.window_start_ms, out);
  for (const std::string* s : {&r.service_id, &r.metric_name, &r.window}) {
    out->push_back('\t');
    AppendCopyText(*s, out);
  }
  out->push_back('\t');
  AppendCopyInt(r.count, out);
  for (double v : {r.sum, r.avg, r.min, r.max}) {
    out->push_back('\t');
    AppendCopyDouble(v, out);
  }
  for (const std::optional<double>* q : {&r.p50, &r.p95, &r.p99}) {
    out->push_back('\t');
    if (q->has_value()) {
      AppendCopyDouble(**q, out);
    } else {
      out->append("\\N");
    }
  }
  out->push_back('\t');
  AppendCopyText(r.tags_json, out);
  out->push_back('\n');
}

}  // namespace

struct PostgresSink::Conn {
  PGconn* pg = nullptr;
  ~Conn() {
    if (pg != nullptr) PQfinish(pg);
  }

  // Runs `sql` (any number of statements, no parameters).
  absl::Status Exec(std::string_view sql, std::string_view what) {
    Result r(PQexec(pg, std::string(sql).c_str()));
    const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return absl::OkStatus();
    return StatusOf(pg, r.get(), what);
  }

  absl::StatusOr<Result> Query(std::string_view sql, const std::vector<std::string>& params,
                               std::string_view what) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const std::string& p : params) values.push_back(p.c_str());
    Result r(PQexecParams(pg, std::string(sql).c_str(), static_cast<int>(values.size()), nullptr,
                          values.data(), nullptr, nullptr, 0));
    const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
    return StatusOf(pg, r.get(), what);
  }

  absl::Status Copy(std::string_view data) {
    Result start(PQexec(pg, "COPY sm_staging FROM STDIN"));
    if (!start || PQresultStatus(start.get()) != PGRES_COPY_IN) {
      return StatusOf(pg, start.get(), "copy");
    }
    if (PQputCopyData(pg, data.data(), static_cast<int>(data.size())) != 1 ||
        PQputCopyEnd(pg, nullptr) != 1) {
      return StatusOf(pg, nullptr, "copy");
    }
    absl::Status s;
    while (PGresult* raw = PQgetResult(pg)) {
      Result r(raw);
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && s.ok()) s = StatusOf(pg, r.get(), "copy");
    }
    return s;
  }
};

PostgresSink::PostgresSink(PostgresSinkOptions options) : options_(std::move(options)) {}
PostgresSink::~PostgresSink() = default;

absl::StatusOr<std::unique_ptr<PostgresSink::Conn>> PostgresSink::NewConn() const {
  // A malformed connection string is the configuration's mistake, not an outage.
  char* parse_error = nullptr;
  if (PQconninfoOption* parsed = PQconninfoParse(options_.dsn.c_str(), &parse_error)) {
    PQconninfoFree(parsed);
  } else {
    std::string why = parse_error != nullptr ? parse_error : "out of memory";
    PQfreemem(parse_error);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    return absl::InvalidArgumentError(StrCat("postgres: dsn: ", why));
  }
  auto conn = std::make_unique<Conn>();
  const std::string dsn = StrCat(options_.dsn, " connect_timeout=", options_.connect_timeout_s);
  conn->pg = PQconnectdb(dsn.c_str());
  if (conn->pg == nullptr || PQstatus(conn->pg) != CONNECTION_OK) {
    std::string message = conn->pg != nullptr ? PQerrorMessage(conn->pg) : "out of memory";
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return absl::UnavailableError(StrCat("postgres: connect: ", message));
  }
  if (absl::Status s = conn->Exec("SET client_min_messages = warning", "session"); !s.ok()) return s;
  if (absl::Status s = conn->Exec(kStaging, "staging table"); !s.ok()) return s;
  return conn;
}

absl::Status PostgresSink::Connect() {
  conns_.resize(std::max(1, options_.connections));
  for (std::unique_ptr<Conn>& conn : conns_) {
    if (conn != nullptr && PQstatus(conn->pg) == CONNECTION_OK) continue;
    conn.reset();
    absl::StatusOr<std::unique_ptr<Conn>> fresh = NewConn();
    if (!fresh.ok()) return fresh.status();
    conn = std::move(*fresh);
  }
  conn_ = conns_[0].get();
  return absl::OkStatus();
}

absl::Status PostgresSink::Open() {
  if (absl::Status s = Connect(); !s.ok()) return s;
  absl::Status s = conn_->Exec(StrCat("BEGIN;", kSchema, "COMMIT;"), "create schema");
  if (!s.ok()) conn_->Exec("ROLLBACK", "rollback").IgnoreError();
  return s;
}

absl::StatusOr<std::vector<SinkPosition>> PostgresSink::Acquire(
    std::span<const TopicPartition> partitions) {
  if (absl::Status s = Connect(); !s.ok()) return s;
  if (absl::Status s = conn_->Exec("BEGIN", "begin"); !s.ok()) return s;
  std::vector<SinkPosition> out;
  for (const TopicPartition& tp : partitions) {
    absl::StatusOr<Result> r = conn_->Query(
        "INSERT INTO metrics.sink_offsets (sink, topic, partition, next_offset, epoch) "
        "VALUES ($1, $2, $3, 0, 1) ON CONFLICT (sink, topic, partition) DO UPDATE SET "
        "epoch = metrics.sink_offsets.epoch + 1, updated_at = NOW() RETURNING next_offset, epoch",
        {options_.sink_name, tp.topic, StrCat(tp.partition)}, "acquire");
    if (!r.ok()) {
      conn_->Exec("ROLLBACK", "rollback").IgnoreError();
      return r.status();
    }
    out.push_back({tp, std::strtoll(PQgetvalue(r->get(), 0, 0), nullptr, 10),
                   std::strtoll(PQgetvalue(r->get(), 0, 1), nullptr, 10)});
  }
  if (absl::Status s = conn_->Exec("COMMIT", "commit"); !s.ok()) return s;
  for (const SinkPosition& p : out) epochs_[p.tp] = p.epoch;
  return out;
}

absl::StatusOr<std::vector<SinkPosition>> PostgresSink::Positions() {
  if (absl::Status s = Connect(); !s.ok()) return s;
  std::vector<SinkPosition> out;
  for (const auto& [tp, epoch] : epochs_) {
    absl::StatusOr<Result> r = conn_->Query(
        "SELECT next_offset FROM metrics.sink_offsets WHERE sink = $1 AND topic = $2 AND "
        "partition = $3",
        {options_.sink_name, tp.topic, StrCat(tp.partition)}, "positions");
    if (!r.ok()) return r.status();
    const int64_t next = PQntuples(r->get()) == 1 ? std::strtoll(PQgetvalue(r->get(), 0, 0), nullptr, 10) : 0;
    out.push_back({tp, next, epoch});
  }
  return out;
}

// One connection's share of a batch (whole partitions), in its own transaction.
struct PostgresSink::Share {
  Conn* conn = nullptr;
  std::vector<SinkRecord> records;
  std::vector<TopicPartition> parts;
  std::vector<int64_t> epochs;         // this runner's, per part
  std::vector<int64_t> stored, next;   // per part: the stored position, the batch's end
  std::vector<RejectedRecord> rejected;
  absl::Status status;
  std::optional<TopicPartition> fenced;  // a part taken over by a newer owner
  bool open = false;                     // a transaction is open on `conn`
};

absl::Status PostgresSink::Apply(std::span<const SinkRecord> batch, const RejectHandler& on_rejected) {
  if (batch.empty()) return absl::OkStatus();
  if (absl::Status s = Connect(); !s.ok()) return s;
  // Whole partitions to connections, each connection's share the fewest records so far:
  // partitions are independent (their own positions, their keys), so each share is a
  // transaction of its own and they run in parallel. A share that fails leaves the others
  // committed: the retry skips what they applied (positions).
  const BatchPartitions parts(batch);
  if (absl::Status s = CheckOwned(parts); !s.ok()) return s;
  std::vector<size_t> count(parts.size(), 0);
  for (const SinkRecord& r : batch) ++count[parts.IndexOf(r)];
  std::vector<Share> shares(std::min(conns_.size(), parts.size()));
  std::vector<size_t> share_of(parts.size());
  std::vector<size_t> load(shares.size(), 0);
  for (size_t i = 0; i < parts.size(); ++i) {
    const size_t to = std::min_element(load.begin(), load.end()) - load.begin();
    share_of[i] = to;
    load[to] += count[i];
    shares[to].parts.push_back(parts[i]);
    shares[to].epochs.push_back(epochs_.at(parts[i]));
  }
  for (size_t k = 0; k < shares.size(); ++k) {
    shares[k].conn = conns_[k].get();
    shares[k].records.reserve(load[k]);
  }
  for (const SinkRecord& r : batch) shares[share_of[parts.IndexOf(r)]].records.push_back(r);

  absl::Status s = ApplyShares(shares, on_rejected, /*row_by_row=*/false);
  if (absl::IsInvalidArgument(s)) {
    // Postgres refused a row the checks let through: find it (and any other) row by row.
    for (Share& share : shares) {
      share.rejected.clear();
      share.status = absl::OkStatus();
    }
    s = ApplyShares(shares, on_rejected, /*row_by_row=*/true);
  }
  for (std::unique_ptr<Conn>& conn : conns_) {
    if (!s.ok() && conn != nullptr && PQstatus(conn->pg) != CONNECTION_OK) conn.reset();
  }
  return s;
}

absl::Status PostgresSink::ApplyShares(std::vector<Share>& shares, const RejectHandler& on_rejected,
                                       bool row_by_row) {
  // Each share up to its upsert, in parallel (the first on this thread).
  {
    std::vector<std::thread> threads;
    for (size_t k = 1; k < shares.size(); ++k) {
      threads.emplace_back([this, &shares, k, row_by_row] { Prepare(shares[k], row_by_row); });
    }
    Prepare(shares[0], row_by_row);
    for (std::thread& t : threads) t.join();
  }
  auto rollback = [&] {
    for (Share& share : shares) {
      if (share.open && PQstatus(share.conn->pg) == CONNECTION_OK) {
        share.conn->Exec("ROLLBACK", "rollback").IgnoreError();
      }
      share.open = false;
    }
  };
  // The worst outcome decides: fenced, then data refused (retried row by row), then any.
  absl::Status worst;
  for (Share& share : shares) {
    if (share.fenced.has_value()) epochs_.erase(*share.fenced);
    if (share.status.ok()) continue;
    const auto rank = [](const absl::Status& st) {
      return absl::IsFailedPrecondition(st) ? 3 : absl::IsInvalidArgument(st) ? 2 : st.ok() ? 0 : 1;
    };
    if (rank(share.status) > rank(worst)) worst = share.status;
  }
  if (!worst.ok()) {
    rollback();
    return worst;
  }
  // Dead letters are delivered before anything commits (a failure rolls every share back).
  std::vector<RejectedRecord> rejected;
  for (Share& share : shares) {
    for (RejectedRecord& r : share.rejected) rejected.push_back(std::move(r));
    share.rejected.clear();
  }
  if (!rejected.empty() && on_rejected) {
    if (absl::Status st = on_rejected(rejected); !st.ok()) {
      rollback();
      return st;
    }
  }
  for (Share& share : shares) {
    absl::Status st = Finish(share);
    if (!st.ok()) {
      rollback();
      return st;
    }
  }
  return absl::OkStatus();
}

void PostgresSink::Prepare(Share& share, bool row_by_row) {
  Conn& conn = *share.conn;
  auto fail = [&](absl::Status st) { share.status = std::move(st); };
  if (absl::Status st = conn.Exec("BEGIN", "begin"); !st.ok()) return fail(st);
  share.open = true;
  // Lock the share's partitions' positions; a newer epoch there: fenced.
  share.stored.assign(share.parts.size(), 0);
  share.next.assign(share.parts.size(), 0);
  for (size_t i = 0; i < share.parts.size(); ++i) {
    const TopicPartition& tp = share.parts[i];
    absl::StatusOr<Result> r = conn.Query(
        "SELECT next_offset, epoch FROM metrics.sink_offsets WHERE sink = $1 AND topic = $2 "
        "AND partition = $3 FOR UPDATE",
        {options_.sink_name, tp.topic, StrCat(tp.partition)}, "lock position");
    if (!r.ok()) return fail(r.status());
    const int64_t epoch = PQntuples(r->get()) == 1 ? std::strtoll(PQgetvalue(r->get(), 0, 1), nullptr, 10) : -1;
    if (epoch != share.epochs[i]) {
      share.fenced = tp;
      return fail(absl::FailedPreconditionError(
          StrCat("postgres: ", tp.topic, "[", tp.partition, "] was taken over (epoch ", epoch,
                 ", this runner's ", share.epochs[i], ")")));
    }
    share.stored[i] = share.next[i] = std::strtoll(PQgetvalue(r->get(), 0, 0), nullptr, 10);
  }
  auto part_of = [&](const SinkRecord& r) {
    for (size_t i = 0; i < share.parts.size(); ++i) {
      if (share.parts[i].partition == r.partition && share.parts[i].topic == r.topic) return i;
    }
    return size_t{0};  // not reached: the share holds every record's partition
  };
  std::string copy;
  AggregateRow row;
  int64_t ord = 0;
  int64_t rows = 0;
  for (const SinkRecord& r : share.records) {
    const size_t p = part_of(r);
    if (r.offset < share.stored[p]) continue;  // applied before
    share.next[p] = std::max(share.next[p], r.offset + 1);
    ++ord;
    if (absl::Status parsed = ParseAggregateRow(r.value, &row); !parsed.ok()) {
      share.rejected.push_back({r, std::string(Message(parsed))});
      continue;
    }
    if (std::string why = CheckRow(row); !why.empty()) {
      share.rejected.push_back({r, why});
      continue;
    }
    if (!row_by_row) {
      AppendCopyRow(ord, row, &copy);
      ++rows;
      continue;
    }
    copy.clear();
    AppendCopyRow(ord, row, &copy);
    if (absl::Status st = conn.Exec("SAVEPOINT sm_row", "savepoint"); !st.ok()) return fail(st);
    absl::Status st = conn.Copy(copy);
    if (st.ok()) st = conn.Exec(kUpsert, "upsert");
    if (st.ok()) st = conn.Exec("DELETE FROM sm_staging; RELEASE SAVEPOINT sm_row", "release");
    if (absl::IsInvalidArgument(st)) {
      share.rejected.push_back({r, std::string(Message(st))});
      if (absl::Status rb = conn.Exec("ROLLBACK TO SAVEPOINT sm_row", "rollback to savepoint"); !rb.ok()) {
        return fail(rb);
      }
    } else if (!st.ok()) {
      return fail(st);
    }
  }
  if (rows > 0) {
    if (absl::Status st = conn.Copy(copy); !st.ok()) return fail(st);
    if (absl::Status st = conn.Exec(kUpsert, "upsert"); !st.ok()) return fail(st);
  }
}

absl::Status PostgresSink::Finish(Share& share) {
  Conn& conn = *share.conn;
  for (size_t i = 0; i < share.parts.size(); ++i) {
    if (share.next[i] <= share.stored[i]) continue;
    absl::StatusOr<Result> r = conn.Query(
        "UPDATE metrics.sink_offsets SET next_offset = $4, updated_at = NOW() WHERE sink = $1 "
        "AND topic = $2 AND partition = $3",
        {options_.sink_name, share.parts[i].topic, StrCat(share.parts[i].partition),
         StrCat(share.next[i])},
        "store position");
    if (!r.ok()) return r.status();
  }
  if (absl::Status st = conn.Exec("COMMIT", "commit"); !st.ok()) return st;
  share.open = false;
  return absl::OkStatus();
}

}  // namespace streammetrics
