// The coordinator's gRPC services. Handlers translate proto to plain
// requests, validate them, and hand them to the engine loop; they never block
// on model work.
#ifndef MOESERVE_SCHEDULER_SERVER_SERVICES_H_
#define MOESERVE_SCHEDULER_SERVER_SERVICES_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "grpcpp/grpcpp.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"
#include "scheduler/admission/request_validator.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/server/plane_auth.h"
#include "scheduler/server/rendezvous_store.h"
#include "scheduler/server/text_frontend.h"

namespace moeserve {

// Maps an absl::Status to the gRPC status sent to clients; the one place
// where codes cross.
grpc::Status ToGrpc(const absl::Status& status);

// Turns a proto request into a plain one (no validation beyond the proto's
// own shape). Text input is encoded with `text`'s tokenizer; without one
// (null) it is FAILED_PRECONDITION.
absl::StatusOr<GenerationRequest> FromProto(const v1::GenerateRequest& request,
                                            const TextFrontend* text);
// The same for a chat whose rendered prompt encodes to `prompt_ids`.
GenerationRequest FromProto(const v1::ChatRequest& request, std::vector<int32_t> prompt_ids);

// Generate, Chat and Tokenize are raw methods (ByteBuffer in and out; see
// raw_messages.h) so that text that is not UTF-8 is INVALID_ARGUMENT, not a
// silent UNIMPLEMENTED from the generated parser.
using InferenceServiceBase = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_Chat<v1::Inference::WithRawCallbackMethod_Tokenize<
        v1::Inference::WithCallbackMethod_GetModelInfo<v1::Inference::Service>>>>;

class InferenceService final : public InferenceServiceBase {
 public:
  // `text`: the model's tokenizer and chat template (--tokenizer), or null:
  // token ids only, text features FAILED_PRECONDITION.
  InferenceService(EngineLoop& loop, CoordinatorMetrics& metrics,
                   std::shared_ptr<const TextFrontend> text = nullptr)
      : loop_(loop), metrics_(metrics), text_(std::move(text)) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Chat(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  // Validates `request` against the served model and hands it to the loop;
  // the stream's responses carry text when the service has a tokenizer.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Start(GenerationRequest request);
  // A refused request: counted under `reason`, its stream ended with `status`.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Refuse(const absl::Status& status);

  EngineLoop& loop_;
  CoordinatorMetrics& metrics_;  // counts requests refused before they reach the loop
  const std::shared_ptr<const TextFrontend> text_;
};

// Served on the internal port only; every call must carry the Admin token
// (`auth`), which is not the workers' token.
class AdminService final : public v1::Admin::CallbackService {
 public:
  // `on_drain` runs when Drain is called (turns health NOT_SERVING).
  AdminService(EngineLoop& loop, TokenCheck auth, std::function<void()> on_drain)
      : loop_(loop), auth_(std::move(auth)), on_drain_(std::move(on_drain)) {}

  grpc::ServerUnaryReactor* GetClusterState(grpc::CallbackServerContext* context,
                                            const v1::GetClusterStateRequest* request,
                                            v1::ClusterState* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

 private:
  EngineLoop& loop_;
  const TokenCheck auth_;
  std::function<void()> on_drain_;
};

// Workers connect here, and the ranks of a Gloo or NCCL group meet in its
// rendezvous store. Served on the internal port only; every call must pass
// `auth` (UNAUTHENTICATED otherwise). Synchronous API: one handler thread per
// connected worker carries its Welcome, plans and results.
class CoordinatorService final : public worker::v1::Coordinator::Service {
 public:
  // With `text`, a worker whose model's vocabulary is smaller than the
  // tokenizer's is refused at registration (FAILED_PRECONDITION).
  CoordinatorService(EngineLoop& loop, TokenCheck auth,
                     std::shared_ptr<const TextFrontend> text = nullptr,
                     RendezvousStore::Limits store_limits = {})
      : loop_(loop), auth_(std::move(auth)), text_(std::move(text)), store_(store_limits) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<worker::v1::CoordinatorMessage,
                                                worker::v1::WorkerMessage>* stream) override;
  grpc::Status StoreSet(grpc::ServerContext* context, const worker::v1::StoreSetRequest* request,
                        worker::v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const worker::v1::StoreGetRequest* request,
                        worker::v1::StoreGetResponse* response) override;

 private:
  EngineLoop& loop_;
  const TokenCheck auth_;
  const std::shared_ptr<const TextFrontend> text_;
  RendezvousStore store_;  // keys of the group the loop is forming now only
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_SERVICES_H_
