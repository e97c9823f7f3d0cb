// A randomized simulation: many requests with shared prefixes, priorities,
// stops and aborts against a small KV cache, with a fake worker that keeps the
// KV content of every block. Every step checks the plan's invariants; at the
// end every request must have completed with the right number of tokens.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "scheduler/batching/continuous_batcher.h"

namespace moeserve::scheduler {
namespace {

constexpr int64_t kBs = 8;
constexpr int64_t kBlocks = 48;  // 384 tokens
constexpr int64_t kBudget = 48;
constexpr int64_t kMaxRunning = 12;
constexpr int kRequests = 1000;

struct SimRequest {
  Request request;
  std::vector<int32_t> tokens;  // prompt, then generated
  int64_t generated = 0;
  bool stop_sent = false;
  bool done = false;
};

struct KvSlot {
  int32_t token = -1;
  int64_t position = -1;
};

class BatcherSimulationTest : public ::testing::TestWithParam<std::tuple<bool, uint32_t>> {
 protected:
  void SetUp() override {
    ContinuousBatcher::Options o;
    o.block_size = kBs;
    o.num_blocks = kBlocks;
    o.max_batch_tokens = kBudget;
    o.max_running_seqs = kMaxRunning;
    o.max_waiting = 24;
    o.enable_prefix_caching = std::get<0>(GetParam());
    batcher_ = *ContinuousBatcher::Create(o);
    rng_.seed(std::get<1>(GetParam()));
    kv_.resize(static_cast<size_t>(kBlocks * kBs));
    for (int p = 0; p < 4; ++p) {
      std::vector<int32_t> prefix(rng_() % 70);
      for (int32_t& t : prefix) t = static_cast<int32_t>(rng_() % 50);
      prefixes_.push_back(prefix);
    }
  }

  Request NewRequest(uint64_t id) {
    Request r;
    r.id = id;
    r.prompt_ids = prefixes_[rng_() % prefixes_.size()];
    const size_t tail = 1 + rng_() % 60;
    for (size_t i = 0; i < tail; ++i) r.prompt_ids.push_back(static_cast<int32_t>(rng_() % 50));
    // Now and then a long generation, some too long for the whole cache.
    r.max_tokens = static_cast<int64_t>(rng_() % 15 == 0 ? 250 + rng_() % 150 : rng_() % 80);
    r.priority = static_cast<int>(rng_() % 3);
    return r;
  }

  void ArriveSome() {
    const uint32_t n = rng_() % 4 == 0 ? rng_() % 4 : 0;
    for (uint32_t i = 0; i < n && next_id_ < kRequests; ++i) pending_.push_back(next_id_++);
    while (!pending_.empty()) {
      const uint64_t id = pending_.front();
      if (!reqs_.contains(id)) reqs_[id].request = NewRequest(id);
      SimRequest& r = reqs_[id];
      const absl::Status s = batcher_->Add(r.request);
      if (absl::IsResourceExhausted(s)) return;  // retried at a later step
      pending_.erase(pending_.begin());
      const int64_t stored = static_cast<int64_t>(r.request.prompt_ids.size()) +
                             std::max<int64_t>(r.request.max_tokens - 1, 0);
      if (stored > kBlocks * kBs) {
        ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
        r.done = true;
        ++rejected_;
        continue;
      }
      ASSERT_TRUE(s.ok()) << s;
      r.tokens = r.request.prompt_ids;
    }
  }

