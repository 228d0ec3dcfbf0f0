// Fixed-width little-endian encoding of trivially copyable values, for the state the
// operators write to their stores. Little-endian hosts only (x86-64, aarch64).
#ifndef STREAMMETRICS_OPERATORS_FIXED_ENCODING_H_
#define STREAMMETRICS_OPERATORS_FIXED_ENCODING_H_

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

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_FIXED_ENCODING_H_
