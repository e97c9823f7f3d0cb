#include "scheduler/server/http_server.h"

#include <atomic>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/strand.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"

namespace moeserve {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

constexpr size_t kMaxHeaderBytes = 64 << 10;
// Bytes a client may send ahead (pipelining) while its request is answered;
// past that the connection is no longer watched for a disconnect.
constexpr size_t kMaxReadAheadBytes = 64 << 10;

std::string StatusLine(int status) {
  const beast::string_view reason = http::obsolete_reason(http::int_to_status(status));
  return absl::StrCat("HTTP/1.1 ", status, " ",
                      reason.empty() ? "Unknown" : std::string(reason.data(), reason.size()),
                      "\r\n");
}

class Connection;

class Exchange final : public HttpExchange {
 public:
  explicit Exchange(std::shared_ptr<Connection> connection) : connection_(std::move(connection)) {}
  void Post(std::function<void()> fn) override;
  void Respond(int status, const std::string& content_type, std::string body) override;
  void StartStream(int status, const std::string& content_type) override;
  void Write(std::string data) override;
  void EndStream() override;
  void OnClientGone(std::function<void()> fn) override { on_gone_ = std::move(fn); }

  // Strand only, from the connection.
  void ClientGone() {
    if (ended_) return;
    ended_ = true;
    if (on_gone_) std::exchange(on_gone_, nullptr)();
  }

 private:
  bool Usable() const;
  // The answer is complete: the client's going no longer matters. The
  // callback usually holds the caller's state, which holds this exchange;
  // it is let go later on the strand, not inside the caller's own call.
  void ReleaseOnGone();

  const std::shared_ptr<Connection> connection_;
  std::function<void()> on_gone_;
  bool streaming_ = false;
  bool ended_ = false;  // answered in full, or the client is gone
};

class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, const HttpServer::Options& options, const HttpHandler& handler)
      : options_(options), handler_(handler) {
    stream_.emplace(std::move(socket));
  }

  // Everything a connection does runs on its strand, from the first read on.
  void Start() {
    net::dispatch(stream_->get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }
  // Runs `fn` on the connection's strand; nothing once the server stopped.
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(post_mu_);
    if (!abandoned_) net::post(stream_->get_executor(), std::move(fn));
  }
  // The server stops (its threads joined): drops the answer in progress,
  // which holds this connection, and the socket and its timer, which belong
  // to the server's io_context. An exchange a caller still holds may outlive
  // the server; its connection then touches nothing of it.
  void Abandon() {
    {
      std::lock_guard<std::mutex> lock(post_mu_);
      abandoned_ = true;
    }
    closed_ = true;
    out_.clear();
    exchange_.reset();
    parser_.reset();
    stream_.reset();
  }
  bool open() const { return !closed_; }
  bool keep_alive() const { return keep_alive_; }

  // Queues bytes of the current answer; `last` ends it.
  void Send(std::string bytes, bool last) {
    if (closed_) return;
    if (!bytes.empty()) out_.push_back(std::move(bytes));
    if (last) answer_complete_ = true;
    if (!writing_) DoWrite();
  }

 private:
  void DoRead() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(kMaxHeaderBytes);
    stream_->expires_after(
        std::chrono::microseconds(absl::ToInt64Microseconds(options_.idle_timeout)));
    http::async_read(
        *stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (closed_) return;
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      exchange_ = std::make_shared<Exchange>(shared_from_this());
      exchange_->Respond(
          413, "application/json",
          absl::StrCat(R"({"error":{"message":"the request body exceeds )", options_.max_body_bytes,
                       R"( bytes","type":"invalid_request_error","param":null,"code":null}})"));
      return;
    }
    if (ec) {  // end of stream, timeout, a malformed request
      if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
          ec != net::error::operation_aborted && ec != net::error::eof) {
        keep_alive_ = false;
        exchange_ = std::make_shared<Exchange>(shared_from_this());
        exchange_->Respond(
            400, "application/json",
            absl::StrCat(R"({"error":{"message":"malformed HTTP request: )", ec.message(),
                         R"(","type":"invalid_request_error","param":null,"code":null}})"));
        return;
      }
      Close();
      return;
    }
    stream_->expires_never();
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    keep_alive_ = message.keep_alive();
    HttpRequest request;
    request.method = std::string(message.method_string());
    const std::string target(message.target());
    request.path = target.substr(0, target.find('?'));
    if (auto it = message.find(http::field::authorization); it != message.end()) {
      request.authorization = std::string(it->value());
    }
    request.body = std::move(message.body());
    answer_complete_ = false;
    exchange_ = std::make_shared<Exchange>(shared_from_this());
    Watch();
    handler_(request, exchange_);
  }

  // Keeps a read pending while the answer is made, to notice a disconnect.
  void Watch() {
    if (watching_ || closed_ || buffer_.size() >= kMaxReadAheadBytes) return;
    watching_ = true;
    stream_->async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (!ec) buffer_.commit(n);
    if (closed_) return;
    if (exchange_ == nullptr) {  // the answer is out: the next request
      DoRead();
      return;
    }
    if (ec) {
      ClientGone();
      return;
    }
    Watch();
  }

  void DoWrite() {
    if (out_.empty()) {
      if (answer_complete_) AnswerDone();
      return;
    }
    writing_ = true;
    net::async_write(*stream_, net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       if (self->closed_) return;
                       if (ec) {
                         self->ClientGone();
                         return;
                       }
                       self->out_.pop_front();
                       self->DoWrite();
                     });
  }

  void AnswerDone() {
    exchange_.reset();
    if (!keep_alive_) {
      beast::error_code ignored;
      stream_->socket().shutdown(tcp::socket::shutdown_send, ignored);
      Close();
      return;
    }
    if (watching_) {
      stream_->socket().cancel();  // OnWatch then reads the next request
    } else {
      DoRead();
    }
  }

  void ClientGone() {
    std::shared_ptr<Exchange> exchange = std::move(exchange_);
    Close();
    if (exchange != nullptr) exchange->ClientGone();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    out_.clear();
    beast::error_code ignored;
    stream_->socket().close(ignored);
  }

  std::optional<beast::tcp_stream> stream_;  // reset by Abandon
  std::mutex post_mu_;                       // orders Post and Abandon
  bool abandoned_ = false;
  const HttpServer::Options& options_;  // the server's; outlives every connection
  const HttpHandler& handler_;
  beast::flat_buffer buffer_;  // bytes read and not yet parsed
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Exchange> exchange_;  // the request being answered; null between requests
  std::deque<std::string> out_;         // front is being written while writing_
  bool writing_ = false;
  bool watching_ = false;
  bool answer_complete_ = false;  // the last bytes of the answer are queued
  bool keep_alive_ = true;
  bool closed_ = false;
};

