#include "apps/input_reader.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "operators/strings.h"

namespace streammetrics {
namespace {

std::string TooLarge(uint64_t size, size_t limit) {
  return StrCat("document too large: ", size, " bytes (limit ", limit, ")");
}

// One record per line; "\r\n" ends a line too.
class LineReader final : public InputReader {
 public:
  LineReader(std::istream& input, size_t limit)
      : input_(input), limit_(limit), chunk_(std::min<size_t>(limit + 2, size_t{64} << 10)) {}

  absl::StatusOr<bool> Next(InputRecord* record) override {
    if (at_end_) return false;
    buf_.clear();
    uint64_t size = 0;  // of the line, without its newline
    char last = 0;
    while (true) {
      input_.getline(chunk_.data(), static_cast<std::streamsize>(chunk_.size()));
      size_t n = static_cast<size_t>(input_.gcount());
      const bool full = input_.fail() && !input_.eof() && !input_.bad();  // the line goes on
      if (!full && !input_.eof() && n > 0) --n;  // gcount counted the newline getline consumed
      if (n > 0) last = chunk_[n - 1];
      size += n;
      // One byte beyond the limit is kept, for a "\r" that may end the line.
      const size_t room = limit_ + 1 - std::min(buf_.size(), limit_ + 1);
      buf_.append(chunk_.data(), std::min(n, room));
      if (input_.eof() || input_.bad()) {
        at_end_ = true;
        break;
      }
      if (!full) break;
      input_.clear();
    }
    if (input_.bad()) return absl::DataLossError("reading the input failed");
    if (at_end_ && size == 0) return false;
    if (last == '\r') {
      --size;
      if (buf_.size() > size) buf_.resize(size);
    }
    record->error.clear();
    record->truncated.clear();
    if (size > limit_) {
      buf_.resize(limit_);
      record->error = TooLarge(size, limit_);
      record->truncated = StrCat("key=0,value=", size);
    }
    record->bytes = buf_;
    record->blank = record->error.empty() && StripAsciiWhitespace(buf_).empty();
    return true;
  }

 private:
  std::istream& input_;
  const size_t limit_;
  std::vector<char> chunk_;
  std::string buf_;
  bool at_end_ = false;
};

// Length-delimited records: each preceded by its size as a base-128 varint (protobuf's
// writeDelimitedTo / SerializeDelimitedToOstream). Read here rather than with protobuf's
// ParseDelimitedFrom*, which parse into a message: the topology takes the record's bytes
// (and a dead letter keeps them), and a length over the limit must be known before the
// bytes are read, to skip them. A frame over the limit is skipped and the next one read;
// a cut last frame is the last record.
class DelimitedReader final : public InputReader {
 public:
  DelimitedReader(std::istream& input, size_t limit) : input_(input), limit_(limit) {}

  absl::StatusOr<bool> Next(InputRecord* record) override {
    if (at_end_) return false;
    buf_.clear();
    record->error.clear();
    record->truncated.clear();
    record->blank = false;
    uint64_t size = 0;
    for (int shift = 0;; shift += 7) {
      const int c = input_.get();
      if (c == std::char_traits<char>::eof()) {
        if (input_.bad()) return absl::DataLossError("reading the input failed");
        at_end_ = true;
        if (buf_.empty()) return false;
        record->error = StrCat("truncated frame: the input ends inside its length prefix (",
                               buf_.size(), " bytes)");
        record->bytes = buf_;
        return true;
      }
      buf_.push_back(static_cast<char>(c));
      // A varint holds 64 bits in at most 10 bytes, the 10th holding bit 63 only.
      if (shift == 63 && c > 1) {
        at_end_ = true;
        record->error = StrCat("malformed frame: its length prefix is not a varint of at most "
                               "64 bits; the remaining ", Skip(UINT64_MAX),
                               " bytes of the input are not read");
        record->bytes = buf_;
        return true;
      }
      size |= static_cast<uint64_t>(c & 0x7f) << shift;
      if ((c & 0x80) == 0) break;
    }
    buf_.clear();
    const uint64_t keep = std::min<uint64_t>(size, limit_);
    while (buf_.size() < keep) {  // grows with what arrives, not with what the prefix says
      const size_t have = buf_.size();
      buf_.resize(have + std::min<uint64_t>(keep - have, size_t{64} << 10));
      input_.read(buf_.data() + have, static_cast<std::streamsize>(buf_.size() - have));
      buf_.resize(have + static_cast<size_t>(input_.gcount()));
      if (!input_) break;
    }
    uint64_t got = buf_.size();
    if (got == keep && size > keep) got += Skip(size - keep);
    if (input_.bad()) return absl::DataLossError("reading the input failed");
    record->bytes = buf_;
    if (size > limit_) {
      record->error = TooLarge(size, limit_);
      record->truncated = StrCat("key=0,value=", size);
      if (got < size) StrAppend(&record->error, "; the input ends after ", got, " of them");
    } else if (got < size) {
      record->error = StrCat("truncated frame: its length prefix says ", size,
                             " bytes, the input ends after ", got);
    }
    if (got < size) at_end_ = true;
    return true;
  }

 private:
  // Skips up to n bytes; returns how many there were.
  uint64_t Skip(uint64_t n) {
    uint64_t skipped = 0;
    while (skipped < n && input_) {
      // ignore(max) would mean "to the end of the input": ask for less at a time.
      const uint64_t step = std::min<uint64_t>(n - skipped, uint64_t{1} << 30);
      input_.ignore(static_cast<std::streamsize>(step));
      skipped += static_cast<uint64_t>(input_.gcount());
      if (static_cast<uint64_t>(input_.gcount()) < step) break;
    }
    return skipped;
  }

  std::istream& input_;
  const size_t limit_;
  std::string buf_;
  bool at_end_ = false;
};

}  // namespace

std::unique_ptr<InputReader> NewInputReader(InputFraming framing, std::istream& input,
                                            size_t limit) {
  if (framing == InputFraming::kDelimited) return std::make_unique<DelimitedReader>(input, limit);
  return std::make_unique<LineReader>(input, limit);
}

}  // namespace streammetrics
