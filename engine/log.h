// The engine's log: one line per event to standard error, "<time> <level> <message>".
// Thread-safe. Events that can repeat per record (a broker error per message, say) go
// through LogEvery, which keeps at most one line per key per interval and counts the
// rest, so bad input or an outage cannot flood the log.
#ifndef STREAMMETRICS_ENGINE_LOG_H_
#define STREAMMETRICS_ENGINE_LOG_H_

#include <cstdint>
#include <string_view>

namespace streammetrics {

enum class LogLevel { kInfo, kWarning, kError };

void Log(LogLevel level, std::string_view message);
// At most one line per `key` per interval_ms; the line says how many were suppressed.
void LogEvery(std::string_view key, int64_t interval_ms, LogLevel level, std::string_view message);
// Tests and quiet modes: lines below `level` are dropped.
void SetMinLogLevel(LogLevel level);

}  // namespace streammetrics

#endif  // STREAMMETRICS_ENGINE_LOG_H_
