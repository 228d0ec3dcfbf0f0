// The protobuf decoder on arbitrary bytes: never a crash, a sanitizer report or a hang;
// an event it decodes encodes and decodes again to the same event (tags and metadata as
// sets: a protobuf map keeps no order).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "operators/metric_event_codec.h"

namespace sm = streammetrics;

namespace {

// The event's JSON without its maps, then each map's entries sorted.
std::string Canonical(sm::MetricEvent event) {
  std::vector<std::pair<std::string_view, std::string_view>> tags, metadata;
  for (const sm::Tag& t : event.tags) tags.emplace_back(t.key, t.value);
  for (const sm::Tag& t : event.metadata) metadata.emplace_back(t.key, t.value);
  std::sort(tags.begin(), tags.end());
  std::sort(metadata.begin(), metadata.end());
  event.tags.Clear();
  event.metadata.Clear();
  std::string out;
  sm::AppendMetricEventJson(event, &out);
  for (const auto* map : {&tags, &metadata}) {
    out += '|';
    for (const auto& [k, v] : *map) {
      sm::AppendJsonString(k, &out);
      sm::AppendJsonString(v, &out);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto decoder =
      sm::NewProtobufMetricEventDecoder(sm::DecodeLimits{.max_document_bytes = 1 << 16});
  static auto again =
      sm::NewProtobufMetricEventDecoder(sm::DecodeLimits{.max_document_bytes = 1 << 20});
  sm::MetricEvent event;
  if (!decoder->Decode(std::string_view(reinterpret_cast<const char*>(data), size), &event).ok()) {
    return 0;
  }
  std::string encoded;
  sm::AppendMetricEventProtobuf(event, &encoded);
  sm::MetricEvent decoded;
  if (!again->Decode(encoded, &decoded).ok()) __builtin_trap();
  if (Canonical(event) != Canonical(decoded)) __builtin_trap();
  return 0;
}
