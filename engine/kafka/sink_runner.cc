#include "engine/kafka/sink_runner.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>

#include "engine/kafka/kafka_common.h"
#include "engine/log.h"
#include "operators/strings.h"

namespace streammetrics::kafka {
namespace {

using Clock = std::chrono::steady_clock;

// A consumed record, copied until its batch is applied (the librdkafka message is
// released at once).
struct OwnedRecord {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
};

}  // namespace

std::string_view SinkHealthName(SinkHealth h) {
  switch (h) {
    case SinkHealth::kStarting: return "starting";
    case SinkHealth::kHealthy: return "healthy";
    case SinkHealth::kRetrying: return "retrying";
    case SinkHealth::kCircuitOpen: return "circuit open";
    case SinkHealth::kFailed: return "failed";
    case SinkHealth::kStopped: return "stopped";
  }
  return "?";
}

class SinkRunner::Loop {
 public:
  explicit Loop(SinkRunner* r) : r_(r), rng_(std::random_device{}()) {}
  absl::Status Run();

 private:
  const SinkRunnerOptions& options() const { return r_->options_; }
  Sink* sink() const { return r_->sink_.get(); }
  void SetHealth(SinkHealth h, const absl::Status& why = absl::OkStatus()) {
    std::lock_guard<std::mutex> lock(r_->mu_);
    r_->counters_.health = h;
    if (!why.ok()) r_->counters_.last_error = std::string(Message(why));
  }
  // Retries `attempt` with backoff while it fails and the runner is not stopped.
  absl::Status Retrying(std::string_view what, const std::function<absl::Status()>& attempt);
  int64_t BackoffMs(int failures);
  void OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts);
  static void RebalanceCallback(rd_kafka_t*, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<Loop*>(opaque)->OnRebalance(err, parts);
  }
  // One attempt at the pending batch; true when it is done with (applied or discarded).
  bool ApplyPending();
  absl::Status SendDeadLetters(std::span<const RejectedRecord> rejected);
  void Pause(bool pause);
  // Whether the runner still holds (topic, partition): assigned and not fenced since.
  bool Assigned(std::string_view topic, int32_t partition) const {
    for (const TopicPartition& tp : assigned_) {
      if (tp.partition == partition && tp.topic == topic) return true;
    }
    return false;
  }
  absl::Status SeekToPositions();
  // FailedPrecondition when a stored position lies past its partition's end.
  absl::Status CheckPositionsWithinTopics(std::span<const SinkPosition> positions);

  SinkRunner* r_;
  std::mt19937_64 rng_;
  KafkaHandle consumer_;
  std::unique_ptr<Producer> dlq_;
  std::vector<OwnedRecord> pending_;
  std::vector<TopicPartition> assigned_;
  Clock::time_point batch_started_;
  Clock::time_point next_attempt_;
  int failures_ = 0;
  bool paused_ = false;
  bool in_callback_ = false;  // inside OnRebalance: no polling there
  absl::Status fatal_;
  // StopAtEnd: each partition's end offset as the drain began, and where the consumer
  // last found each partition's end (partition EOF; cleared when it is assigned anew).
  bool assigned_once_ = false;
  bool draining_ = false;
  std::map<TopicPartition, int64_t> drain_ends_;
  std::map<TopicPartition, int64_t> eof_;
  // True once every record up to the drain's ends is applied (starts the drain).
  bool DrainedToEnd();
};