  void CheckPlan(const StepPlan& plan) {
    ASSERT_LE(plan.num_tokens(), kBudget);
    ASSERT_LE(static_cast<int64_t>(plan.seqs.size()), kMaxRunning);
    ASSERT_LE(batcher_->stats().num_running, kMaxRunning);
    std::map<int32_t, uint64_t> written;  // block -> the sequence writing it
    std::multiset<int32_t> all_blocks;
    std::set<uint64_t> ids;
    bool seen_prefill = false;
    for (const ScheduledSequence& s : plan.seqs) {
      ASSERT_TRUE(ids.insert(s.id).second) << "sequence " << s.id << " twice in a plan";
      const SimRequest& r = reqs_.at(s.id);
      ASSERT_FALSE(r.done);
      const auto n = static_cast<int64_t>(s.token_ids.size());
      const int64_t start = s.context_len - n;
      ASSERT_GT(n, 0);
      ASSERT_LE(s.context_len, static_cast<int64_t>(r.tokens.size()));
      ASSERT_TRUE(std::equal(s.token_ids.begin(), s.token_ids.end(), r.tokens.begin() + start))
          << "sequence " << s.id << " fed the wrong tokens";
      ASSERT_EQ(s.sample, s.context_len == static_cast<int64_t>(r.tokens.size()) &&
                              r.generated < r.request.max_tokens);
      const bool decode = n == 1 && start + 1 == static_cast<int64_t>(r.tokens.size());
      if (!decode) seen_prefill = true;
      ASSERT_FALSE(decode && seen_prefill) << "a decode after a prefill chunk";
      ASSERT_EQ(static_cast<int64_t>(s.block_table.size()), (s.context_len + kBs - 1) / kBs);
      std::set<int32_t> own(s.block_table.begin(), s.block_table.end());
      ASSERT_EQ(own.size(), s.block_table.size()) << "a block twice in one table";
      for (int32_t b : s.block_table) {
        ASSERT_GE(b, 0);
        ASSERT_LT(b, kBlocks);
        all_blocks.insert(b);
      }
      // The KV before the chunk is this sequence's, whoever wrote it.
      for (int64_t p = 0; p < start; ++p) {
        const KvSlot& slot = Slot(s.block_table, p);
        ASSERT_EQ(slot.position, p) << "sequence " << s.id;
        ASSERT_EQ(slot.token, r.tokens[static_cast<size_t>(p)]) << "sequence " << s.id;
      }
      for (int64_t b = start / kBs; b < static_cast<int64_t>(s.block_table.size()); ++b) {
        ASSERT_TRUE(written.emplace(s.block_table[static_cast<size_t>(b)], s.id).second);
      }
    }
    // A block being written appears in no other table of the step.
    for (const auto& [block, id] : written) ASSERT_EQ(all_blocks.count(block), 1u);
    ASSERT_TRUE(batcher_->block_manager().CheckConsistency().ok())
        << batcher_->block_manager().CheckConsistency();
  }

  KvSlot& Slot(const std::vector<int32_t>& table, int64_t position) {
    const int64_t block = table[static_cast<size_t>(position / kBs)];
    return kv_[static_cast<size_t>(block * kBs + position % kBs)];
  }

  // The fake worker: writes the KV of the fed tokens and samples.
  StepResult Execute(const StepPlan& plan) {
    StepResult result;
    result.step = plan.step;
    for (const ScheduledSequence& s : plan.seqs) {
      const auto n = static_cast<int64_t>(s.token_ids.size());
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = s.context_len - n + i;
        Slot(s.block_table, p) = {s.token_ids[static_cast<size_t>(i)], p};
      }
      if (s.sample) {
        const bool stop = rng_() % 200 == 0;
        result.outputs.push_back({s.id, static_cast<int32_t>(rng_() % 50), stop});
      }
    }
    std::shuffle(result.outputs.begin(), result.outputs.end(), rng_);
    return result;
  }

  void Apply(const StepResult& result) {
    // Aborted sequences' outputs are ignored by the batcher: skip them too.
    for (const SequenceOutput& o : result.outputs) {
      SimRequest& r = reqs_.at(o.id);
      if (r.done) continue;
      r.tokens.push_back(o.token);
      ++r.generated;
      r.stop_sent = o.finished;
    }
    auto finished = batcher_->OnStepResult(result);
    ASSERT_TRUE(finished.ok()) << finished.status();
    for (const FinishedSequence& f : *finished) {
      SimRequest& r = reqs_.at(f.id);
      ASSERT_FALSE(r.done);
      r.done = true;
      ASSERT_EQ(f.num_generated_tokens, r.generated);
      if (f.reason == FinishReason::kStop) {
        ASSERT_TRUE(r.stop_sent);
        ++stopped_;
      } else {
        ASSERT_EQ(f.reason, FinishReason::kLength);
        ASSERT_EQ(r.generated, r.request.max_tokens);
        ++completed_;
      }
    }
  }

