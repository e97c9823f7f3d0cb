#include "scheduler/server/services.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "scheduler/server/raw_messages.h"
#include "scheduler/server/request_intake.h"

namespace moeserve {
namespace {

// Starts stream writes on a thread of its own. A write started from a thread
// that is not one of gRPC's runs gRPC's whole write path there (the batch, the
// socket send); from the engine thread that cost was paid for every token of
// every stream inside each step (about 15 us per stream; docs/performance.md).
// The engine thread now only queues; this thread starts a stream's write when
// the stream is idle, and gRPC's threads start the next ones as writes
// complete. One per process, never destroyed: sinks may outlive the services.
class WriteStarter {
 public:
  static WriteStarter& Get() {
    static WriteStarter* starter = new WriteStarter();  // intentionally never destroyed
    return *starter;
  }
  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  WriteStarter() : thread_([this] { Run(); }) { thread_.detach(); }
  void Run() {
    for (;;) {
      std::deque<std::function<void()>> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !tasks_.empty(); });
        batch.swap(tasks_);
      }
      for (auto& task : batch) task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::thread thread_;
};

// Appends `next`'s tokens, text and log-probabilities to `into` (both chunks
// of one stream): what a reader that fell behind gets as one message.
void MergeChunk(v1::Chunk& into, const v1::Chunk& next) {
  into.mutable_token_ids()->MergeFrom(next.token_ids());
  into.mutable_text_delta()->append(next.text_delta());
  into.mutable_logprobs()->MergeFrom(next.logprobs());
  into.mutable_prompt_logprobs()->MergeFrom(next.prompt_logprobs());
}

// A Generate or Chat stream. The engine thread pushes responses through the
// sink; gRPC writes them one at a time. While a write is in flight, chunks
// that arrive merge into one pending chunk, so a reader that falls behind (or
// stops reading) costs one message of the tokens it has not read, not one per
// step. The reactor deletes itself in OnDone; the sink outlives it and drops
// whatever arrives after.
class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  class Sink final : public ResponseSink, public std::enable_shared_from_this<Sink> {
   public:
    explicit Sink(GenerateReactor* reactor) : reactor_(reactor) {}
    void Send(v1::GenerateResponse response) override {
      std::unique_lock<std::mutex> lock(mu_);
      if (reactor_ == nullptr || closed_) return;
      if (!pending_.empty() && pending_.back().has_chunk() && response.has_chunk()) {
        MergeChunk(*pending_.back().mutable_chunk(), response.chunk());
      } else {
        pending_.push_back(std::move(response));
      }
      Kick(lock);
    }
    void Close(absl::Status status) override {
      std::unique_lock<std::mutex> lock(mu_);
      if (reactor_ == nullptr || closed_) return;
      closed_ = true;
      final_status_ = ToGrpc(status);
      Kick(lock);
    }
    void OnWriteDone(bool ok) {
      std::unique_lock<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {  // the client is gone
        pending_.clear();
        closed_ = true;
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
      StartNext(lock);  // on gRPC's thread
    }
    void Detach() {
      std::lock_guard<std::mutex> lock(mu_);
      reactor_ = nullptr;
    }

   private:
    // Has the write starter begin the next write or the finish, unless a
    // write is in flight (its completion starts the next) or already asked.
    void Kick(std::unique_lock<std::mutex>& lock) {
      if (writing_ || finished_ || kicked_) return;
      kicked_ = true;
      lock.unlock();
      WriteStarter::Get().Post([self = shared_from_this()] {
        std::unique_lock<std::mutex> l(self->mu_);
        self->kicked_ = false;
        self->StartNext(l);
      });
    }
    // Starts the next write or the finish, outside the lock.
    void StartNext(std::unique_lock<std::mutex>& lock) {
      if (writing_ || finished_ || reactor_ == nullptr) return;
      GenerateReactor* r = reactor_;
      if (!pending_.empty()) {
        writing_ = true;
        v1::GenerateResponse next = std::move(pending_.front());
        pending_.pop_front();
        lock.unlock();
        // Only this path touches in_flight_, and only while writing_.
        in_flight_ = SerializeRawResponse(next);
        r->StartWrite(&in_flight_);
      } else if (closed_) {
        finished_ = true;
        const grpc::Status status = final_status_;
        lock.unlock();
        r->Finish(status);
      }
    }

    std::mutex mu_;
    GenerateReactor* reactor_;
    std::deque<v1::GenerateResponse> pending_;  // at most a merged chunk, then the final
    grpc::ByteBuffer in_flight_;                // the write in flight, while writing_
    bool writing_ = false;
    bool kicked_ = false;  // a StartNext is posted to the write starter
    bool closed_ = false;
    bool finished_ = false;
    grpc::Status final_status_;
  };

