#include "scheduler/server/engine_loop.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace moeserve {

struct EngineLoop::Active {
  GenerationRequest request;
  uint32_t rank = 0;           // where the sequence lives
  int64_t pending_blocks = 0;  // KV blocks its prompt needs, until first scheduled
  std::string key;
  std::shared_ptr<ResponseSink> sink;
  uint64_t seed = 0;
  absl::Time arrival;
  std::optional<absl::Time> first_scheduled;
  std::optional<absl::Time> last_token;
  absl::Time first_token;
  std::vector<int32_t> generated;
  int64_t worker_position = 0;  // the next position the worker was fed of it
  // How many blocks of its table the worker holds (KeptSequences), 0 until
  // it is sent in full or after a preemption changed its blocks, and the
  // last of them: later plans send only the blocks appended. A table only
  // grows between preemptions (BlockManager::Append).
  size_t worker_blocks = 0;
  int32_t worker_last_block = -1;
  std::vector<std::optional<float>> prompt_logprobs;  // when asked; [0] stays empty
  bool stopped_by_token = false;
  bool stopped_by_string = false;  // the sink saw a stop string complete
  int recoveries = 0;              // groups lost while it ran
};

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// A request that was running each time its group was lost this often is
// taken for the cause (a step that kills a worker) and ends with the reason
// instead of taking the next group down too.
constexpr int kMaxRecoveries = 3;

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

// One rank of the serving group.
struct EngineLoop::Rank {
  std::shared_ptr<WorkerLink> link;
  std::unique_ptr<scheduler::ContinuousBatcher> batcher;
  scheduler::StepPlan plan;    // this step's, kept to reuse its buffers
  int64_t pending_blocks = 0;  // of admitted sequences not yet scheduled
  int64_t last_preemptions = 0;
  std::vector<uint64_t> released;  // ended since the last plan (StepPlan::released_sequences)
};

EngineLoop::EngineLoop(const Options& options, CoordinatorMetrics& metrics)
    : options_(options),
      metrics_(metrics),
      members_(static_cast<size_t>(std::max(1, options.ep_size))),
      thread_([this] { Run(); }) {
  metrics_.workers_expected.Set(static_cast<double>(members_.size()));
  for (size_t r = 0; r < members_.size(); ++r) metrics_.WorkerUp(static_cast<int>(r)).Set(0);
}

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
      return absl::UnavailableError("the workers are not ready yet; retry shortly");
    }
    const int64_t running = MaxRunning();
    const int64_t bound = running + options_.batcher.max_waiting;
    if (admitted_ >= bound) {
      metrics_.Rejected("queue_full").Increment();
      return absl::ResourceExhaustedError(
          absl::StrCat("the waiting queue is full (", options_.batcher.max_waiting,
                       " waiting requests beside ", running, " running); retry later"));
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

absl::StatusOr<std::shared_ptr<WorkerLink>> EngineLoop::Attach(worker::v1::Register reg) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto size = static_cast<int32_t>(members_.size());
  for (const auto& m : members_) {
    if (m == nullptr) continue;
    const worker::v1::Register& other = m->registration();
    if (other.model_type() != reg.model_type() || other.vocab_size() != reg.vocab_size() ||
        other.model().num_routed_experts() != reg.model().num_routed_experts() ||
        other.model().max_context_tokens() != reg.model().max_context_tokens()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", reg.worker_id(), " serves ", reg.model_type(), " with vocabulary ",
          reg.vocab_size(), " and ", reg.model().num_routed_experts(), " experts; rank ", m->rank(),
          " (", other.worker_id(), ") serves ", other.model_type(), " with vocabulary ",
          other.vocab_size(), " and ", other.model().num_routed_experts(),
          " experts: every rank must serve the same model"));
    }
  }
  int32_t rank = -1;
  const int32_t asked = reg.requested_rank();
  if (asked >= size) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", reg.worker_id(), " asked for rank ",
                                                   asked, " but the group has ", size,
                                                   " ranks (--ep-size)"));
  }
  if (asked >= 0 && members_[static_cast<size_t>(asked)] == nullptr) rank = asked;
  for (int32_t r = 0; r < size && rank < 0; ++r) {
    if (members_[static_cast<size_t>(r)] == nullptr) rank = r;
  }
  if (rank < 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "all ", size, " ranks are taken", size == 1 ? " (this coordinator runs one worker)" : "",
        "; worker ", reg.worker_id(), " is not needed"));
  }
  auto link = std::make_shared<WorkerLink>(std::move(reg), static_cast<uint32_t>(rank));
  members_[static_cast<size_t>(rank)] = link;
  members_changed_ = true;
  cv_.notify_all();
  return link;
}

