#include "scheduler/server/plane_auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moeserve {

bool ConstantTimeEquals(std::string_view presented, std::string_view expected) {
  // Every byte of `presented` is compared against a byte of `expected` (its
  // length is the attacker's own), and the lengths are folded in last: no
  // branch depends on the secret's contents.
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  if (expected.empty()) return presented.empty();
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i] ^ expected[i % expected.size()]);
  }
  return diff == 0;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  std::string token;
  char c;
  while (token.size() <= kMaxTokenBytes + 64 && in.get(c)) token.push_back(c);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' ||
                            token.back() == '\t')) {
    token.pop_back();
  }
  if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": the token has ", token.size(), " bytes; it must have ", kMinTokenBytes,
        " to ", kMaxTokenBytes, " (make one with: head -c 32 /dev/urandom | base64 > ", path, ")"));
  }
  for (char ch : token) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path,
                       ": the token holds a control character or a line break; use printable "
                       "characters only (e.g. base64)"));
    }
  }
  return token;
}

grpc::Status TokenCheck::Check(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorizationMetadataKey);
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("the ", plane_, " needs a token and this call carried none (",
                                     flag_, " FILE on the caller)"));
  }
  const std::string_view value(it->second.data(), it->second.size());
  const std::string_view prefix(kBearerPrefix);
  const bool bearer = value.size() >= prefix.size() && value.substr(0, prefix.size()) == prefix;
  if (!bearer || !ConstantTimeEquals(value.substr(bearer ? prefix.size() : 0), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("the ", plane_,
                                     " refused this call's token: it is not the "
                                     "one the coordinator was started with (",
                                     flag_, ")"));
  }
  return grpc::Status::OK;
}

}  // namespace moeserve
