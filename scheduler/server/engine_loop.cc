#include "scheduler/server/engine_loop.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace moeserve {

struct EngineLoop::Active {
  GenerationRequest request;
  std::string key;
  std::shared_ptr<ResponseSink> sink;
  uint64_t seed = 0;
  absl::Time arrival;
  std::optional<absl::Time> first_scheduled;
  std::optional<absl::Time> last_token;
  absl::Time first_token;
  std::vector<int32_t> generated;
  std::vector<std::optional<float>> prompt_logprobs;  // when asked; [0] stays empty
  bool stopped_by_token = false;
};

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

v1::FinishReason ToProto(scheduler::FinishReason reason, bool stop_token) {
  switch (reason) {
    case scheduler::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case scheduler::FinishReason::kLength:
      return stop_token ? v1::FINISH_REASON_STOP : v1::FINISH_REASON_LENGTH;
    case scheduler::FinishReason::kAborted:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

const char* MetricReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_STRING:
      return "stop_string";
    default:
      return "abort";
  }
}

}  // namespace

EngineLoop::EngineLoop(const Options& options, CoordinatorMetrics& metrics)
    : options_(options), metrics_(metrics), thread_([this] { Run(); }) {}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

absl::Status EngineLoop::Submit(const std::string& key, GenerationRequest request,
                                std::shared_ptr<ResponseSink> sink) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_.load()) {
      metrics_.Rejected("unavailable").Increment();
      return absl::UnavailableError("the service is draining and admits no new requests");
    }
    if (!ready_.load()) {
      metrics_.Rejected("unavailable").Increment();
      return absl::UnavailableError("no worker is ready yet; retry shortly");
    }
    const int64_t bound = options_.batcher.max_running_seqs + options_.batcher.max_waiting;
    if (admitted_ >= bound) {
      metrics_.Rejected("queue_full").Increment();
      return absl::ResourceExhaustedError(absl::StrCat(
          "the waiting queue is full (", options_.batcher.max_waiting, " waiting requests beside ",
          options_.batcher.max_running_seqs, " running); retry later"));
    }
    ++admitted_;
    commands_.push_back({Command::kSubmit, std::move(request), std::move(sink), key, absl::Now()});
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void EngineLoop::Cancel(const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back({Command::kCancel, {}, nullptr, key, absl::Now()});
  }
  cv_.notify_all();
}

absl::Status EngineLoop::Attach(std::shared_ptr<WorkerLink> link) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ready_.load() || pending_worker_ != nullptr) {
    return absl::AlreadyExistsError(
        "a worker is already serving; this coordinator runs one worker (world size 1)");
  }
  pending_worker_ = std::move(link);
  cv_.notify_all();
  return absl::OkStatus();
}

void EngineLoop::Drain() {
  draining_.store(true);
  cv_.notify_all();
}

EngineLoop::Snapshot EngineLoop::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

void EngineLoop::Run() {
  for (;;) {
    std::deque<Command> commands;
    std::shared_ptr<WorkerLink> new_worker;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool busy = batcher_ != nullptr && !batcher_->idle();
      cv_.wait_for(lock, std::chrono::milliseconds(busy ? 0 : 100),
                   [&] { return stop_ || !commands_.empty() || pending_worker_ != nullptr; });
      if (stop_) break;
      commands.swap(commands_);
      new_worker.swap(pending_worker_);
    }
    if (new_worker != nullptr) {
      if (absl::Status s = StartWorker(new_worker); !s.ok())
        new_worker->Break(std::string(s.message()));
    }
    for (Command& c : commands) Apply(std::move(c));
    if (worker_ != nullptr && worker_->broken()) {
      FailAll(absl::UnavailableError("the worker was lost"));
    }
    if (worker_ != nullptr && batcher_ != nullptr && !batcher_->idle()) {
      batcher_->Schedule(&plan_);  // reuses the plan's buffers step after step
      if (!plan_.empty()) RunStep(plan_);
    }
    PublishSnapshot();
  }
  FailAll(absl::UnavailableError("the coordinator is shutting down"));
}

