#include "runtime/worker/worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/parallel/gloo_communicator.h"
#ifdef MOESERVE_HAVE_NCCL
#include "runtime/parallel/nccl_communicator.h"
#endif
#include "runtime/worker/coordinator_store.h"
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

  Session(Worker& worker, Stream& stream, std::shared_ptr<grpc::Channel> channel)
      : worker_(worker), stream_(stream), channel_(std::move(channel)) {}

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
  std::shared_ptr<grpc::Channel> channel_;  // for the rendezvous store
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
  r->mutable_kv()->set_block_tokens(static_cast<uint32_t>(o.kv_block_tokens));
  r->set_model_type(c.model_type);
  r->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
  *r->mutable_model() = DescribeModel(c, worker_.config_json_, o.model_dir);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.IsMoeLayer(l)) r->add_moe_layers(static_cast<uint32_t>(l));
  }
  if (!stream_.Write(hello)) return StreamBroken("while registering");
  return absl::OkStatus();
}

absl::Status Worker::Session::Welcomed(const pb::Welcome& welcome) {
  auto setup = GroupSetupFromWelcome(welcome, worker_.config());
  const int32_t deployed = worker_.options_.expected_world_size;
  if (setup.ok() && deployed > 0 && setup->world_size != static_cast<uint32_t>(deployed)) {
    setup = absl::FailedPreconditionError(
        absl::StrCat("Welcome: a group of ", setup->world_size,
                     " ranks, but this worker was started with --ep-size ", deployed));
  }
  if (!setup.ok()) {
    const absl::Status error = absl::FailedPreconditionError(
        absl::StrCat("the coordinator at ", worker_.options_.coordinator_address,
                     " sent an invalid ", setup.status().message()));
    pb::WorkerMessage refusal;
    refusal.mutable_ready()->set_error(std::string(error.message()));
    stream_.Write(refusal);  // the coordinator learns why; the session ends either way
    return error;
  }
  expected_.rank = setup->rank;
  expected_.world_size = setup->world_size;
  expected_.last_step.reset();
  std::string line = absl::StrCat("registered as rank ", setup->rank, " of ", setup->world_size,
                                  " with ", worker_.options_.coordinator_address);
  const int32_t asked = worker_.options_.requested_rank;
  if (asked >= 0 && static_cast<uint32_t>(asked) != setup->rank) {
    absl::StrAppend(&line, " (asked for rank ", asked, ")");
  }
  worker_.Log(line);
  const absl::Status joined = worker_.JoinGroup(*setup, channel_);
  pb::WorkerMessage ready;
  pb::Ready* r = ready.mutable_ready();
  if (!joined.ok()) r->set_error(std::string(joined.message()));
  if (!stream_.Write(ready)) return StreamBroken("while reporting ready");
  if (!joined.ok()) return joined;
  worker_.joined_group_in_last_run_ = true;
  // The sequences of an earlier group were failed when it broke.
  worker_.runner_->executor().ReleaseAll();
  worker_.kept_.Clear();
  worker_.Log(absl::StrCat(
      "rank ", setup->rank, " ready: ", worker_.group_->name(),
      setup->world_size > 1 ? absl::StrCat(", overlap ", setup->overlap ? "on" : "off") : ""));
  return absl::OkStatus();
}

