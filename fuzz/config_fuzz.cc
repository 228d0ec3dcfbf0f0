// The config loader on arbitrary text: a config or an error naming why, never a crash, an
// exception, a sanitizer report or a hang.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "apps/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<streammetrics::AppConfig> config =
      streammetrics::ParseConfig(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok() && config.status().message().empty()) __builtin_trap();
  return 0;
}
