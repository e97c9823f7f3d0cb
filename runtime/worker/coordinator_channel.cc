#include "runtime/worker/coordinator_channel.h"

#include <utility>
#include <vector>

#include "grpcpp/support/client_interceptor.h"

namespace moeserve {
namespace {

// Adds the token to the initial metadata of every call on the channel.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;  // owned by the factory, which the channel keeps
};

class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token) : value_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new TokenInterceptor(&value_);
  }

 private:
  const std::string value_;
};

}  // namespace

std::shared_ptr<grpc::Channel> CreateCoordinatorChannel(const std::string& address,
                                                        const InternalPlaneCredentials& credentials,
                                                        grpc::ChannelArguments args) {
  std::shared_ptr<grpc::ChannelCredentials> transport = grpc::InsecureChannelCredentials();
  if (!credentials.tls_ca_pem.empty() || !credentials.tls_cert_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = credentials.tls_ca_pem;
    ssl.pem_private_key = credentials.tls_key_pem;
    ssl.pem_cert_chain = credentials.tls_cert_pem;
    transport = grpc::SslCredentials(ssl);
    if (!credentials.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(credentials.tls_server_name);
    }
  }
  if (credentials.token.empty()) return grpc::CreateCustomChannel(address, transport, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<TokenInterceptorFactory>(credentials.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, transport, args,
                                                                 std::move(factories));
}

}  // namespace moeserve
