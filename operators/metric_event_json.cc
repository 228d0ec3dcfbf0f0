// JSON decoding and encoding of MetricEvent (simdjson: a fast path over its stage 1
// output, and the On-Demand API for everything else; see "The fast path" below), and
// NewMetricEventDecoder. See metric_event_codec.h.
//
// Accepted document: one JSON object whose members are the event fields in either
// spelling (reference/001 camelCase or reference/002 snake_case); unknown members are
// ignored (but still validated as JSON); null means absent; a member given twice, in
// either spelling, is an error. `timestamp` is epoch milliseconds (JSON integer), epoch
// seconds with a fraction (JSON number with '.'/exponent, as Jackson writes an Instant),
// or an RFC 3339 string.
#include <simdjson.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "operators/metric_event.h"
#include "operators/metric_event_codec.h"

namespace streammetrics {
namespace {

namespace od = simdjson::ondemand;

// Unknown members may hold nested values; they are walked to validate them, to at most
// this depth (simdjson's On-Demand API does not validate what it skips).
constexpr int kMaxUnknownDepth = 64;
// Buffers start at this size so that the first few documents do not each grow them.
constexpr size_t kInitialCapacity = 16 * 1024;
// Timestamps are limited to the years 0001..9999 (UTC), the range RFC 3339 can write.
constexpr int64_t kMinTimestampMs = -62135596800000;  // 0001-01-01T00:00:00Z
constexpr int64_t kMaxTimestampMs = 253402300799999;  // 9999-12-31T23:59:59.999Z
// Error messages quote at most this many bytes of an offending value or key.
constexpr size_t kMaxQuotedBytes = 64;

// Debian's abseil has its own absl::string_view (not an alias of std::string_view).
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---------------------------------------------------------------------------------
// Error helpers (only on the error path, so they may allocate).

// Appends `s` to *out in double quotes, C-escaped and truncated, for error messages.
void AppendQuoted(std::string_view s, std::string* out) {
  const bool truncated = s.size() > kMaxQuotedBytes;
  if (truncated) s = s.substr(0, kMaxQuotedBytes);
  absl::StrAppend(out, "\"", absl::CHexEscape(Sv(s)), truncated ? "...\"" : "\"");
}

// A member name as it appears in error messages; plain names are shown as-is.
std::string DisplayName(std::string_view name) {
  bool plain = !name.empty() && name.size() <= kMaxQuotedBytes;
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(name);
  std::string out;
  AppendQuoted(name, &out);
  return out;
}

std::string MemberPath(std::string_view map_name, std::string_view key) {
  return absl::StrCat(Sv(map_name), ".", DisplayName(key));
}

absl::Status FieldError(std::string_view name, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(Sv(name), ": ", Sv(message)));
}

absl::Status FieldJsonError(std::string_view name, simdjson::error_code error) {
  return absl::InvalidArgumentError(
      absl::StrCat(Sv(name), ": invalid JSON (", simdjson::error_message(error), ")"));
}

absl::Status JsonError(simdjson::error_code error) {
  return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", simdjson::error_message(error)));
}

std::string_view TypeName(od::json_type type) {
  switch (type) {
    case od::json_type::object:
      return "object";
    case od::json_type::array:
      return "array";
    case od::json_type::number:
      return "number";
    case od::json_type::string:
      return "string";
    case od::json_type::boolean:
      return "boolean";
    case od::json_type::null:
      return "null";
  }
  return "unknown";
}

absl::Status TypeError(std::string_view name, std::string_view expected, od::json_type got) {
  return FieldError(name, absl::StrCat("expected ", Sv(expected), ", got ", Sv(TypeName(got))));
}

// Length of the well-formed UTF-8 sequence (no overlong forms, no surrogates, nothing
// above U+10FFFF) that starts with the non-ASCII byte p[0], or 0 if there is none.
size_t Utf8SequenceLength(const unsigned char* p, size_t avail) {
  const unsigned char c = p[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (len > avail || p[1] < lo || p[1] > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (p[k] < 0x80 || p[k] > 0xBF) return 0;
  }
  return len;
}

// Offset of the first byte of `s` that is not part of well-formed UTF-8, or npos.
size_t FindInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t len = Utf8SequenceLength(p + i, s.size() - i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Names the member of `doc` whose key or value contains byte `pos` ("serviceId",
// "tags.region"), by a lexical scan; empty when `pos` is not inside one. Used to
// report invalid UTF-8, which simdjson detects for the whole document at once.
std::string MemberPathAt(std::string_view doc, size_t pos, bool* in_key) {
  struct Level {
    bool is_object;
    bool expect_key;
    std::string_view key;
  };
  std::vector<Level> stack;
  auto path = [&stack]() {
    std::string out;
    for (const Level& level : stack) {
      if (!level.is_object || level.key.empty()) continue;
      if (!out.empty()) out.push_back('.');
      out += DisplayName(level.key);
    }
    return out;
  };
  *in_key = false;
  size_t i = 0;
  while (i < doc.size()) {
    const char c = doc[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < doc.size() && doc[j] != '"') j += doc[j] == '\\' ? 2 : 1;
      const bool is_key = !stack.empty() && stack.back().is_object && stack.back().expect_key;
      if (pos >= i && pos <= j) {
        *in_key = is_key;
        if (is_key) stack.back().key = {};
        return path();
      }
      if (is_key) {
        stack.back().key = doc.substr(i + 1, j - i - 1);
        stack.back().expect_key = false;
      }
      i = j + 1;
      continue;
    }
    if (i == pos) return path();
    if (c == '{' || c == '[') {
      stack.push_back(Level{c == '{', c == '{', {}});
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    } else if (c == ',' && !stack.empty() && stack.back().is_object) {
      stack.back().expect_key = true;
    }
    ++i;
  }
  return {};
}

// An error about the byte at `pos` of `doc`, naming the member it is in when possible.
absl::Status LocatedError(std::string_view doc, size_t pos, std::string_view what) {
  bool in_key = false;
  const std::string member = MemberPathAt(doc, pos, &in_key);
  if (member.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(what), in_key ? " in a key at byte " : " at byte ", pos));
  }
  return FieldError(member, absl::StrCat(Sv(what), in_key ? " in a key" : " in a string"));
}

absl::Status Utf8Error(std::string_view doc) {
  const size_t bad = FindInvalidUtf8(doc);
  if (bad == std::string_view::npos) return absl::InvalidArgumentError("invalid UTF-8");
  return LocatedError(doc, bad, "invalid UTF-8");
}

// simdjson's UNESCAPED_CHARS: a control character (< 0x20) inside a string.
absl::Status UnescapedCharError(std::string_view doc) {
  bool in_string = false;
  for (size_t i = 0; i < doc.size(); ++i) {
    const char c = doc[i];
    if (!in_string) {
      in_string = c == '"';
    } else if (c == '\\') {
      ++i;
    } else if (c == '"') {
      in_string = false;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      return LocatedError(doc, i, "unescaped control character");
    }
  }
  return JsonError(simdjson::UNESCAPED_CHARS);
}

// ---------------------------------------------------------------------------------
// Numbers and times.

std::string_view TrimTrailingSpace(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Full match of RFC 8259's number grammar.
bool IsJsonNumber(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i == n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && IsDigit(s[i])) ++i;
  } else {
    return false;
  }
  if (i < n && s[i] == '.') {
    ++i;
    if (i == n || !IsDigit(s[i])) return false;
    while (i < n && IsDigit(s[i])) ++i;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (i == n || !IsDigit(s[i])) return false;
    while (i < n && IsDigit(s[i])) ++i;
  }
  return i == n;
}

