// A deterministic generator of metric events (reference/000's load generator, richer):
// services with instances and endpoints, lognormal latencies per endpoint, status
// codes, and configurable fractions of invalid, duplicate and late events.
#ifndef STREAMMETRICS_APPS_EVENT_GENERATOR_H_
#define STREAMMETRICS_APPS_EVENT_GENERATOR_H_

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace streammetrics {

struct GeneratorOptions {
  uint64_t seed = 42;
  int64_t start_ms = 1'707'267'600'000;  // 2024-02-07T01:00:00Z
  // Event-time spacing: event i is stamped start + i * 1000 / rate (± jitter).
  double events_per_second = 10'000;
  int64_t jitter_ms = 200;  // out-of-order within this, well inside a 10 s grace
  // The first 8 are distinct services; beyond 8 their profiles repeat under names with
  // a number ("payment-service-2"): many keys, for spreading over many partitions.
  int services = 6;         // 1 to 10,000
  int instances_per_service = 3;
  double invalid_fraction = 0.01;
  double duplicate_fraction = 0.005;
  double late_fraction = 0.001;
  int64_t late_by_ms = 15 * 60 * 1000;
};

class EventGenerator {
 public:
  enum class Kind { kValid, kInvalid, kDuplicate, kLate };

  explicit EventGenerator(GeneratorOptions options);
  // Appends the next event's JSON document (one line, no newline) to *out.
  Kind Next(std::string* out);
  // Event time of the most recent valid event.
  int64_t current_time_ms() const { return now_ms_; }

 private:
  void AppendValid(int64_t ts, std::string* out);
  void AppendUuid(std::string* out);

  GeneratorOptions options_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
  std::normal_distribution<double> normal_{0.0, 1.0};
  uint64_t index_ = 0;
  int64_t now_ms_ = 0;
  std::vector<std::string> service_names_;  // of services 0..services-1
  std::vector<std::string> recent_;  // ring of recent valid documents, for duplicates
  size_t recent_next_ = 0;
};

// The serviceId of a generated document — the key it is produced with, so that a
// service's events share a partition (reference/001) — or "" when it has none.
std::string_view GeneratedServiceId(std::string_view document);

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_EVENT_GENERATOR_H_
