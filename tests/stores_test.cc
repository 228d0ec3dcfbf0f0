// In-memory key-value and window stores: the contract RocksDB stores will also meet.
#include <gtest/gtest.h>

#include "statestore/in_memory_stores.h"

namespace streammetrics {
namespace {

TEST(InMemoryKeyValueStore, PutGetOverwriteDelete) {
  auto store = NewInMemoryKeyValueStore("kv");
  EXPECT_EQ(store->name(), "kv");
  std::string v;
  EXPECT_EQ(*store->Get("a", &v), false);
  ASSERT_TRUE(store->Put("a", "1").ok());
  ASSERT_TRUE(store->Put("a", "22").ok());
  EXPECT_EQ(*store->Get("a", &v), true);
  EXPECT_EQ(v, "22");
  EXPECT_EQ(store->ApproximateNumEntries(), 1u);
  ASSERT_TRUE(store->Delete("a").ok());
  ASSERT_TRUE(store->Delete("never-there").ok());
  EXPECT_EQ(*store->Get("a", &v), false);
  EXPECT_EQ(store->ApproximateNumEntries(), 0u);
}

TEST(InMemoryKeyValueStore, RangeIsOrderedHalfOpenAndStopsEarly) {
  auto store = NewInMemoryKeyValueStore("kv");
  for (std::string k : {std::string("d"), std::string("a"), std::string("c"), std::string("b"),
                        std::string("\0z", 2)}) {
    ASSERT_TRUE(store->Put(k, k).ok());
  }
  std::string seen;
  auto collect = [&](std::string_view k, std::string_view) {
    seen.append(k);
    return absl::OkStatus();
  };
  ASSERT_TRUE(store->Range("b", "d", collect).ok());
  EXPECT_EQ(seen, "bc");
  seen.clear();
  ASSERT_TRUE(store->Range("", "", collect).ok());
  EXPECT_EQ(seen, std::string("\0zabcd", 6));
  int calls = 0;
  absl::Status s = store->Range("", "", [&](std::string_view, std::string_view) {
    return ++calls == 2 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);
}

TEST(InMemoryKeyValueStore, ClosedStoreRefusesEveryCall) {
  auto store = NewInMemoryKeyValueStore("kv");
  ASSERT_TRUE(store->Put("a", "1").ok());
  ASSERT_TRUE(store->Close().ok());
  std::string v;
  EXPECT_EQ(store->Put("a", "1").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Get("a", &v).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Flush().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(InMemoryWindowStore, FetchByKeyAndTime) {
  auto store = NewInMemoryWindowStore("w");
  ASSERT_TRUE(store->Put("k1", 0, "a").ok());
  ASSERT_TRUE(store->Put("k1", 60, "b").ok());
  ASSERT_TRUE(store->Put("k2", 60, "c").ok());
  ASSERT_TRUE(store->Put("k1", 120, "d").ok());
  ASSERT_TRUE(store->Put("k1", 60, "B").ok());  // overwrite
  EXPECT_EQ(store->ApproximateNumEntries(), 4u);
  std::string v;
  EXPECT_EQ(*store->Fetch("k1", 60, &v), true);
  EXPECT_EQ(v, "B");
  EXPECT_EQ(*store->Fetch("k2", 0, &v), false);

  std::string seen;
  ASSERT_TRUE(store
                  ->FetchRange("k1", 0, 120,
                               [&](int64_t start, std::string_view value) {
                                 seen += std::to_string(start) + "=" + std::string(value) + ";";
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(seen, "0=a;60=B;");  // [0, 120): 120 excluded
  seen.clear();
  ASSERT_TRUE(store
                  ->FetchAll(60, INT64_MAX,
                             [&](std::string_view key, int64_t start, std::string_view value) {
                               seen += std::string(key) + "@" + std::to_string(start) + ";";
                               return absl::OkStatus();
                             })
                  .ok());
  EXPECT_EQ(seen, "k1@60;k2@60;k1@120;");
}

TEST(InMemoryWindowStore, DeleteBeforeDropsWholeSegments) {
  auto store = NewInMemoryWindowStore("w");
  for (int64_t t : {0, 10, 20, 30}) {
    ASSERT_TRUE(store->Put("a", t, "x").ok());
    ASSERT_TRUE(store->Put("b", t, "y").ok());
  }
  ASSERT_TRUE(store->DeleteBefore(20).ok());
  EXPECT_EQ(store->ApproximateNumEntries(), 4u);
  std::string v;
  EXPECT_EQ(*store->Fetch("a", 10, &v), false);
  EXPECT_EQ(*store->Fetch("a", 20, &v), true);
  ASSERT_TRUE(store->Delete("a", 20).ok());
  ASSERT_TRUE(store->Delete("a", 999).ok());
  EXPECT_EQ(store->ApproximateNumEntries(), 3u);
}

}  // namespace
}  // namespace streammetrics
