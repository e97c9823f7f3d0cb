// The channel a worker (or an operator's tool) opens to the coordinator's
// internal port: optionally mutual TLS, and a bearer token sent with every
// call on it ("authorization: Bearer <token>"), the registration stream and
// the rendezvous store's calls alike.
#ifndef MOESERVE_RUNTIME_WORKER_COORDINATOR_CHANNEL_H_
#define MOESERVE_RUNTIME_WORKER_COORDINATOR_CHANNEL_H_

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"

namespace moeserve {

struct InternalPlaneCredentials {
  std::string token;  // empty: no authorization metadata
  // PEM texts; all empty for plaintext. With tls_ca_pem the server's
  // certificate must be signed by it; tls_cert_pem/tls_key_pem are this
  // client's certificate chain and key for mutual TLS.
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Overrides the name the server certificate is checked against (e.g. when
  // the address is an IP but the certificate names a service). Empty: the
  // host of the address.
  std::string tls_server_name;
};

// A channel to `address` that sends `credentials.token` with every call.
std::shared_ptr<grpc::Channel> CreateCoordinatorChannel(const std::string& address,
                                                        const InternalPlaneCredentials& credentials,
                                                        grpc::ChannelArguments args = {});

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_COORDINATOR_CHANNEL_H_