pb::StepResult Worker::Session::ServeStep(const pb::StepPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  StepExecutor& executor = worker_.runner_->executor();
  auto fail = [&](const absl::Status& error) {
    worker_.Log(absl::StrCat("step ", plan.step(), " failed: ", error.ToString()));
    // The other ranks are in this step's collectives: join them with nothing.
    if (!executor.last_run_reached_forward()) (void)executor.Run({}, plan.group_max_tokens());
    return FailedStepResult(plan.step(), expected_.rank, error, SecondsSince(start));
  };
  if (absl::Status s = CheckStepPlanHeader(plan, expected_); !s.ok()) return fail(s);
  expected_.last_step = plan.step();
  const std::vector<uint64_t> released(plan.released_sequences().begin(),
                                       plan.released_sequences().end());
  executor.Release(released);
  worker_.kept_.Release(released);
  // A sequence whose work this worker cannot run is refused alone: the
  // step runs without it and its output says why.
  std::vector<SequenceWork> work;
  std::vector<pb::SequenceOutput> refused;
  for (const pb::SequenceWork& s : plan.sequences()) {
    auto w = worker_.kept_.Work(s);
    absl::Status ok = w.ok() ? executor.Check(*w) : w.status();
    if (!ok.ok()) {
      worker_.Log(absl::StrCat("step ", plan.step(), ": sequence ", s.sequence_id(),
                               " refused: ", ok.message()));
      pb::SequenceOutput& out = refused.emplace_back();
      out.set_sequence_id(s.sequence_id());
      out.set_error(absl::StrCat(absl::StatusCodeToString(ok.code()), ": ", ok.message()));
      continue;
    }
    work.push_back(*std::move(w));
  }
  auto outputs = executor.Run(work, plan.group_max_tokens());
  if (!outputs.ok()) return fail(outputs.status());
  pb::StepResult result =
      StepResultToProto(plan.step(), expected_.rank, *outputs, SecondsSince(start));
  for (pb::SequenceOutput& out : refused) *result.add_outputs() = std::move(out);
  const ForwardStats& stats = worker_.runner_->model().last_forward_stats();
  for (size_t l = 0; l < stats.expert_load.size(); ++l) {
    if (stats.expert_load[l].empty()) continue;
    pb::ExpertLoad* load = result.add_expert_loads();
    load->set_layer(static_cast<uint32_t>(l));
    for (int64_t n : stats.expert_load[l]) load->add_tokens_per_expert(static_cast<uint32_t>(n));
  }
  if (expected_.world_size > 1) {  // one rank's "all-to-all" is a local copy
    result.set_all_to_all_seconds(stats.communication.all_to_all_seconds);
    result.set_all_to_all_exposed_seconds(stats.communication.exposed_seconds);
  }
  return result;
}

absl::Status Worker::Session::StreamBroken(const char* when) {
  finished_ = true;
  const grpc::Status status = stream_.Finish();
  const std::string& address = worker_.options_.coordinator_address;
  if (status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the coordinator at ", address, " closed the stream without Shutdown ", when));
  }
  // Refusals that retrying cannot cure: say so, and which flag is wrong.
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the coordinator at ", address, " refused this worker: ", status.error_message(),
        " (give --internal-token-file the coordinator's internal token)"));
  }
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the server at ", address, " does not take workers: ", status.error_message(),
        " (--coordinator must name the coordinator's internal port, its --internal-listen, "
        "default 50052, not the public one)"));
  }
  if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
    // Every rank is taken: perhaps by a worker the coordinator has not yet
    // found gone (a replacement can register before its heartbeat drops the
    // old one). The caller may try again.
    return absl::AlreadyExistsError(absl::StrCat("the coordinator at ", address,
                                                 " refused this worker: ", status.error_message()));
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
  if (options.kv_cache_tokens <= 0 || options.kv_block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache needs a positive size and block size, got ",
                     options.kv_cache_tokens, " tokens in blocks of ", options.kv_block_tokens));
  }
  auto worker = std::unique_ptr<Worker>(new Worker());
  worker->options_ = options;
  // Every header is checked now, so a bad checkpoint fails at start-up and
  // not when the group forms.
  auto checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  auto config = ParseModelConfig((*checkpoint)->config_json());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(options.model_dir, "/", config.status().message()));
  }
  // An architecture without a forward pass (deepseek_v4) is refused now, with the reason.
  if (absl::Status s = CheckServable(**checkpoint, *config); !s.ok()) return s;
  worker->config_ = *std::move(config);
  worker->config_json_ = (*checkpoint)->config_json();
  return worker;
}