void Exchange::Post(std::function<void()> fn) { connection_->Post(std::move(fn)); }

void Exchange::ReleaseOnGone() {
  if (on_gone_) connection_->Post([gone = std::move(on_gone_)] {});
  on_gone_ = nullptr;
}

bool Exchange::Usable() const { return !ended_ && connection_->open(); }

void Exchange::Respond(int status, const std::string& content_type, std::string body) {
  if (!Usable() || streaming_) return;
  ended_ = true;
  ReleaseOnGone();
  http::response<http::string_body> res{http::int_to_status(status), 11};
  res.set(http::field::server, "moeserve");
  res.set(http::field::content_type, content_type);
  res.keep_alive(connection_->keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  std::ostringstream bytes;
  bytes << res;
  connection_->Send(bytes.str(), /*last=*/true);
}

void Exchange::StartStream(int status, const std::string& content_type) {
  if (!Usable() || streaming_) return;
  streaming_ = true;
  connection_->Send(
      absl::StrCat(StatusLine(status), "Server: moeserve\r\nContent-Type: ", content_type,
                   "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
                   connection_->keep_alive() ? "" : "Connection: close\r\n", "\r\n"),
      /*last=*/false);
}

void Exchange::Write(std::string data) {
  if (!Usable() || !streaming_ || data.empty()) return;
  char size[24];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  connection_->Send(absl::StrCat(size, data, "\r\n"), /*last=*/false);
}

void Exchange::EndStream() {
  if (!Usable() || !streaming_) return;
  ended_ = true;
  ReleaseOnGone();
  connection_->Send("0\r\n\r\n", /*last=*/true);
}

}  // namespace

struct HttpServer::Impl {
  Options options;
  HttpHandler handler;
  net::io_context io;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::atomic<bool> stopped{false};
  std::mutex connections_mu;
  std::vector<std::weak_ptr<Connection>> connections;  // for Stop to abandon

  void Accept() {
    acceptor->async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);  // SSE events are small
        auto connection = std::make_shared<Connection>(std::move(socket), options, handler);
        {
          std::lock_guard<std::mutex> lock(connections_mu);
          std::erase_if(connections, [](const auto& c) { return c.expired(); });
          connections.push_back(connection);
        }
        connection->Start();
      }
      Accept();
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::port() const { return impl_->acceptor->local_endpoint().port(); }

void HttpServer::Stop() {
  if (impl_->stopped.exchange(true)) return;
  net::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
  });
  impl_->io.stop();
  for (std::thread& t : impl_->threads) t.join();
  // No handler runs now. Connections kept alive by their pending handlers
  // or by exchanges a caller holds let go of the io_context's objects, so
  // that destroying it (with the handlers) frees them all.
  std::lock_guard<std::mutex> lock(impl_->connections_mu);
  for (const std::weak_ptr<Connection>& c : impl_->connections) {
    if (std::shared_ptr<Connection> live = c.lock()) live->Abandon();
  }
  impl_->connections.clear();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options,
                                                              HttpHandler handler) {
  const size_t colon = options.listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP address \"", options.listen, "\" is not host:port"));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP address \"", options.listen, "\": \"", host, "\" is not an IP address"));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  impl->acceptor.emplace(impl->io);
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  impl->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor->bind(endpoint, ec);
  if (!ec) impl->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", options.listen, ": ", ec.message()));
  }
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace moeserve
