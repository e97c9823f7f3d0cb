// The Gloo rendezvous store of a worker: keys and values kept by the
// coordinator (Coordinator.StoreSet / StoreGet), so the ranks of a group find
// each other wherever they run. Gets poll until every key is there or the
// timeout passes.
#ifndef MOESERVE_RUNTIME_WORKER_COORDINATOR_STORE_H_
#define MOESERVE_RUNTIME_WORKER_COORDINATOR_STORE_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gloo/rendezvous/store.h"
#include "grpcpp/grpcpp.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"

namespace moeserve {

// Gloo calls it from the thread forming the group; failures throw
// gloo::IoException as Gloo's own stores do.
class CoordinatorStore final : public gloo::rendezvous::Store {
 public:
  CoordinatorStore(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<std::vector<char>> Fetch(const std::vector<std::string>& keys,
                                       std::chrono::milliseconds timeout);

  std::unique_ptr<worker::v1::Coordinator::Stub> stub_;
  const std::chrono::milliseconds timeout_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_COORDINATOR_STORE_H_
