// A model split over an expert-parallel group computes what the single
// process computes: ranks are threads here, each with its own model, KV cache
// and slice of the experts, joined by a real Gloo group over loopback TCP.
#include <cmath>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "runtime/parallel/gloo_communicator.h"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

// The group computes each expert over a different set of rows (tokens of
// every rank together) than the single process does, so OpenBLAS may block
// the GEMMs differently: float32 rounding of a few ulps per operation, below
// 1e-5 in log-probabilities across the tiny models' layers. A token routed
// to a wrong expert or combined with a wrong weight moves them by > 1e-2.
constexpr double kGroupTolerance = 5e-5;

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// Each rank's sequences: rank r feeds sequence r in prefill chunks then
// decodes; the last rank of a group of >= 3 has none (it still joins every
// collective). Steps: one 20-token prefill chunk, one 13-token chunk, then
// 4 single-token decodes.
struct Workload {
  std::vector<std::vector<std::vector<int32_t>>> chunks;  // [seq][step] tokens fed
};

Workload MakeWorkload(int seqs, int64_t vocab) {
  Workload w;
  for (int s = 0; s < seqs; ++s) {
    const auto tokens = RandomTokens(37, vocab, 100 + static_cast<uint32_t>(s));
    std::vector<std::vector<int32_t>> steps = {{tokens.begin(), tokens.begin() + 20},
                                               {tokens.begin() + 20, tokens.begin() + 33}};
    for (size_t i = 33; i < 37; ++i) steps.push_back({tokens[i]});
    w.chunks.push_back(std::move(steps));
  }
  return w;
}

// Log-softmax rows per sequence and step, run by one process with every
// sequence in one batch.
using Rows = std::vector<std::vector<std::vector<float>>>;  // [seq][step] rows

Rows RunSingleProcess(const std::string& dir, const Workload& w) {
  LoadedModel m = LoadForTest(dir);
  std::vector<TestSequence> seqs(w.chunks.size());
  Rows out(w.chunks.size());
  for (size_t step = 0; step < w.chunks[0].size(); ++step) {
    std::vector<TestSequence*> ptrs;
    std::vector<std::vector<int32_t>> chunks;
    for (size_t s = 0; s < seqs.size(); ++s) {
      ptrs.push_back(&seqs[s]);
      chunks.push_back(w.chunks[s][step]);
    }
    auto rows = FeedChunks(m, ptrs, chunks);
    for (size_t s = 0; s < seqs.size(); ++s) out[s].push_back(rows[s]);
  }
  return out;
}

struct GroupRun {
  Rows rows;                                          // by sequence, as in RunSingleProcess
  std::vector<ForwardStats> stats;                    // by rank, of the last step
  std::vector<std::vector<ExchangeShape>> exchanges;  // [rank][step]
};

// How RunGroup runs its ranks beyond ParallelOptions.
struct GroupOptions {
  bool graphs = false;
  int64_t max_exchange_tokens = ModelOptions{}.max_exchange_tokens;
  // Tell every rank the step's largest rank's tokens, as the coordinator
  // does; otherwise they assume max_batch_tokens.
  bool tell_group_max = true;
};