void EngineLoop::Drain() {
  draining_.store(true);
  cv_.notify_all();
}

EngineLoop::Snapshot EngineLoop::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

bool EngineLoop::Busy() const {
  if (state_ != GroupState::kServing) return false;
  for (const auto& r : ranks_) {
    if (!r->batcher->idle()) return true;
  }
  return false;
}

void EngineLoop::Run() {
  for (;;) {
    std::deque<Command> commands;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool busy = Busy() || state_ == GroupState::kForming;
      cv_.wait_for(lock,
                   std::chrono::milliseconds(busy ? (state_ == GroupState::kForming ? 5 : 0) : 100),
                   [&] { return stop_ || !commands_.empty() || members_changed_; });
      if (stop_) break;
      commands.swap(commands_);
      members_changed_ = false;
    }
    // A broken member (its worker gone) loses the group, whatever its state.
    std::string lost;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& m : members_) {
        if (m != nullptr && m->broken()) {
          lost = absl::StrCat("rank ", m->rank(), " (", m->registration().worker_id(),
                              ") was lost: ", m->broken_reason());
          break;
        }
      }
    }
    if (!lost.empty()) LoseGroup(lost);
    ExpireSuspended();
    if (state_ == GroupState::kWaiting) FormGroup();
    if (state_ == GroupState::kForming) CheckForming();
    for (Command& c : commands) Apply(std::move(c));
    if (state_ == GroupState::kServing && Busy()) RunStep();
    PublishSnapshot();
  }
  FailRequests(absl::UnavailableError("the coordinator is shutting down"));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& m : members_) {
    if (m != nullptr) m->Break("the coordinator is shutting down");
  }
}

void EngineLoop::FormGroup() {
  std::vector<std::shared_ptr<WorkerLink>> members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& m : members_) {
      if (m == nullptr || m->broken()) return;
    }
    members = members_;
  }
  const worker::v1::Register& first = members[0]->registration();
  const auto size = static_cast<int32_t>(members.size());
  const auto experts = static_cast<int32_t>(first.model().num_routed_experts());
  if (options_.placement.has_value()) {
    placement_ = *options_.placement;
    absl::Status s = placement_.ranks != size || placement_.experts != experts
                         ? absl::FailedPreconditionError(absl::StrCat(
                               "the expert placement is for ", placement_.ranks, " ranks and ",
                               placement_.experts, " experts; the group has ", size,
                               " ranks and the model ", experts, " experts"))
                         : absl::OkStatus();
    if (!s.ok()) {
      LoseGroup(std::string(s.message()));
      return;
    }
  } else {
    std::vector<int32_t> moe_layers(first.moe_layers().begin(), first.moe_layers().end());
    placement_ = scheduler::DefaultPlacement(moe_layers, std::max(experts, 1), size,
                                             options_.redundant_experts);
  }
  ++generation_;
  group_generation_ = generation_;  // before any rank can see its Welcome
  for (const auto& m : members) {
    worker::v1::Welcome w;
    w.set_rank(m->rank());
    w.set_world_size(static_cast<uint32_t>(size));
    w.set_communicator(size > 1 ? options_.communicator : "local");
    w.set_communicator_id(absl::StrCat("moeserve/group-", generation_));
    w.set_communicator_timeout_seconds(absl::ToDoubleSeconds(options_.communicator_timeout));
    w.set_micro_batches(size > 1 ? 2 : 1);
    w.set_overlap(size > 1 && options_.overlap);
    w.set_max_batch_tokens(static_cast<uint32_t>(options_.batcher.max_batch_tokens));
    w.set_max_exchange_tokens(static_cast<uint32_t>(options_.max_exchange_tokens));
    w.mutable_emulated_link()->set_latency_us(options_.emulated_link_latency_us);
    w.mutable_emulated_link()->set_bandwidth_gbps(options_.emulated_link_gbps);
    if (experts > 0) {
      w.mutable_placement()->set_slots_per_rank(static_cast<uint32_t>(placement_.slots_per_rank));
      for (const auto& [layer, slots] : placement_.layers) {
        worker::v1::LayerPlacement* lp = w.mutable_placement()->add_layers();
        lp->set_layer(static_cast<uint32_t>(layer));
        lp->mutable_slot_expert()->Add(slots.begin(), slots.end());
      }
    }
    m->SendWelcome(std::move(w));
  }
  ranks_.clear();
  for (const auto& m : members) {
    auto r = std::make_unique<Rank>();
    r->link = m;
    ranks_.push_back(std::move(r));
  }
  forming_deadline_ = absl::Now() + options_.group_timeout;
  state_ = GroupState::kForming;
}

