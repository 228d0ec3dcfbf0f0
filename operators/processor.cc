#include "operators/processor.h"

namespace streammetrics {

std::string_view DeadLetterReasonName(DeadLetterReason reason) {
  switch (reason) {
    case DeadLetterReason::kDeserialization:
      return "deserialization";
    case DeadLetterReason::kValidation:
      return "validation";
    case DeadLetterReason::kLate:
      return "late";
    case DeadLetterReason::kProcessing:
      return "processing";
    case DeadLetterReason::kKeyMismatch:
      return "key_mismatch";
    case DeadLetterReason::kStreamSkew:
      return "stream_skew";
  }
  return "processing";
}

}  // namespace streammetrics