// Runs the workload on a group of `ranks` threads. Sequence s lives on rank
// s % ranks; ranks >= seqs have none.
GroupRun RunGroup(const std::string& dir, const Workload& w, int ranks, ParallelOptions parallel,
                  GroupOptions group = {}) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  GroupRun run;
  run.rows.resize(w.chunks.size());
  run.stats.resize(static_cast<size_t>(ranks));
  run.exchanges.resize(static_cast<size_t>(ranks));
  const size_t steps = w.chunks[0].size();
  std::vector<int64_t> group_max(steps, 0);  // by step: the largest rank's tokens
  for (size_t step = 0; step < steps; ++step) {
    for (int r = 0; r < ranks; ++r) {
      int64_t tokens = 0;
      for (size_t s = static_cast<size_t>(r); s < w.chunks.size();
           s += static_cast<size_t>(ranks)) {
        tokens += static_cast<int64_t>(w.chunks[s][step].size());
      }
      group_max[step] = std::max(group_max[step], tokens);
    }
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r, parallel]() mutable {
      GlooOptions go;
      go.rank = r;
      go.size = ranks;
      auto comm = GlooCommunicator::Create(go, store);
      ASSERT_TRUE(comm.ok()) << comm.status();
      ModelOptions options;
      options.parallel = parallel;
      options.parallel.comm = comm->get();
      options.graphs = group.graphs;
      options.max_exchange_tokens = group.max_exchange_tokens;
      LoadedModel m = LoadForTest(dir, options);
      ASSERT_NE(m.model, nullptr);
      std::vector<size_t> mine;
      for (size_t s = static_cast<size_t>(r); s < w.chunks.size();
           s += static_cast<size_t>(ranks)) {
        mine.push_back(s);
      }
      std::vector<TestSequence> seqs(mine.size());
      for (size_t step = 0; step < w.chunks[0].size(); ++step) {
        std::vector<TestSequence*> ptrs;
        std::vector<std::vector<int32_t>> chunks;
        for (size_t i = 0; i < mine.size(); ++i) {
          ptrs.push_back(&seqs[i]);
          chunks.push_back(w.chunks[mine[i]][step]);
        }
        auto rows = FeedChunks(m, ptrs, chunks, group.tell_group_max ? group_max[step] : 0);
        for (size_t i = 0; i < mine.size(); ++i) run.rows[mine[i]].push_back(rows[i]);
        run.exchanges[static_cast<size_t>(r)].push_back(m.model->last_forward_stats().exchange);
      }
      run.stats[static_cast<size_t>(r)] = m.model->last_forward_stats();
    });
  }
  for (auto& t : threads) t.join();
  return run;
}

double MaxDiff(const Rows& a, const Rows& b) {
  double m = 0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t s = 0; s < std::min(a.size(), b.size()); ++s) {
    EXPECT_EQ(a[s].size(), b[s].size()) << "sequence " << s;
    for (size_t t = 0; t < std::min(a[s].size(), b[s].size()); ++t) {
      EXPECT_EQ(a[s][t].size(), b[s][t].size());
      for (size_t i = 0; i < std::min(a[s][t].size(), b[s][t].size()); ++i) {
        m = std::max(m, static_cast<double>(std::fabs(a[s][t][i] - b[s][t][i])));
      }
    }
  }
  return m;
}

// A placement with `redundant` extra slots in all: the contiguous one, then
// on each rank replicas of experts held by the next rank.
ExpertPlacement WithReplicas(const ModelConfig& c, int ranks, int redundant) {
  const auto experts = static_cast<int32_t>(c.n_routed_experts);
  const int32_t base = (experts + ranks - 1) / ranks;
  const int32_t spare = (redundant + ranks - 1) / ranks;
  const int32_t slots = base + spare;
  ExpertPlacement p;
  p.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    std::vector<int32_t> slot_expert;
    for (int32_t r = 0; r < ranks; ++r) {
      for (int32_t i = 0; i < base; ++i) slot_expert.push_back((r * base + i) % experts);
      for (int32_t i = 0; i < spare; ++i) {
        slot_expert.push_back((((r + 1) % ranks) * base + i + static_cast<int32_t>(l)) % experts);
      }
    }
    auto lp = MakeLayerPlacement(ranks, slots, experts, slot_expert);
    EXPECT_TRUE(lp.ok()) << lp.status();
    if (lp.ok()) p.layers[static_cast<size_t>(l)] = *std::move(lp);
  }
  return p;
}

class ExpertParallelModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const {
    if (GetParam() == "fixture")
      return std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
    return MakeTinyForTest(GetParam(), "bf16", 3);
  }
};