void EngineLoop::CheckForming() {
  for (const auto& r : ranks_) {
    std::optional<std::string> ready = r->link->ready();
    if (ready.has_value() && !ready->empty()) {
      LoseGroup(absl::StrCat("rank ", r->link->rank(), " could not join the group: ", *ready));
      return;
    }
  }
  for (const auto& r : ranks_) {
    if (!r->link->ready().has_value()) {
      if (absl::Now() > forming_deadline_) {
        LoseGroup(absl::StrCat("rank ", r->link->rank(), " was not ready within ",
                               absl::FormatDuration(options_.group_timeout)));
      }
      return;
    }
  }
  for (auto& r : ranks_) {
    const worker::v1::Register& reg = r->link->registration();
    scheduler::ContinuousBatcher::Options o = options_.batcher;
    o.num_blocks = static_cast<int64_t>(reg.kv().num_blocks());
    o.block_size = reg.kv().block_tokens();
    // Submit bounds the admitted requests of the whole group; any rank may
    // be given all of those it cannot run yet.
    o.max_waiting = options_.batcher.max_waiting + MaxRunning();
    auto batcher = scheduler::ContinuousBatcher::Create(o);
    if (!batcher.ok()) {
      LoseGroup(absl::StrCat("worker ", reg.worker_id(),
                             " reported an unusable KV cache: ", batcher.status().message()));
      return;
    }
    r->batcher = *std::move(batcher);
  }
  const worker::v1::Register& first = ranks_[0]->link->registration();
  eos_ids_.assign(first.model().eos_token_ids().begin(), first.model().eos_token_ids().end());
  load_window_ = std::make_unique<scheduler::ExpertLoadWindow>(
      static_cast<int32_t>(first.model().num_routed_experts()), options_.expert_load_window_steps);
  balancedness_.clear();
  overlap_window_.clear();
  state_ = GroupState::kServing;
  for (const auto& r : ranks_) metrics_.WorkerUp(static_cast<int>(r->link->rank())).Set(1);
  metrics_.workers_up.Set(static_cast<double>(ranks_.size()));
  SetReady(true);
  Log(absl::StrCat("worker group ", generation_, " formed: ", ranks_.size(), " rank",
                   ranks_.size() == 1 ? "" : "s", " ready"));
  ResumeRequests();
}

void EngineLoop::SetReady(bool ready) {
  const bool was = ready_.exchange(ready);
  if (was != ready && options_.on_ready_changed) options_.on_ready_changed(ready);
}

void EngineLoop::LoseGroup(const std::string& reason) {
  SuspendRequests(reason);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& m : members_) {
      if (m != nullptr) m->Break(absl::StrCat("the worker group is being formed again: ", reason));
      m = nullptr;
    }
  }
  ranks_.clear();
  state_ = GroupState::kWaiting;
  for (size_t r = 0; r < members_.size(); ++r) metrics_.WorkerUp(static_cast<int>(r)).Set(0);
  metrics_.workers_up.Set(0);
  SetReady(false);
}

