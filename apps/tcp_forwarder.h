// A loopback TCP forwarder: connections accepted on 127.0.0.1:port are relayed to a
// target host:port. `streammetrics broker --port P` uses it to put the dev broker's
// bootstrap on a fixed port (librdkafka 2.0.2's mock cluster binds random ports): a Kafka
// client bootstraps through it, and then talks to the brokers the metadata names directly.
#ifndef STREAMMETRICS_APPS_TCP_FORWARDER_H_
#define STREAMMETRICS_APPS_TCP_FORWARDER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace streammetrics {

class TcpForwarder {
 public:
  // Listens on 127.0.0.1:port (InvalidArgument/Unavailable when it cannot) and relays to
  // target ("host:port").
  static absl::StatusOr<std::unique_ptr<TcpForwarder>> Start(int port, std::string target);
  ~TcpForwarder();

 private:
  TcpForwarder(int listen_fd, std::string host, int port);
  void AcceptLoop();

  int listen_fd_;
  std::string host_;
  int port_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> relays_;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_APPS_TCP_FORWARDER_H_
