// Authentication of the coordinator's internal plane (worker registration, the
// rendezvous store, Admin): a shared bearer token that callers send as gRPC
// metadata "authorization: Bearer <token>", compared in constant time.
// Mutual TLS, when configured, is checked by gRPC's SSL credentials before a
// handler runs; the token check here is independent of it.
#ifndef MOESERVE_SCHEDULER_SERVER_PLANE_AUTH_H_
#define MOESERVE_SCHEDULER_SERVER_PLANE_AUTH_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace moeserve {

// The metadata key and value prefix a caller sends its token under.
inline constexpr char kAuthorizationMetadataKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

// Tokens shorter than this are refused when read: a guessable shared secret
// would guard nothing.
inline constexpr size_t kMinTokenBytes = 16;
inline constexpr size_t kMaxTokenBytes = 4096;

// True when `presented` equals `expected`. The time taken depends only on the
// lengths, never on where the first differing byte is.
bool ConstantTimeEquals(std::string_view presented, std::string_view expected);

// Reads a token from `path` (named `flag` in errors), without the trailing
// newline and whitespace that `echo` or a Kubernetes Secret leave.
// InvalidArgument when the file cannot be read, is empty, is shorter than
// kMinTokenBytes or longer than kMaxTokenBytes, or holds a control character
// (gRPC metadata could not carry it).
absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path);

// Checks one call's token. Thread safe (immutable after construction).
class TokenCheck {
 public:
  // `token` empty: every call passes (the plane relies on mutual TLS alone).
  // `plane` names the endpoint in errors ("internal plane", "Admin"), `flag`
  // the client flag that supplies the token.
  TokenCheck(std::string token, std::string plane, std::string flag)
      : token_(std::move(token)), plane_(std::move(plane)), flag_(std::move(flag)) {}

  // OK, or UNAUTHENTICATED saying whether the token was missing or wrong
  // (never what the right one is).
  grpc::Status Check(const grpc::ServerContextBase& context) const;

 private:
  const std::string token_;  // empty: no token required
  const std::string plane_;
  const std::string flag_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_PLANE_AUTH_H_