void EngineLoop::Apply(Command c) {
  if (c.kind == Command::kCancel) {
    auto it = ids_.find(c.key);
    if (it == ids_.end()) {
      // Perhaps held while the group is lost.
      for (auto h = held_.begin(); h != held_.end(); ++h) {
        if (h->key != c.key) continue;
        h->sink->Close(absl::CancelledError("the request was cancelled"));
        metrics_.Finished("abort").Increment();
        held_.erase(h);
        std::lock_guard<std::mutex> lock(mu_);
        --admitted_;
        break;
      }
      return;
    }
    const uint64_t id = it->second;
    auto a = active_.find(id);
    if (a == active_.end()) return;
    if (state_ != GroupState::kServing) {  // suspended with its group
      End(id, absl::CancelledError("the request was cancelled"));
      return;
    }
    auto finished = ranks_[a->second->rank]->batcher->Abort(id);
    if (finished.ok()) Finish(id, *finished, false);
    return;
  }
  if (state_ != GroupState::kServing) {
    if (recovery_deadline_.has_value()) {  // it waits for the group with the others
      held_.push_back(std::move(c));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    --admitted_;
    c.sink->Close(absl::UnavailableError("the worker group was lost before the request started"));
    return;
  }
  const uint64_t id = next_sequence_id_++;
  auto a = std::make_unique<Active>();
  a->seed = c.request.sampling.seed.value_or(std::random_device{}());
  a->arrival = c.arrival;
  a->sink = std::move(c.sink);
  if (c.request.prompt_logprobs) a->prompt_logprobs.resize(c.request.prompt_ids.size());
  a->request = std::move(c.request);
  a->key = c.key;
  if (absl::Status s = Place(id, *a); !s.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --admitted_;
    }
    metrics_
        .Rejected(s.code() == absl::StatusCode::kResourceExhausted ? "queue_full"
                                                                   : "invalid_argument")
        .Increment();
    a->sink->Close(s);
    return;
  }
  metrics_.prompt_tokens.Increment(static_cast<double>(a->request.prompt_ids.size()));
  ids_[a->key] = id;
  active_[id] = std::move(a);
}

absl::Status EngineLoop::Place(uint64_t id, Active& a) {
  // The rank with the most KV headroom, counting what admitted sequences not
  // yet scheduled will take, then the fewest sequences.
  std::vector<scheduler::RankLoad> loads;
  for (const auto& r : ranks_) {
    const auto st = r->batcher->stats();
    loads.push_back({st.num_free_blocks, r->pending_blocks, st.num_running, st.num_waiting});
  }
  const auto rank = static_cast<uint32_t>(scheduler::PickRank(loads));
  Rank& target = *ranks_[rank];
  scheduler::Request r;
  r.id = id;
  r.prompt_ids = a.request.prompt_ids;
  r.generated_ids = a.generated;
  r.max_tokens = a.request.stopping.max_tokens.value_or(1);
  r.priority = a.request.priority;
  if (absl::Status s = target.batcher->Add(std::move(r)); !s.ok()) return s;
  a.rank = rank;
  const int64_t block = std::max<int64_t>(1, target.batcher->options().block_size);
  const auto tokens = static_cast<int64_t>(a.request.prompt_ids.size() + a.generated.size());
  a.pending_blocks = (tokens + block - 1) / block;
  target.pending_blocks += a.pending_blocks;
  return absl::OkStatus();
}

void EngineLoop::End(uint64_t id, const absl::Status& status) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = *it->second;
  a.sink->Close(status);
  metrics_.Finished("abort").Increment();
  if (a.pending_blocks > 0 && a.rank < ranks_.size()) {
    ranks_[a.rank]->pending_blocks -= a.pending_blocks;
  }
  ids_.erase(a.key);
  active_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  --admitted_;
}

void EngineLoop::SuspendRequests(const std::string& reason) {
  Log(absl::StrCat(
      "the worker group was lost: ", reason, "; ", active_.size(), " request(s) in flight ",
      options_.recovery_timeout > absl::ZeroDuration()
          ? absl::StrCat("wait up to ", absl::FormatDuration(options_.recovery_timeout),
                         " for it to be whole again")
          : std::string("end (--request-recovery-timeout-seconds 0)")));
  if (options_.recovery_timeout <= absl::ZeroDuration()) {
    FailRequests(absl::UnavailableError(absl::StrCat("the worker group was lost: ", reason)));
    return;
  }
  lost_reason_ = reason;
  if (!recovery_deadline_.has_value()) {
    recovery_deadline_ = absl::Now() + options_.recovery_timeout;
  }
  std::vector<uint64_t> culprits;
  for (auto& [id, a] : active_) {
    // It ran on the lost group once its blocks were no longer pending.
    const bool ran = a->pending_blocks == 0;
    // What a worker of the lost group held of it is gone.
    a->pending_blocks = 0;
    a->worker_position = 0;
    a->worker_blocks = 0;
    a->worker_last_block = -1;
    if (ran && ++a->recoveries >= kMaxRecoveries) culprits.push_back(id);
  }
  for (auto& r : ranks_) r->pending_blocks = 0;
  for (uint64_t id : culprits) {
    End(id, absl::UnavailableError(absl::StrCat(
                "the worker group was lost ", kMaxRecoveries,
                " times while this request ran, so it is not tried again; last: ", reason)));
  }
}

