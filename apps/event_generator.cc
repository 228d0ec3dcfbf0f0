#include "apps/event_generator.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>

#include "operators/aggregate_result.h"
#include "operators/metric_event_codec.h"
#include "operators/strings.h"

namespace streammetrics {
namespace {

struct Endpoint {
  const char* path;
  const char* method;
  double median_ms;
};
struct Service {
  const char* name;
  Endpoint endpoints[3];
};
constexpr Service kServices[] = {
    {"payment-service", {{"/api/v1/payments", "POST", 180}, {"/api/v1/payments/{id}", "GET", 40},
                         {"/api/v1/refunds", "POST", 250}}},
    {"user-service", {{"/api/v1/users", "GET", 25}, {"/api/v1/users", "POST", 60},
                      {"/api/v1/sessions", "POST", 35}}},
    {"order-service", {{"/api/v1/orders", "POST", 120}, {"/api/v1/orders/{id}", "GET", 30},
                       {"/api/v1/orders", "GET", 80}}},
    {"inventory-service", {{"/api/v1/stock", "GET", 15}, {"/api/v1/stock", "PUT", 45},
                           {"/api/v1/reservations", "POST", 70}}},
    {"search-service", {{"/api/v1/search", "GET", 90}, {"/api/v1/suggest", "GET", 20},
                        {"/api/v1/index", "POST", 400}}},
    {"notification-service", {{"/api/v1/email", "POST", 300}, {"/api/v1/sms", "POST", 220},
                              {"/api/v1/push", "POST", 50}}},
    {"shipping-service", {{"/api/v1/shipments", "POST", 150}, {"/api/v1/rates", "GET", 110},
                          {"/api/v1/track", "GET", 45}}},
    {"auth-service", {{"/api/v1/token", "POST", 30}, {"/api/v1/verify", "GET", 8},
                      {"/api/v1/keys", "GET", 5}}},
};

}  // namespace

EventGenerator::EventGenerator(GeneratorOptions options)
    : options_(options), rng_(options.seed), now_ms_(options.start_ms) {
  options_.services = std::clamp(options_.services, 1, 10'000);
  constexpr int kProfiles = static_cast<int>(std::size(kServices));
  for (int i = 0; i < options_.services; ++i) {
    service_names_.push_back(i < kProfiles ? std::string(kServices[i].name)
                                           : StrCat(kServices[i % kProfiles].name, "-", i / kProfiles + 1));
  }
  options_.instances_per_service = std::max(1, options_.instances_per_service);
  recent_.resize(256);
}

void EventGenerator::AppendUuid(std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t a = rng_(), b = rng_();
  char buf[36];
  int pos = 0;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) buf[pos++] = '-';
    uint64_t word = i < 16 ? a : b;
    int nibble = static_cast<int>((word >> ((i % 16) * 4)) & 0xf);
    if (i == 12) nibble = 4;                   // version 4
    if (i == 16) nibble = 8 | (nibble & 0x3);  // variant 10xx
    buf[pos++] = kHex[nibble];
  }
  out->push_back('"');
  out->append(buf, 36);
  out->push_back('"');
}

void EventGenerator::AppendValid(int64_t ts, std::string* out) {
  const size_t service = rng_() % static_cast<size_t>(options_.services);
  const Service& svc = kServices[service % std::size(kServices)];
  const std::string& service_name = service_names_[service];
  const Endpoint& ep = svc.endpoints[rng_() % 3];
  const int instance = static_cast<int>(rng_() % options_.instances_per_service);
  const double roll = unit_(rng_);
  // 70% HTTP request latency, 20% database query latency, 10% external API calls.
  const char* type = "HTTP_REQUEST";
  const char* name = "api.request.duration";
  double median = ep.median_ms;
  if (roll >= 0.7 && roll < 0.9) {
    type = "DATABASE_QUERY";
    name = "db.query.duration";
    median = ep.median_ms * 0.3;
  } else if (roll >= 0.9) {
    type = "EXTERNAL_API_CALL";
    name = "external.call.duration";
    median = ep.median_ms * 1.5;
  }
  double value = median * std::exp(0.5 * normal_(rng_));
  value = std::round(value * 1000.0) / 1000.0;
  if (value <= 0) value = 0.001;
  const double status_roll = unit_(rng_);
  int status = status_roll < 0.95 ? 200 : status_roll < 0.98 ? 404 : 503;

  out->append("{\"eventId\":");
  AppendUuid(out);
  StrAppend(out, ",\"timestamp\":", ts, ",\"serviceId\":\"", service_name, "\",\"instanceId\":\"",
            service_name, "-pod-", instance, "\",\"metricType\":\"", type, "\",\"metricName\":\"",
            name, "\",\"value\":");
  AppendJsonDouble(value, out);
  StrAppend(out, ",\"unit\":\"milliseconds\",\"tags\":{\"endpoint\":\"", ep.path,
            "\",\"method\":\"", ep.method, "\",\"statusCode\":\"", status,
            "\",\"region\":\"us-east-1\"},\"metadata\":{\"traceId\":");
  AppendUuid(out);
  out->append("}}");
}

