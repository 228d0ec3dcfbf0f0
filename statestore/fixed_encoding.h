// Fixed-width little-endian encoding of trivially copyable values, for state
// written to stores and changelogs. Little-endian hosts only (x86-64, aarch64).
#ifndef STREAMMETRICS_STATESTORE_FIXED_ENCODING_H_
#define STREAMMETRICS_STATESTORE_FIXED_ENCODING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace streammetrics {

template <typename T>
  requires std::is_trivially_copyable_v<T>
void AppendFixed(T v, std::string* out) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

// Reads a T from the front of *in and consumes it; false when *in is too short.
template <typename T>
  requires std::is_trivially_copyable_v<T>
bool ReadFixed(std::string_view* in, T* v) {
  if (in->size() < sizeof(T)) return false;
  std::memcpy(v, in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}

// Order-preserving encoding of an int64: 8 bytes big-endian with the sign bit flipped,
// so unsigned bytewise order (memcmp, RocksDB's default comparator) is numeric order.
constexpr size_t kOrderedInt64Bytes = 8;

inline void AppendOrderedInt64(int64_t v, std::string* out) {
  uint64_t u = static_cast<uint64_t>(v) ^ (uint64_t{1} << 63);
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((u >> shift) & 0xff));
  }
}

// REQUIRES: in.size() >= kOrderedInt64Bytes. Reads the first 8 bytes.
inline int64_t DecodeOrderedInt64(std::string_view in) {
  uint64_t u = 0;
  for (size_t i = 0; i < kOrderedInt64Bytes; ++i) u = (u << 8) | static_cast<uint8_t>(in[i]);
  return static_cast<int64_t>(u ^ (uint64_t{1} << 63));
}

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_FIXED_ENCODING_H_