TEST_P(ExpertParallelModelTest, GroupsOf1To4RanksComputeWhatOneProcessComputes) {
  const std::string dir = Dir();
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  const Workload w = MakeWorkload(3, probe.model->config().vocab_size);
  const Rows single = RunSingleProcess(dir, w);
  for (int ranks : {1, 2, 4}) {
    ParallelOptions p;
    p.micro_batches = 2;
    p.overlap = true;
    const GroupRun group = RunGroup(dir, w, ranks, p);
    const double diff = MaxDiff(single, group.rows);
    EXPECT_LT(diff, kGroupTolerance) << ranks << " ranks";
    RecordProperty("max_abs_logprob_diff_" + std::to_string(ranks) + "_ranks",
                   std::to_string(diff));
    std::cout << ranks << " ranks: largest log-probability difference " << diff << "\n";
  }
}

TEST_P(ExpertParallelModelTest, RedundantReplicasShareTheLoadAndChangeNothing) {
  const std::string dir = Dir();
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  const ModelConfig& c = probe.model->config();
  const Workload w = MakeWorkload(3, c.vocab_size);
  const Rows single = RunSingleProcess(dir, w);
  ParallelOptions p;
  p.micro_batches = 2;
  p.overlap = true;
  p.placement = WithReplicas(c, 2, 4);
  const GroupRun group = RunGroup(dir, w, 2, p);
  EXPECT_LT(MaxDiff(single, group.rows), kGroupTolerance);
  // Expert loads count logical experts: every rank's pairs, top_k per token.
  for (size_t r = 0; r < group.stats.size(); ++r) {
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const auto& load = group.stats[r].expert_load[static_cast<size_t>(l)];
      if (!c.IsMoeLayer(l)) {
        EXPECT_TRUE(load.empty());
        continue;
      }
      ASSERT_EQ(load.size(), static_cast<size_t>(c.n_routed_experts));
      int64_t pairs = 0;
      for (int64_t v : load) pairs += v;
      // The last step decodes one token per sequence on this rank.
      const int64_t seqs_here = r == 0 ? 2 : 1;
      EXPECT_EQ(pairs, seqs_here * c.num_experts_per_tok) << "rank " << r << " layer " << l;
    }
  }
}

TEST_P(ExpertParallelModelTest, OverlapOnAndOffGiveBitIdenticalResults) {
  const std::string dir = Dir();
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  const Workload w = MakeWorkload(4, probe.model->config().vocab_size);
  ParallelOptions on;
  on.micro_batches = 2;
  on.overlap = true;
  ParallelOptions off = on;
  off.overlap = false;
  const GroupRun a = RunGroup(dir, w, 2, on);
  const GroupRun b = RunGroup(dir, w, 2, off);
  EXPECT_EQ(MaxDiff(a.rows, b.rows), 0.0);
  // Both ranks report all-to-all time; without overlap all of it is exposed.
  for (const ForwardStats& s : b.stats) {
    EXPECT_GT(s.communication.all_to_all_seconds, 0.0);
    EXPECT_DOUBLE_EQ(s.communication.exposed_seconds, s.communication.all_to_all_seconds);
  }
}

// Decode steps replayed from captured graphs in a group, the exchanges
// (host-staged Gloo) inside the graph: the same results as eager steps. The
// workload's last four steps decode, so each rank warms its bucket up, then
// captures, then replays twice. Five sequences on two ranks: three run in
// the bucket of 4 (a padding row), two in the bucket of 2; two sequences on
// three ranks: one rank has none and runs its empty steps eagerly beside
// the others' replays. Two micro-batches without the overlap: the bucket
// splits at a fixed row. Padding changes only the products' row counts:
// float32 reassociation.
TEST_P(ExpertParallelModelTest, ReplayedDecodeStepsInAGroupEqualEagerOnes) {
  const std::string dir = Dir();
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  ParallelOptions p;
  p.micro_batches = 2;
  p.overlap = false;
  for (auto [ranks, seqs] : {std::pair{2, 5}, std::pair{3, 2}}) {
    const Workload w = MakeWorkload(seqs, probe.model->config().vocab_size);
    const GroupRun eager = RunGroup(dir, w, ranks, p);
    GroupOptions graphs;
    graphs.graphs = true;
    const GroupRun replayed = RunGroup(dir, w, ranks, p, graphs);
    EXPECT_LE(MaxDiff(eager.rows, replayed.rows), 1e-4) << ranks << " ranks";
    EXPECT_GT(replayed.stats[0].graph_batch_size, 0) << ranks << " ranks";
    for (size_t r = 0; r < eager.stats.size(); ++r) {
      EXPECT_EQ(replayed.stats[r].expert_load, eager.stats[r].expert_load)
          << ranks << " ranks, rank " << r;
    }
  }
}

