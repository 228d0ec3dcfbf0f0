#include "apps/tcp_forwarder.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "operators/strings.h"

namespace streammetrics {
namespace {

int ConnectTo(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  }
  return fd;
}

// Copies bytes both ways until either side closes or `stop`.
void Relay(int a, int b, const std::atomic<bool>* stop) {
  char buf[64 * 1024];
  pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  while (!stop->load()) {
    const int n = poll(fds, 2, 200);
    if (n < 0 && errno != EINTR) break;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t got = read(fds[i].fd, buf, sizeof(buf));
      if (got <= 0) {
        closed = true;
        break;
      }
      for (ssize_t off = 0; off < got;) {
        const ssize_t put = write(fds[1 - i].fd, buf + off, static_cast<size_t>(got - off));
        if (put <= 0) {
          closed = true;
          break;
        }
        off += put;
      }
    }
    if (closed) break;
  }
  close(a);
  close(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpForwarder>> TcpForwarder::Start(int port, std::string target) {
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("forwarder: target must be host:port");
  const std::string host = target.substr(0, colon);
  const int target_port = std::atoi(target.c_str() + colon + 1);
  if (port < 1 || port > 65535) return absl::InvalidArgumentError("--port must be in [1, 65535]");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError(StrCat("socket: ", std::strerror(errno)));
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(StrCat("cannot listen on 127.0.0.1:", port, ": ", why));
  }
  std::unique_ptr<TcpForwarder> f(new TcpForwarder(fd, host, target_port));
  f->acceptor_ = std::thread([raw = f.get()] { raw->AcceptLoop(); });
  return f;
}

TcpForwarder::TcpForwarder(int listen_fd, std::string host, int port)
    : listen_fd_(listen_fd), host_(std::move(host)), port_(port) {}

TcpForwarder::~TcpForwarder() {
  stop_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  close(listen_fd_);
  for (std::thread& t : relays_) t.join();
}

void TcpForwarder::AcceptLoop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    const int upstream = ConnectTo(host_, port_);
    if (upstream < 0) {
      close(client);
      continue;
    }
    relays_.emplace_back(Relay, client, upstream, &stop_);
  }
}

}  // namespace streammetrics