absl::Status Worker::JoinGroup(const GroupSetup& setup,
                               const std::shared_ptr<grpc::Channel>& channel) {
  std::unique_ptr<Communicator> comm;
  if (setup.communicator == "gloo") {
    GlooOptions o;
    o.rank = static_cast<int>(setup.rank);
    o.size = static_cast<int>(setup.world_size);
    o.host = options_.communicator_host;
    o.prefix = setup.prefix;
    o.timeout = setup.timeout;
    auto gloo =
        GlooCommunicator::Create(o, std::make_shared<CoordinatorStore>(channel, setup.timeout));
    if (!gloo.ok()) return gloo.status();
    comm = *std::move(gloo);
  } else if (setup.communicator == "nccl") {
    if (options_.device.kind != DeviceKind::kCuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("the coordinator asked for an NCCL group, but this worker runs on ",
                       options_.device.ToString(),
                       "; start it with --device cuda:N or the coordinator with "
                       "--communicator gloo"));
    }
#ifdef MOESERVE_HAVE_NCCL
    NcclOptions o;
    o.rank = static_cast<int>(setup.rank);
    o.size = static_cast<int>(setup.world_size);
    o.device = options_.device.index;
    o.prefix = setup.prefix;
    o.timeout = setup.timeout;
    auto nccl =
        NcclCommunicator::Create(o, std::make_shared<CoordinatorStore>(channel, setup.timeout));
    if (!nccl.ok()) return nccl.status();
    comm = *std::move(nccl);
#else
    return absl::FailedPreconditionError(
        "the coordinator asked for an NCCL group, but this worker was built without NCCL "
        "(no CUDA toolkit or nccl.h when it was configured); use --communicator gloo");
#endif
  } else {
    comm = std::make_unique<LocalCommunicator>();
  }
  comm = WithEmulatedLink(std::move(comm), setup.link);
  if (runner_ != nullptr && loaded_for_.has_value() && loaded_for_->SameModelAs(setup)) {
    return group_->Replace(std::move(comm));
  }
  runner_.reset();  // before the communicator it uses
  loaded_for_.reset();
  group_ = std::make_unique<ReplaceableCommunicator>(static_cast<int>(setup.rank),
                                                     static_cast<int>(setup.world_size));
  if (absl::Status s = group_->Replace(std::move(comm)); !s.ok()) return s;
  ModelRunner::Options o{options_.model_dir, options_.kv_cache_tokens, options_.kv_block_tokens,
                         options_.model,     options_.kv_cache_dtype,  options_.device};
  o.model.parallel.comm = setup.world_size > 1 ? group_.get() : nullptr;
  o.model.parallel.placement = setup.placement;
  o.model.parallel.micro_batches = setup.micro_batches;
  o.model.parallel.overlap = setup.overlap;
  if (setup.max_batch_tokens > 0) o.model.max_batch_tokens = setup.max_batch_tokens;
  if (setup.max_exchange_tokens > 0) o.model.max_exchange_tokens = setup.max_exchange_tokens;
  o.null_model = options_.null_model_for_benchmarks;
  if (o.null_model) {
    Log("NULL MODEL FOR BENCHMARKS: no weights are loaded and no token is computed");
  }
  const auto start = std::chrono::steady_clock::now();
  auto runner = ModelRunner::Create(o);
  if (!runner.ok()) return runner.status();
  runner_ = *std::move(runner);
  loaded_for_ = setup;
  Log(absl::StrCat("loaded the weights of rank ", setup.rank, " of ", setup.world_size, " in ",
                   SecondsSince(start), " s"));
  return absl::OkStatus();
}

Worker::~Worker() = default;

absl::Status Worker::Run() {
  joined_group_in_last_run_ = false;
  const std::string& address = options_.coordinator_address;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  std::shared_ptr<grpc::Channel> channel =
      CreateCoordinatorChannel(address, options_.credentials, args);
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
  Session session(*this, *stream, channel);
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