// A step's exchange is sized by its largest rank: with the coordinator's
// figure, the prefill steps of 40 and 26 tokens on rank 0 exchange through
// 8 tokens at a time in 5 and 4 rounds (without overlap), the decode steps
// in one round of 2; without it every rank assumes the planned maximum.
// Splitting an expert's rows between rounds changes only the products' row
// counts (float32 reassociation at most), within the group tolerance.
TEST_P(ExpertParallelModelTest, ExchangesInRoundsComputeWhatOneExchangeComputes) {
  const std::string dir = Dir();
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  const Workload w = MakeWorkload(3, probe.model->config().vocab_size);
  const Rows single = RunSingleProcess(dir, w);
  ParallelOptions p;
  p.micro_batches = 2;
  p.overlap = true;  // off for the steps of several rounds
  GroupOptions rounds;
  rounds.max_exchange_tokens = 8;
  const GroupRun group = RunGroup(dir, w, 2, p, rounds);
  EXPECT_LT(MaxDiff(single, group.rows), kGroupTolerance);
  for (size_t r = 0; r < 2; ++r) {
    const std::vector<ExchangeShape>& e = group.exchanges[r];
    ASSERT_EQ(e.size(), 6u);
    EXPECT_EQ(e[0].capacity, 8);
    EXPECT_EQ(e[0].rounds, 5);    // 2 x 20 tokens on rank 0
    EXPECT_EQ(e[1].rounds, 4);    // 2 x 13
    EXPECT_EQ(e[2].capacity, 2);  // decode: 2 sequences on rank 0
    EXPECT_EQ(e[2].rounds, 1);
  }
  // Without the figure: the planned maximum (LoadForTest's 2048 tokens)
  // caps at max_exchange_tokens, every step.
  GroupOptions assumed;
  assumed.max_exchange_tokens = 64;
  assumed.tell_group_max = false;
  const GroupRun blind = RunGroup(dir, w, 2, p, assumed);
  EXPECT_LT(MaxDiff(single, blind.rows), kGroupTolerance);
  EXPECT_EQ(blind.exchanges[1][5].capacity, 64);
  EXPECT_EQ(blind.exchanges[1][5].rounds, 32);
}

INSTANTIATE_TEST_SUITE_P(Models, ExpertParallelModelTest,
                         ::testing::Values("fixture", "deepseek_v3", "qwen3_moe"),
                         [](const auto& info) { return info.param; });

TEST(ExpertParallelModelOptionsTest, RejectsAPlacementForAnotherGroupOrModel) {
  const std::string dir = MakeTinyForTest("deepseek_v3", "bf16", 3);
  LoadedModel probe = LoadForTest(dir);
  ASSERT_NE(probe.model, nullptr);
  ModelOptions options;
  options.parallel.placement = WithReplicas(probe.model->config(), 2, 2);  // for 2 ranks
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok());
  auto model = LoadModel(**checkpoint, WeightSelection{}, *probe.backend, options);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("is for 2 ranks"), std::string::npos) << model.status();
  options = {};
  options.parallel.micro_batches = 1;
  options.parallel.overlap = true;
  model = LoadModel(**checkpoint, WeightSelection{}, *probe.backend, options);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("2 micro-batches"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::testing