bool SinkRunner::Loop::DrainedToEnd() {
  if (!assigned_once_) return false;
  if (!draining_) {
    draining_ = true;
    for (const TopicPartition& tp : assigned_) {
      int64_t low = 0, high = 0;
      if (rd_kafka_query_watermark_offsets(consumer_.get(), tp.topic.c_str(), tp.partition, &low,
                                           &high, 10'000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        draining_ = false;  // asked again at the next turn
        return false;
      }
      drain_ends_[tp] = high;
    }
  }
  for (const auto& [tp, end] : drain_ends_) {
    if (!Assigned(tp.topic, tp.partition)) continue;  // moved to another runner
    auto it = eof_.find(tp);
    if (it == eof_.end() || it->second < end) return false;
  }
  if (pending_.empty()) return true;
  if (Clock::now() >= next_attempt_) ApplyPending();
  return pending_.empty();
}

int64_t SinkRunner::Loop::BackoffMs(int failures) {
  const int64_t cap = std::min<int64_t>(options().retry_max_ms,
                                        static_cast<int64_t>(options().retry_initial_ms)
                                            << std::min(failures - 1, 20));
  std::uniform_int_distribution<int64_t> jitter(cap / 2, cap);  // "equal jitter": never ~0
  return jitter(rng_);
}

absl::Status SinkRunner::Loop::Retrying(std::string_view what,
                                        const std::function<absl::Status()>& attempt) {
  for (int failures = 1;; ++failures) {
    absl::Status s = attempt();
    // InvalidArgument (a malformed DSN or URL) no retry can cure: the runner fails.
    if (s.ok() || r_->stop_.load() || absl::IsInvalidArgument(s)) return s;
    SetHealth(SinkHealth::kRetrying, s);
    LogEvery(StrCat("sink-", what), 10'000, LogLevel::kWarning,
             StrCat(sink()->name(), " sink: ", what, ": ", Message(s), "; retrying"));
    const auto until = Clock::now() + std::chrono::milliseconds(BackoffMs(failures));
    while (Clock::now() < until && !r_->stop_.load()) {
      if (consumer_ != nullptr && !in_callback_) {
        if (rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_.get(), 10)) {
          rd_kafka_message_destroy(m);  // paused or not yet assigned: nothing is taken
        }
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
}

void SinkRunner::Loop::Pause(bool pause) {
  if (pause == paused_ || assigned_.empty()) return;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(assigned_.size());
  for (const TopicPartition& tp : assigned_) {
    rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition);
  }
  if (pause) {
    rd_kafka_pause_partitions(consumer_.get(), list);
  } else {
    rd_kafka_resume_partitions(consumer_.get(), list);
  }
  rd_kafka_topic_partition_list_destroy(list);
  paused_ = pause;
}

absl::Status SinkRunner::Loop::CheckPositionsWithinTopics(std::span<const SinkPosition> positions) {
  for (const SinkPosition& p : positions) {
    if (p.next_offset <= 0) continue;
    int64_t low = 0, high = 0;
    absl::Status s = Retrying("read the partitions' ends", [&] {
      return KafkaStatus(StrCat("end of ", p.tp.topic, " [", p.tp.partition, "]"),
                         rd_kafka_query_watermark_offsets(consumer_.get(), p.tp.topic.c_str(),
                                                          p.tp.partition, &low, &high, 10'000));
    });
    if (!s.ok()) return s;
    if (p.next_offset > high) {
      return absl::FailedPreconditionError(StrCat(
          sink()->name(), " sink: its position in ", p.tp.topic, " [", p.tp.partition, "] is ",
          p.next_offset, ", past the partition's end ", high,
          ": the topic was recreated since the sink applied it, and going on would skip its "
          "records. Nothing was applied. To apply the new topic from its start, give the "
          "sink a new sinks.", sink()->name(), ".group (its positions are kept per group)"));
    }
  }
  return absl::OkStatus();
}

absl::Status SinkRunner::Loop::SeekToPositions() {
  eof_.clear();  // the partitions are read again from the sink's positions
  absl::StatusOr<std::vector<SinkPosition>> positions = sink()->Positions();
  if (!positions.ok()) return positions.status();
  if (positions->empty()) return absl::OkStatus();
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(positions->size());
  for (const SinkPosition& p : *positions) {
    rd_kafka_topic_partition_list_add(list, p.tp.topic.c_str(), p.tp.partition)->offset =
        p.next_offset;
  }
  absl::Status s = KafkaStatus("seek", rd_kafka_seek_partitions(consumer_.get(), list, 10'000));
  rd_kafka_topic_partition_list_destroy(list);
  return s;
}

void SinkRunner::Loop::OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
  rd_kafka_t* rk = consumer_.get();
  in_callback_ = true;
  struct Reset {
    bool* flag;
    ~Reset() { *flag = false; }
  } reset{&in_callback_};
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    std::vector<TopicPartition> tps;
    for (int i = 0; i < parts->cnt; ++i) tps.push_back({parts->elems[i].topic, parts->elems[i].partition});
    absl::StatusOr<std::vector<SinkPosition>> positions;
    absl::Status s = Retrying("take over partitions", [&] {
      positions = sink()->Acquire(tps);
      return positions.status();
    });
    if (!s.ok()) {
      if (!r_->stop_.load()) fatal_ = s;
      rd_kafka_assign(rk, nullptr);
      return;
    }
    for (const SinkPosition& p : *positions) {
      rd_kafka_topic_partition_list_find(parts, p.tp.topic.c_str(), p.tp.partition)->offset =
          p.next_offset;
    }
    // A stored position past the partition's end belongs to another topic of that name:
    // it was deleted and recreated (or its cluster replaced) since the sink applied it.
    // Consuming from there would skip every record of the new topic until its end passed
    // the old position — silently. The runner stops instead, saying what to do.
    if (absl::Status past = CheckPositionsWithinTopics(*positions); !past.ok()) {
      fatal_ = past;
      sink()->Release(tps);
      rd_kafka_assign(rk, nullptr);
      return;
    }
    assigned_ = tps;
    assigned_once_ = true;
    for (const TopicPartition& tp : tps) eof_.erase(tp);  // read again from the sink's positions
    paused_ = false;
    Log(LogLevel::kInfo, StrCat(sink()->name(), " sink: took over ", tps.size(), " partition(s)"));
    rd_kafka_assign(rk, parts);
    return;
  }
  // Revoked: apply what is held (one try: the next owner resumes from the sink's
  // positions either way), then let go.
  if (!pending_.empty()) ApplyPending();
  pending_.clear();
  sink()->Release(assigned_);
  assigned_.clear();
  paused_ = false;
  rd_kafka_assign(rk, nullptr);
}

absl::Status SinkRunner::Loop::SendDeadLetters(std::span<const RejectedRecord> rejected) {
  for (const RejectedRecord& rr : rejected) {
    const std::string partition = StrCat(rr.record.partition);
    const std::string offset = StrCat(rr.record.offset);
    const Header headers[] = {{"dlq.reason", "sink"},
                              {"dlq.error", StrCat(sink()->name(), ": ", rr.reason)},
                              {"dlq.topic", rr.record.topic},
                              {"dlq.partition", partition},
                              {"dlq.offset", offset}};
    dlq_->Send(options().dead_letter_topic, -1, rr.record.key, rr.record.value, 0, headers);
  }
  return dlq_->Flush();
}

bool SinkRunner::Loop::ApplyPending() {
  std::vector<SinkRecord> batch;
  batch.reserve(pending_.size());
  for (const OwnedRecord& o : pending_) batch.push_back({o.topic, o.partition, o.offset, o.key, o.value});
  uint64_t rejected = 0;
  absl::Status s = sink()->Apply(batch, [&](std::span<const RejectedRecord> refused) {
    rejected = refused.size();
    return SendDeadLetters(refused);
  });
  if (s.ok()) {
    {
      std::lock_guard<std::mutex> lock(r_->mu_);
      r_->counters_.records += batch.size();
      r_->counters_.batches += 1;
      r_->counters_.rejected += rejected;
      r_->counters_.health = SinkHealth::kHealthy;
    }
    if (failures_ > 0) {
      Log(LogLevel::kInfo, StrCat(sink()->name(), " sink: recovered after ", failures_, " failed attempt(s)"));
    }
    failures_ = 0;
    pending_.clear();
    Pause(false);
    return true;
  }
  if (absl::IsFailedPrecondition(s)) {
    // A newer runner took a partition over: drop it and everything held; the partitions
    // still ours resume from their stored positions.
    Log(LogLevel::kWarning, StrCat(sink()->name(), " sink: ", Message(s)));
    std::vector<TopicPartition> lost, kept;
    for (const TopicPartition& tp : assigned_) (sink()->Owns(tp) ? kept : lost).push_back(tp);
    if (!lost.empty()) {
      rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(lost.size());
      for (const TopicPartition& tp : lost) {
        rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition);
      }
      rd_kafka_pause_partitions(consumer_.get(), list);  // until the group moves them
      rd_kafka_topic_partition_list_destroy(list);
    }
    {
      std::lock_guard<std::mutex> lock(r_->mu_);
      r_->counters_.fenced += lost.size();
    }
    pending_.clear();
    assigned_ = kept;
    Pause(false);  // the kept ones, if a failed attempt had paused them
    if (absl::Status seek = SeekToPositions(); !seek.ok()) {
      Log(LogLevel::kWarning, StrCat(sink()->name(), " sink: seek after fencing: ", Message(seek)));
    }
    return true;
  }
  ++failures_;
  {
    std::lock_guard<std::mutex> lock(r_->mu_);
    r_->counters_.failures += 1;
  }
  Pause(true);  // hold the batch, fetch nothing more
  const bool open = failures_ >= options().breaker_failures;
  next_attempt_ = Clock::now() + std::chrono::milliseconds(open ? options().breaker_open_ms
                                                                 : BackoffMs(failures_));
  SetHealth(open ? SinkHealth::kCircuitOpen : SinkHealth::kRetrying, s);
  LogEvery(StrCat("sink-apply-", sink()->name()), 10'000, LogLevel::kWarning,
           StrCat(sink()->name(), " sink: batch of ", batch.size(), " failed (", failures_,
                  " in a row", open ? ", circuit open" : "", "): ", Message(s)));
  return false;
}

absl::Status SinkRunner::Loop::Run() {
  if (absl::Status s = Retrying("open", [&] { return sink()->Open(); }); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Producer>> dlq = Producer::Create({.properties = options().kafka});
  if (!dlq.ok()) return dlq.status();
  dlq_ = *std::move(dlq);
  // On the dev broker its fetch and session defaults (as the stream threads'), then kafka:.
  Properties props;
  if (dlq_->OnDevBroker(5'000)) props = DevBrokerConsumerDefaults();
  for (const auto& p : options().kafka) props.push_back(p);
  props.emplace_back("enable.partition.eof", "true");  // StopAtEnd's ends
  {
    std::lock_guard<std::mutex> lock(r_->mu_);
    r_->consumer_properties_ = props;
  }
  absl::StatusOr<KafkaHandle> consumer =
      NewGroupConsumer(options().group_id, props, &RebalanceCallback, this, options().topics);
  if (!consumer.ok()) return consumer.status();
  consumer_ = *std::move(consumer);
  SetHealth(SinkHealth::kHealthy);
  while (!r_->stop_.load() && fatal_.ok()) {
    if (r_->stop_at_end_.load() && DrainedToEnd()) {
      Log(LogLevel::kInfo, StrCat(sink()->name(), " sink: applied everything up to the end; stopping"));
      break;
    }
    const bool due = !pending_.empty() &&
                     (pending_.size() >= options().batch_size ||
                      Clock::now() - batch_started_ >= std::chrono::milliseconds(options().flush_interval_ms));
    if (due && Clock::now() >= next_attempt_) ApplyPending();
    const bool full = pending_.size() >= options().batch_size;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_.get(), full || paused_ ? 10 : 20);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (Assigned(rd_kafka_topic_name(m->rkt), m->partition)) {
        if (pending_.empty()) batch_started_ = Clock::now();
        OwnedRecord& o = pending_.emplace_back();
        o.topic = rd_kafka_topic_name(m->rkt);
        o.partition = m->partition;
        o.offset = m->offset;
        if (m->key != nullptr) o.key.assign(static_cast<const char*>(m->key), m->key_len);
        if (m->payload != nullptr) o.value.assign(static_cast<const char*>(m->payload), m->len);
      }
    } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (m->rkt != nullptr) eof_[TopicPartition{rd_kafka_topic_name(m->rkt), m->partition}] = m->offset;
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      LogEvery("sink-consume", 10'000, LogLevel::kWarning,
               StrCat(sink()->name(), " sink: consume: ", rd_kafka_message_errstr(m)));
    }
    rd_kafka_message_destroy(m);
  }
  if (!pending_.empty() && fatal_.ok()) ApplyPending();  // the last batch, one try
  pending_.clear();
  rd_kafka_consumer_close(consumer_.get());
  return fatal_;
}

SinkRunner::SinkRunner(std::unique_ptr<Sink> sink, SinkRunnerOptions options)
    : sink_(std::move(sink)), options_(std::move(options)) {}

SinkRunner::~SinkRunner() {
  Stop();
  Join().IgnoreError();
}

absl::StatusOr<std::unique_ptr<SinkRunner>> SinkRunner::Create(std::unique_ptr<Sink> sink,
                                                               SinkRunnerOptions options) {
  if (sink == nullptr) return absl::InvalidArgumentError("sink runner: no sink");
  if (options.topics.empty()) return absl::InvalidArgumentError("sink runner: no topics");
  if (options.group_id.empty()) return absl::InvalidArgumentError("sink runner: no group id");
  if (options.batch_size < 1) return absl::InvalidArgumentError("sink runner: batch size must be >= 1");
  return std::unique_ptr<SinkRunner>(new SinkRunner(std::move(sink), std::move(options)));
}

void SinkRunner::Start() {
  thread_ = std::thread([this] {
    Loop loop(this);
    absl::Status s = loop.Run();
    if (!s.ok()) Log(LogLevel::kError, StrCat(sink_->name(), " sink runner failed: ", Message(s)));
    std::lock_guard<std::mutex> lock(mu_);
    status_ = s;
    counters_.health = s.ok() ? SinkHealth::kStopped : SinkHealth::kFailed;
  });
}

void SinkRunner::Stop() { stop_.store(true); }

void SinkRunner::StopAtEnd() { stop_at_end_.store(true); }

absl::Status SinkRunner::Join() {
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

Properties SinkRunner::consumer_properties() const {
  std::lock_guard<std::mutex> lock(mu_);
  return consumer_properties_;
}

SinkRunnerCounters SinkRunner::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

}  // namespace streammetrics::kafka
