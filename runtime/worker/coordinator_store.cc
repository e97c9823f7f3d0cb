#include "runtime/worker/coordinator_store.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gloo/common/error.h"

namespace moeserve {
namespace {

std::chrono::system_clock::time_point Deadline(std::chrono::milliseconds timeout) {
  return std::chrono::system_clock::now() + timeout;
}

}  // namespace

CoordinatorStore::CoordinatorStore(std::shared_ptr<grpc::Channel> channel,
                                   std::chrono::milliseconds timeout)
    : stub_(worker::v1::Coordinator::NewStub(std::move(channel))), timeout_(timeout) {}

void CoordinatorStore::set(const std::string& key, const std::vector<char>& data) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout_));
  worker::v1::StoreSetRequest request;
  request.set_key(key);
  request.set_value(std::string(data.begin(), data.end()));
  worker::v1::StoreSetResponse response;
  const grpc::Status status = stub_->StoreSet(&context, request, &response);
  if (!status.ok()) {
    throw gloo::IoException(absl::StrCat("the coordinator's rendezvous store refused key ", key,
                                         ": ", status.error_message()));
  }
}

std::vector<std::vector<char>> CoordinatorStore::Fetch(const std::vector<std::string>& keys,
                                                       std::chrono::milliseconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(timeout_));
    worker::v1::StoreGetRequest request;
    for (const std::string& k : keys) request.add_keys(k);
    worker::v1::StoreGetResponse response;
    const grpc::Status status = stub_->StoreGet(&context, request, &response);
    if (!status.ok()) {
      throw gloo::IoException(
          absl::StrCat("the coordinator's rendezvous store failed: ", status.error_message()));
    }
    if (response.found()) {
      std::vector<std::vector<char>> values;
      for (const std::string& v : response.values()) values.emplace_back(v.begin(), v.end());
      return values;
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      throw gloo::IoException(absl::StrCat("rendezvous: other ranks did not publish ",
                                           keys.empty() ? std::string("?") : keys.front(),
                                           " within ",
                                           std::chrono::duration<double>(timeout).count(), " s"));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

std::vector<char> CoordinatorStore::get(const std::string& key) {
  return Fetch({key}, timeout_).front();
}

void CoordinatorStore::wait(const std::vector<std::string>& keys) { Fetch(keys, timeout_); }

void CoordinatorStore::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  Fetch(keys, timeout);
}

}  // namespace moeserve
