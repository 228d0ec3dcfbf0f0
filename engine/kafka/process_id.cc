#include "engine/kafka/process_id.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streammetrics::kafka {
namespace {

constexpr std::string_view kFile = "process-id";

std::string NewUuid() {
  std::random_device rd;
  std::array<uint8_t, 16> b;
  for (size_t i = 0; i < b.size(); i += 4) {
    const uint32_t r = rd();
    for (size_t j = 0; j < 4; ++j) b[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4: random
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant RFC 4122
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0f]);
  }
  return out;
}

}  // namespace

bool IsProcessId(std::string_view id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    const char c = id[i];
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<std::string> LoadOrCreateProcessId(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / kFile;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    std::string id = text.str();
    while (!id.empty() && (id.back() == '\n' || id.back() == '\r' || id.back() == ' ')) id.pop_back();
    if (!in.good() && !in.eof()) {
      return absl::FailedPreconditionError(absl::StrCat(path.string(), ": cannot be read"));
    }
    if (!IsProcessId(id)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path.string(), " holds no process id (a UUID); delete it to make a new one"));
    }
    return id;
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("state directory ", dir, " cannot be created: ", ec.message()));
  }
  // Written whole under another name, then renamed: a crash leaves the old state (none)
  // or the whole id, never half of one.
  const std::string id = NewUuid();
  const std::filesystem::path tmp = std::filesystem::path(dir) / absl::StrCat(std::string(kFile), ".tmp.", static_cast<int>(::getpid()));
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << id << "\n";
    out.flush();
    if (!out.good()) {
      return absl::FailedPreconditionError(absl::StrCat(tmp.string(), ": cannot be written"));
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::FailedPreconditionError(
        absl::StrCat(path.string(), ": cannot be written: ", ec.message()));
  }
  return id;
}

absl::StatusOr<std::unique_ptr<StateDirectoryLock>> StateDirectoryLock::Acquire(
    const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("state directory ", dir, " cannot be created: ", ec.message()));
  }
  const std::string path = (std::filesystem::path(dir) / "lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot be opened: ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    std::string holder(buf, n > 0 ? static_cast<size_t>(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state directory ", dir, " is in use by another instance (process ",
          holder.empty() ? "?" : holder, "): give each instance its own state.dir"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot be locked: ", std::strerror(err)));
  }
  // The holder's pid, for a second instance's message; failing to write it costs only
  // that message its pid (the lock holds).
  const std::string pid = absl::StrCat(static_cast<int>(::getpid()), "\n");
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  return std::unique_ptr<StateDirectoryLock>(new StateDirectoryLock(fd));
}

StateDirectoryLock::~StateDirectoryLock() { ::close(fd_); }

}  // namespace streammetrics::kafka
