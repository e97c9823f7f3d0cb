// The coordinator's two planes, attacked as an outside client would: the
// public port offers only Inference, health and reflection of those; the
// internal port refuses every call without the right token; the rendezvous
// store refuses other generations and oversize or excess keys and keeps
// serving; a worker with the token serves.
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"
#include "tests/integration/process.h"

namespace moeserve::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Health = grpc::health::v1::HealthCheckResponse;
namespace wpb = worker::v1;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kBin = MOESERVE_BINARY_DIR;
const std::string kCoordinator = kBin + "/tools/coordinator/moeserve-coordinator";
const std::string kWorker = kBin + "/tools/worker/moeserve-worker";

std::chrono::system_clock::time_point Soon() {
  return std::chrono::system_clock::now() + std::chrono::seconds(10);
}

// A group of two ranks over Gloo, so that the rendezvous store is used.
class PlanesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    planes_ = new Planes("planes");
    coordinator_ = new Process(
        kCoordinator,
        Flags(planes_->CoordinatorFlags(),
              {"--metrics-port", "0", "--ep-size", "2", "--communicator-timeout-seconds", "10"}),
        ProcessScratchDir("logs") + "/planes_coordinator.log");
    workers_ = new std::vector<std::unique_ptr<Process>>(2);
    for (int r = 0; r < 2; ++r) StartWorker(r);
    ASSERT_TRUE(WaitFor([] { return HealthOf(planes_->PublicChannel()) == Health::SERVING; }, 90))
        << Logs();
  }
  static void TearDownTestSuite() {
    delete workers_;
    delete coordinator_;
    delete planes_;
  }

  static void StartWorker(int rank) {
    (*workers_)[static_cast<size_t>(rank)] = std::make_unique<Process>(
        kWorker,
        Flags(planes_->WorkerFlags(),
              {"--model", kFixture, "--rank", std::to_string(rank), "--ep-size", "2",
               "--connect-timeout-seconds", "20", "--reconnect-seconds", "60"}),
        ProcessScratchDir("logs") + "/planes_worker" + std::to_string(rank) + ".log");
  }
  static std::string Logs() {
    std::string all = "--- coordinator\n" + coordinator_->log();
    for (const auto& w : *workers_) all += "--- worker\n" + (w ? w->log() : "");
    return all;
  }

  // A greedy request on the public port; its status.
  static grpc::Status Generate() {
    auto stub = v1::Inference::NewStub(planes_->PublicChannel());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::GenerateRequest req;
    for (uint32_t id : {3u, 1u, 4u}) req.mutable_token_ids()->add_ids(id);
    req.mutable_stopping()->set_max_tokens(3);
    req.mutable_stopping()->set_ignore_eos(true);
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse r;
    while (reader->Read(&r)) {
    }
    return reader->Finish();
  }

  static grpc::Status StoreSet(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& key, const std::string& value) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    wpb::StoreSetRequest req;
    req.set_key(key);
    req.set_value(value);
    wpb::StoreSetResponse resp;
    return wpb::Coordinator::NewStub(channel)->StoreSet(&ctx, req, &resp);
  }
  static grpc::Status StoreGet(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& key) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    wpb::StoreGetRequest req;
    req.add_keys(key);
    wpb::StoreGetResponse resp;
    return wpb::Coordinator::NewStub(channel)->StoreGet(&ctx, req, &resp);
  }
  // Opens Connect, sends Register and returns how the call ended.
  static grpc::Status Register(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    auto stream = wpb::Coordinator::NewStub(channel)->Connect(&ctx);
    wpb::WorkerMessage msg;
    msg.mutable_register_()->set_worker_id("intruder");
    msg.mutable_register_()->set_requested_rank(0);
    msg.mutable_register_()->mutable_kv()->set_num_blocks(1);
    msg.mutable_register_()->mutable_kv()->set_block_tokens(64);
    msg.mutable_register_()->mutable_model()->set_vocab_size(100);
    stream->Write(msg);
    stream->WritesDone();
    wpb::CoordinatorMessage reply;
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }
  static grpc::Status Drain(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    v1::DrainResponse resp;
    return v1::Admin::NewStub(channel)->Drain(&ctx, {}, &resp);
  }
  static grpc::Status ClusterState(const std::shared_ptr<grpc::Channel>& channel,
                                   v1::ClusterState* state = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    v1::ClusterState local;
    return v1::Admin::NewStub(channel)->GetClusterState(&ctx, {}, state ? state : &local);
  }

  // The generation of the group now formed, read from the store's refusal
  // of a key of group 1e18.
  static uint64_t CurrentGeneration() {
    const grpc::Status s = StoreSet(planes_->InternalChannel(planes_->token()),
                                    "moeserve/group-1000000000000000000/x", "v");
    std::smatch m;
    const std::string message = s.error_message();
    if (!std::regex_search(message, m, std::regex("the group forming now is ([0-9]+)"))) return 0;
    return std::stoull(m[1]);
  }

  static inline Planes* planes_ = nullptr;
  static inline Process* coordinator_ = nullptr;
  static inline std::vector<std::unique_ptr<Process>>* workers_ = nullptr;
};