absl::Status EngineLoop::StartWorker(std::shared_ptr<WorkerLink> link) {
  const worker::v1::Register& r = link->registration();
  scheduler::ContinuousBatcher::Options o = options_.batcher;
  o.num_blocks = static_cast<int64_t>(r.kv().num_blocks());
  o.block_size = r.kv().block_tokens();
  // Submit bounds admitted requests by max_running_seqs + max_waiting; the
  // batcher sees arrivals before it can run them, so it gets the same bound.
  o.max_waiting = options_.batcher.max_waiting + options_.batcher.max_running_seqs;
  auto batcher = scheduler::ContinuousBatcher::Create(o);
  if (!batcher.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker ", r.worker_id(), " reported an unusable KV cache: ", batcher.status().message()));
  }
  batcher_ = *std::move(batcher);
  worker_ = std::move(link);
  eos_ids_.assign(r.model().eos_token_ids().begin(), r.model().eos_token_ids().end());
  ready_.store(true);
  metrics_.workers_up.Set(1);
  return absl::OkStatus();
}

void EngineLoop::Apply(Command c) {
  if (c.kind == Command::kCancel) {
    auto it = ids_.find(c.key);
    if (it == ids_.end()) return;
    const uint64_t id = it->second;
    auto finished = batcher_->Abort(id);
    if (finished.ok()) Finish(id, *finished, false);
    return;
  }
  if (worker_ == nullptr || batcher_ == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    --admitted_;
    c.sink->Close(absl::UnavailableError("the worker was lost before the request started"));
    return;
  }
  const uint64_t id = next_sequence_id_++;
  scheduler::Request r;
  r.id = id;
  r.prompt_ids = c.request.prompt_ids;
  r.max_tokens = c.request.stopping.max_tokens.value_or(1);
  r.priority = c.request.priority;
  if (absl::Status s = batcher_->Add(r); !s.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --admitted_;
    }
    metrics_
        .Rejected(s.code() == absl::StatusCode::kResourceExhausted ? "queue_full"
                                                                   : "invalid_argument")
        .Increment();
    c.sink->Close(s);
    return;
  }
  auto a = std::make_unique<Active>();
  a->seed = c.request.sampling.seed.value_or(std::random_device{}());
  a->arrival = c.arrival;
  a->sink = std::move(c.sink);
  if (c.request.prompt_logprobs) a->prompt_logprobs.resize(c.request.prompt_ids.size());
  metrics_.prompt_tokens.Increment(static_cast<double>(c.request.prompt_ids.size()));
  a->request = std::move(c.request);
  a->key = c.key;
  ids_[c.key] = id;
  active_[id] = std::move(a);
}

worker::v1::StepPlan EngineLoop::ToWorkerPlan(const scheduler::StepPlan& plan) {
  worker::v1::StepPlan wp;
  wp.set_step(plan.step);
  wp.set_rank(0);
  wp.set_world_size(1);
  const absl::Time now = absl::Now();
  for (const scheduler::ScheduledSequence& s : plan.seqs) {
    Active& a = *active_.at(s.id);
    if (!a.first_scheduled.has_value()) {
      a.first_scheduled = now;
      metrics_.queue_time.Observe(Seconds(now - a.arrival));
    }
    worker::v1::SequenceWork* w = wp.add_sequences();
    w->set_sequence_id(s.id);
    w->mutable_token_ids()->Add(s.token_ids.begin(), s.token_ids.end());
    w->set_context_len(static_cast<uint32_t>(s.context_len));
    w->mutable_block_table()->Add(s.block_table.begin(), s.block_table.end());
    w->set_sample(s.sample);
    const SamplingOptions& so = a.request.sampling;
    worker::v1::Sampling* ws = w->mutable_sampling();
    ws->set_temperature(so.temperature);
    ws->set_top_p(so.top_p);
    ws->set_top_k(so.top_k);
    ws->set_min_p(so.min_p);
    ws->set_repetition_penalty(so.repetition_penalty);
    ws->set_presence_penalty(so.presence_penalty);
    ws->set_frequency_penalty(so.frequency_penalty);
    ws->set_seed(a.seed);
    w->set_draw_index(a.generated.size());
    w->set_logprobs(static_cast<uint32_t>(a.request.logprobs));
    const auto prompt_len = static_cast<int64_t>(a.request.prompt_ids.size());
    const int64_t start = s.context_len - static_cast<int64_t>(s.token_ids.size());
    if (a.request.prompt_logprobs && start + 1 < prompt_len) {
      w->set_prompt_logprobs(true);
      if (s.context_len < prompt_len) {
        w->set_following_token(
            static_cast<uint32_t>(a.request.prompt_ids[static_cast<size_t>(s.context_len)]));
      }
    }
  }
  return wp;
}

