// The benchmarks' input (kafka_bench, peer_bench): a pool of generated events produced over
// and over, cheap enough per event not to take the cores from what is measured.
#ifndef STREAMMETRICS_BENCH_EVENT_POOL_H_
#define STREAMMETRICS_BENCH_EVENT_POOL_H_

#include <charconv>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "apps/event_generator.h"

namespace streammetrics {

// The sustained runs' input: 65,536 generated events (the generator's default mix of
// invalid, duplicate and late events), produced over and over; each pass over the pool
// moves every event's time on by the pool's span and gives it a new id (the last 8 hex
// digits of its eventId: the pass), so events stay distinct (duplicates stay duplicates of
// their pass) and windows keep closing. Generating each event anew cost the feeder ~0.2
// of this machine's two cores at 500K events/s, taken from the engine it measures.
class EventPool {
 public:
  explicit EventPool(double events_per_second, int services = 6) {
    GeneratorOptions go;
    go.services = services;
    go.start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count() -
                  30 * 60'000;
    go.events_per_second = events_per_second;
    EventGenerator generator(go);
    std::string doc;
    for (size_t i = 0; i < kSize; ++i) {
      doc.clear();
      generator.Next(&doc);
      Entry e{doc, std::string(GeneratedServiceId(doc)), std::string::npos, std::string::npos, 0};
      const size_t id = doc.find("\"eventId\":\"");
      if (id != std::string::npos && doc.size() >= id + 11 + 36 && doc[id + 11 + 36] == '"') {
        e.id_end = id + 11 + 36;
      }
      const size_t ts = doc.find("\"timestamp\":");
      if (ts != std::string::npos && ts + 12 + 13 <= doc.size() &&
          std::from_chars(doc.data() + ts + 12, doc.data() + ts + 25, e.timestamp).ptr == doc.data() + ts + 25 &&
          e.timestamp >= 1'000'000'000'000) {
        e.ts_at = ts + 12;
      }
      pool_.push_back(std::move(e));
    }
    span_ms_ = static_cast<int64_t>(kSize * 1'000 / events_per_second);
  }

  // The next event into *doc; its key (serviceId).
  std::string_view Next(std::string* doc) {
    const Entry& e = pool_[next_ % kSize];
    const uint64_t pass = next_ / kSize;
    ++next_;
    doc->assign(e.doc);
    if (pass == 0) return e.key;
    if (e.id_end != std::string::npos) {
      static constexpr char kHex[] = "0123456789abcdef";
      for (int d = 0; d < 8; ++d) (*doc)[e.id_end - 1 - d] = kHex[(pass >> (4 * d)) & 15];
    }
    if (e.ts_at != std::string::npos) {
      std::to_chars(doc->data() + e.ts_at, doc->data() + e.ts_at + 13,
                    e.timestamp + static_cast<int64_t>(pass) * span_ms_);
    }
    return e.key;
  }

 private:
  static constexpr size_t kSize = 65'536;
  struct Entry {
    std::string doc, key;
    size_t id_end, ts_at;  // where the eventId ends (its closing quote), the timestamp starts
    int64_t timestamp;
  };
  std::vector<Entry> pool_;
  int64_t span_ms_ = 0;
  uint64_t next_ = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_BENCH_EVENT_POOL_H_
