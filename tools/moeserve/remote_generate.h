// `moeserve generate --server ADDR` and `moeserve chat --server ADDR`:
// clients of a running coordinator that print the stream as it arrives.
#ifndef MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_
#define MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_

#include <string>

#include "moeserve/v1/inference.pb.h"

namespace moeserve {

// How the stream is printed.
enum class StreamOutput {
  kText,    // the text deltas as they arrive, then a summary line on stderr
  kTokens,  // one line per token: id, logprob and the token's text; then a summary
  kJson,    // one object at the end, in the format of the local `generate --json`
            // plus "text" (the deltas joined) and "stop_reason"
};

// Sends `request` to `server` and prints the stream. Returns the process exit
// code: 0, 2 when the server refused the request as invalid, 1 otherwise.
int RunRemoteGenerate(const std::string& server, const v1::GenerateRequest& request,
                      StreamOutput output);

// The same for a chat.
int RunRemoteChat(const std::string& server, const v1::ChatRequest& request, StreamOutput output);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_