void EngineLoop::RunStep(const scheduler::StepPlan& plan) {
  const absl::Time start = absl::Now();
  auto result = worker_->RunStep(ToWorkerPlan(plan), options_.step_timeout);
  if (!result.ok()) {
    FailAll(
        absl::UnavailableError(absl::StrCat("the worker was lost: ", result.status().message())));
    return;
  }
  if (!result->error().empty()) {
    // The worker could not run this step; its requests fail, the rest go on.
    for (const scheduler::ScheduledSequence& s : plan.seqs) {
      auto it = active_.find(s.id);
      if (it == active_.end()) continue;
      it->second->sink->Close(
          absl::InternalError(absl::StrCat("the worker failed the step: ", result->error())));
      (void)batcher_->Abort(s.id);
      ids_.erase(it->second->key);
      active_.erase(it);
      std::lock_guard<std::mutex> lock(mu_);
      --admitted_;
    }
    scheduler::StepResult empty;
    empty.step = plan.step;
    (void)batcher_->OnStepResult(empty);
    return;
  }
  ++steps_run_;
  metrics_.step_duration.Observe(Seconds(absl::Now() - start));
  metrics_.step_tokens.Observe(static_cast<double>(plan.num_tokens()));
  HandleOutputs(plan, *result);
}

void EngineLoop::HandleOutputs(const scheduler::StepPlan& plan,
                               const worker::v1::StepResult& result) {
  absl::flat_hash_map<uint64_t, const scheduler::ScheduledSequence*> scheduled;
  for (const auto& s : plan.seqs) scheduled[s.id] = &s;
  scheduler::StepResult sr;
  sr.step = plan.step;
  const absl::Time now = absl::Now();
  for (const worker::v1::SequenceOutput& out : result.outputs()) {
    auto it = active_.find(out.sequence_id());
    auto sit = scheduled.find(out.sequence_id());
    if (it == active_.end() || sit == scheduled.end()) continue;
    Active& a = *it->second;
    const scheduler::ScheduledSequence& s = *sit->second;
    const int64_t start = s.context_len - static_cast<int64_t>(s.token_ids.size());
    for (int j = 0; j < out.prompt_logprobs_size(); ++j) {
      const auto pos = static_cast<size_t>(start + j + 1);
      if (pos < a.prompt_logprobs.size() && !a.prompt_logprobs[pos].has_value()) {
        a.prompt_logprobs[pos] = out.prompt_logprobs(j);
      }
    }
    if (!s.sample) continue;
    const auto token = static_cast<int32_t>(out.token_id());
    a.generated.push_back(token);
    metrics_.generation_tokens.Increment();
    if (a.generated.size() == 1) {
      a.first_token = now;
      metrics_.time_to_first_token.Observe(Seconds(now - a.arrival));
    } else if (a.last_token.has_value()) {
      metrics_.inter_token_latency.Observe(Seconds(now - *a.last_token));
    }
    a.last_token = now;
    const StoppingOptions& st = a.request.stopping;
    const bool eos = !st.ignore_eos && std::count(eos_ids_.begin(), eos_ids_.end(), token) > 0;
    const bool stop_id = std::count(st.stop_token_ids.begin(), st.stop_token_ids.end(), token) > 0;
    const bool stop = (eos || stop_id) && static_cast<int64_t>(a.generated.size()) >= st.min_tokens;
    a.stopped_by_token = stop;
    sr.outputs.push_back({out.sequence_id(), token, stop});

    v1::GenerateResponse response;
    response.set_request_id(a.request.request_id);
    v1::Chunk* chunk = response.mutable_chunk();
    chunk->add_token_ids(out.token_id());
    if (a.request.logprobs > 0 || a.request.prompt_logprobs) {
      v1::GeneratedTokenLogprobs* lp = chunk->add_logprobs();
      lp->mutable_chosen()->set_id(out.token_id());
      lp->mutable_chosen()->set_logprob(out.logprob());
      for (const auto& t : out.top()) {
        v1::TokenLogprob* alt = lp->add_top();
        alt->set_id(t.id());
        alt->set_logprob(t.logprob());
      }
    }
    if (a.generated.size() == 1 && a.request.prompt_logprobs) {
      for (size_t i = 0; i < a.prompt_logprobs.size(); ++i) {
        v1::GeneratedTokenLogprobs* p = chunk->add_prompt_logprobs();
        if (i > 0) {
          p->mutable_chosen()->set_id(static_cast<uint32_t>(a.request.prompt_ids[i]));
          p->mutable_chosen()->set_logprob(a.prompt_logprobs[i].value_or(0.0f));
        }
      }
    }
    a.sink->Send(std::move(response));
  }
  auto finished = batcher_->OnStepResult(sr);
  if (!finished.ok()) {
    FailAll(absl::InternalError(
        absl::StrCat("scheduler rejected the worker's result: ", finished.status().message())));
    return;
  }
  for (const scheduler::FinishedSequence& f : *finished) {
    auto it = active_.find(f.id);
    if (it != active_.end()) Finish(f.id, f, it->second->stopped_by_token);
  }
}

