// The process id of an instance, as Kafka Streams keeps one: a random UUID made the first
// time an instance runs on a state directory and kept there (`<dir>/process-id`), so the
// instance's transactional ids (`<application.id>-<process id>-<thread>`) are unique
// across instances — each has its own state directory — and stable across its restarts:
// a restarted instance fences what its predecessor left open (a kill -9's transaction is
// aborted at once instead of at the transaction timeout). Process ids from getpid() were
// 1 in every container, and two replicas fenced each other.
#ifndef STREAMMETRICS_ENGINE_KAFKA_PROCESS_ID_H_
#define STREAMMETRICS_ENGINE_KAFKA_PROCESS_ID_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace streammetrics::kafka {

// The process id kept in `dir` (created, with the directory, when there is none). A file
// that holds no process id is FailedPrecondition naming it: deleting it makes a new one.
absl::StatusOr<std::string> LoadOrCreateProcessId(const std::string& dir);

// Whether `id` is a process id: a UUID in its canonical text form (36 characters,
// lowercase hex, dashes at 8, 13, 18 and 23).
bool IsProcessId(std::string_view id);

// An instance's exclusive hold on its state directory (an flock on `<dir>/lock`, which
// also holds the holder's pid), released when destroyed or when the process dies — kill
// -9 included. Two instances on one directory would share its process id, so fence each
// other, and its stores' locks; the second one now stops at once, saying why.
class StateDirectoryLock {
 public:
  // FailedPrecondition naming the directory and the holder's pid when another process
  // holds it.
  static absl::StatusOr<std::unique_ptr<StateDirectoryLock>> Acquire(const std::string& dir);
  ~StateDirectoryLock();
  StateDirectoryLock(const StateDirectoryLock&) = delete;
  StateDirectoryLock& operator=(const StateDirectoryLock&) = delete;

 private:
  explicit StateDirectoryLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace streammetrics::kafka

#endif  // STREAMMETRICS_ENGINE_KAFKA_PROCESS_ID_H_
