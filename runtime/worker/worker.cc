#include "runtime/worker/worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"
#include "runtime/worker/model_info.h"
#include "runtime/worker/step_plan_conversion.h"

namespace moeserve {
namespace {

namespace pb = ::moeserve::worker::v1;

// Plans carry block tables and prefill chunks of every sequence of the step;
// gRPC's default 4 MiB receive limit is too small for large batches.
constexpr int kMaxMessageBytes = 256 << 20;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// One registration with the coordinator: the call, and where this worker
// stands in its group once welcomed.
class Worker::Session {
 public:
  using Stream = grpc::ClientReaderWriter<pb::WorkerMessage, pb::CoordinatorMessage>;

  Session(Worker& worker, Stream& stream) : worker_(worker), stream_(stream) {}

  // Registers, waits for Welcome and serves plans until the session ends.
  absl::Status Serve();
  // True once Serve has ended the call itself (after a broken stream).
  bool finished() const { return finished_; }

 private:
  absl::Status Register();
  absl::Status Welcomed(const pb::Welcome& welcome);
  pb::StepResult ServeStep(const pb::StepPlan& plan);
  // Ends the call after a failed Read or Write and says why, from the status
  // the coordinator closed it with.
  absl::Status StreamBroken(const char* when);

  Worker& worker_;
  Stream& stream_;
  bool finished_ = false;
  StepPlanExpectation expected_;  // rank, world size and last step answered
};

absl::Status Worker::Session::Serve() {
  if (absl::Status s = Register(); !s.ok()) return s;
  pb::CoordinatorMessage message;
  if (!stream_.Read(&message)) return StreamBroken("while waiting for Welcome");
  switch (message.kind_case()) {
    case pb::CoordinatorMessage::kShutdown:
      worker_.Log(absl::StrCat("shutdown before Welcome: ", message.shutdown().reason()));
      return absl::OkStatus();
    case pb::CoordinatorMessage::kWelcome:
      if (absl::Status s = Welcomed(message.welcome()); !s.ok()) return s;
      break;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "the coordinator at ", worker_.options_.coordinator_address, " sent ",
          message.has_step_plan()
              ? "a step plan"
              : absl::StrCat("a message of kind ", static_cast<int>(message.kind_case())),
          " before Welcome"));
  }

  while (true) {
    if (!stream_.Read(&message)) return StreamBroken("while waiting for a step plan");
    switch (message.kind_case()) {
      case pb::CoordinatorMessage::kStepPlan: {
        pb::WorkerMessage reply;
        *reply.mutable_step_result() = ServeStep(message.step_plan());
        if (!stream_.Write(reply)) {
          return StreamBroken(
              absl::StrCat("while sending step ", message.step_plan().step()).c_str());
        }
        break;
      }
      case pb::CoordinatorMessage::kShutdown:
        worker_.Log(absl::StrCat("shutdown: ", message.shutdown().reason()));
        return absl::OkStatus();
      case pb::CoordinatorMessage::kWelcome:
        return absl::FailedPreconditionError(absl::StrCat(
            "the coordinator at ", worker_.options_.coordinator_address,
            " sent a second Welcome after step ",
            expected_.last_step.has_value() ? absl::StrCat(*expected_.last_step) : "none"));
      default:
        return absl::FailedPreconditionError(absl::StrCat(
            "the coordinator at ", worker_.options_.coordinator_address,
            " sent a message of unknown kind ", static_cast<int>(message.kind_case())));
    }
  }
}

absl::Status Worker::Session::Register() {
  const Options& o = worker_.options_;
  const ModelConfig& c = worker_.config();
  pb::WorkerMessage hello;
  pb::Register* r = hello.mutable_register_();
  r->set_worker_id(o.worker_id);
  r->set_requested_rank(o.requested_rank);
  r->mutable_kv()->set_num_blocks(static_cast<uint64_t>(worker_.kv_num_blocks()));
  r->mutable_kv()->set_block_tokens(
      static_cast<uint32_t>(worker_.runner_->cache().options().block_size));
  r->set_model_type(c.model_type);
  r->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
  *r->mutable_model() = DescribeModel(c, worker_.runner_->checkpoint().config_json(), o.model_dir);
  if (!stream_.Write(hello)) return StreamBroken("while registering");
  return absl::OkStatus();
}