  GenerateReactor(EngineLoop& loop, std::string key)
      : loop_(loop), key_(std::move(key)), sink_(std::make_shared<Sink>(this)) {}

  std::shared_ptr<Sink> sink() { return sink_; }

  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { loop_.Cancel(key_); }
  void OnDone() override {
    sink_->Detach();
    delete this;
  }

 private:
  EngineLoop& loop_;
  const std::string key_;  // the engine loop's handle of this request
  std::shared_ptr<Sink> sink_;
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* FailedStream(const grpc::Status& status) {
  class Failed final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
   public:
    explicit Failed(const grpc::Status& s) { Finish(s); }
    void OnDone() override { delete this; }
  };
  return new Failed(status);
}

int32_t ToId(uint32_t id) {
  return id > static_cast<uint32_t>(INT32_MAX) ? -1 : static_cast<int32_t>(id);
}

void FromProto(const v1::SamplingParams& s, SamplingOptions& r) {
  if (s.has_temperature()) r.temperature = s.temperature();
  if (s.has_top_p()) r.top_p = s.top_p();
  if (s.has_top_k()) r.top_k = s.top_k();
  if (s.has_min_p()) r.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) r.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) r.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) r.seed = s.seed();
  r.logit_bias.clear();
  for (const auto& [id, bias] : s.logit_bias()) r.logit_bias.emplace_back(ToId(id), bias);
  std::sort(r.logit_bias.begin(), r.logit_bias.end());
}

void FromProto(const v1::StoppingCriteria& st, StoppingOptions& r) {
  if (st.has_max_tokens()) r.max_tokens = st.max_tokens();
  r.min_tokens = st.min_tokens();
  r.stop.assign(st.stop().begin(), st.stop().end());
  for (uint32_t id : st.stop_token_ids()) r.stop_token_ids.push_back(ToId(id));
  r.ignore_eos = st.ignore_eos();
}

int32_t LogprobsFromProto(uint32_t n) { return n > 1000 ? 1000 : static_cast<int32_t>(n); }

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<GenerationRequest> FromProto(const v1::GenerateRequest& p,
                                            const TextFrontend* text) {
  GenerationRequest r;
  r.request_id = p.request_id();
  switch (p.input_case()) {
    case v1::GenerateRequest::kTokenIds:
      for (uint32_t id : p.token_ids().ids()) r.prompt_ids.push_back(ToId(id));
      break;
    case v1::GenerateRequest::kText: {
      if (p.text().empty()) return absl::InvalidArgumentError("the prompt is empty: text is \"\"");
      if (text == nullptr) return NoTokenizer("text input");
      auto ids = text->Encode(p.text(), /*add_special_tokens=*/true);
      if (!ids.ok()) return ids.status();
      r.prompt_ids = *std::move(ids);
      break;
    }
    default:
      return absl::InvalidArgumentError("the prompt is empty: set text or token_ids");
  }
  FromProto(p.sampling(), r.sampling);
  FromProto(p.stopping(), r.stopping);
  r.logprobs = LogprobsFromProto(p.logprobs());
  r.prompt_logprobs = p.prompt_logprobs();
  r.priority = p.priority();
  return r;
}

