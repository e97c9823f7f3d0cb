// A small HTTP/1.1 server for the coordinator's OpenAI-compatible API, on
// Boost.Beast and Asio: a few I/O threads serve any number of connections
// (epoll; no thread per connection), keep-alive, bodies up to a limit,
// whole responses and chunked streams (server-sent events).
//
// While a request is being answered the server keeps reading its connection,
// so a client that goes away is noticed at once, not at the next write: the
// exchange's OnClientGone callback runs and the handler can cancel the work.
//
// Threading: each connection lives on its own strand. The handler is called
// on it, and every HttpExchange method except Post must be called on it too:
// inside the handler call or inside a function given to Post.
#ifndef MOESERVE_SCHEDULER_SERVER_HTTP_SERVER_H_
#define MOESERVE_SCHEDULER_SERVER_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moeserve {

struct HttpRequest {
  std::string method;         // "GET", "POST", ...
  std::string path;           // the target without its query string
  std::string authorization;  // the Authorization header; "" when absent
  std::string body;
};

// One request's answer: either Respond once, or StartStream, Write any
// number of times, then EndStream. Calls after the answer ended or after the
// client went away do nothing.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  // Thread safe, never blocks: runs `fn` on the connection's strand, unless
  // the server has stopped (then `fn` is dropped).
  virtual void Post(std::function<void()> fn) = 0;
  // A whole response with Content-Length.
  virtual void Respond(int status, const std::string& content_type, std::string body) = 0;
  // A chunked response; `content_type` e.g. "text/event-stream".
  virtual void StartStream(int status, const std::string& content_type) = 0;
  virtual void Write(std::string data) = 0;  // one chunk, sent as soon as the socket takes it
  virtual void EndStream() = 0;
  // Runs once if the client disconnects before the answer was fully sent
  // (not after). Set it before the answer can end. It is let go when the
  // answer ends, so it may hold what holds this exchange.
  virtual void OnClientGone(std::function<void()> fn) = 0;
};

using HttpHandler =
    std::function<void(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange)>;

class HttpServer {
 public:
  struct Options {
    std::string listen = "0.0.0.0:8000";  // host:port; port 0 picks a free one
    int threads = 2;                      // I/O threads: parsing, JSON and socket writes
    size_t max_body_bytes = 32 << 20;     // larger request bodies get 413
    absl::Duration idle_timeout = absl::Seconds(300);  // between requests on a connection
  };

  // Binds and starts serving; UNAVAILABLE when the address cannot be bound,
  // INVALID_ARGUMENT when it is not host:port.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           HttpHandler handler);
  // Stops as Stop() does. Anything still holding an HttpExchange must be gone
  // by then (it points into the server): destroy the server last.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops accepting and serving, and joins the I/O threads. Exchanges stay
  // valid until the server is destroyed; what they Post is dropped.
  void Stop();
  int port() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_HTTP_SERVER_H_
