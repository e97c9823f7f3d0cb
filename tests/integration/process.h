// A child process for integration tests: started with arguments, its output
// going to a log file, killed (SIGTERM, then SIGKILL) when the object dies.
#ifndef MOESERVE_TESTS_INTEGRATION_PROCESS_H_
#define MOESERVE_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace moeserve::testing {

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

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_INTEGRATION_PROCESS_H_
