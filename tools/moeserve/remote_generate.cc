#include "tools/moeserve/remote_generate.h"

#include <functional>
#include <iostream>
#include <memory>

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

using StartCall = std::function<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>(
    v1::Inference::Stub&, grpc::ClientContext*)>;

int PrintStream(const std::string& server, const StartCall& start, StreamOutput output) {
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto reader = start(*stub, &ctx);
  nlohmann::ordered_json out;
  out["prompt_logprobs"] = nullptr;
  out["tokens"] = nlohmann::ordered_json::array();
  std::string text;
  v1::GenerateResponse response;
  v1::Final final;
  bool has_final = false;
  if (output == StreamOutput::kTokens) std::cout << "generated (id, logprob, text):\n";
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
        if (output == StreamOutput::kTokens) {
          std::cout << "  " << c.token_ids(i);
          if (has_lp) {
            std::cout << "\t" << lp << "\t" << nlohmann::json(c.logprobs(i).chosen().text()).dump();
          }
          std::cout << std::endl;  // flush: the user watches the stream
        }
      }
      text += c.text_delta();
      if (output == StreamOutput::kText) std::cout << c.text_delta() << std::flush;
    }
    if (response.has_final()) {
      final = response.final();
      has_final = true;
    }
  }
  const grpc::Status status = reader->Finish();
  if (output == StreamOutput::kText && !text.empty()) std::cout << std::endl;
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
  if (output == StreamOutput::kJson) {
    out["text"] = text;
    out["finish_reason"] = ReasonName(final.finish_reason());
    out["stop_reason"] = final.stop_reason();
    std::cout << out.dump() << "\n";
    return 0;
  }
  // Text mode keeps stdout for the text alone.
  std::ostream& summary = output == StreamOutput::kText ? std::cerr : std::cout;
  summary << "finish reason: " << ReasonName(final.finish_reason());
  if (!final.stop_reason().empty()) {
    summary << " (" << nlohmann::json(final.stop_reason()).dump() << ")";
  }
  summary << "; prompt tokens " << final.usage().prompt_tokens() << ", generated "
          << final.usage().completion_tokens() << ", time to first token "
          << final.timings().time_to_first_token_seconds() << " s\n";
  return 0;
}

}  // namespace

int RunRemoteGenerate(const std::string& server, const v1::GenerateRequest& request,
                      StreamOutput output) {
  return PrintStream(
      server,
      [&](v1::Inference::Stub& stub, grpc::ClientContext* ctx) {
        return stub.Generate(ctx, request);
      },
      output);
}

int RunRemoteChat(const std::string& server, const v1::ChatRequest& request, StreamOutput output) {
  return PrintStream(
      server,
      [&](v1::Inference::Stub& stub, grpc::ClientContext* ctx) { return stub.Chat(ctx, request); },
      output);
}

}  // namespace moeserve
