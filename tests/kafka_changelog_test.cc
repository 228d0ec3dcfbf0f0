// Changelogs on Kafka, against the dev broker (librdkafka's mock cluster, in-process):
// the record encoding, transactional writes, restore reads and the backwards search
// for the last commit marker. What these prove given the dev broker's limits
// (DESIGN.md): the dev broker shows records of aborted transactions to read_committed
// readers, so the tests show that restore discards them by the commit markers — on a
// real broker they would not even be read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/kafka/changelog_reader.h"
#include "engine/kafka/dev_broker.h"
#include "engine/kafka/process_id.h"
#include "engine/kafka/producer.h"
#include "operators/strings.h"
#include "statestore/changelog.h"

namespace streammetrics::kafka {
namespace {

using ::testing::ElementsAre;

class KafkaChangelogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DevBroker>> broker = DevBroker::Start(3);
    ASSERT_TRUE(broker.ok()) << broker.status();
    broker_ = *std::move(broker);
    ASSERT_TRUE(broker_->CreateTopic(ChangelogTopic("app", "s"), 4).ok());
  }
  Properties Props() const { return {{"bootstrap.servers", broker_->bootstrap_servers()}}; }
  std::unique_ptr<Producer> NewProducer(std::string txn_id) {
    absl::StatusOr<std::unique_ptr<Producer>> p =
        Producer::Create({.properties = Props(), .transactional_id = txn_id});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  std::unique_ptr<DevBroker> broker_;
};

std::string Marker(uint64_t inc, uint64_t seq, int64_t offset) {
  return CommitMarker{.incarnation = inc, .sequence = seq, .offsets = {{"in", 2, offset}}}
      .Encode();
}

TEST(KafkaChangeEncoding, RoundTripsEveryType) {
  for (const ChangeRecord& in :
       {ChangeRecord{.type = ChangeType::kPut, .key = "k", .window_start = -5, .value = "v",
                     .incarnation = 7, .sequence = 9, .windowed = true},
        ChangeRecord{.type = ChangeType::kPut, .key = std::string_view("\0x", 2), .value = "",
                     .incarnation = 1, .sequence = 2},
        ChangeRecord{.type = ChangeType::kDelete, .key = "gone", .window_start = 60'000,
                     .incarnation = 1, .sequence = 3, .windowed = true},
        ChangeRecord{.type = ChangeType::kDeleteBefore, .window_start = 123, .incarnation = 1,
                     .sequence = 3, .windowed = true},
        ChangeRecord{.type = ChangeType::kCommit, .value = "m", .incarnation = 1, .sequence = 3}}) {
    std::string key, header;
    EncodeChangeKey(in, &key);
    EncodeChangeHeader(in, &header);
    std::optional<std::string_view> value;
    if (in.type != ChangeType::kDelete) value = in.value;
    ChangeRecord out;
    ASSERT_TRUE(DecodeChange(key, value, header, &out).ok());
    EXPECT_EQ(out.type, in.type);
    EXPECT_EQ(out.key, in.key);
    EXPECT_EQ(out.window_start, in.window_start);
    EXPECT_EQ(out.value, in.value);
    EXPECT_EQ(out.incarnation, in.incarnation);
    EXPECT_EQ(out.sequence, in.sequence);
    EXPECT_EQ(out.windowed, in.windowed);
  }
  ChangeRecord out;
  EXPECT_EQ(DecodeChange("k", "v", "short", &out).code(), absl::StatusCode::kDataLoss);
}

// Proves a commit whose transaction call times out (the coordinator slow: EndTxn answered
// after 1.5 s, the producer's calls time out after 0.5 s) is made again — librdkafka
// says a timed-out commit may be — and commits. Before, the commit failed: the thread
// aborted and restored every task for a broker slow for a moment.
TEST_F(KafkaChangelogTest, ACommitThatTimesOutIsRetriedAndCommits) {
  ASSERT_TRUE(broker_->SetCoordinator("transaction", "app-0-9", 1).ok());
  absl::StatusOr<std::unique_ptr<Producer>> producer =
      Producer::Create({.properties = Props(), .transactional_id = "app-0-9", .timeout_ms = 500});
  ASSERT_TRUE(producer.ok()) << producer.status();
  TaskProducer task(producer->get(), "app", 1);
  ASSERT_TRUE((*producer)->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "a", .value = "1", .incarnation = 1,
                    .sequence = 1});
  ASSERT_TRUE((*producer)->Flush().ok());
  constexpr int16_t kEndTxn = 26;
  broker_->DelayNextRequest(1, kEndTxn, 1'500);
  const absl::Status committed = (*producer)->CommitTransaction({});
  EXPECT_TRUE(committed.ok()) << committed;
  // Usable after: the next transaction commits at once.
  ASSERT_TRUE((*producer)->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "b", .value = "2", .incarnation = 1,
                    .sequence = 2});
  EXPECT_TRUE((*producer)->CommitTransaction({}).ok());
}

