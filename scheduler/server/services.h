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

namespace moeserve {

// Maps an absl::Status to the gRPC status sent to clients; the one place
// where codes cross.
grpc::Status ToGrpc(const absl::Status& status);

// Turns a proto request into a plain one (no validation beyond the proto's
// own shape). Token-id input only until the tokenizer lands.
absl::StatusOr<GenerationRequest> FromProto(const v1::GenerateRequest& request);

class InferenceService final : public v1::Inference::CallbackService {
 public:
  InferenceService(EngineLoop& loop, CoordinatorMetrics& metrics)
      : loop_(loop), metrics_(metrics) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  EngineLoop& loop_;
  CoordinatorMetrics& metrics_;  // counts requests refused before they reach the loop
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `on_drain` runs when Drain is called (turns health NOT_SERVING).
  AdminService(EngineLoop& loop, std::function<void()> on_drain)
      : loop_(loop), on_drain_(std::move(on_drain)) {}

  grpc::ServerUnaryReactor* GetClusterState(grpc::CallbackServerContext* context,
                                            const v1::GetClusterStateRequest* request,
                                            v1::ClusterState* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

 private:
  EngineLoop& loop_;
  std::function<void()> on_drain_;
};

// Workers connect here, and the ranks of a Gloo group meet in its rendezvous
// store. Synchronous API: one handler thread per connected worker carries its
// Welcome, plans and results. Health follows the engine loop's readiness.
class CoordinatorService final : public worker::v1::Coordinator::Service {
 public:
  explicit CoordinatorService(EngineLoop& loop) : loop_(loop) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<worker::v1::CoordinatorMessage,
                                                worker::v1::WorkerMessage>* stream) override;
  grpc::Status StoreSet(grpc::ServerContext* context, const worker::v1::StoreSetRequest* request,
                        worker::v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const worker::v1::StoreGetRequest* request,
                        worker::v1::StoreGetResponse* response) override;

 private:
  EngineLoop& loop_;
  std::mutex store_mu_;
  // Keys of the newest group generation only ("moeserve/group-<n>/...").
  uint64_t store_generation_ = 0;
  std::map<std::string, std::string> store_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_SERVICES_H_