std::vector<std::string> PublicServices(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  auto stream = stub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  stream->Write(req);
  stream->WritesDone();
  std::vector<std::string> names;
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  }
  EXPECT_TRUE(stream->Finish().ok());
  return names;
}

TEST_F(PlanesTest, PublicReflectionListsOnlyThePublicServices) {
  const std::vector<std::string> names = PublicServices(planes_->PublicChannel());
  EXPECT_THAT(names, ::testing::Contains("moeserve.v1.Inference"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
  EXPECT_THAT(names, Not(::testing::Contains("moeserve.worker.v1.Coordinator")));
  EXPECT_THAT(names, Not(::testing::Contains("moeserve.v1.Admin")));
}

TEST_F(PlanesTest, ThePublicPortDoesNotServeWorkerRegistrationTheStoreOrAdmin) {
  const auto pub = planes_->PublicChannel();
  EXPECT_EQ(Register(pub).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(StoreSet(pub, "moeserve/group-1/x", "v").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(StoreGet(pub, "moeserve/group-1/x").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Drain(pub).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(ClusterState(pub).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(HealthOf(pub), Health::SERVING) << "nothing was drained";
  EXPECT_TRUE(Generate().ok());
}

TEST_F(PlanesTest, TheInternalPortRefusesEveryCallWithoutTheRightToken) {
  // Every method of both internal services is below; a new one must be added.
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  EXPECT_EQ(pool->FindServiceByName("moeserve.worker.v1.Coordinator")->method_count(), 3);
  EXPECT_EQ(pool->FindServiceByName("moeserve.v1.Admin")->method_count(), 2);
  const std::string wrong = RandomToken();
  for (const std::string& token : {std::string(), wrong}) {
    SCOPED_TRACE(token.empty() ? "no token" : "a wrong token");
    const auto ch = planes_->InternalChannel(token);
    const grpc::Status reg = Register(ch);
    EXPECT_EQ(reg.error_code(), grpc::StatusCode::UNAUTHENTICATED) << reg.error_message();
    EXPECT_THAT(reg.error_message(), HasSubstr("--internal-token-file"));
    EXPECT_THAT(reg.error_message(), Not(HasSubstr(planes_->token())));
    EXPECT_EQ(StoreSet(ch, "moeserve/group-1/x", "v").error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(StoreGet(ch, "moeserve/group-1/x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Drain(ch).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(ClusterState(ch).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The workers' token is not Admin's, and Admin's is not the workers'.
  const grpc::Status drain = Drain(planes_->InternalChannel(planes_->token()));
  EXPECT_EQ(drain.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(drain.error_message(), HasSubstr("--admin-token-file"));
  EXPECT_EQ(StoreGet(planes_->AdminChannel(), "moeserve/group-1/x").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(HealthOf(planes_->PublicChannel()), Health::SERVING);

  v1::ClusterState state;
  ASSERT_TRUE(ClusterState(planes_->AdminChannel(), &state).ok());
  EXPECT_EQ(state.world_size(), 2u) << "the two real workers, no intruder";
  EXPECT_FALSE(state.draining());
}

TEST_F(PlanesTest, TheStoreRefusesOtherGenerationsAndOversizeOrExcessKeysAndKeepsServing) {
  const auto ch = planes_->InternalChannel(planes_->token());
  const uint64_t generation = CurrentGeneration();
  ASSERT_GE(generation, 1u) << "the group formed through the store";
  const std::string prefix = "moeserve/group-" + std::to_string(generation) + "/";

  // A future generation: once it wedged every later group until a restart.
  const grpc::Status future = StoreSet(ch, "moeserve/group-18446744073709551615/0", "x");
  EXPECT_EQ(future.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(future.error_message(),
              HasSubstr("is for group 18446744073709551615, but the group forming now is " +
                        std::to_string(generation)));
  const grpc::Status past = StoreGet(ch, "moeserve/group-" + std::to_string(generation + 1) + "/0");
  EXPECT_EQ(past.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  const grpc::Status not_group = StoreSet(ch, "elsewhere/0", "x");
  EXPECT_EQ(not_group.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(not_group.error_message(), HasSubstr("is not a group key"));

  const grpc::Status long_key = StoreSet(ch, prefix + std::string(300, 'k'), "x");
  EXPECT_EQ(long_key.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_key.error_message(), HasSubstr("at most 256 are accepted"));
  const grpc::Status big_value = StoreSet(ch, prefix + "big", std::string((1 << 20) + 1, 'v'));
  EXPECT_EQ(big_value.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(big_value.error_message(), HasSubstr("has 1048577 bytes; at most 1048576"));

  // Fill the store to its bound of keys: the next key is refused.
  grpc::Status last;
  int stored = 0;
  for (int i = 0; i < 20000; ++i) {
    last = StoreSet(ch, prefix + "fill/" + std::to_string(i), "v");
    if (!last.ok()) break;
    ++stored;
  }
  EXPECT_EQ(last.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << last.error_message();
  EXPECT_THAT(last.error_message(), HasSubstr("the most it accepts"));
  EXPECT_LE(stored, 16384);

  // The coordinator keeps serving, and a group formed again (a rank lost and
  // back) meets in a fresh store of the next generation.
  EXPECT_TRUE(Generate().ok());
  (*workers_)[1]->Stop();
  ASSERT_TRUE(
      WaitFor([] { return HealthOf(planes_->PublicChannel()) == Health::NOT_SERVING; }, 30));
  StartWorker(1);
  ASSERT_TRUE(WaitFor([&] { return CurrentGeneration() > generation; }, 60)) << Logs();
  ASSERT_TRUE(WaitFor([] { return HealthOf(planes_->PublicChannel()) == Health::SERVING; }, 90))
      << Logs();
  const grpc::Status after = Generate();
  EXPECT_TRUE(after.ok()) << after.error_message() << Logs();
}

// `moeserve placement --server` reads the load window through Admin: on the
// internal port with the Admin token, and nowhere else.
TEST_F(PlanesTest, ThePlacementCommandReadsAdminWithTheAdminTokenOnly) {
  ASSERT_TRUE(Generate().ok());  // expert loads to read
  const std::string cli = kBin + "/tools/moeserve/moeserve placement --ep-size 2 --server ";
  const CommandResult ok = RunCommand(cli + planes_->internal_address() + " --admin-token-file " +
                                      planes_->admin_token_file() + " 2>/dev/null");
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_THAT(ok.out, HasSubstr("\"slots_per_rank\""));
  const CommandResult worker_token = RunCommand(
      cli + planes_->internal_address() + " --admin-token-file " + planes_->token_file() + " 2>&1");
  EXPECT_EQ(worker_token.exit_code, 1);
  EXPECT_THAT(worker_token.out, HasSubstr("refused this call's token"));
  const CommandResult public_port = RunCommand(cli + planes_->address() + " --admin-token-file " +
                                               planes_->admin_token_file() + " 2>&1");
  EXPECT_EQ(public_port.exit_code, 1);
  EXPECT_THAT(public_port.out, HasSubstr("must name the coordinator's internal port"));
}

// Workers that lack the right token, or knock at the public port, are turned
// away with the reason; the group keeps serving.
TEST_F(PlanesTest, AWorkerWithAWrongOrNoTokenOrThePublicPortIsTurnedAwayWithTheReason) {
  const std::string wrong_file =
      ::testing::TempDir() + "/planes_wrong_" + std::to_string(getpid()) + ".token";
  std::ofstream(wrong_file) << RandomToken() << "\n";
  struct Case {
    std::vector<std::string> flags;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {{"--coordinator", planes_->internal_address(), "--internal-token-file", wrong_file},
       "is not the one the coordinator was started with"},
      {{"--coordinator", planes_->internal_address()}, "this call carried none"},
      {{"--coordinator", planes_->address(), "--internal-token-file", planes_->token_file()},
       "must name the coordinator's internal port"},
  };
  for (const Case& c : cases) {
    Process worker(kWorker,
                   Flags(c.flags, {"--model", kFixture, "--connect-timeout-seconds", "10"}),
                   ProcessScratchDir("logs") + "/planes_turned_away.log");
    ASSERT_TRUE(WaitFor([&] { return !worker.running(); }, 30)) << worker.log();
    EXPECT_EQ(worker.Stop(), 1) << worker.log();
    EXPECT_THAT(worker.log(), HasSubstr(c.reason));
  }
  EXPECT_EQ(HealthOf(planes_->PublicChannel()), Health::SERVING);
}

// Certificates for the TLS test, made with the openssl command: a CA, a
// server certificate for 127.0.0.1 and localhost, and a client certificate.
// Empty when openssl is missing or fails.
std::string MakeCertificates() {
  const std::string dir = ::testing::TempDir() + "/planes_tls_" + std::to_string(getpid());
  const std::string script =
      "set -e; rm -rf " + dir + "; mkdir -p " + dir + "; cd " + dir +
      "; printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext"
      "; openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "-subj /CN=moeserve-test-ca 2>/dev/null"
      "; for who in server client; do "
      "openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who "
      "2>/dev/null; done"
      "; openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile server.ext -out server.pem 2>/dev/null"
      "; openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-out client.pem 2>/dev/null; echo made";
  const CommandResult r = RunCommand(script);  // popen: /bin/sh runs it
  return r.exit_code == 0 && r.out.find("made") != std::string::npos ? dir : "";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Mutual TLS alone guards the internal port (no token), and the public port
// speaks TLS: a worker with a client certificate serves; a client without
// one, or a plaintext client, gets nowhere.
TEST(PlanesTlsTest, MutualTlsGuardsTheInternalPortAndTlsThePublicOne) {
  const std::string dir = MakeCertificates();
  ASSERT_FALSE(dir.empty()) << "openssl could not make the test certificates";
  const std::string pub = "127.0.0.1:" + std::to_string(FreePort());
  const std::string internal = "127.0.0.1:" + std::to_string(FreePort());
  Process coordinator(kCoordinator,
                      {"--listen", pub, "--internal-listen", internal, "--metrics-port", "0",
                       "--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key",
                       "--internal-tls-cert", dir + "/server.pem", "--internal-tls-key",
                       dir + "/server.key", "--internal-tls-ca", dir + "/ca.pem"},
                      ProcessScratchDir("logs") + "/planes_tls_coordinator.log");
  grpc::SslCredentialsOptions server_only;
  server_only.pem_root_certs = ReadAll(dir + "/ca.pem");
  const auto tls_client = grpc::CreateChannel(pub, grpc::SslCredentials(server_only));
  ASSERT_TRUE(WaitFor([&] { return HealthOf(tls_client) == Health::NOT_SERVING; }, 20))
      << coordinator.log();
  EXPECT_EQ(HealthOf(grpc::CreateChannel(pub, grpc::InsecureChannelCredentials())), Health::UNKNOWN)
      << "a plaintext client cannot talk to a TLS port";

  // Without a client certificate the handshake fails: nothing reaches the store.
  const grpc::Status no_cert = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(Soon());
    wpb::StoreGetRequest req;
    req.add_keys("moeserve/group-1/0");
    wpb::StoreGetResponse resp;
    return wpb::Coordinator::NewStub(
               grpc::CreateChannel(internal, grpc::SslCredentials(server_only)))
        ->StoreGet(&ctx, req, &resp);
  }();
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << no_cert.error_message();

  Process worker(kWorker,
                 {"--coordinator", internal, "--internal-tls-ca", dir + "/ca.pem",
                  "--internal-tls-cert", dir + "/client.pem", "--internal-tls-key",
                  dir + "/client.key", "--model", kFixture, "--connect-timeout-seconds", "20"},
                 ProcessScratchDir("logs") + "/planes_tls_worker.log");
  ASSERT_TRUE(WaitFor([&] { return HealthOf(tls_client) == Health::SERVING; }, 60))
      << coordinator.log() << worker.log();
  Process certless(kWorker,
                   {"--coordinator", internal, "--internal-tls-ca", dir + "/ca.pem", "--model",
                    kFixture, "--connect-timeout-seconds", "3"},
                   ProcessScratchDir("logs") + "/planes_tls_certless.log");
  ASSERT_TRUE(WaitFor([&] { return !certless.running(); }, 30)) << certless.log();
  EXPECT_EQ(certless.Stop(), 1) << certless.log();
  EXPECT_EQ(HealthOf(tls_client), Health::SERVING);
}

// The coordinator does not start with an internal port nobody authenticates
// on, nor with one secret serving as both.
TEST(PlanesFlagsTest, TheCoordinatorRefusesToStartWithoutAnInternalCredential) {
  const Planes planes("flags");
  const std::string base = kCoordinator + " --metrics-port 0 --listen 127.0.0.1:0 ";
  struct Case {
    std::string flags;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"--internal-listen 127.0.0.1:0", "the internal port needs a credential"},
      {"--internal-listen 127.0.0.1:0 --internal-token-file /nonexistent",
       "--internal-token-file /nonexistent: cannot read it"},
      {"--internal-listen 127.0.0.1:0 --internal-token-file " + planes.token_file() +
           " --admin-token-file " + planes.token_file(),
       "Admin needs a token of its own"},
      {"--internal-listen 127.0.0.1:0 --internal-tls-cert x.pem --internal-token-file " +
           planes.token_file(),
       "go together"},
      {"--internal-listen 127.0.0.1:0 --tls-cert x.pem --internal-token-file " +
           planes.token_file(),
       "--tls-cert and --tls-key go together"},
  };
  for (const Case& c : cases) {
    const CommandResult r =
        RunCommand("env -u MOESERVE_INTERNAL_TOKEN_FILE " + base + c.flags + " 2>&1");
    EXPECT_EQ(r.exit_code, 2) << c.flags << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.message)) << c.flags;
  }
  const CommandResult same = RunCommand(kCoordinator +
                                        " --listen 127.0.0.1:7 --internal-listen 127.0.0.1:7 "
                                        "--internal-token-file " +
                                        planes.token_file() + " 2>&1");
  EXPECT_EQ(same.exit_code, 2);
  EXPECT_THAT(same.out, HasSubstr("need a port of their own"));
}

TEST(PlanesFlagsTest, HelpDescribesEveryPlaneFlag) {
  const CommandResult coordinator = RunCommand(kCoordinator + " --help");
  for (const char* flag : {"--internal-listen", "--internal-token-file", "--internal-tls-cert",
                           "--internal-tls-key", "--internal-tls-ca", "--admin-token-file",
                           "--tls-cert", "--tls-key", "MOESERVE_INTERNAL_TOKEN_FILE"}) {
    EXPECT_THAT(coordinator.out, HasSubstr(flag));
  }
  const CommandResult worker = RunCommand(kWorker + " --help");
  for (const char* flag : {"--internal-token-file", "--internal-tls-ca", "--internal-tls-cert",
                           "--internal-tls-key", "--internal-tls-server-name"}) {
    EXPECT_THAT(worker.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace moeserve::testing