GenerationRequest FromProto(const v1::ChatRequest& p, std::vector<int32_t> prompt_ids) {
  GenerationRequest r;
  r.request_id = p.request_id();
  r.prompt_ids = std::move(prompt_ids);
  FromProto(p.sampling(), r.sampling);
  FromProto(p.stopping(), r.stopping);
  r.logprobs = LogprobsFromProto(p.logprobs());
  r.priority = p.priority();
  return r;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Refuse(const absl::Status& status) {
  metrics_.Rejected(RejectReason(status)).Increment();
  return FailedStream(ToGrpc(status));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Start(GenerationRequest request) {
  if (absl::Status s = ValidateForServing(loop_, text_.get(), request); !s.ok()) return Refuse(s);
  const std::string key = NewRequestKey();
  auto* reactor = new GenerateReactor(loop_, key);
  std::shared_ptr<ResponseSink> sink = reactor->sink();
  if (absl::Status s = SubmitToLoop(loop_, text_.get(), key, std::move(request), sink); !s.ok()) {
    sink->Close(s);
  }
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  v1::GenerateRequest request;
  if (absl::Status s = ParseRawRequest(*bytes, &request); !s.ok()) return Refuse(s);
  auto plain = FromProto(request, text_.get());
  if (!plain.ok()) return Refuse(plain.status());
  return Start(*std::move(plain));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Chat(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  v1::ChatRequest request;
  if (absl::Status s = ParseRawRequest(*bytes, &request); !s.ok()) return Refuse(s);
  auto ids = ChatPromptIds(text_.get(), request);
  if (!ids.ok()) return Refuse(ids.status());
  return Start(FromProto(request, *std::move(ids)));
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* bytes,
                                                     grpc::ByteBuffer* response) {
  auto* reactor = context->DefaultReactor();
  v1::TokenizeRequest request;
  absl::Status status = ParseRawRequest(*bytes, &request);
  if (status.ok() && text_ == nullptr) status = NoTokenizer("Tokenize");
  absl::StatusOr<std::vector<int32_t>> ids;
  if (status.ok()) {
    ids = text_->Encode(request.text(), request.add_special_tokens());
    status = ids.status();
  }
  if (!status.ok()) {
    reactor->Finish(ToGrpc(status));
    return reactor;
  }
  v1::TokenizeResponse out;
  for (int32_t id : *ids) {
    out.add_ids(static_cast<uint32_t>(id));
    if (request.return_tokens()) {
      out.add_tokens(std::string(text_->tokenizer().IdToToken(id).value_or("")));
    }
  }
  *response = SerializeRawResponse(out);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* request,
                                                         v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  const EngineLoop::Snapshot snap = loop_.snapshot();
  if (!snap.worker.has_value()) {
    reactor->Finish(ToGrpc(absl::UnavailableError("no worker is ready yet; retry shortly")));
    return reactor;
  }
  *response = snap.worker->model();
  response->set_world_size(static_cast<uint32_t>(snap.world_size));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetClusterState(grpc::CallbackServerContext* context,
                                                        const v1::GetClusterStateRequest* request,
                                                        v1::ClusterState* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status s = auth_.Check(*context); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  const EngineLoop::Snapshot snap = loop_.snapshot();
  response->set_world_size(static_cast<uint32_t>(snap.world_size));
  response->set_running_requests(static_cast<uint32_t>(snap.running));
  response->set_waiting_requests(static_cast<uint32_t>(snap.waiting));
  response->set_kv_usage_ratio(snap.kv_usage_ratio);
  response->set_draining(loop_.draining());
  response->set_step(snap.step);
  for (const EngineLoop::RankSnapshot& r : snap.ranks) {
    v1::WorkerState* w = response->add_workers();
    w->set_rank(r.rank);
    w->set_address(r.worker_id);
    w->set_status(r.ready ? v1::WORKER_STATUS_READY : v1::WORKER_STATUS_STARTING);
    w->set_kv_blocks_total(static_cast<uint64_t>(r.kv_blocks_total));
    w->set_kv_blocks_used(static_cast<uint64_t>(r.kv_blocks_used));
    w->set_kv_block_tokens(r.kv_block_tokens);
    w->set_running_sequences(static_cast<uint32_t>(r.running));
    w->set_last_step(snap.step);
  }
  if (snap.worker.has_value()) {
    v1::PlacementSummary* p = response->mutable_placement();
    p->set_logical_experts(snap.worker->model().num_routed_experts());
    p->set_physical_slots_per_rank(snap.placement.slots_per_rank > 0
                                       ? static_cast<uint32_t>(snap.placement.slots_per_rank)
                                       : snap.worker->model().num_routed_experts());
    p->set_redundant_replicas(static_cast<uint32_t>(std::max(0, snap.placement.redundant())));
    for (const auto& [layer, slots] : snap.placement.layers) {
      v1::LayerPlacement* l = p->add_layers();
      l->set_layer(static_cast<uint32_t>(layer));
      auto b = snap.balancedness.find(layer);
      l->set_balancedness(b == snap.balancedness.end() ? 1.0 : b->second);
      l->mutable_slot_expert()->Add(slots.begin(), slots.end());
      auto load = snap.expert_load.layers.find(layer);
      if (load != snap.expert_load.layers.end()) {
        for (double n : load->second) l->add_tokens_per_expert(static_cast<uint64_t>(n));
      }
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Drain(grpc::CallbackServerContext* context,
                                              const v1::DrainRequest* request,
                                              v1::DrainResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status s = auth_.Check(*context); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  loop_.Drain();
  on_drain_();
  response->set_in_flight_requests(static_cast<uint32_t>(loop_.snapshot().in_flight_requests));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::Status CoordinatorService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<worker::v1::CoordinatorMessage, worker::v1::WorkerMessage>* stream) {
  if (grpc::Status s = auth_.Check(*context); !s.ok()) return s;
  worker::v1::WorkerMessage first;
  if (!stream->Read(&first) || !first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "a worker's first message must be Register");
  }
  const worker::v1::Register& reg = first.register_();
  if (reg.kv().num_blocks() == 0 || reg.kv().block_tokens() == 0 || reg.model().vocab_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("worker ", reg.worker_id(),
                                     " registered without a KV cache or model description"));
  }
  if (text_ != nullptr) {
    if (absl::Status s = text_->CheckModelVocab(reg.model().vocab_size(),
                                                absl::StrCat("worker ", reg.worker_id()));
        !s.ok()) {
      return ToGrpc(s);
    }
  }
  auto attached = loop_.Attach(reg);
  if (!attached.ok()) return ToGrpc(attached.status());
  std::shared_ptr<WorkerLink> link = *std::move(attached);
  // Breaking the link (the group re-forming, a step timeout) ends a Read
  // blocked on this worker.
  link->SetOnBreak([context] { context->TryCancel(); });
  // The context dies with this call; the link may outlive it.
  struct ClearOnBreak {
    WorkerLink& link;
    ~ClearOnBreak() { link.SetOnBreak(nullptr); }
  } clear_on_break{*link};
  const std::string who = absl::StrCat("worker ", reg.worker_id(), " (rank ", link->rank(), ")");

  // Welcome once every rank has registered, then Ready.
  std::optional<worker::v1::Welcome> welcome;
  while (!welcome.has_value()) {
    if (context->IsCancelled() || link->broken()) {
      link->Break(absl::StrCat(who, " disconnected before its group formed"));
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, link->broken_reason());
    }
    welcome = link->TakeWelcome(absl::Milliseconds(200));
  }
  worker::v1::CoordinatorMessage out;
  *out.mutable_welcome() = *std::move(welcome);
  worker::v1::WorkerMessage in;
  if (!stream->Write(out) || !stream->Read(&in) || !in.has_ready()) {
    link->Break(absl::StrCat(who, " disconnected or broke the protocol before Ready"));
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, link->broken_reason());
  }
  link->DeliverReady(in.ready().error());
  if (!in.ready().error().empty()) {
    // The engine loop forms the group again; this worker registers anew.
    link->Break(absl::StrCat(who, " could not join the group: ", in.ready().error()));
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, link->broken_reason());
  }

  while (!context->IsCancelled() && !link->broken()) {
    std::optional<worker::v1::StepPlan> plan = link->TakePlan(absl::Milliseconds(200));
    if (!plan.has_value()) continue;
    out.Clear();
    *out.mutable_step_plan() = *std::move(plan);
    in.Clear();
    if (!stream->Write(out) || !stream->Read(&in)) {
      link->Break(absl::StrCat(who, " disconnected"));
      break;
    }
    if (!in.has_step_result() || in.step_result().step() != out.step_plan().step()) {
      link->Break(
          absl::StrCat(who, " answered step ", out.step_plan().step(), " with something else"));
      break;
    }
    link->Deliver(std::move(*in.mutable_step_result()));
  }
  link->Break(absl::StrCat(who, " disconnected"));
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, link->broken_reason());
}

grpc::Status CoordinatorService::StoreSet(grpc::ServerContext* context,
                                          const worker::v1::StoreSetRequest* request,
                                          worker::v1::StoreSetResponse* response) {
  if (grpc::Status s = auth_.Check(*context); !s.ok()) return s;
  return ToGrpc(store_.Set(request->key(), request->value(), loop_.group_generation()));
}

grpc::Status CoordinatorService::StoreGet(grpc::ServerContext* context,
                                          const worker::v1::StoreGetRequest* request,
                                          worker::v1::StoreGetResponse* response) {
  if (grpc::Status s = auth_.Check(*context); !s.ok()) return s;
  auto values =
      store_.Get({request->keys().begin(), request->keys().end()}, loop_.group_generation());
  if (!values.ok()) return ToGrpc(values.status());
  response->set_found(!values->empty() || request->keys().empty());
  for (std::string& v : *values) response->add_values(std::move(v));
  return grpc::Status::OK;
}

}  // namespace moeserve
