#include "engine/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

#include <map>

namespace streammetrics {
namespace {

std::mutex g_mutex;
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};

struct Suppressed {
  int64_t last_ms = INT64_MIN;
  uint64_t dropped = 0;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Write(LogLevel level, std::string_view message, uint64_t suppressed) {
  static const char* kNames[] = {"INFO", "WARN", "ERROR"};
  const int64_t now = NowMs();
  std::time_t secs = static_cast<std::time_t>(now / 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
  if (suppressed > 0) {
    std::fprintf(stderr, "%s.%03d %s %.*s (and %llu more like it)\n", stamp,
                 static_cast<int>(now % 1000), kNames[static_cast<int>(level)],
                 static_cast<int>(message.size()), message.data(),
                 static_cast<unsigned long long>(suppressed));
  } else {
    std::fprintf(stderr, "%s.%03d %s %.*s\n", stamp, static_cast<int>(now % 1000),
                 kNames[static_cast<int>(level)], static_cast<int>(message.size()),
                 message.data());
  }
}

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }

void Log(LogLevel level, std::string_view message) {
  if (static_cast<int>(level) < g_min_level) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  Write(level, message, 0);
}

void LogEvery(std::string_view key, int64_t interval_ms, LogLevel level,
              std::string_view message) {
  if (static_cast<int>(level) < g_min_level) return;
  static auto* state =
      new std::map<std::string, Suppressed, std::less<>>();
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = state->find(key);
  if (it == state->end()) it = state->emplace(std::string(key), Suppressed{}).first;
  Suppressed& s = it->second;
  const int64_t now = NowMs();
  if (s.last_ms != INT64_MIN && now - s.last_ms < interval_ms) {
    ++s.dropped;
    return;
  }
  Write(level, message, s.dropped);
  s.last_ms = now;
  s.dropped = 0;
}

}  // namespace streammetrics