enum class TimeParse { kOk, kMalformed, kOutOfRange };

// A JSON number token as a timestamp: an integer is epoch milliseconds; a number with
// a fraction or exponent is epoch seconds. The decimal text is converted exactly (no
// binary floating point); digits below the millisecond are truncated toward negative
// infinity, as Java's Instant.toEpochMilli does.
TimeParse ParseTimestampNumber(std::string_view s, int64_t* ms) {
  if (!IsJsonNumber(s)) return TimeParse::kMalformed;
  const bool negative = s.front() == '-';
  if (negative) s.remove_prefix(1);
  // s = int_digits [ '.' frac_digits ] [ e|E [sign] exp_digits ], already validated.
  size_t i = 0;
  while (i < s.size() && IsDigit(s[i])) ++i;
  const std::string_view int_digits = s.substr(0, i);
  const bool seconds = i < s.size();  // a fraction or an exponent follows
  std::string_view frac_digits;
  int64_t exponent = 0;
  if (i < s.size() && s[i] == '.') {
    const size_t frac_begin = ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    frac_digits = s.substr(frac_begin, i - frac_begin);
  }
  if (i < s.size()) {  // e|E [sign] digits
    ++i;
    bool exp_negative = false;
    if (s[i] == '+' || s[i] == '-') exp_negative = s[i++] == '-';
    for (; i < s.size(); ++i) {
      if (exponent < 1000000) exponent = exponent * 10 + (s[i] - '0');  // saturate
    }
    if (exp_negative) exponent = -exponent;
  }
  // The digit string D = int_digits + frac_digits, with the millisecond point after
  // `point` digits of D (point may be <= 0 or beyond D's end).
  int64_t point = static_cast<int64_t>(int_digits.size()) + exponent + (seconds ? 3 : 0);
  auto digit_at = [&](size_t k) {
    return k < int_digits.size() ? int_digits[k] : frac_digits[k - int_digits.size()];
  };
  const size_t total = int_digits.size() + frac_digits.size();
  size_t first = 0;  // skip leading zeros
  while (first < total && digit_at(first) == '0') {
    ++first;
    --point;
  }
  int64_t whole = 0;
  bool remainder = false;
  if (first < total) {
    if (point > 16) return TimeParse::kOutOfRange;  // >= 10^16 ms
    for (int64_t k = 0; k < point; ++k) {
      const size_t idx = first + static_cast<size_t>(k);
      whole = whole * 10 + (idx < total ? digit_at(idx) - '0' : 0);
    }
    for (size_t idx = first + static_cast<size_t>(std::max<int64_t>(point, 0)); idx < total;
         ++idx) {
      if (digit_at(idx) != '0') {
        remainder = true;
        break;
      }
    }
  }
  if (negative) whole = -whole - (remainder ? 1 : 0);
  if (whole < kMinTimestampMs || whole > kMaxTimestampMs) return TimeParse::kOutOfRange;
  *ms = whole;
  return TimeParse::kOk;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
constexpr int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}
static_assert(DaysFromCivil(1970, 1, 1) == 0);
static_assert(DaysFromCivil(1, 1, 1) * 86400000 == kMinTimestampMs);

unsigned DaysInMonth(int64_t year, unsigned month) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) return 29;
  return kDays[month - 1];
}

