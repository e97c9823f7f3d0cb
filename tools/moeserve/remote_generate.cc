#include "tools/moeserve/remote_generate.h"

#include <iostream>

#include "grpcpp/grpcpp.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

const char* ReasonName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_STRING:
      return "stop_string";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "unspecified";
  }
}

}  // namespace

int RunRemoteGenerate(const std::string& server, const v1::GenerateRequest& request, bool json) {
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, request);
  nlohmann::ordered_json out;
  out["prompt_logprobs"] = nullptr;
  out["tokens"] = nlohmann::ordered_json::array();
  v1::GenerateResponse response;
  v1::Final final;
  bool has_final = false;
  if (!json) std::cout << "generated (id, logprob):\n";
  while (reader->Read(&response)) {
    if (response.has_chunk()) {
      const v1::Chunk& c = response.chunk();
      if (c.prompt_logprobs_size() > 0) {
        out["prompt_logprobs"] = nlohmann::ordered_json::array();
        for (const auto& p : c.prompt_logprobs()) {
          out["prompt_logprobs"].push_back(
              p.has_chosen() ? nlohmann::ordered_json(static_cast<double>(p.chosen().logprob()))
                             : nlohmann::ordered_json(nullptr));
        }
      }
      for (int i = 0; i < c.token_ids_size(); ++i) {
        const bool has_lp = i < c.logprobs_size();
        const double lp = has_lp ? c.logprobs(i).chosen().logprob() : 0.0;
        out["tokens"].push_back(
            {{"id", c.token_ids(i)},
             {"logprob", has_lp ? nlohmann::ordered_json(lp) : nlohmann::ordered_json(nullptr)}});
        if (!json) {
          std::cout << "  " << c.token_ids(i);
          if (has_lp) std::cout << "\t" << lp;
          std::cout << std::endl;  // flush: the user watches the stream
        }
      }
    }
    if (response.has_final()) {
      final = response.final();
      has_final = true;
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    std::cerr << "moeserve: the server at " << server << " answered "
              << (status.error_code() == grpc::StatusCode::UNAVAILABLE ? "UNAVAILABLE" : "an error")
              << " (code " << status.error_code() << "): " << status.error_message() << "\n";
    return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
  }
  if (!has_final) {
    std::cerr << "moeserve: the stream ended without a final message\n";
    return 1;
  }
  if (json) {
    out["finish_reason"] = ReasonName(final.finish_reason());
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "finish reason: " << ReasonName(final.finish_reason()) << "; prompt tokens "
              << final.usage().prompt_tokens() << ", generated "
              << final.usage().completion_tokens() << ", time to first token "
              << final.timings().time_to_first_token_seconds() << " s\n";
  }
  return 0;
}

}  // namespace moeserve