// Proves that a producer whose InitProducerId answers after the call's timeout (a
// coordinator slow for a moment, or a loaded machine) is still created: the retriable
// timeout is retried, not returned as a failure to create.
TEST_F(KafkaChangelogTest, AnInitThatTimesOutIsRetried) {
  ASSERT_TRUE(broker_->SetCoordinator("transaction", "app-0-8", 1).ok());
  constexpr int16_t kInitProducerId = 22;
  broker_->DelayNextRequest(1, kInitProducerId, 2'000);
  absl::StatusOr<std::unique_ptr<Producer>> producer =
      Producer::Create({.properties = Props(), .transactional_id = "app-0-8", .timeout_ms = 1'000});
  ASSERT_TRUE(producer.ok()) << producer.status();
  ASSERT_TRUE((*producer)->BeginTransaction().ok());
  EXPECT_TRUE((*producer)->CommitTransaction({}).ok());
}

// Proves a changelog partition without a leader (one being elected after a broker was
// lost) is not taken for an absent, empty changelog: the restore's reads fail as
// retriable (UNAVAILABLE) until a leader is back, then find the commit. Before, the
// restore found no marker in a changelog full of them.
TEST_F(KafkaChangelogTest, APartitionWithoutALeaderIsUnavailableNotEmpty) {
  std::unique_ptr<Producer> producer = NewProducer("app-0-7");
  ASSERT_NE(producer, nullptr);
  TaskProducer task(producer.get(), "app", 3);
  ASSERT_TRUE(producer->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "a", .value = "1", .incarnation = 1,
                    .sequence = 1});
  const std::string m1 = Marker(1, 1, 40);
  task.Append("s", {.type = ChangeType::kCommit, .value = m1, .incarnation = 1, .sequence = 1});
  ASSERT_TRUE(producer->CommitTransaction({}).ok());

  const std::string topic = ChangelogTopic("app", "s");
  ASSERT_TRUE(broker_->SetLeader(topic, 3, -1).ok());
  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> kafka_reader =
      KafkaChangelogReader::Create(Props(), "app", /*timeout_ms=*/1'000);
  ASSERT_TRUE(kafka_reader.ok()) << kafka_reader.status();
  std::unique_ptr<ChangelogReader> reader = (*kafka_reader)->ForPartition(3);
  absl::StatusOr<std::optional<CommitMarker>> last = reader->LastMarker("s", 0);
  EXPECT_TRUE(absl::IsUnavailable(last.status())) << last.status();
  absl::StatusOr<int64_t> end = reader->Read("s", 0, [](int64_t, const ChangeRecord&) {
    return absl::OkStatus();
  });
  EXPECT_TRUE(absl::IsUnavailable(end.status())) << end.status();

  ASSERT_TRUE(broker_->SetLeader(topic, 3, 2).ok());
  last = reader->LastMarker("s", 0);
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->Encode(), m1);
  // A topic that does not exist is still an empty changelog.
  absl::StatusOr<int64_t> none = reader->Read("absent", 0, [](int64_t, const ChangeRecord&) {
    return absl::OkStatus();
  });
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
}

// Proves a transactional write and a restore read round-trip every record at the task's
// partition, that the aborted transaction's records (visible on the dev broker) are
// discarded by restore, and that LastMarker finds the last commit even when it lies
// further back than one backwards chunk (1,000 records).
TEST_F(KafkaChangelogTest, TransactionalWritesRestoreExactlyAndLastMarkerSearchesBack) {
  std::unique_ptr<Producer> producer = NewProducer("app-0-0");
  ASSERT_NE(producer, nullptr);
  TaskProducer task(producer.get(), "app", 2);
  ASSERT_TRUE(producer->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "a", .value = "1", .incarnation = 5,
                    .sequence = 1});
  task.Append("s", {.type = ChangeType::kDelete, .key = "b", .incarnation = 5, .sequence = 1});
  const std::string m1 = Marker(5, 1, 100);
  task.Append("s", {.type = ChangeType::kCommit, .value = m1, .incarnation = 5, .sequence = 1});
  ASSERT_TRUE(producer->CommitTransaction({}).ok());
  // After the three records (the transaction's control record follows at offset 3).
  EXPECT_EQ(task.EndOffset("s"), 3);

  // A second transaction, aborted after 2,500 records and no marker.
  ASSERT_TRUE(producer->BeginTransaction().ok());
  for (int i = 0; i < 2'500; ++i) {
    task.Append("s", {.type = ChangeType::kPut, .key = StrCat("x", i), .value = "lost",
                      .incarnation = 5, .sequence = 2});
  }
  ASSERT_TRUE(producer->Flush().ok());
  ASSERT_TRUE(producer->AbortTransaction().ok());

  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> kafka_reader =
      KafkaChangelogReader::Create(Props(), "app");
  ASSERT_TRUE(kafka_reader.ok()) << kafka_reader.status();
  std::unique_ptr<ChangelogReader> reader = (*kafka_reader)->ForPartition(2);
  std::vector<std::string> seen;
  absl::StatusOr<int64_t> end = reader->Read("s", 0, [&](int64_t, const ChangeRecord& c) {
    if (seen.size() < 3) seen.push_back(StrCat(static_cast<int>(c.type), ":", c.key, "=", c.value));
    return absl::OkStatus();
  });
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_THAT(seen, ElementsAre("1:a=1", "2:b=", StrCat("4:=", m1)));

  absl::StatusOr<std::optional<CommitMarker>> last = reader->LastMarker("s", 0);
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->sequence, 1u);
  EXPECT_EQ((*last)->offsets[0].next_offset, 100);

  std::vector<std::string> applied;
  absl::StatusOr<RestoreStats> stats = RestoreFromChangelog(
      *reader, "s", 0, UINT64_MAX, [&](std::span<const ChangeRecord> commit) {
        for (const ChangeRecord& c : commit) applied.push_back(StrCat(c.key, "=", c.value));
        return absl::OkStatus();
      });
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_THAT(applied, ElementsAre("a=1", "b="));
  EXPECT_EQ(stats->records_discarded, 2'500u);  // shown by the dev broker, discarded
  EXPECT_EQ(stats->last_marker->sequence, 1u);

  // Another partition of the same changelog is empty, and so is a missing changelog (the
  // runtime checks its topics at start).
  std::unique_ptr<ChangelogReader> other = (*kafka_reader)->ForPartition(0);
  EXPECT_EQ(*other->Read("s", 0, [](int64_t, const ChangeRecord&) {
    return absl::InternalError("nothing to read");
  }), 0);
  EXPECT_EQ(*other->Read("missing", 0, [](int64_t, const ChangeRecord&) {
    return absl::InternalError("nothing to read");
  }), 0);
}

// Proves a restore goes on at once when its prefetch bound stopped the fetcher: with the
// bound at 64 KB, ~400 of these 150-byte records, a restore of 20,000 (a fetch brings a
// few thousand: the producer's batches) fills the queue again and again; a stopped fetch
// is retried after 10 ms (fetch.queue.backoff.ms), and every record is read once, in
// order, in well under 2 s: ~0.08 s here, and 5-6 s with librdkafka's default 1 s backoff.
TEST_F(KafkaChangelogTest, ARestoreGoesOnAtOnceWhenThePrefetchBoundStoppedItsFetcher) {
  std::unique_ptr<Producer> producer = NewProducer("app-0-1");
  ASSERT_NE(producer, nullptr);
  TaskProducer task(producer.get(), "app", 1);
  constexpr int kRecords = 20'000;
  const std::string value(150, 'v');
  ASSERT_TRUE(producer->BeginTransaction().ok());
  for (int i = 0; i < kRecords; ++i) {
    task.Append("s", {.type = ChangeType::kPut, .key = StrCat("k", i), .value = value,
                      .incarnation = 7, .sequence = 1});
  }
  ASSERT_TRUE(producer->CommitTransaction({}).ok());

  Properties props = Props();
  props.emplace_back("queued.max.messages.kbytes", "64");
  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> kafka_reader =
      KafkaChangelogReader::Create(props, "app");
  ASSERT_TRUE(kafka_reader.ok()) << kafka_reader.status();
  std::unique_ptr<ChangelogReader> reader = (*kafka_reader)->ForPartition(1);
  int next = 0;
  bool in_order = true;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<int64_t> end = reader->Read("s", 0, [&](int64_t, const ChangeRecord& c) {
    in_order = in_order && c.key == StrCat("k", next) && c.value == value;
    ++next;
    return absl::OkStatus();
  });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(next, kRecords);
  EXPECT_TRUE(in_order);
  // The records and the transaction's commit marker, which takes an offset as on Kafka.
  EXPECT_EQ(*end, kRecords + 1);
  EXPECT_LT(elapsed, std::chrono::seconds(2));
}

// Proves the producer's holding (Producer::Hold, as the runtime uses it under
// exactly-once): held records reach the topic only when released (by Flush, by the
// commit or by 4 MiB held), in the order sent, with their headers and null values;
// dropped ones never do. The dev broker shows records before their transaction commits,
// so reading the changelog shows when they were queued.
TEST_F(KafkaChangelogTest, HeldRecordsAreQueuedTogetherInOrderOrDropped) {
  std::unique_ptr<Producer> producer = NewProducer("app-0-1");
  ASSERT_NE(producer, nullptr);
  absl::StatusOr<std::unique_ptr<KafkaChangelogReader>> kafka_reader =
      KafkaChangelogReader::Create(Props(), "app");
  ASSERT_TRUE(kafka_reader.ok()) << kafka_reader.status();
  std::unique_ptr<ChangelogReader> reader = (*kafka_reader)->ForPartition(1);
  auto read_all = [&] {
    std::vector<std::string> seen;
    EXPECT_TRUE(reader
                    ->Read("s", 0,
                           [&](int64_t, const ChangeRecord& c) {
                             seen.push_back(StrCat(static_cast<int>(c.type), ":", c.key, "=",
                                                   c.value.size() > 8 ? StrCat(c.value.size(), "B")
                                                                      : std::string(c.value)));
                             return absl::OkStatus();
                           })
                    .ok());
    return seen;
  };
  TaskProducer task(producer.get(), "app", 1);
  producer->HoldAlways();
  ASSERT_TRUE(producer->BeginTransaction().ok());
  task.Append("s", {.type = ChangeType::kPut, .key = "dropped", .value = "x", .incarnation = 1,
                    .sequence = 1});
  producer->DropHeld();  // still holding afterwards
  task.Append("s", {.type = ChangeType::kPut, .key = "a", .value = "1", .incarnation = 1,
                    .sequence = 1});
  task.Append("s", {.type = ChangeType::kDelete, .key = "b", .incarnation = 1, .sequence = 1});
  task.Append("s", {.type = ChangeType::kCommit, .value = "m", .incarnation = 1, .sequence = 1});
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_THAT(read_all(), ElementsAre()) << "held records were queued";
  ASSERT_TRUE(producer->CommitTransaction({}).ok());  // flushes: queues what is held
  EXPECT_EQ(task.EndOffset("s"), 3);
  EXPECT_THAT(read_all(), ElementsAre("1:a=1", "2:b=", "4:=m"));

  // 4 MiB held are queued without a flush: five 900 KB records, the fifth passes it.
  ASSERT_TRUE(producer->BeginTransaction().ok());
  const std::string big(900'000, 'v');
  for (int i = 0; i < 5; ++i) {
    task.Append("s", {.type = ChangeType::kPut, .key = StrCat("big", i), .value = big,
                      .incarnation = 1, .sequence = 2});
    if (i == 3) {
      absl::SleepFor(absl::Milliseconds(300));
      EXPECT_EQ(read_all().size(), 3u) << "queued before 4 MiB were held";
    }
  }
  std::vector<std::string> seen;
  for (int i = 0; i < 100 && seen.size() < 8; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
    seen = read_all();
  }
  EXPECT_THAT(seen, ElementsAre("1:a=1", "2:b=", "4:=m", "1:big0=900000B", "1:big1=900000B",
                                "1:big2=900000B", "1:big3=900000B", "1:big4=900000B"));
  ASSERT_TRUE(producer->CommitTransaction({}).ok());
}

// Proves an instance's process id — the middle of its transactional ids — is made once per
// state directory, kept there and read back the same by every later start; another
// directory gets another; a file holding anything else is refused, naming it, rather than
// silently replaced (a new id would no longer fence the old instance's transactions).
// Before, transactional ids came from getpid(): 1 in every container, so two replicas
// fenced each other.
TEST(ProcessId, IsMadeOncePerStateDirectoryAndKept) {
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / StrCat("sm-process-id-", ::getpid());
  std::filesystem::remove_all(root);
  const std::string a = (root / "a" / "app").string(), b = (root / "b" / "app").string();
  absl::StatusOr<std::string> first = LoadOrCreateProcessId(a);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(IsProcessId(*first)) << *first;
  EXPECT_EQ((*first)[14], '4');  // version 4: random
  EXPECT_NE(std::string("89ab").find((*first)[19]), std::string::npos);  // RFC 4122 variant
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> again = LoadOrCreateProcessId(a);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *first);
  }
  std::ifstream file(std::filesystem::path(a) / "process-id");
  std::string stored;
  std::getline(file, stored);
  EXPECT_EQ(stored, *first);
  std::set<std::string> ids = {*first};
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> other = LoadOrCreateProcessId((root / StrCat("d", i)).string());
    ASSERT_TRUE(other.ok()) << other.status();
    ids.insert(*other);
  }
  EXPECT_EQ(ids.size(), 21u);
  std::filesystem::create_directories(b);
  std::ofstream(std::filesystem::path(b) / "process-id") << "12345\n";
  absl::StatusOr<std::string> bad = LoadOrCreateProcessId(b);
  EXPECT_TRUE(absl::IsFailedPrecondition(bad.status())) << bad.status();
  EXPECT_EQ(bad.status().message(),
            StrCat(b, "/process-id holds no process id (a UUID); delete it to make a new one"));
  EXPECT_FALSE(IsProcessId("0f0e0d0c-0b0a-4908-8706-05040302010"));   // 35 characters
  EXPECT_FALSE(IsProcessId("0f0e0d0c-0b0a-4908-8706-05040302010G"));  // not hex
  EXPECT_FALSE(IsProcessId("0f0e0d0c0b0a-4908-8706-050403020100a"));  // dash misplaced
  EXPECT_TRUE(IsProcessId("0f0e0d0c-0b0a-4908-8706-050403020100"));
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace streammetrics::kafka