// Reads `count` decimal digits at s[*pos]; false when they are not all digits.
bool ReadDigits(std::string_view s, size_t* pos, size_t count, unsigned* out) {
  if (*pos + count > s.size()) return false;
  unsigned v = 0;
  for (size_t k = 0; k < count; ++k) {
    const char c = s[*pos + k];
    if (!IsDigit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  *pos += count;
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

// Strict RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+hh:mm|-hh:mm), with
// 't'/'z' also accepted. No leap second (":60"). Fraction below 1 ms is truncated.
TimeParse ParseRfc3339(std::string_view s, int64_t* ms) {
  size_t pos = 0;
  unsigned year, month, day, hour, minute, second;
  if (!ReadDigits(s, &pos, 4, &year) || !Expect(s, &pos, '-') || !ReadDigits(s, &pos, 2, &month) ||
      !Expect(s, &pos, '-') || !ReadDigits(s, &pos, 2, &day)) {
    return TimeParse::kMalformed;
  }
  if (pos >= s.size() || (s[pos] != 'T' && s[pos] != 't')) return TimeParse::kMalformed;
  ++pos;
  if (!ReadDigits(s, &pos, 2, &hour) || !Expect(s, &pos, ':') || !ReadDigits(s, &pos, 2, &minute) ||
      !Expect(s, &pos, ':') || !ReadDigits(s, &pos, 2, &second)) {
    return TimeParse::kMalformed;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 59) {
    return TimeParse::kMalformed;
  }
  int64_t millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < s.size() && IsDigit(s[pos])) {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return TimeParse::kMalformed;
    for (; digits < 3; ++digits) millis *= 10;
  }
  int64_t offset_seconds = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const bool minus = s[pos] == '-';
    ++pos;
    unsigned off_hour, off_minute;
    if (!ReadDigits(s, &pos, 2, &off_hour) || !Expect(s, &pos, ':') ||
        !ReadDigits(s, &pos, 2, &off_minute) || off_hour > 23 || off_minute > 59) {
      return TimeParse::kMalformed;
    }
    offset_seconds = (minus ? -1 : 1) * static_cast<int64_t>(off_hour * 3600 + off_minute * 60);
  } else {
    return TimeParse::kMalformed;
  }
  if (pos != s.size()) return TimeParse::kMalformed;
  const int64_t seconds =
      DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
  const int64_t result = seconds * 1000 + millis;
  if (result < kMinTimestampMs || result > kMaxTimestampMs) return TimeParse::kOutOfRange;
  *ms = result;
  return TimeParse::kOk;
}

// ---------------------------------------------------------------------------------
// The decoder.

enum Field : uint8_t {
  kEventId,
  kTimestamp,
  kServiceId,
  kInstanceId,
  kMetricType,
  kMetricName,
  kValue,
  kUnit,
  kTags,
  kMetadata,
  kUnknown,
};

// Whether `key`, of N - 1 bytes, is `name` (a fixed-size compare, inlined).
template <size_t N>
bool KeyIs(std::string_view key, const char (&name)[N]) {
  return std::memcmp(key.data(), name, N - 1) == 0;
}

Field LookupField(std::string_view key) {
  switch (key.size()) {
    case 4:
      if (KeyIs(key, "unit")) return kUnit;
      if (KeyIs(key, "tags")) return kTags;
      break;
    case 5:
      if (KeyIs(key, "value")) return kValue;
      break;
    case 7:
      if (KeyIs(key, "eventId")) return kEventId;
      break;
    case 8:
      if (KeyIs(key, "event_id")) return kEventId;
      if (KeyIs(key, "metadata")) return kMetadata;
      break;
    case 9:
      if (KeyIs(key, "serviceId")) return kServiceId;
      if (KeyIs(key, "timestamp")) return kTimestamp;
      break;
    case 10:
      if (KeyIs(key, "service_id")) return kServiceId;
      if (KeyIs(key, "instanceId")) return kInstanceId;
      if (KeyIs(key, "metricType")) return kMetricType;
      if (KeyIs(key, "metricName")) return kMetricName;
      break;
    case 11:
      if (KeyIs(key, "instance_id")) return kInstanceId;
      if (KeyIs(key, "metric_type")) return kMetricType;
      if (KeyIs(key, "metric_name")) return kMetricName;
      break;
    default:
      break;
  }
  return kUnknown;
}

// Whether a value of type null is exactly that literal (type() only peeks at one byte).
bool IsNullLiteral(od::value& value) {
  bool is_null = false;
  return value.is_null().get(is_null) == simdjson::SUCCESS && is_null;
}

// Appends a hint when `token` looks like NaN or Infinity, which JSON does not have.
void AppendNonFiniteHint(std::string_view token, std::string* message) {
  if (!token.empty() && (token[0] == '-' || token[0] == '+')) token.remove_prefix(1);
  if (!token.empty() &&
      (token[0] == 'N' || token[0] == 'n' || token[0] == 'I' || token[0] == 'i')) {
    message->append(" (JSON has no NaN or Infinity)");
  }
}

// A value whose first byte starts no JSON value (type() failed), e.g. NaN or Infinity.
absl::Status InvalidToken(od::value& value, std::string_view name, std::string_view expected) {
  const std::string_view token = TrimTrailingSpace(value.raw_json_token());
  std::string message = absl::StrCat("expected ", Sv(expected), ", got ");
  AppendQuoted(token, &message);
  AppendNonFiniteHint(token, &message);
  return FieldError(name, message);
}

absl::Status ReadString(od::value& value, od::json_type type, std::string_view name,
                        std::string_view* out) {
  if (type != od::json_type::string) return TypeError(name, "a string", type);
  if (auto error = value.get_string().get(*out)) return FieldJsonError(name, error);
  return absl::OkStatus();
}

// The raw text of a number token; false unless it matches the JSON number grammar.
bool ReadNumberText(od::value& value, std::string_view* out) {
  *out = TrimTrailingSpace(value.raw_json_token());
  return IsJsonNumber(*out);
}

// Walks the value of an unknown member `key`, which nobody reads, so that malformed JSON
// inside it is still an error. (Names are only built on the error path: no allocation.)
absl::Status ValidateValue(od::value& value, std::string_view key, int depth) {
  od::json_type type;
  if (value.type().get(type) != simdjson::SUCCESS) {
    return InvalidToken(value, DisplayName(key), "a value");
  }
  switch (type) {
    case od::json_type::object: {
      if (depth >= kMaxUnknownDepth) {
        return FieldError(DisplayName(key), absl::StrCat("nested deeper than ", kMaxUnknownDepth));
      }
      od::object object;
      if (auto error = value.get_object().get(object)) {
        return FieldJsonError(DisplayName(key), error);
      }
      for (auto field_result : object) {
        od::field field;
        std::string_view ignored;
        simdjson::error_code error = std::move(field_result).get(field);
        if (!error) error = field.unescaped_key().get(ignored);
        if (error) return FieldJsonError(DisplayName(key), error);
        if (auto status = ValidateValue(field.value(), key, depth + 1); !status.ok()) {
          return status;
        }
      }
      return absl::OkStatus();
    }
    case od::json_type::array: {
      if (depth >= kMaxUnknownDepth) {
        return FieldError(DisplayName(key), absl::StrCat("nested deeper than ", kMaxUnknownDepth));
      }
      od::array array;
      if (auto error = value.get_array().get(array)) {
        return FieldJsonError(DisplayName(key), error);
      }
      for (auto element_result : array) {
        od::value element;
        if (auto error = std::move(element_result).get(element)) {
          return FieldJsonError(DisplayName(key), error);
        }
        if (auto status = ValidateValue(element, key, depth + 1); !status.ok()) return status;
      }
      return absl::OkStatus();
    }
    case od::json_type::string: {
      std::string_view ignored;
      if (auto error = value.get_string().get(ignored)) {
        return FieldJsonError(DisplayName(key), error);
      }
      return absl::OkStatus();
    }
    case od::json_type::number: {
      std::string_view ignored;
      if (!ReadNumberText(value, &ignored)) return FieldError(DisplayName(key), "malformed number");
      return absl::OkStatus();
    }
    case od::json_type::boolean: {
      bool ignored;
      if (value.get_bool().get(ignored)) return FieldError(DisplayName(key), "invalid literal");
      return absl::OkStatus();
    }
    case od::json_type::null:
      if (!IsNullLiteral(value)) return FieldError(DisplayName(key), "invalid literal");
      return absl::OkStatus();
  }
  return FieldError(DisplayName(key), "unexpected JSON value");
}

// tags / metadata: an object of string, number or boolean values (numbers and booleans
// are kept as their JSON text; null values are skipped).
absl::Status DecodeStringMap(od::value& value, od::json_type type, std::string_view name,
                             TagList* out) {
  if (type != od::json_type::object) return TypeError(name, "an object", type);
  od::object object;
  if (auto error = value.get_object().get(object)) return FieldJsonError(name, error);
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) return FieldJsonError(name, error);
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) return FieldJsonError(name, error);
    od::value& item = field.value();
    od::json_type item_type;
    if (item.type().get(item_type) != simdjson::SUCCESS) {
      return InvalidToken(item, MemberPath(name, key), "a string, number or boolean");
    }
    std::string_view text;
    switch (item_type) {
      case od::json_type::string:
        if (auto error = item.get_string().get(text)) {
          return FieldJsonError(MemberPath(name, key), error);
        }
        break;
      case od::json_type::number:
        if (!ReadNumberText(item, &text)) {
          std::string message = "malformed number ";
          AppendQuoted(text, &message);
          AppendNonFiniteHint(text, &message);
          return FieldError(MemberPath(name, key), message);
        }
        break;
      case od::json_type::boolean: {
        bool b;
        if (item.get_bool().get(b)) return FieldError(MemberPath(name, key), "invalid literal");
        text = b ? "true" : "false";
        break;
      }
      case od::json_type::null:
        if (!IsNullLiteral(item)) return FieldError(MemberPath(name, key), "invalid literal");
        continue;
      default:
        return TypeError(MemberPath(name, key), "a string, number or boolean", item_type);
    }
    if (out->Find(key).has_value()) {
      std::string message = "duplicate key ";
      AppendQuoted(key, &message);
      return FieldError(name, message);
    }
    if (!out->Add(key, text)) {
      return FieldError(name, absl::StrCat("more than ", TagList::kCapacity, " entries"));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeTimestamp(od::value& value, od::json_type type, std::string_view name,
                             MetricEvent* event) {
  TimeParse result;
  if (type == od::json_type::number) {
    std::string_view text = TrimTrailingSpace(value.raw_json_token());
    result = ParseTimestampNumber(text, &event->timestamp_ms);
    if (result == TimeParse::kMalformed) return FieldError(name, "malformed number");
  } else if (type == od::json_type::string) {
    std::string_view text;
    if (auto error = value.get_string().get(text)) return FieldJsonError(name, error);
    result = ParseRfc3339(text, &event->timestamp_ms);
    if (result == TimeParse::kMalformed) {
      std::string message = "expected an ISO-8601 date-time like 2024-02-07T01:00:00.123Z, got ";
      AppendQuoted(text, &message);
      return FieldError(name, message);
    }
  } else {
    return TypeError(name, "a number (epoch ms or s.fraction) or an ISO-8601 string", type);
  }
  if (result == TimeParse::kOutOfRange) {
    return FieldError(name, "out of range (years 0001 to 9999)");
  }
  event->has_timestamp = true;
  return absl::OkStatus();
}

absl::Status DecodeValue(od::value& value, od::json_type type, std::string_view name,
                         MetricEvent* event) {
  if (type != od::json_type::number) return TypeError(name, "a number", type);
  double d;
  if (value.get_double().get(d) != simdjson::SUCCESS) {
    const std::string_view text = TrimTrailingSpace(value.raw_json_token());
    std::string message = IsJsonNumber(text) ? "number out of range: " : "malformed number ";
    AppendQuoted(text, &message);
    AppendNonFiniteHint(text, &message);
    return FieldError(name, message);
  }
  if (!std::isfinite(d)) return FieldError(name, "number out of range");
  event->value = d;
  event->has_value = true;
  return absl::OkStatus();
}

absl::Status DecodeMember(Field field, std::string_view name, od::value& value, od::json_type type,
                          MetricEvent* event) {
  switch (field) {
    case kEventId:
      event->has_event_id = true;
      return ReadString(value, type, name, &event->event_id);
    case kServiceId:
      event->has_service_id = true;
      return ReadString(value, type, name, &event->service_id);
    case kInstanceId:
      event->has_instance_id = true;
      return ReadString(value, type, name, &event->instance_id);
    case kMetricName:
      event->has_metric_name = true;
      return ReadString(value, type, name, &event->metric_name);
    case kUnit:
      return ReadString(value, type, name, &event->unit);
    case kMetricType: {
      std::string_view text;
      if (auto status = ReadString(value, type, name, &text); !status.ok()) return status;
      const std::optional<MetricType> metric_type = ParseMetricType(text);
      if (!metric_type.has_value()) {
        std::string message = "unknown value ";
        AppendQuoted(text, &message);
        return FieldError(name, message);
      }
      event->metric_type = *metric_type;
      event->has_metric_type = true;
      return absl::OkStatus();
    }
    case kTimestamp:
      return DecodeTimestamp(value, type, name, event);
    case kValue:
      return DecodeValue(value, type, name, event);
    case kTags:
      return DecodeStringMap(value, type, name, &event->tags);
    case kMetadata:
      return DecodeStringMap(value, type, name, &event->metadata);
    case kUnknown:
      break;
  }
  return absl::InternalError("unhandled field");
}

// ---------------------------------------------------------------------------------
// The fast path.
//
// Decode() first tries FastWalker below. The walker declines, without saying why, on
// the first thing that is an error or that it does not handle; Decode() then decodes the
// document again with DecodeMembers above, the reference decoder, which accepts or
// rejects it and names the field in its errors. So the walker must never accept a
// document that DecodeMembers rejects, and what it accepts must decode to exactly what
// DecodeMembers produces. It accepts only well-formed JSON and applies the same rules
// with the same helpers (LookupField, ParseMetricType, IsJsonNumber,
// ParseTimestampNumber, ParseRfc3339, simdjson's parse_double and string unescaping, the
// kMaxUnknownDepth limit).
//
// Why: for a ~400-byte event, the On-Demand API spends more time on its iterator
// bookkeeping than on parsing. The walker instead reads the output of simdjson's stage 1
// (run by the same runtime-selected kernel as On-Demand's): the offset of every
// structural character and of the first byte of every scalar and string, in document
// order, once simdjson has validated the UTF-8 and the strings' quoting and checked that
// strings hold no control characters. A token's text runs from its offset to the next
// one, trailing whitespace included.

// The value of the 8 ASCII digits in `chunk` (the first in its low byte), by the SWAR
// steps of simdjson's parse_eight_digits_unrolled.
inline uint64_t EightDigits(uint64_t chunk) {
  chunk -= 0x3030303030303030ULL;
  chunk = chunk * 10 + (chunk >> 8);
  return (((chunk & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
          (((chunk >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >>
         32;
}

// The value of the n (1 to 16) decimal digits at p, without a digit-by-digit dependency
// chain. Reads the 16 bytes at p, which must be readable.
inline uint64_t DigitsValue(const char* p, size_t n) {
  static_assert(std::endian::native == std::endian::little);
  uint64_t low, high;
  std::memcpy(&low, p, 8);
  std::memcpy(&high, p + 8, 8);
  using U128 = unsigned __int128;
  const unsigned shift = static_cast<unsigned>(8 * (16 - n));  // 0 to 120
  // The digits moved to the end of 16 bytes, behind (16 - n) '0's.
  U128 text = ((U128{high} << 64) | low) << shift;
  const U128 zeros = (U128{0x3030303030303030ULL} << 64) | 0x3030303030303030ULL;
  text |= zeros & ~(~U128{0} << shift);
  return EightDigits(static_cast<uint64_t>(text)) * 100000000 +
         EightDigits(static_cast<uint64_t>(text >> 64));
}

// ParseTimestampNumber for the usual tokens, "-?digits" and "-?digits.digits" with at
// most 15 integer digits and no leading zero; any other token goes to
// ParseTimestampNumber. Same results, faster. The 17 bytes at s.data() must be readable
// (s is in a document followed by SIMDJSON_PADDING bytes).
TimeParse FastTimestampNumber(std::string_view s, int64_t* ms) {
  const char* p = s.data();
  const char* const end = p + s.size();
  const bool negative = p != end && *p == '-';
  if (negative) ++p;
  const char* const int_begin = p;
  while (p != end && IsDigit(*p)) ++p;
  const ptrdiff_t int_digits = p - int_begin;
  if (int_digits == 0 || int_digits > 15 || (int_digits > 1 && *int_begin == '0')) {
    return ParseTimestampNumber(s, ms);
  }
  int64_t whole = static_cast<int64_t>(DigitsValue(int_begin, static_cast<size_t>(int_digits)));
  bool remainder = false;
  if (p != end) {  // epoch seconds: '.' and at least one digit, and nothing else
    if (*p != '.' || p + 1 == end) return ParseTimestampNumber(s, ms);
    ++p;
    int64_t millis = 0;
    for (int k = 0; k < 3; ++k) {
      int digit = 0;
      if (p != end) {
        if (!IsDigit(*p)) return ParseTimestampNumber(s, ms);
        digit = *p++ - '0';
      }
      millis = millis * 10 + digit;
    }
    for (; p != end; ++p) {
      if (!IsDigit(*p)) return ParseTimestampNumber(s, ms);
      remainder |= *p != '0';
    }
    whole = whole * 1000 + millis;  // < 10^18: no overflow
  }
  if (negative) whole = -whole - (remainder ? 1 : 0);
  if (whole < kMinTimestampMs || whole > kMaxTimestampMs) return TimeParse::kOutOfRange;
  *ms = whole;
  return TimeParse::kOk;
}

// memcmp(a, b, n) == 0 for the short strings compared here, without a library call.
inline bool SameBytes(const char* a, const char* b, size_t n) {
  for (; n >= 8; n -= 8, a += 8, b += 8) {
    uint64_t x, y;
    std::memcpy(&x, a, 8);
    std::memcpy(&y, b, 8);
    if (x != y) return false;
  }
  for (; n > 0; --n) {
    if (*a++ != *b++) return false;
  }
  return true;
}

// MetricEvent::Clear() without rewriting the three TagLists' unused slots (~3 KB, a
// measurable part of a decode). The size check is a reminder to reset new members here.
static_assert(sizeof(void*) != 8 || sizeof(MetricEvent) == 104 + 3 * sizeof(TagList),
              "MetricEvent changed: update ResetEvent");
void ResetEvent(MetricEvent* event) {
  event->event_id = {};
  event->service_id = {};
  event->instance_id = {};
  event->metric_name = {};
  event->unit = {};
  event->timestamp_ms = 0;
  event->value = 0;
  event->metric_type = MetricType::kHttpRequest;
  event->has_event_id = false;
  event->has_service_id = false;
  event->has_instance_id = false;
  event->has_metric_name = false;
  event->has_metric_type = false;
  event->has_value = false;
  event->has_timestamp = false;
  event->tags.Clear();
  event->metadata.Clear();
  event->enriched.Clear();
}

// Parses one document whose stage 1 indexes are `index[0..count)`, followed (as stage 1
// writes them) by two entries equal to the document's length, where `doc` has a 0 byte
// (the zeroed padding, which matches no token). Every index read below is at most
// `count`: each step reads the next index only after the current one matched a token.
class FastWalker {
 public:
  FastWalker(const char* doc, const uint32_t* index, uint32_t count, bool has_backslash,
             const simdjson::internal::dom_parser_implementation* unescaper, uint8_t* strings)
      : doc_(doc),
        index_(index),
        count_(count),
        has_backslash_(has_backslash),
        unescaper_(unescaper),
        strings_(strings) {}

  // DecodeMembers' fast path, for the whole document.
  bool Decode(MetricEvent* event) {
    if (At(0) != '{') return false;
    uint32_t k = 1;  // the current member's key
    if (At(k) == '}') return k + 1 == count_;
    uint32_t seen = 0;
    for (;;) {
      std::string_view key;
      if (!Key(k, &key)) return false;
      const uint32_t v = k + 2;  // the value
      const Field which = LookupField(key);
      uint32_t next = v + 1;  // after the value, when it is a scalar
      if (which == kUnknown) {
        next = Skip(v, 0);  // forward compatibility: ignored, but validated
        if (next == 0) return false;
      } else {
        const uint32_t bit = uint32_t{1} << which;
        if (seen & bit) return false;  // a duplicate
        seen |= bit;
        const char first = At(v);
        if (first == 'n') {  // null means absent
          if (Token(v) != "null") return false;
        } else if (which == kTags || which == kMetadata) {
          if (first != '{') return false;
          next = Map(v, which == kTags ? &event->tags : &event->metadata);
          if (next == 0) return false;
        } else if (!Scalar(which, v, first, event)) {
          return false;
        }
      }
      const char separator = At(next);
      if (separator == '}') return next + 1 == count_;  // nothing after the object
      if (separator != ',') return false;
      k = next + 1;
    }
  }

 private:
  // The first byte of token k.
  char At(uint32_t k) const { return doc_[index_[k]]; }

  static bool IsNumberStart(char c) { return c == '-' || IsDigit(c); }

  // Token k (a scalar) without its trailing whitespace.
  std::string_view Token(uint32_t k) const {
    return TrimTrailingSpace(std::string_view(doc_ + index_[k], index_[k + 1] - index_[k]));
  }

  // The unescaped value of string token k (At(k) == '"'). Without any backslash in the
  // document, that is the text between the quotes; else simdjson's unescaping (what
  // get_string() and unescaped_key() do), into strings_. False on an invalid escape.
  bool String(uint32_t k, std::string_view* out) {
    const char* begin = doc_ + index_[k] + 1;
    if (!has_backslash_) {
      const char* end = doc_ + index_[k + 1] - 1;
      while (*end != '"') --end;  // trailing whitespace: the closing quote comes first
      *out = std::string_view(begin, static_cast<size_t>(end - begin));
      return true;
    }
    uint8_t* end = unescaper_->parse_string(reinterpret_cast<const uint8_t*>(begin), strings_);
    if (end == nullptr) return false;
    *out = std::string_view(reinterpret_cast<const char*>(strings_),
                            static_cast<size_t>(end - strings_));
    strings_ = end;
    return true;
  }

  // A member's key, token k, followed by its colon.
  bool Key(uint32_t k, std::string_view* key) {
    return At(k) == '"' && At(k + 1) == ':' && String(k, key);
  }

  // DecodeMember for the fields that take a scalar, `first` being At(v) (not 'n').
  bool Scalar(Field which, uint32_t v, char first, MetricEvent* event) {
    switch (which) {
      case kEventId:
        if (first != '"' || !String(v, &event->event_id)) return false;
        event->has_event_id = true;
        return true;
      case kServiceId:
        if (first != '"' || !String(v, &event->service_id)) return false;
        event->has_service_id = true;
        return true;
      case kInstanceId:
        if (first != '"' || !String(v, &event->instance_id)) return false;
        event->has_instance_id = true;
        return true;
      case kMetricName:
        if (first != '"' || !String(v, &event->metric_name)) return false;
        event->has_metric_name = true;
        return true;
      case kUnit:
        return first == '"' && String(v, &event->unit);
      case kMetricType: {
        std::string_view text;
        if (first != '"' || !String(v, &text)) return false;
        const std::optional<MetricType> type = ParseMetricType(text);
        if (!type.has_value()) return false;
        event->metric_type = *type;
        event->has_metric_type = true;
        return true;
      }
      case kTimestamp: {
        TimeParse result;
        if (IsNumberStart(first)) {
          result = FastTimestampNumber(Token(v), &event->timestamp_ms);
        } else if (first == '"') {
          std::string_view text;
          if (!String(v, &text)) return false;
          result = ParseRfc3339(text, &event->timestamp_ms);
        } else {
          return false;
        }
        if (result != TimeParse::kOk) return false;
        event->has_timestamp = true;
        return true;
      }
      case kValue: {
        // What get_double() does: numberparsing::parse_double() at the token, which also
        // requires a structural character or whitespace after the number.
        if (!IsNumberStart(first) || !IsJsonNumber(Token(v))) return false;
        double d;
        if (simdjson::SIMDJSON_BUILTIN_IMPLEMENTATION::numberparsing::parse_double(
                reinterpret_cast<const uint8_t*>(doc_ + index_[v]))
                .get(d) != simdjson::SUCCESS ||
            !std::isfinite(d)) {
          return false;
        }
        event->value = d;
        event->has_value = true;
        return true;
      }
      default:
        return false;
    }
  }

  // DecodeStringMap for the object at token k; returns the token after it, 0 to decline.
  uint32_t Map(uint32_t k, TagList* out) {
    ++k;
    if (At(k) == '}') return k + 1;
    for (;;) {
      std::string_view key;
      if (!Key(k, &key)) return 0;
      const uint32_t v = k + 2;
      const char first = At(v);
      std::string_view text;
      bool add = true;
      if (first == '"') {
        if (!String(v, &text)) return 0;
      } else if (IsNumberStart(first)) {
        text = Token(v);  // kept as its JSON text, like ReadNumberText
        if (!IsJsonNumber(text)) return 0;
      } else if (first == 't' || first == 'f') {
        text = Token(v);
        if (text != "true" && text != "false") return 0;
      } else if (first == 'n') {
        if (Token(v) != "null") return 0;
        add = false;  // null values are skipped
      } else {
        return 0;  // an object, an array or not a value
      }
      if (add) {
        if (out->size() == TagList::kCapacity) return 0;
        for (const Tag& tag : *out) {
          if (tag.key.size() == key.size() && SameBytes(tag.key.data(), key.data(), key.size())) {
            return 0;  // a duplicate key
          }
        }
        out->Add(key, text);
      }
      const char separator = At(v + 1);
      if (separator == '}') return v + 2;
      if (separator != ',') return 0;
      k = v + 2;
    }
  }

  // ValidateValue for the value at token k: the token after it, or 0 to decline.
  uint32_t Skip(uint32_t k, int depth) {
    switch (At(k)) {
      case '"': {
        std::string_view ignored;
        return String(k, &ignored) ? k + 1 : 0;
      }
      case 't':
        return Token(k) == "true" ? k + 1 : 0;
      case 'f':
        return Token(k) == "false" ? k + 1 : 0;
      case 'n':
        return Token(k) == "null" ? k + 1 : 0;
      case '{': {
        if (depth >= kMaxUnknownDepth) return 0;
        ++k;
        if (At(k) == '}') return k + 1;
        for (;;) {
          std::string_view ignored;
          if (!Key(k, &ignored)) return 0;
          const uint32_t next = Skip(k + 2, depth + 1);
          if (next == 0) return 0;
          if (At(next) == '}') return next + 1;
          if (At(next) != ',') return 0;
          k = next + 1;
        }
      }
      case '[': {
        if (depth >= kMaxUnknownDepth) return 0;
        ++k;
        if (At(k) == ']') return k + 1;
        for (;;) {
          const uint32_t next = Skip(k, depth + 1);
          if (next == 0) return 0;
          if (At(next) == ']') return next + 1;
          if (At(next) != ',') return 0;
          k = next + 1;
        }
      }
      default:
        return IsNumberStart(At(k)) && IsJsonNumber(Token(k)) ? k + 1 : 0;
    }
  }

  const char* const doc_;
  const uint32_t* const index_;
  const uint32_t count_;
  const bool has_backslash_;
  const simdjson::internal::dom_parser_implementation* const unescaper_;
  uint8_t* strings_;  // where the next unescaped string goes
};

class JsonMetricEventDecoder final : public MetricEventDecoder {
 public:
  JsonMetricEventDecoder(DecodeLimits limits, bool fast_path)
      : limits_(limits), fast_path_(fast_path) {
    // Failure here is not fatal: Decode() allocates again when it needs to.
    [[maybe_unused]] simdjson::error_code ignored = parser_.allocate(kInitialCapacity);
    // The fast path's stage 1, with the same runtime-selected kernel as parser_'s. Without
    // it (out of memory), every document takes the reference path.
    if (simdjson::get_active_implementation()->create_dom_parser_implementation(
            kInitialCapacity, simdjson::DEFAULT_MAX_DEPTH, indexer_) != simdjson::SUCCESS) {
      indexer_.reset();
    }
  }

  absl::Status Decode(std::string_view bytes, MetricEvent* event) override {
    ResetEvent(event);
    absl::Status status = DecodeDocument(bytes, event);
    if (!status.ok()) event->Clear();
    return status;
  }

 private:
  absl::Status DecodeDocument(std::string_view bytes, MetricEvent* event) {
    if (bytes.size() > limits_.max_document_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "document too large: ", bytes.size(), " bytes (limit ", limits_.max_document_bytes, ")"));
    }
    if (bytes.size() + simdjson::SIMDJSON_PADDING > capacity_) {
      size_t capacity = std::max(capacity_, kInitialCapacity);
      while (capacity < bytes.size() + simdjson::SIMDJSON_PADDING) capacity *= 2;
      buffer_ = std::make_unique_for_overwrite<char[]>(capacity);
      strings_ = std::make_unique_for_overwrite<uint8_t[]>(capacity);
      capacity_ = capacity;
    }
    // Parsers grow geometrically rather than to each new largest size.
    auto grown = [&bytes](size_t capacity) {
      capacity = std::max(capacity, kInitialCapacity);
      while (capacity < bytes.size()) capacity *= 2;
      return capacity;
    };
    if (indexer_ != nullptr && bytes.size() > indexer_->capacity() &&
        indexer_->set_capacity(grown(indexer_->capacity())) != simdjson::SUCCESS) {
      indexer_.reset();
    }
    // RFC 8259 section 8.1: a parser MAY ignore a leading byte order mark.
    if (bytes.size() >= 3 && bytes.substr(0, 3) == "\xEF\xBB\xBF") bytes.remove_prefix(3);
    if (!bytes.empty()) std::memcpy(buffer_.get(), bytes.data(), bytes.size());
    std::memset(buffer_.get() + bytes.size(), 0, simdjson::SIMDJSON_PADDING);

    if (FastDecodeDocument(bytes.size(), event)) return absl::OkStatus();

    // Not handled by the fast path, or an error: decode again with the reference decoder.
    ResetEvent(event);
    if (bytes.size() > parser_.capacity()) {
      if (auto error = parser_.allocate(grown(parser_.capacity()))) return JsonError(error);
    }
    od::document doc;
    if (auto error = parser_.iterate(buffer_.get(), bytes.size(), capacity_).get(doc)) {
      if (error == simdjson::UTF8_ERROR) return Utf8Error(bytes);
      if (error == simdjson::UNESCAPED_CHARS) return UnescapedCharError(bytes);
      return JsonError(error);
    }
    od::json_type type;
    if (auto error = doc.type().get(type)) return JsonError(error);
    if (type != od::json_type::object) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected a JSON object at the top level, got ", Sv(TypeName(type))));
    }
    od::object object;
    if (auto error = doc.get_object().get(object)) {
      if (error == simdjson::INCOMPLETE_ARRAY_OR_OBJECT) {
        return absl::InvalidArgumentError(
            "invalid JSON: the document does not end with the top-level object's closing "
            "brace (truncated, or trailing content)");
      }
      return JsonError(error);
    }
    if (auto status = DecodeMembers(object, event); !status.ok()) return status;
    // On-Demand stops after the object's closing brace: anything after it is an error.
    auto location = doc.current_location();
    if (location.error() != simdjson::OUT_OF_BOUNDS) {
      return absl::InvalidArgumentError("invalid JSON: trailing content after the object");
    }
    return absl::OkStatus();
  }

  // The fast path (see FastWalker) for the document in buffer_; false to decline.
  bool FastDecodeDocument(size_t length, MetricEvent* event) {
    if (!fast_path_ || indexer_ == nullptr ||
        indexer_->stage1(reinterpret_cast<const uint8_t*>(buffer_.get()), length,
                         simdjson::stage1_mode::regular) != simdjson::SUCCESS) {
      return false;
    }
    FastWalker walker(buffer_.get(), indexer_->structural_indexes.get(),
                      indexer_->n_structural_indexes,
                      std::memchr(buffer_.get(), '\\', length) != nullptr, indexer_.get(),
                      strings_.get());
    return walker.Decode(event);
  }

  absl::Status DecodeMembers(od::object& object, MetricEvent* event) {
    uint32_t seen = 0;
    std::string_view previous_key;  // for errors between members
    for (auto field_result : object) {
      od::field field;
      std::string_view key;
      simdjson::error_code error = std::move(field_result).get(field);
      if (!error) error = field.unescaped_key().get(key);
      if (error) {
        if (previous_key.data() == nullptr) return JsonError(error);
        return absl::InvalidArgumentError(absl::StrCat("invalid JSON after member ",
                                                       DisplayName(previous_key), ": ",
                                                       simdjson::error_message(error)));
      }
      previous_key = key;
      const Field which = LookupField(key);
      od::value& value = field.value();
      if (which == kUnknown) {
        // Forward compatibility: ignored, but it must still be valid JSON.
        if (auto status = ValidateValue(value, key, 0); !status.ok()) {
          return status;
        }
        continue;
      }
      const uint32_t bit = uint32_t{1} << which;
      if (seen & bit) {
        return absl::InvalidArgumentError(absl::StrCat("duplicate field ", DisplayName(key)));
      }
      seen |= bit;
      od::json_type type;
      if (value.type().get(type) != simdjson::SUCCESS) {
        return InvalidToken(value, DisplayName(key), which == kValue ? "a number" : "a value");
      }
      if (type == od::json_type::null) {  // null means absent
        if (!IsNullLiteral(value)) return FieldError(key, "invalid literal");
        continue;
      }
      if (auto status = DecodeMember(which, key, value, type, event); !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  const DecodeLimits limits_;
  const bool fast_path_;  // false: every document takes the reference path (tests)
  std::unique_ptr<char[]> buffer_;  // the input copy, with SIMDJSON_PADDING spare bytes
  std::unique_ptr<uint8_t[]> strings_;  // the fast path's unescaped strings, as large
  size_t capacity_ = 0;                 // bytes allocated at buffer_ and at strings_
  od::parser parser_;
  std::unique_ptr<simdjson::internal::dom_parser_implementation> indexer_;
};

// ---------------------------------------------------------------------------------
// Encoding.

void AppendDouble(double v, std::string* out) {
  if (!std::isfinite(v)) {  // JSON has no NaN/Infinity; null decodes as "absent"
    out->append("null");
    return;
  }
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round trip
  out->append(buf, result.ptr);
}

void AppendInt(int64_t v, std::string* out) {
  char buf[24];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, result.ptr);
}

void AppendStringMap(const TagList& map, std::string* out) {
  out->push_back('{');
  bool first = true;
  for (const Tag& tag : map) {
    if (!first) out->push_back(',');
    first = false;
    AppendJsonString(tag.key, out);
    out->push_back(':');
    AppendJsonString(tag.value, out);
  }
  out->push_back('}');
}

}  // namespace

std::unique_ptr<MetricEventDecoder> NewJsonMetricEventDecoder(DecodeLimits limits) {
  return std::make_unique<JsonMetricEventDecoder>(limits, /*fast_path=*/true);
}

std::unique_ptr<MetricEventDecoder> NewReferenceJsonMetricEventDecoderForTesting(
    DecodeLimits limits) {
  return std::make_unique<JsonMetricEventDecoder>(limits, /*fast_path=*/false);
}

std::unique_ptr<MetricEventDecoder> NewMetricEventDecoder(EventFormat format, DecodeLimits limits) {
  switch (format) {
    case EventFormat::kJson:
      return NewJsonMetricEventDecoder(limits);
    case EventFormat::kProtobuf:
      return NewProtobufMetricEventDecoder(limits);
  }
  return nullptr;
}

void AppendJsonString(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t run = 0;  // start of the pending run of bytes copied verbatim
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      // Keep well-formed UTF-8 as is; replace each invalid byte with U+FFFD (below) so
      // the output is always valid JSON.
      if (const size_t len = Utf8SequenceLength(p + i, n - i); len != 0) {
        i += len;
        continue;
      }
    }
    out->append(s.data() + run, i - run);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          const char escape[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out->append(escape, sizeof(escape));
        } else {
          out->append("\\ufffd");
        }
        break;
    }
    ++i;
    run = i;
  }
  out->append(s.data() + run, n - run);
  out->push_back('"');
}

void AppendMetricEventJson(const MetricEvent& event, std::string* out) {
  out->push_back('{');
  bool first = true;
  auto key = [&](std::string_view name) {
    if (!first) out->push_back(',');
    first = false;
    out->push_back('"');
    out->append(name);
    out->append("\":");
  };
  if (event.has_event_id) {
    key("eventId");
    AppendJsonString(event.event_id, out);
  }
  if (event.has_timestamp) {
    key("timestamp");
    AppendInt(event.timestamp_ms, out);
  }
  if (event.has_service_id) {
    key("serviceId");
    AppendJsonString(event.service_id, out);
  }
  if (event.has_instance_id) {
    key("instanceId");
    AppendJsonString(event.instance_id, out);
  }
  if (event.has_metric_type) {
    key("metricType");
    AppendJsonString(MetricTypeName(event.metric_type), out);
  }
  if (event.has_metric_name) {
    key("metricName");
    AppendJsonString(event.metric_name, out);
  }
  if (event.has_value) {
    key("value");
    AppendDouble(event.value, out);
  }
  if (!event.unit.empty()) {
    key("unit");
    AppendJsonString(event.unit, out);
  }
  if (!event.tags.empty()) {
    key("tags");
    AppendStringMap(event.tags, out);
  }
  if (!event.metadata.empty()) {
    key("metadata");
    AppendStringMap(event.metadata, out);
  }
  out->push_back('}');
}

}  // namespace streammetrics