void EngineLoop::ResumeRequests() {
  if (!recovery_deadline_.has_value()) return;
  recovery_deadline_.reset();
  Log(absl::StrCat(active_.size(), " request(s) resume where their streams were"));
  // In the order they arrived, which is the order of their sequence ids.
  std::vector<uint64_t> ids;
  ids.reserve(active_.size());
  for (const auto& [id, a] : active_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (uint64_t id : ids) {
    Active& a = *active_.at(id);
    if (absl::Status s = Place(id, a); !s.ok()) {
      End(id, absl::UnavailableError(absl::StrCat("the worker group formed again after a loss (",
                                                  lost_reason_,
                                                  ") cannot run the request: ", s.message())));
      continue;
    }
    metrics_.requests_recovered.Increment();
  }
  std::deque<Command> held;
  held.swap(held_);
  for (Command& c : held) Apply(std::move(c));
}

void EngineLoop::ExpireSuspended() {
  if (!recovery_deadline_.has_value() || state_ == GroupState::kServing ||
      absl::Now() < *recovery_deadline_) {
    return;
  }
  recovery_deadline_.reset();
  Log(absl::StrCat(active_.size() + held_.size(),
                   " request(s) end with UNAVAILABLE: the group was not whole again within ",
                   absl::FormatDuration(options_.recovery_timeout)));
  FailRequests(absl::UnavailableError(
      absl::StrCat("the worker group was lost (", lost_reason_, ") and was not whole again within ",
                   absl::FormatDuration(options_.recovery_timeout),
                   " (the coordinator's --request-recovery-timeout-seconds)")));
}

worker::v1::StepPlan EngineLoop::ToWorkerPlan(const scheduler::StepPlan& plan, uint32_t rank,
                                              int64_t group_max_tokens) {
  worker::v1::StepPlan wp;
  wp.set_step(steps_run_ + 1);
  wp.set_rank(rank);
  wp.set_world_size(static_cast<uint32_t>(ranks_.size()));
  wp.set_group_max_tokens(static_cast<uint32_t>(group_max_tokens));
  Rank& r = *ranks_[rank];
  wp.mutable_released_sequences()->Add(r.released.begin(), r.released.end());
  r.released.clear();
  for (uint64_t id : plan.preempted) {
    if (auto it = active_.find(id); it != active_.end()) it->second->worker_blocks = 0;
  }
  const absl::Time now = absl::Now();
  for (const scheduler::ScheduledSequence& s : plan.seqs) {
    Active& a = *active_.at(s.id);
    if (a.pending_blocks > 0) {
      ranks_[a.rank]->pending_blocks -= a.pending_blocks;
      a.pending_blocks = 0;
    }
    if (!a.first_scheduled.has_value()) {
      a.first_scheduled = now;
      metrics_.queue_time.Observe(Seconds(now - a.arrival));
    }
    worker::v1::SequenceWork* w = wp.add_sequences();
    w->set_sequence_id(s.id);
    w->mutable_token_ids()->Add(s.token_ids.begin(), s.token_ids.end());
    w->set_context_len(static_cast<uint32_t>(s.context_len));
    w->set_sample(s.sample);
    const SamplingOptions& so = a.request.sampling;
    // The worker holds the table up to what it was last sent: send the new
    // blocks (the last held one is checked, the worker checks the length).
    const size_t held = a.worker_blocks;
    const bool continued =
        held > 0 && s.block_table.size() >= held && s.block_table[held - 1] == a.worker_last_block;
    w->mutable_block_table()->Add(
        s.block_table.begin() + static_cast<ptrdiff_t>(continued ? held : 0), s.block_table.end());
    a.worker_blocks = s.block_table.size();
    a.worker_last_block = s.block_table.empty() ? -1 : s.block_table.back();
    if (continued) {
      w->set_continued(true);
      w->set_block_table_length(static_cast<uint32_t>(s.block_table.size()));
    } else {
      worker::v1::Sampling* ws = w->mutable_sampling();
      ws->set_temperature(so.temperature);
      ws->set_top_p(so.top_p);
      ws->set_top_k(so.top_k);
      ws->set_min_p(so.min_p);
      ws->set_repetition_penalty(so.repetition_penalty);
      ws->set_presence_penalty(so.presence_penalty);
      ws->set_frequency_penalty(so.frequency_penalty);
      ws->set_seed(a.seed);
      for (const auto& [id, bias] : so.logit_bias) {
        ws->add_logit_bias_ids(static_cast<uint32_t>(id));
        ws->add_logit_bias_values(bias);
      }
      w->set_prompt_tokens(static_cast<uint32_t>(a.request.prompt_ids.size()));
      w->set_logprobs(static_cast<uint32_t>(a.request.logprobs));
    }
    const int64_t fed_from = s.context_len - static_cast<int64_t>(s.token_ids.size());
    const bool penalties = so.repetition_penalty != 1.0f || so.presence_penalty != 0.0f ||
                           so.frequency_penalty != 0.0f;
    if (penalties && fed_from > 0 && fed_from != a.worker_position) {
      // The worker has not seen the positions before this chunk (a cached
      // prefix, or a restart after preemption): send them for its history.
      const auto prompt_size = static_cast<int64_t>(a.request.prompt_ids.size());
      for (int64_t p = 0; p < fed_from; ++p) {
        const int32_t t = p < prompt_size ? a.request.prompt_ids[static_cast<size_t>(p)]
                                          : a.generated[static_cast<size_t>(p - prompt_size)];
        w->add_history_token_ids(static_cast<uint32_t>(t));
      }
    }
    a.worker_position = s.context_len;
    w->set_draw_index(a.generated.size());
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

void EngineLoop::RunStep() {
  const absl::Time start = absl::Now();
  bool any = false;
  for (auto& r : ranks_) {
    r->batcher->Schedule(&r->plan);  // reuses the plan's buffers step after step
    any = any || !r->plan.empty();
  }
  if (!any) return;
  // The ranks size the step's exchanges from its largest rank.
  int64_t group_max_tokens = 0;
  for (auto& r : ranks_) group_max_tokens = std::max(group_max_tokens, r->plan.num_tokens());
  // Every rank gets its plan, empty or not: all of them join every
  // collective of the step.
  for (auto& r : ranks_) {
    worker::v1::StepPlan wp = ToWorkerPlan(r->plan, r->link->rank(), group_max_tokens);
    metrics_.step_plan_bytes.Increment(static_cast<double>(wp.ByteSizeLong()));
    if (absl::Status s = r->link->SendPlan(std::move(wp)); !s.ok()) {
      LoseGroup(absl::StrCat("rank ", r->link->rank(), ": ", s.message()));
      return;
    }
  }
  const absl::Time deadline = absl::Now() + options_.step_timeout;
  std::vector<worker::v1::StepResult> results;
  for (auto& r : ranks_) {
    auto result = r->link->AwaitResult(deadline);
    if (!result.ok()) {
      LoseGroup(absl::StrCat("rank ", r->link->rank(), ": ", result.status().message()));
      return;
    }
    results.push_back(*std::move(result));
  }
  ++steps_run_;
  for (size_t i = 0; i < ranks_.size(); ++i) {
    if (results[i].error().empty()) continue;
    if (ranks_.size() > 1) {
      // A failed rank may have left its collectives half done: the group's
      // state cannot be trusted any more.
      LoseGroup(absl::StrCat("rank ", i, " failed step ", steps_run_, ": ", results[i].error()));
      return;
    }
    // One worker: its step's requests fail, the rest go on.
    Rank& rank = *ranks_[i];
    for (const scheduler::ScheduledSequence& s : rank.plan.seqs) {
      if (!active_.contains(s.id)) continue;
      (void)rank.batcher->Abort(s.id);
      rank.released.push_back(s.id);  // the worker may keep its token history
      End(s.id,
          absl::InternalError(absl::StrCat("the worker failed the step: ", results[i].error())));
    }
    scheduler::StepResult empty;
    empty.step = rank.plan.step;
    (void)rank.batcher->OnStepResult(empty);
    return;
  }
  int64_t tokens = 0;
  for (const auto& r : ranks_) tokens += r->plan.num_tokens();
  metrics_.step_duration.Observe(Seconds(absl::Now() - start));
  metrics_.step_tokens.Observe(static_cast<double>(tokens));
  RecordParallelStats(results);
  for (size_t i = 0; i < ranks_.size() && state_ == GroupState::kServing; ++i) {
    // A rank with nothing scheduled joined the step's collectives only; its
    // batcher has no step in flight.
    if (!ranks_[i]->plan.empty()) HandleOutputs(*ranks_[i], results[i]);
  }
}

void EngineLoop::RecordParallelStats(const std::vector<worker::v1::StepResult>& results) {
  double a2a = 0, exposed = 0;
  std::map<int32_t, std::vector<int64_t>> loads;
  for (const worker::v1::StepResult& r : results) {
    a2a += r.all_to_all_seconds();
    exposed += r.all_to_all_exposed_seconds();
    for (const worker::v1::ExpertLoad& l : r.expert_loads()) {
      auto& sum = loads[static_cast<int32_t>(l.layer())];
      sum.resize(static_cast<size_t>(l.tokens_per_expert_size()), 0);
      for (int e = 0; e < l.tokens_per_expert_size() && static_cast<size_t>(e) < sum.size(); ++e) {
        sum[static_cast<size_t>(e)] += l.tokens_per_expert(e);
      }
    }
  }
  metrics_.all_to_all_seconds.Increment(a2a);
  metrics_.all_to_all_exposed_seconds.Increment(std::min(exposed, a2a));
  overlap_window_.emplace_back(a2a, std::min(exposed, a2a));
  while (overlap_window_.size() > 64) overlap_window_.pop_front();
  double total = 0, shown = 0;
  for (const auto& [t, e] : overlap_window_) {
    total += t;
    shown += e;
  }
  if (total > 0) metrics_.overlap_ratio.Set(1.0 - shown / total);
  if (load_window_ != nullptr && !loads.empty()) {
    load_window_->Add(loads);
    // Balancedness moves slowly; recomputing it every 16 steps is plenty.
    if (steps_run_ % 16 == 1) {
      const scheduler::LoadTrace totals = load_window_->Totals();
      for (const auto& [layer, load] : totals.layers) {
        auto it = placement_.layers.find(layer);
        if (it == placement_.layers.end()) continue;
        const double b =
            scheduler::Balancedness(load, it->second, placement_.ranks, placement_.slots_per_rank);
        balancedness_[layer] = b;
        metrics_.ExpertBalancedness(layer).Set(b);
      }
    }
  }
}

void EngineLoop::HandleOutputs(Rank& rank, const worker::v1::StepResult& result) {
  const scheduler::StepPlan& plan = rank.plan;
  absl::flat_hash_map<uint64_t, const scheduler::ScheduledSequence*> scheduled;
  for (const auto& s : plan.seqs) scheduled[s.id] = &s;
  scheduler::StepResult sr;
  sr.step = plan.step;
  const absl::Time now = absl::Now();
  for (const worker::v1::SequenceOutput& out : result.outputs()) {
    auto it = active_.find(out.sequence_id());
    auto sit = scheduled.find(out.sequence_id());
    if (it == active_.end() || sit == scheduled.end()) continue;
    if (!out.error().empty()) {
      // The worker refused this sequence's work and ran the step without it:
      // its request fails alone.
      (void)rank.batcher->Abort(out.sequence_id());
      rank.released.push_back(out.sequence_id());
      End(out.sequence_id(), absl::InternalError(absl::StrCat(
                                 "the worker refused the request's step: ", out.error())));
      continue;
    }
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
    bool stop = (eos || stop_id) && static_cast<int64_t>(a.generated.size()) >= st.min_tokens;
    a.stopped_by_token = stop;

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
    // A stop string wins over a stop token completing it: the text is cut there.
    if (a.sink->stop_requested()) {
      stop = true;
      a.stopped_by_string = true;
    }
    sr.outputs.push_back({out.sequence_id(), token, stop});
  }
  auto finished = rank.batcher->OnStepResult(sr);
  if (!finished.ok()) {
    LoseGroup(absl::StrCat("the scheduler rejected rank ", rank.link->rank(),
                           "'s result: ", finished.status().message()));
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
  if (a.rank < ranks_.size()) ranks_[a.rank]->released.push_back(id);
  const absl::Time now = absl::Now();
  const v1::FinishReason reason =
      a.stopped_by_string && f.reason != scheduler::FinishReason::kAborted
          ? v1::FINISH_REASON_STOP_STRING
          : ToProto(f.reason, stop_token);
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
  if (a.pending_blocks > 0 && a.rank < ranks_.size())
    ranks_[a.rank]->pending_blocks -= a.pending_blocks;
  ids_.erase(a.key);
  active_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  --admitted_;
}

void EngineLoop::FailRequests(const absl::Status& status) {
  for (auto& [id, a] : active_) {
    a->sink->Close(status);
    metrics_.Finished("abort").Increment();
  }
  for (Command& c : held_) {
    c.sink->Close(status);
    metrics_.Finished("abort").Increment();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    admitted_ -= static_cast<int64_t>(active_.size() + held_.size());
  }
  held_.clear();
  active_.clear();
  ids_.clear();
  for (auto& r : ranks_) r->pending_blocks = 0;
}

void EngineLoop::PublishSnapshot() {
  Snapshot s;
  s.world_size = static_cast<int32_t>(members_.size());
  if (state_ == GroupState::kServing) {
    for (auto& r : ranks_) {
      const auto st = r->batcher->stats();
      RankSnapshot rs;
      rs.rank = r->link->rank();
      rs.worker_id = r->link->registration().worker_id();
      rs.ready = true;
      rs.kv_blocks_total = r->batcher->options().num_blocks;
      rs.kv_blocks_used = rs.kv_blocks_total - st.num_free_blocks;
      rs.kv_block_tokens = r->link->registration().kv().block_tokens();
      rs.running = st.num_running;
      s.running += st.num_running;
      s.waiting += st.num_waiting;
      s.kv_blocks_total += rs.kv_blocks_total;
      s.kv_blocks_used += rs.kv_blocks_used;
      metrics_.preemptions.Increment(
          static_cast<double>(std::max<int64_t>(0, st.num_preemptions - r->last_preemptions)));
      r->last_preemptions = st.num_preemptions;
      s.ranks.push_back(rs);
    }
    s.kv_usage_ratio = s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) /
                                                   static_cast<double>(s.kv_blocks_total)
                                             : 0.0;
    s.placement = placement_;
    s.balancedness = balancedness_;
    if (load_window_ != nullptr) s.expert_load = load_window_->Totals();
  }
  s.in_flight_requests = static_cast<int64_t>(active_.size());
  metrics_.requests_running.Set(static_cast<double>(s.running));
  metrics_.requests_waiting.Set(static_cast<double>(s.waiting));
  metrics_.kv_cache_usage_ratio.Set(s.kv_usage_ratio);
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != GroupState::kServing) {
    for (const auto& m : members_) {
      if (m == nullptr) continue;
      RankSnapshot rs;
      rs.rank = m->rank();
      rs.worker_id = m->registration().worker_id();
      rs.kv_block_tokens = m->registration().kv().block_tokens();
      rs.kv_blocks_total = static_cast<int64_t>(m->registration().kv().num_blocks());
      s.ranks.push_back(rs);
    }
  }
  // Admission checks against rank 0's model and the smallest KV cache.
  for (const auto& m : members_) {
    if (m == nullptr) continue;
    if (!s.worker.has_value()) {
      s.worker = m->registration();
    } else if (m->registration().kv().num_blocks() < s.worker->kv().num_blocks()) {
      *s.worker->mutable_kv() = m->registration().kv();
    }
  }
  s.step = steps_run_;
  snapshot_ = s;
}

}  // namespace moeserve
