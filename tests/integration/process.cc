#include "tests/integration/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "runtime/worker/coordinator_channel.h"

namespace moeserve::testing {

Process::Process(const std::string& binary, const std::vector<std::string>& args,
                 const std::string& log_path)
    : log_path_(log_path) {
  std::vector<std::string> argv_storage = {binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ == 0) {
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) Stop(2.0);
}

bool Process::running() {
  if (reaped_ || pid_ <= 0) return false;
  if (waitpid(pid_, &status_, WNOHANG) == pid_) Reaped();
  return !reaped_;
}

void Process::Reaped() {
  reaped_ = true;
  // The sanitizers print to the child's stderr, which is its log: a report
  // there fails the test that started it, even when the child's exit went
  // unnoticed (a killed rank, a coordinator stopped at the end of a test).
  const std::string text = log();
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                             "WARNING: ThreadSanitizer", "runtime error:"}) {
    const size_t at = text.find(marker);
    if (at == std::string::npos) continue;
    const size_t from = text.rfind('\n', at);
    ADD_FAILURE() << "a sanitizer reported an error in " << log_path_ << ":\n"
                  << text.substr(from == std::string::npos ? 0 : from + 1, 6000);
    return;
  }
}

int Process::Stop(double seconds) {
  if (pid_ > 0 && running()) {
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (running()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      Reaped();
    }
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return -WTERMSIG(status_);
  return -1;
}

void Process::Signal(int signal) {
  if (pid_ > 0 && !reaped_) kill(pid_, signal);
}

std::string Process::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, req.data(), req.size()) < 0) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? out : out.substr(body + 4);
}

std::optional<double> MetricValue(int port, const std::string& name) {
  const std::string text = HttpGet(port, "/metrics");
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(text.substr(at + name.size() + 2));
}

bool WaitFor(const std::function<bool()>& condition, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

grpc::health::v1::HealthCheckResponse::ServingStatus HealthOf(
    const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  if (!stub->Check(&ctx, req, &resp).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return resp.status();
}

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) result.out.append(buf.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::vector<std::string> Flags(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string RandomToken() {
  std::ifstream in("/dev/urandom", std::ios::binary);
  unsigned char bytes[32] = {};
  in.read(reinterpret_cast<char*>(bytes), sizeof(bytes));
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

namespace {

// A file name of this process alone: ctest runs each test case as its own
// process, several at once, and they share the temporary directory.
std::string UniquePath(const std::string& name, const std::string& suffix) {
  static std::atomic<int> counter{0};
  return ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid()) + "_" +
         std::to_string(counter++) + suffix;
}

std::string WriteSecret(const std::string& path, const std::string& token) {
  std::ofstream out(path, std::ios::trunc);
  out << token << "\n";  // as `echo` writes it: the reader drops the newline
  return path;
}

}  // namespace

Planes::Planes(const std::string& name)
    : port_(FreePort()),
      internal_port_(FreePort()),
      address_("127.0.0.1:" + std::to_string(port_)),
      internal_address_("127.0.0.1:" + std::to_string(internal_port_)),
      token_(RandomToken()),
      token_file_(WriteSecret(UniquePath(name, "_internal.token"), token_)),
      admin_token_(RandomToken()),
      admin_token_file_(WriteSecret(UniquePath(name, "_admin.token"), admin_token_)) {}

std::vector<std::string> Planes::CoordinatorFlags() const {
  return {"--listen",
          address_,
          "--internal-listen",
          internal_address_,
          "--internal-token-file",
          token_file_,
          "--admin-token-file",
          admin_token_file_};
}

std::vector<std::string> Planes::WorkerFlags() const {
  return {"--coordinator", internal_address_, "--internal-token-file", token_file_};
}

std::shared_ptr<grpc::Channel> Planes::PublicChannel() const {
  return grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
}

std::shared_ptr<grpc::Channel> Planes::InternalChannel(const std::string& token) const {
  InternalPlaneCredentials credentials;
  credentials.token = token;
  return CreateCoordinatorChannel(internal_address_, credentials);
}

namespace {

std::string& ScratchPath() {
  static std::string path;  // empty until ProcessScratchDir is called
  return path;
}

class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!ScratchPath().empty() && ::testing::UnitTest::GetInstance()->Passed()) {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchPath(), ignored);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const kScratchCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace

const std::string& ProcessScratchDir(const std::string& name) {
  static const std::string dir = [&] {
    const std::string d = ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid());
    std::filesystem::create_directories(d);
    ScratchPath() = d;
    return d;
  }();
  return dir;
}

}  // namespace moeserve::testing
