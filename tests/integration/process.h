// Helpers for integration tests on loopback: child processes, free ports,
// polling, the standard gRPC health check, commands and plain HTTP.
#ifndef MOESERVE_TESTS_INTEGRATION_PROCESS_H_
#define MOESERVE_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "grpc/health/v1/health.pb.h"
#include "grpcpp/grpcpp.h"

namespace moeserve::testing {

// A child process started with arguments, its output going to a log file,
// killed (SIGTERM, then SIGKILL) when the object dies.
class Process {
 public:
  Process(const std::string& binary, const std::vector<std::string>& args,
          const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool running();
  // Sends SIGTERM and waits up to `seconds`, then SIGKILL. Returns the exit
  // code, or -signal.
  int Stop(double seconds = 5.0);
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  int status_ = 0;
  bool reaped_ = false;
};

// A TCP port that was free a moment ago on 127.0.0.1.
int FreePort();

// GET http://127.0.0.1:port/path; empty on failure.
std::string HttpGet(int port, const std::string& path);

// Polls `condition` every 50 ms for up to `seconds`; its last answer.
bool WaitFor(const std::function<bool()>& condition, double seconds);

// grpc.health.v1 Check of the whole server ("" service); UNKNOWN when the
// call fails.
grpc::health::v1::HealthCheckResponse::ServingStatus HealthOf(
    const std::shared_ptr<grpc::Channel>& channel);

// Runs a shell command; its exit code (-1 if it did not exit) and stdout.
struct CommandResult {
  int exit_code = -1;
  std::string out;
};
CommandResult RunCommand(const std::string& command);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_INTEGRATION_PROCESS_H_
