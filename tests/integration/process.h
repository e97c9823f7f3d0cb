// Helpers for integration tests on loopback: child processes, free ports,
// polling, the standard gRPC health check, commands and plain HTTP.
#ifndef MOESERVE_TESTS_INTEGRATION_PROCESS_H_
#define MOESERVE_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "grpc/health/v1/health.pb.h"
#include "grpcpp/grpcpp.h"

namespace moeserve::testing {

// A child process started with arguments, its output going to a log file,
// killed (SIGTERM, then SIGKILL) when the object dies. A sanitizer report in
// its log fails the current test once the child has exited.
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
  // Sends `signal` (e.g. SIGSTOP to hang it, SIGCONT to resume it).
  void Signal(int signal);

 private:
  void Reaped();

  pid_t pid_ = -1;
  std::string log_path_;
  int status_ = 0;
  bool reaped_ = false;
};

// A TCP port that was free a moment ago on 127.0.0.1.
int FreePort();

// GET http://127.0.0.1:port/path; empty on failure.
std::string HttpGet(int port, const std::string& path);

// The value of an unlabelled series (`name`, e.g. "moeserve_preemptions_total")
// in the Prometheus text of http://127.0.0.1:port/metrics; nullopt when the
// series is not there or the scrape fails.
std::optional<double> MetricValue(int port, const std::string& name);

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

// A coordinator's two ports on loopback and the secrets of its internal plane
// (random tokens in files under the test's temporary directory), so that
// every test runs coordinator and workers as a deployment does: workers on the
// internal port with the token, clients on the public port, Admin on the
// internal port with its own token.
class Planes {
 public:
  // Token files are named after `name` and this process, so that test
  // processes running side by side never share one.
  explicit Planes(const std::string& name = "planes");

  const std::string& address() const { return address_; }  // public, host:port
  const std::string& internal_address() const { return internal_address_; }
  int port() const { return port_; }
  int internal_port() const { return internal_port_; }
  const std::string& token() const { return token_; }
  const std::string& token_file() const { return token_file_; }
  const std::string& admin_token() const { return admin_token_; }
  const std::string& admin_token_file() const { return admin_token_file_; }

  // --listen, --internal-listen, --internal-token-file, --admin-token-file.
  std::vector<std::string> CoordinatorFlags() const;
  // --coordinator (the internal port), --internal-token-file.
  std::vector<std::string> WorkerFlags() const;
  // The public port, no credentials (what any client has).
  std::shared_ptr<grpc::Channel> PublicChannel() const;
  // The internal port, sending `token` (none when empty) with every call.
  std::shared_ptr<grpc::Channel> InternalChannel(const std::string& token) const;
  // The internal port with the Admin token.
  std::shared_ptr<grpc::Channel> AdminChannel() const { return InternalChannel(admin_token_); }

 private:
  int port_;
  int internal_port_;
  std::string address_;
  std::string internal_address_;
  std::string token_;
  std::string token_file_;
  std::string admin_token_;
  std::string admin_token_file_;
};

// `a` followed by `b`: a Planes' flags and a test's own.
std::vector<std::string> Flags(std::vector<std::string> a, const std::vector<std::string>& b);

// 32 random bytes from /dev/urandom as 64 hex digits.
std::string RandomToken();

// This test process's scratch directory (models, logs):
// TempDir()/<name>_<pid>, made on the first call, since ctest runs the tests
// of one suite side by side, each in a process of its own. The first call's
// name holds for the process. Removed at the end when every test passed; a
// failure leaves it for a look at the logs.
const std::string& ProcessScratchDir(const std::string& name);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_INTEGRATION_PROCESS_H_
