// How `process` cuts its input into records: lines or length-delimited frames.
#ifndef STREAMMETRICS_APPS_INPUT_READER_H_
#define STREAMMETRICS_APPS_INPUT_READER_H_

#include <cstddef>
#include <istream>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace streammetrics {

// input.framing: how offline input (`process`) is cut into records; a Kafka record is one
// already.
//   kLines: one record per line (JSON lines). A newline byte ends a record, so it cannot
//     frame protobuf, whose messages hold 0x0a bytes (field 1's tag, for one).
//   kDelimited: each record preceded by its length as a base-128 varint, as protobuf's
//     writeDelimitedTo / SerializeDelimitedToOstream write them; any bytes may follow.
enum class InputFraming { kLines, kDelimited };

// One record of the input as its framing cuts it.
struct InputRecord {
  // The record; its first input.max_document_bytes bytes when it is larger.
  std::string_view bytes;
  bool blank = false;  // a line of whitespace only: not an event
  // Not empty: the record cannot be decoded (over the document limit, a broken frame)
  // and is dead-lettered with this error, `bytes` as its original.
  std::string error;
  // Not empty: `bytes` is a cut of the record; the dead letter's dlq.truncated header.
  std::string truncated;
};

// Cuts the input into records; Next() returns false at its end. A record's bytes stay
// valid until the next call. Buffers grow with the records read, up to the document limit
// (a record over it keeps only its first limit bytes, the rest is skipped), so no input can
// exhaust memory and a large limit costs nothing until records are that large.
class InputReader {
 public:
  virtual ~InputReader() = default;
  virtual absl::StatusOr<bool> Next(InputRecord* record) = 0;
};

// A reader of `input` (which must outlive it) for `framing`; records over `limit` bytes
// (input.max_document_bytes) come with an error and their first `limit` bytes.
std::unique_ptr<InputReader> NewInputReader(InputFraming framing, std::istream& input,
                                            size_t limit);

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_INPUT_READER_H_
