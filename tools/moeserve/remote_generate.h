// `moeserve generate --server ADDR`: a client of a running coordinator that
// streams the generated tokens to the terminal as they arrive.
#ifndef MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_
#define MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_

#include <string>

#include "moeserve/v1/inference.pb.h"

namespace moeserve {

// Sends `request` to `server` and prints the stream: token ids (and
// logprobs) as they arrive, then the finish reason and usage; with `json`,
// one object at the end in the format of the local `generate --json`.
// Returns the process exit code.
int RunRemoteGenerate(const std::string& server, const v1::GenerateRequest& request, bool json);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_REMOTE_GENERATE_H_
