// Decoders and encoders of MetricEvent: JSON (camelCase as reference/001 and snake_case
// as reference/002's Java producer writes it) and protobuf (operators/metric_event.proto).
#ifndef STREAMMETRICS_OPERATORS_METRIC_EVENT_CODEC_H_
#define STREAMMETRICS_OPERATORS_METRIC_EVENT_CODEC_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "operators/metric_event.h"

namespace streammetrics {

enum class EventFormat { kJson, kProtobuf };

struct DecodeLimits {
  // Larger inputs are rejected before parsing. Default: 1 MiB.
  size_t max_document_bytes = 1 << 20;
};

// Decodes serialized events into MetricEvent views. Reusable: one decoder per thread
// (not thread-safe), buffers grow to the largest input seen and are then reused, so
// steady-state decoding allocates nothing.
class MetricEventDecoder {
 public:
  virtual ~MetricEventDecoder() = default;

  // Clears *event and decodes `bytes` into it. Views in *event point into this
  // decoder's buffers (or into `bytes`) and stay valid until the next Decode call on
  // this decoder, provided `bytes` is still alive.
  //
  // Returns InvalidArgument for any input that is not a well-formed event document,
  // with a message naming the field, e.g. "value: expected a number, got string".
  // Missing fields are NOT errors here: the has_* flags report presence and the
  // validate operator decides what is required.
  virtual absl::Status Decode(std::string_view bytes, MetricEvent* event) = 0;
};

std::unique_ptr<MetricEventDecoder> NewJsonMetricEventDecoder(DecodeLimits limits = {});
std::unique_ptr<MetricEventDecoder> NewProtobufMetricEventDecoder(DecodeLimits limits = {});
// The JSON decoder without its fast path: every document goes through simdjson On-Demand.
// Same contract and results (tests compare the two); slower. For tests only.
std::unique_ptr<MetricEventDecoder> NewReferenceJsonMetricEventDecoderForTesting(
    DecodeLimits limits = {});
std::unique_ptr<MetricEventDecoder> NewMetricEventDecoder(EventFormat format,
                                                         DecodeLimits limits = {});

// Appends the event as one camelCase JSON object (timestamp as epoch milliseconds;
// fields without their has_* flag omitted; tags/metadata as objects) to *out.
void AppendMetricEventJson(const MetricEvent& event, std::string* out);
// Appends the event as a serialized streammetrics.proto.MetricEvent to *out.
void AppendMetricEventProtobuf(const MetricEvent& event, std::string* out);

// Appends `s` as a JSON string literal (quotes included, escaped per RFC 8259).
void AppendJsonString(std::string_view s, std::string* out);

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_METRIC_EVENT_CODEC_H_