EventGenerator::Kind EventGenerator::Next(std::string* out) {
  ++index_;
  const double base = static_cast<double>(options_.start_ms) +
                      static_cast<double>(index_) * 1000.0 / options_.events_per_second;
  int64_t jitter = options_.jitter_ms > 0
                       ? static_cast<int64_t>(rng_() % (2 * options_.jitter_ms + 1)) -
                             options_.jitter_ms
                       : 0;
  int64_t ts = static_cast<int64_t>(base) + jitter;
  now_ms_ = std::max(now_ms_, ts);

  double roll = unit_(rng_);
  if (roll < options_.invalid_fraction) {
    switch (rng_() % 5) {
      case 0:
        out->append("{\"eventId\":\"broken\",\"timestamp\":");  // truncated JSON
        break;
      case 1:
        StrAppend(out, "{\"eventId\":\"neg-", index_, "\",\"timestamp\":", ts,
                  ",\"serviceId\":\"payment-service\",\"instanceId\":\"p-1\",\"metricType\":"
                  "\"HTTP_REQUEST\",\"metricName\":\"api.request.duration\",\"value\":-5}");
        break;
      case 2:
        StrAppend(out, "{\"eventId\":\"nosvc-", index_, "\",\"timestamp\":", ts,
                  ",\"instanceId\":\"p-1\",\"metricType\":\"HTTP_REQUEST\","
                  "\"metricName\":\"api.request.duration\",\"value\":12.5}");
        break;
      case 3:
        StrAppend(out, "{\"eventId\":\"type-", index_, "\",\"timestamp\":", ts,
                  ",\"serviceId\":\"user-service\",\"instanceId\":\"u-1\",\"metricType\":"
                  "\"GAUGE_OF_DOOM\",\"metricName\":\"api.request.duration\",\"value\":3}");
        break;
      default:
        StrAppend(out, "{\"eventId\":\"str-", index_, "\",\"timestamp\":", ts,
                  ",\"serviceId\":\"user-service\",\"instanceId\":\"u-1\",\"metricType\":"
                  "\"HTTP_REQUEST\",\"metricName\":\"api.request.duration\",\"value\":\"fast\"}");
        break;
    }
    return Kind::kInvalid;
  }
  roll -= options_.invalid_fraction;
  if (roll < options_.duplicate_fraction && !recent_[0].empty()) {
    out->append(recent_[rng_() % std::min(recent_next_, recent_.size())]);
    return Kind::kDuplicate;
  }
  roll -= options_.duplicate_fraction;
  if (roll < options_.late_fraction) {
    AppendValid(ts - options_.late_by_ms, out);
    return Kind::kLate;
  }
  size_t start = out->size();
  AppendValid(ts, out);
  recent_[recent_next_ % recent_.size()].assign(*out, start);
  ++recent_next_;
  return Kind::kValid;
}

std::string_view GeneratedServiceId(std::string_view document) {
  constexpr std::string_view kField = "\"serviceId\":\"";
  const size_t at = document.find(kField);
  if (at == std::string_view::npos) return {};
  const size_t begin = at + kField.size();
  const size_t end = document.find('"', begin);
  if (end == std::string_view::npos) return {};
  return document.substr(begin, end - begin);
}

}  // namespace streammetrics