absl::Status Worker::Session::Welcomed(const pb::Welcome& welcome) {
  if (welcome.world_size() == 0 || welcome.rank() >= welcome.world_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the coordinator at ", worker_.options_.coordinator_address, " assigned rank ",
                     welcome.rank(), " of world size ", welcome.world_size()));
  }
  expected_.rank = welcome.rank();
  expected_.world_size = welcome.world_size();
  expected_.last_step.reset();
  std::string line =
      absl::StrCat("registered as rank ", welcome.rank(), " of ", welcome.world_size(), " with ",
                   worker_.options_.coordinator_address);
  const int32_t asked = worker_.options_.requested_rank;
  if (asked >= 0 && static_cast<uint32_t>(asked) != welcome.rank()) {
    absl::StrAppend(&line, " (asked for rank ", asked, ")");
  }
  worker_.Log(line);
  return absl::OkStatus();
}

pb::StepResult Worker::Session::ServeStep(const pb::StepPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  auto fail = [&](const absl::Status& error) {
    worker_.Log(absl::StrCat("step ", plan.step(), " failed: ", error.ToString()));
    return FailedStepResult(plan.step(), expected_.rank, error, SecondsSince(start));
  };
  if (absl::Status s = CheckStepPlanHeader(plan, expected_); !s.ok()) return fail(s);
  expected_.last_step = plan.step();
  auto work = StepWorkFromProto(plan);
  if (!work.ok()) return fail(work.status());
  auto outputs = worker_.runner_->executor().Run(*work);
  if (!outputs.ok()) return fail(outputs.status());
  return StepResultToProto(plan.step(), expected_.rank, *outputs, SecondsSince(start));
}

absl::Status Worker::Session::StreamBroken(const char* when) {
  finished_ = true;
  const grpc::Status status = stream_.Finish();
  const std::string& address = worker_.options_.coordinator_address;
  if (status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the coordinator at ", address, " closed the stream without Shutdown ", when));
  }
  return absl::UnavailableError(absl::StrCat("the stream to the coordinator at ", address,
                                             " broke ", when, ": gRPC status ", status.error_code(),
                                             " ", status.error_message()));
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(const Options& options) {
  if (options.coordinator_address.empty()) {
    return absl::InvalidArgumentError("the coordinator address is empty");
  }
  if (options.requested_rank < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("requested rank must be >= 0 or -1 (any), got ", options.requested_rank));
  }
  if (options.connect_timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("the connect timeout must be positive");
  }
  auto worker = std::unique_ptr<Worker>(new Worker());
  worker->options_ = options;
  auto runner = ModelRunner::Create(
      {options.model_dir, options.kv_cache_tokens, options.kv_block_tokens, options.model});
  if (!runner.ok()) return runner.status();
  worker->runner_ = *std::move(runner);
  return worker;
}

Worker::~Worker() = default;

absl::Status Worker::Run() {
  const std::string& address = options_.coordinator_address;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  Log(absl::StrCat("connecting to the coordinator at ", address));
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + options_.connect_timeout)) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to the coordinator at ", address, " within ",
                     std::chrono::duration<double>(options_.connect_timeout).count(),
                     " s (is it running and reachable?)"));
  }
  Log(absl::StrCat("connected to the coordinator at ", address, "; registering"));
  std::unique_ptr<pb::Coordinator::Stub> stub = pb::Coordinator::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<Session::Stream> stream = stub->Connect(&context);
  Session session(*this, *stream);
  absl::Status status = session.Serve();
  if (!session.finished()) {
    // Shutdown or a protocol error: close our side, then end the call
    // without waiting on the coordinator to end its side.
    stream->WritesDone();
    context.TryCancel();
    stream->Finish().IgnoreError();
  }
  return status;
}

void Worker::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

}  // namespace moeserve
