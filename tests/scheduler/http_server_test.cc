// The coordinator's HTTP server on loopback with a raw socket client: whole
// and chunked answers, keep-alive, answers posted from another thread, body
// limits, and a client that disconnects while its answer is being made.
#include "scheduler/server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A blocking TCP client of 127.0.0.1:port.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{10, 0};  // a hung server fails the test instead of hanging it
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~Client() { Close(); }
  bool connected() const { return connected_; }
  void Send(const std::string& bytes) {
    ASSERT_EQ(write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  // Reads until `end` has arrived (or the peer closes, or 10 s pass).
  std::string ReadUntil(const std::string& end) {
    while (buffer_.find(end) == std::string::npos) {
      char chunk[4096];
      const ssize_t n = read(fd_, chunk, sizeof(chunk));
      if (n <= 0) break;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
    const size_t at = buffer_.find(end);
    const size_t upto = at == std::string::npos ? buffer_.size() : at + end.size();
    std::string out = buffer_.substr(0, upto);
    buffer_.erase(0, upto);
    return out;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

std::unique_ptr<HttpServer> Serve(HttpHandler handler, size_t max_body = 1 << 20) {
  HttpServer::Options options;
  options.listen = "127.0.0.1:0";
  options.max_body_bytes = max_body;
  auto server = HttpServer::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(HttpServer, AnswersWholeResponsesOnAKeptAliveConnection) {
  auto server = Serve([](const HttpRequest& r, std::shared_ptr<HttpExchange> ex) {
    ex->Respond(200, "text/plain", r.method + " " + r.path + " " + r.body + " " + r.authorization);
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send(
      "POST /v1/x?q=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\n"
      "Content-Length: 4\r\n\r\nbody");
  const std::string first = c.ReadUntil("Bearer k");
  EXPECT_THAT(first, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(first, HasSubstr("Content-Length: 24"));
  EXPECT_THAT(first, HasSubstr("\r\n\r\nPOST /v1/x body Bearer k"));
  c.Send("GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_THAT(c.ReadUntil("/second  "), HasSubstr("GET /second  "));
}

TEST(HttpServer, StreamsChunksPostedFromAnotherThread) {
  std::vector<std::thread> threads;
  std::mutex mu;
  auto server = Serve([&](const HttpRequest&, std::shared_ptr<HttpExchange> ex) {
    ex->StartStream(200, "text/event-stream");
    std::lock_guard<std::mutex> lock(mu);
    threads.emplace_back([ex] {
      ex->Post([ex] { ex->Write("data: one\n\n"); });
      ex->Post([ex] {
        ex->Write("data: [DONE]\n\n");
        ex->EndStream();
      });
    });
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
  const std::string bytes = c.ReadUntil("0\r\n\r\n");
  EXPECT_THAT(bytes, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(bytes, HasSubstr("Transfer-Encoding: chunked\r\n"));
  EXPECT_THAT(bytes, HasSubstr("Content-Type: text/event-stream\r\n"));
  EXPECT_THAT(bytes, HasSubstr("\r\n\r\nb\r\ndata: one\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"));
  // The connection serves the next request after the stream ended.
  c.Send("GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_THAT(c.ReadUntil("0\r\n\r\n"), HasSubstr("data: one"));
  server->Stop();
  std::lock_guard<std::mutex> lock(mu);
  for (std::thread& t : threads) t.join();
}

TEST(HttpServer, ClientThatDisconnectsIsNoticedBeforeAnyWrite) {
  std::promise<void> gone;
  std::promise<std::shared_ptr<HttpExchange>> received;  // held, never answered
  auto server = Serve([&](const HttpRequest&, std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&gone] { gone.set_value(); });
    received.set_value(ex);
  });
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    c.Send("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    // The server has read the request before the client goes.
    auto held = received.get_future();
    ASSERT_EQ(held.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    c.Close();
  }
  EXPECT_EQ(gone.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  server->Stop();
}

TEST(HttpServer, RefusesBodiesOverTheLimitAndMalformedRequests) {
  auto server = Serve(
      [](const HttpRequest&, std::shared_ptr<HttpExchange> ex) { ex->Respond(200, "t", "ok"); },
      /*max_body=*/8);
  ASSERT_NE(server, nullptr);
  Client big(server->port());
  big.Send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
  const std::string refused = big.ReadUntil("}}");
  EXPECT_THAT(refused, StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(refused, HasSubstr("exceeds 8 bytes"));
  Client bad(server->port());
  bad.Send("NOT HTTP\r\n\r\n");
  EXPECT_THAT(bad.ReadUntil("}}"), StartsWith("HTTP/1.1 400 "));
  Client good(server->port());  // still serving
  good.Send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_THAT(good.ReadUntil("ok"), StartsWith("HTTP/1.1 200 OK"));
}

TEST(HttpServer, BadAddresses) {
  HttpServer::Options options;
  options.listen = "no-port";
  EXPECT_EQ(HttpServer::Start(options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.listen = "example.com:80";
  EXPECT_EQ(HttpServer::Start(options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = Serve([](const HttpRequest&, std::shared_ptr<HttpExchange>) {});
  ASSERT_NE(first, nullptr);
  options.listen = "127.0.0.1:" + std::to_string(first->port());
  const absl::Status taken = HttpServer::Start(options, nullptr).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(taken.message()), HasSubstr("cannot serve HTTP on"));
}

}  // namespace
}  // namespace moeserve
