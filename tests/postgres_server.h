// A real PostgreSQL server for tests (DESIGN.md, "Real services in tests"): initdb into a
// temp dir (as the `postgres` user when run as root), `postgres` on a free loopback port
// with fsync off; stopped (and its files removed) by the destructor. Stop()/Start() take
// it down and bring it back on the same port and data, for outage tests.
#ifndef STREAMMETRICS_TESTS_POSTGRES_SERVER_H_
#define STREAMMETRICS_TESTS_POSTGRES_SERVER_H_

#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/spawn.h"  // FreeLoopbackPort

namespace streammetrics::testing {

class PostgresServer {
 public:
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Create() {
    std::unique_ptr<PostgresServer> pg(new PostgresServer());
    char tmpl[] = "/tmp/sm-pg-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
    pg->dir_ = tmpl;
    if (geteuid() == 0 && std::system(("chown postgres " + pg->dir_).c_str()) != 0) {
      return absl::InternalError("chown postgres");
    }
    const std::string initdb = pg->Prefix() + "/usr/lib/postgresql/15/bin/initdb -D " + pg->dir_ +
                               "/data -A trust -U postgres --no-sync -E UTF8 >" + pg->dir_ +
                               "/initdb.log 2>&1";
    if (std::system(initdb.c_str()) != 0) return absl::InternalError("initdb failed: " + initdb);
    pg->port_ = FreeLoopbackPort();
    if (absl::Status s = pg->Start(); !s.ok()) return s;
    return pg;
  }

  ~PostgresServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  absl::Status Start() {
    if (pid_ > 0) return absl::OkStatus();
    std::vector<std::string> args;
    if (geteuid() == 0) {
      args = {"/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"};
    }
    for (std::string a : {std::string("/usr/lib/postgresql/15/bin/postgres"), std::string("-D"),
                          dir_ + "/data", std::string("-p"), std::to_string(port_),
                          std::string("-c"), std::string("listen_addresses=127.0.0.1"),
                          std::string("-c"), std::string("fsync=off"), std::string("-c"),
                          std::string("full_page_writes=off"), std::string("-c"),
                          "unix_socket_directories=" + dir_}) {
      args.push_back(std::move(a));
    }
    const std::string dsn = Dsn("postgres");
    absl::StatusOr<pid_t> pid = StartServer(args, dir_ + "/postgres.log",
                                            [&] { return PQping(dsn.c_str()) == PQPING_OK; });
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    return absl::OkStatus();
  }

  // Fast shutdown (SIGINT): connections are cut, as in an outage.
  void Stop() { StopChild(&pid_, SIGINT); }

  int port() const { return port_; }
  std::string Dsn(const std::string& db) const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + db;
  }

  absl::Status CreateDatabase(const std::string& db) {
    return Exec("postgres", "CREATE DATABASE " + db).status();
  }

  // Rows of `sql` as text (NULL as "NULL").
  absl::StatusOr<std::vector<std::vector<std::string>>> Exec(const std::string& db,
                                                             const std::string& sql) {
    PGconn* conn = PQconnectdb(Dsn(db).c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string m = PQerrorMessage(conn);
      PQfinish(conn);
      return absl::UnavailableError(m);
    }
    PGresult* r = PQexec(conn, sql.c_str());
    absl::StatusOr<std::vector<std::vector<std::string>>> out;
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
      out = absl::InternalError(PQresultErrorMessage(r));
    } else {
      std::vector<std::vector<std::string>> rows;
      for (int i = 0; i < PQntuples(r); ++i) {
        std::vector<std::string>& row = rows.emplace_back();
        for (int j = 0; j < PQnfields(r); ++j) {
          row.push_back(PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
        }
      }
      out = std::move(rows);
    }
    PQclear(r);
    PQfinish(conn);
    return out;
  }

 private:
  PostgresServer() = default;
  std::string Prefix() const {
    return geteuid() == 0 ? "setpriv --reuid=postgres --regid=postgres --init-groups " : "";
  }
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace streammetrics::testing

#endif  // STREAMMETRICS_TESTS_POSTGRES_SERVER_H_
