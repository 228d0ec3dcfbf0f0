// The JSON decoder on arbitrary bytes: never a crash, a sanitizer report or a hang; and
// what the fast path accepts, the reference decoder decodes to the same event.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "operators/metric_event_codec.h"

namespace sm = streammetrics;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto fast = sm::NewJsonMetricEventDecoder(sm::DecodeLimits{.max_document_bytes = 1 << 16});
  static auto reference =
      sm::NewReferenceJsonMetricEventDecoderForTesting(sm::DecodeLimits{.max_document_bytes = 1 << 16});
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  sm::MetricEvent a, b;
  const bool fast_ok = fast->Decode(bytes, &a).ok();
  const bool reference_ok = reference->Decode(bytes, &b).ok();
  if (fast_ok != reference_ok) __builtin_trap();
  if (fast_ok) {
    std::string ja, jb;
    sm::AppendMetricEventJson(a, &ja);
    sm::AppendMetricEventJson(b, &jb);
    if (ja != jb) __builtin_trap();
  }
  return 0;
}