void EngineLoop::Finish(uint64_t id, const scheduler::FinishedSequence& f, bool stop_token) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = *it->second;
  const absl::Time now = absl::Now();
  const v1::FinishReason reason = ToProto(f.reason, stop_token);
  metrics_.Finished(MetricReason(reason)).Increment();
  metrics_.request_latency.Observe(Seconds(now - a.arrival));
  metrics_.prefix_cache_hit_tokens.Increment(static_cast<double>(f.num_cached_prompt_tokens));
  if (f.reason == scheduler::FinishReason::kAborted) {
    a.sink->Close(absl::CancelledError("the request was cancelled"));
  } else {
    v1::GenerateResponse response;
    response.set_request_id(a.request.request_id);
    v1::Final* fin = response.mutable_final();
    fin->set_finish_reason(reason);
    fin->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(a.request.prompt_ids.size()));
    fin->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(a.generated.size()));
    fin->mutable_usage()->set_cached_tokens(static_cast<uint32_t>(f.num_cached_prompt_tokens));
    fin->mutable_timings()->set_queue_seconds(Seconds(a.first_scheduled.value_or(now) - a.arrival));
    fin->mutable_timings()->set_time_to_first_token_seconds(
        a.generated.empty() ? 0.0 : Seconds(a.first_token - a.arrival));
    fin->mutable_timings()->set_total_seconds(Seconds(now - a.arrival));
    a.sink->Send(std::move(response));
    a.sink->Close(absl::OkStatus());
  }
  ids_.erase(a.key);
  active_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  --admitted_;
}

void EngineLoop::FailAll(const absl::Status& status) {
  for (auto& [id, a] : active_) {
    a->sink->Close(status);
    metrics_.Finished("abort").Increment();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    admitted_ -= static_cast<int64_t>(active_.size());
  }
  active_.clear();
  ids_.clear();
  if (worker_ != nullptr) worker_->Break(std::string(status.message()));
  worker_.reset();
  batcher_.reset();
  ready_.store(false);
  metrics_.workers_up.Set(0);
}

void EngineLoop::PublishSnapshot() {
  Snapshot s;
  if (batcher_ != nullptr) {
    const auto st = batcher_->stats();
    s.running = st.num_running;
    s.waiting = st.num_waiting;
    s.kv_usage_ratio = st.kv_usage_ratio;
    s.kv_blocks_total = batcher_->options().num_blocks;
    s.kv_blocks_used = s.kv_blocks_total - st.num_free_blocks;
    metrics_.preemptions.Increment(
        static_cast<double>(std::max<int64_t>(0, st.num_preemptions - last_preemptions_)));
    last_preemptions_ = st.num_preemptions;
  }
  if (worker_ != nullptr) s.worker = worker_->registration();
  s.in_flight_requests = static_cast<int64_t>(active_.size());
  metrics_.requests_running.Set(static_cast<double>(s.running));
  metrics_.requests_waiting.Set(static_cast<double>(s.waiting));
  metrics_.kv_cache_usage_ratio.Set(s.kv_usage_ratio);
  std::lock_guard<std::mutex> lock(mu_);
  s.step = steps_run_;
  snapshot_ = s;
}

}  // namespace moeserve
