// The offline input's framings on arbitrary bytes: never a crash, a sanitizer report or a
// hang; the records end, each takes at least one byte of the input, none holds more than
// the limit (a broken length prefix: its up to 10 bytes), and a cut one is an error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "apps/input_reader.h"

namespace sm = streammetrics;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the framing and a limit of 1 to 128 bytes.
  const sm::InputFraming framing = data[0] & 1 ? sm::InputFraming::kDelimited : sm::InputFraming::kLines;
  const size_t limit = (data[0] >> 1) + 1;
  std::istringstream input(std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  std::unique_ptr<sm::InputReader> reader = sm::NewInputReader(framing, input, limit);
  sm::InputRecord record;
  size_t records = 0;
  while (true) {
    absl::StatusOr<bool> more = reader->Next(&record);
    if (!more.ok()) __builtin_trap();  // a string stream does not fail
    if (!*more) break;
    // A broken length prefix is kept whole as the dead letter's original: up to 10 bytes.
    if (record.bytes.size() > (record.error.empty() ? limit : std::max<size_t>(limit, 10))) {
      __builtin_trap();
    }
    if (!record.truncated.empty() && record.error.empty()) __builtin_trap();
    if (++records > size) __builtin_trap();  // every record takes at least one byte
  }
  return 0;
}
