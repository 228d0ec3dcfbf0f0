#include "operators/strings.h"
#include "operators/windows.h"

#include <numeric>

#include "absl/container/flat_hash_set.h"

namespace streammetrics {

WindowSpec WindowSpec::Tumbling(std::string name, int64_t size_ms, int64_t grace_ms) {
  WindowSpec w;
  w.name = std::move(name);
  w.size_ms = size_ms;
  w.advance_ms = size_ms;
  w.grace_ms = grace_ms;
  return w;
}

WindowSpec WindowSpec::Hopping(std::string name, int64_t size_ms, int64_t advance_ms,
                               int64_t grace_ms) {
  WindowSpec w = Tumbling(std::move(name), size_ms, grace_ms);
  w.advance_ms = advance_ms;
  return w;
}

absl::Status ValidateWindowSpec(const WindowSpec& w) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("window '", w.name, "': ", why));
  };
  if (w.name.empty()) return absl::InvalidArgumentError("window: name must not be empty");
  if (w.size_ms <= 0 || w.size_ms > kMaxDurationMs) {
    return bad(StrCat("size must be in [1ms, ", kMaxDurationMs / 86'400'000, "d]"));
  }
  if (w.advance_ms <= 0) return bad("advance must be > 0");
  if (w.advance_ms > w.size_ms) return bad("advance must be <= size");
  if (w.size_ms % w.advance_ms != 0) return bad("size must be a multiple of advance");
  if (w.size_ms / w.advance_ms > kMaxWindowsPerRecord) {
    return bad(StrCat("size / advance must be <= ", kMaxWindowsPerRecord,
                      " (the windows each record is in), got ", w.size_ms / w.advance_ms));
  }
  if (w.grace_ms < 0 || w.grace_ms > kMaxDurationMs) {
    return bad(StrCat("grace must be in [0, ", kMaxDurationMs / 86'400'000, "d]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateWindowSpecs(const std::vector<WindowSpec>& specs) {
  if (specs.empty()) return absl::InvalidArgumentError("windows: at least one is required");
  if (specs.size() > kMaxWindowDefinitions) {
    return absl::InvalidArgumentError(
        StrCat("windows: at most ", kMaxWindowDefinitions, ", got ", specs.size()));
  }
  absl::flat_hash_set<std::string> names;
  for (const WindowSpec& w : specs) {
    if (absl::Status s = ValidateWindowSpec(w); !s.ok()) return s;
    if (!names.insert(w.name).second) {
      return absl::InvalidArgumentError(StrCat("window '", w.name, "' defined twice"));
    }
  }
  return absl::OkStatus();
}

int64_t PaneSize(const std::vector<WindowSpec>& specs) {
  int64_t g = 0;
  for (const WindowSpec& w : specs) g = std::gcd(std::gcd(g, w.size_ms), w.advance_ms);
  return g;
}

}  // namespace streammetrics