  void AbortOne() {
    std::vector<uint64_t> live;
    for (const auto& [id, r] : reqs_) {
      if (!r.done && !std::count(pending_.begin(), pending_.end(), id)) live.push_back(id);
    }
    if (live.empty()) return;
    const uint64_t id = live[rng_() % live.size()];
    const int64_t free_before = batcher_->block_manager().num_free_blocks();
    auto usage = batcher_->Abort(id);
    ASSERT_TRUE(usage.ok()) << usage.status();
    ASSERT_EQ(usage->num_generated_tokens, reqs_[id].generated);
    ASSERT_GE(batcher_->block_manager().num_free_blocks(), free_before);
    ASSERT_FALSE(batcher_->block_manager().Contains(id)) << "blocks kept after abort";
    reqs_[id].done = true;
    ++aborted_;
  }

  int64_t LiveCount() const {
    int64_t n = 0;
    for (const auto& [id, r] : reqs_) {
      n += !r.done && !std::count(pending_.begin(), pending_.end(), id);
    }
    return n;
  }

  std::unique_ptr<ContinuousBatcher> batcher_;
  std::mt19937 rng_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::map<uint64_t, SimRequest> reqs_;
  std::vector<uint64_t> pending_;  // arrived, not yet accepted (queue full)
  std::vector<KvSlot> kv_;
  uint64_t next_id_ = 0;
  int rejected_ = 0, aborted_ = 0, stopped_ = 0, completed_ = 0;
};

TEST_P(BatcherSimulationTest, EveryRequestCompletesAndEveryStepKeepsTheInvariants) {
  int steps = 0;
  for (; steps < 100000; ++steps) {
    ASSERT_NO_FATAL_FAILURE(ArriveSome());
    const ContinuousBatcher::Stats stats = batcher_->stats();
    ASSERT_EQ(stats.num_running + stats.num_waiting, LiveCount());
    if (next_id_ == kRequests && pending_.empty() && batcher_->idle()) break;
    if (rng_() % 150 == 0) {
      ASSERT_NO_FATAL_FAILURE(AbortOne());
    }
    const StepPlan plan = batcher_->Schedule();
    if (plan.empty()) {
      ASSERT_TRUE(batcher_->idle()) << "requests wait but nothing was scheduled";
      continue;
    }
    ASSERT_NO_FATAL_FAILURE(CheckPlan(plan));
    const StepResult result = Execute(plan);
    if (rng_() % 150 == 0) {
      ASSERT_NO_FATAL_FAILURE(AbortOne());  // while the step is in flight
    }
    ASSERT_NO_FATAL_FAILURE(Apply(result));
  }
  ASSERT_TRUE(batcher_->idle()) << "not done after " << steps << " steps";
  const ContinuousBatcher::Stats stats = batcher_->stats();
  std::printf(
      "%d steps: %d completed, %d stopped, %d aborted, %d rejected; %ld preemptions, "
      "%ld of %ld prompt tokens from the prefix cache\n",
      steps, completed_, stopped_, aborted_, rejected_, static_cast<long>(stats.num_preemptions),
      static_cast<long>(stats.prefix_cache_hit_tokens),
      static_cast<long>(stats.prefix_cache_queried_tokens));
  EXPECT_EQ(rejected_ + aborted_ + stopped_ + completed_, kRequests);
  EXPECT_GT(completed_, kRequests / 2);
  EXPECT_GT(rejected_, 0);
  EXPECT_GT(batcher_->stats().num_preemptions, 0) << "the cache never ran short";
  if (std::get<0>(GetParam())) {
    EXPECT_GT(batcher_->stats().prefix_cache_hit_tokens, 0);
  }
  EXPECT_EQ(batcher_->block_manager().num_free_blocks(), kBlocks);
  EXPECT_EQ(batcher_->block_manager().num_sequences(), 0);
}

INSTANTIATE_TEST_SUITE_P(Seeds, BatcherSimulationTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Range(1u, 7u)));

}  // namespace
}  // namespace moeserve::scheduler
