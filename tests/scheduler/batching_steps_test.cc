// The scheduling steps one by one: the waiting queue's order, token
// assignment, KV reservation with preemption, admission, and the plan.
#include <memory>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/batching/admit_waiting.h"
#include "scheduler/batching/kv_reservation.h"
#include "scheduler/batching/step_plan.h"
#include "scheduler/batching/token_assignment.h"
#include "scheduler/batching/waiting_queue.h"

namespace moeserve::scheduler {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kBs = 4;

std::unique_ptr<BlockManager> Blocks(int64_t num_blocks) {
  BlockManager::Options o;
  o.num_blocks = num_blocks;
  o.block_size = kBs;
  return *BlockManager::Create(o);
}

// A sequence of `num_tokens` tokens (ids first, first + 1, ...), arrival = id.
std::unique_ptr<Sequence> Seq(uint64_t id, int64_t num_tokens, int priority = 0,
                              int32_t first = 0) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->arrival = id;
  s->priority = priority;
  s->tokens.resize(static_cast<size_t>(num_tokens));
  std::iota(s->tokens.begin(), s->tokens.end(), first);
  s->num_prompt_tokens = num_tokens;
  s->max_tokens = 100;
  return s;
}

// Makes `s` running with `computed` tokens in the cache.
void StartRunning(BlockManager& blocks, Sequence& s, int64_t computed) {
  ASSERT_TRUE(blocks.Allocate(s.id, s.tokens, computed).ok());
  s.num_computed = computed;
}

std::vector<int64_t> Scheduled(const std::vector<Sequence*>& seqs) {
  std::vector<int64_t> n;
  for (const Sequence* s : seqs) n.push_back(s->num_scheduled);
  return n;
}

std::vector<uint64_t> Ids(const std::vector<Sequence*>& seqs) {
  std::vector<uint64_t> ids;
  for (const Sequence* s : seqs) ids.push_back(s->id);
  return ids;
}

TEST(WaitingQueueTest, OrdersByPriorityThenArrival) {
  auto a = Seq(0, 1, 0), b = Seq(1, 1, 5), c = Seq(2, 1, 0), d = Seq(3, 1, 5);
  WaitingQueue q;
  for (Sequence* s : {c.get(), d.get(), a.get(), b.get()}) q.Push(s);
  EXPECT_EQ(q.size(), 4);
  std::vector<uint64_t> order;
  while (!q.empty()) {
    order.push_back(q.front()->id);
    q.PopFront();
  }
  EXPECT_THAT(order, ElementsAre(1, 3, 0, 2));
  EXPECT_EQ(q.front(), nullptr);
}

TEST(WaitingQueueTest, APreemptedSequenceReturnsAheadOfLaterArrivals) {
  auto early = Seq(0, 1), later = Seq(1, 1), high = Seq(2, 1, 1);
  WaitingQueue q;
  q.Push(later.get());
  q.Push(high.get());
  q.Push(early.get());  // preempted: it keeps its arrival
  EXPECT_EQ(q.front()->id, 2u);
  q.PopFront();
  EXPECT_EQ(q.front()->id, 0u);
  EXPECT_TRUE(q.Erase(later.get()));
  EXPECT_FALSE(q.Erase(later.get()));
  EXPECT_FALSE(q.Contains(later.get()));
  EXPECT_EQ(q.size(), 1);
}

TEST(AssignRunningTokensTest, DecodesFirstThenPrefillChunksInOrder) {
  auto blocks = Blocks(64);
  auto p1 = Seq(0, 20), d1 = Seq(1, 5), p2 = Seq(2, 9), d2 = Seq(3, 7);
  StartRunning(*blocks, *p1, 4);
  StartRunning(*blocks, *d1, 4);
  StartRunning(*blocks, *p2, 1);
  StartRunning(*blocks, *d2, 6);
  std::vector<Sequence*> running = {p1.get(), d1.get(), p2.get(), d2.get()};
  // Decodes 1 + 1, then p1 gets 16 of 18, p2 the last 2 of the budget.
  EXPECT_EQ(AssignRunningTokens(running, 20), 20);
  EXPECT_THAT(Scheduled(running), ElementsAre(16, 1, 2, 1));
  // Enough for everything: each prefill gets all it still has to compute.
  EXPECT_EQ(AssignRunningTokens(running, 100), 1 + 1 + 16 + 8);
  EXPECT_THAT(Scheduled(running), ElementsAre(16, 1, 8, 1));
}

TEST(AssignRunningTokensTest, ABudgetBelowTheDecodeCountServesDecodesInOrder) {
  auto blocks = Blocks(64);
  auto d1 = Seq(0, 5), p = Seq(1, 9), d2 = Seq(2, 5), d3 = Seq(3, 5);
  for (Sequence* s : {d1.get(), d2.get(), d3.get()}) StartRunning(*blocks, *s, 4);
  StartRunning(*blocks, *p, 1);
  std::vector<Sequence*> running = {d1.get(), p.get(), d2.get(), d3.get()};
  EXPECT_EQ(AssignRunningTokens(running, 2), 2);
  EXPECT_THAT(Scheduled(running), ElementsAre(1, 0, 1, 0));
}

TEST(ReserveRunningBlocksTest, GrowsTablesWhenBlocksSuffice) {
  auto blocks = Blocks(8);
  auto a = Seq(0, 5), b = Seq(1, 12);
  StartRunning(*blocks, *a, 4);
  StartRunning(*blocks, *b, 4);
  std::vector<Sequence*> running = {a.get(), b.get()};
  AssignRunningTokens(running, 100);
  std::vector<Sequence*> preempted;
  ReserveRunningBlocks(*blocks, running, &preempted);
  EXPECT_TRUE(preempted.empty());
  EXPECT_EQ(blocks->num_tokens(0), 5);
  EXPECT_EQ(blocks->num_tokens(1), 12);
  EXPECT_EQ(blocks->block_table(1).size(), 3u);
  EXPECT_TRUE(blocks->CheckConsistency().ok());
}

TEST(ReserveRunningBlocksTest, PreemptsTheLastRunningSequenceByRecompute) {
  auto blocks = Blocks(4);
  auto a = Seq(0, 5), b = Seq(1, 5), c = Seq(2, 5);
  for (Sequence* s : {a.get(), b.get(), c.get()}) StartRunning(*blocks, *s, 4);  // 3 full blocks
  c->num_generated = 1;
  std::vector<Sequence*> running = {a.get(), b.get(), c.get()};
  AssignRunningTokens(running, 100);  // each needs a second block; 1 is free
  std::vector<Sequence*> preempted;
  ReserveRunningBlocks(*blocks, running, &preempted);
  // a takes the free block, b takes c's.
  EXPECT_THAT(Ids(preempted), ElementsAre(2));
  EXPECT_THAT(Ids(running), ElementsAre(0, 1));
  EXPECT_EQ(c->num_computed, 0);
  EXPECT_EQ(c->num_scheduled, 0);
  EXPECT_EQ(c->num_preemptions, 1);
  EXPECT_EQ(c->num_generated, 1);  // generated tokens stay: they become prompt
  EXPECT_FALSE(blocks->Contains(2));
  EXPECT_EQ(blocks->num_tokens(0), 5);
  EXPECT_EQ(blocks->num_tokens(1), 5);
  EXPECT_EQ(blocks->num_free_blocks(), 0);
  EXPECT_TRUE(blocks->CheckConsistency().ok());
}

TEST(ReserveRunningBlocksTest, TheLastSequencePreemptsItselfWhenNothingElseFrees) {
  auto blocks = Blocks(3);
  auto a = Seq(0, 5), b = Seq(1, 12);
  StartRunning(*blocks, *a, 4);
  StartRunning(*blocks, *b, 4);
  std::vector<Sequence*> running = {a.get(), b.get()};
  AssignRunningTokens(running, 100);  // a: 1 block more; b: 2 more; 1 free
  std::vector<Sequence*> preempted;
  ReserveRunningBlocks(*blocks, running, &preempted);
  EXPECT_THAT(Ids(preempted), ElementsAre(1));
  EXPECT_THAT(Ids(running), ElementsAre(0));
  EXPECT_EQ(blocks->num_tokens(0), 5);
  EXPECT_EQ(blocks->num_free_blocks(), 1);
}

TEST(ReserveRunningBlocksTest, TheFirstSequenceAlwaysGetsItsSlots) {
  auto blocks = Blocks(4);
  auto a = Seq(0, 16), b = Seq(1, 5), c = Seq(2, 5);
  StartRunning(*blocks, *a, 4);
  StartRunning(*blocks, *b, 4);
  StartRunning(*blocks, *c, 4);
  std::vector<Sequence*> running = {a.get(), b.get(), c.get()};
  AssignRunningTokens(running, 100);  // a needs 3 more blocks: all of them
  std::vector<Sequence*> preempted;
  ReserveRunningBlocks(*blocks, running, &preempted);
  EXPECT_THAT(Ids(preempted), ElementsAre(2, 1));
  EXPECT_EQ(blocks->num_tokens(0), 16);
  EXPECT_EQ(blocks->num_free_blocks(), 0);
}

TEST(AdmitWaitingTest, AdmitsInQueueOrderWithinBudgetAndChunksTheLast) {
  auto blocks = Blocks(16);
  auto a = Seq(0, 6), b = Seq(1, 10, 1), c = Seq(2, 3);
  WaitingQueue waiting;
  for (Sequence* s : {a.get(), b.get(), c.get()}) waiting.Push(s);
  std::vector<Sequence*> running;
  EXPECT_EQ(AdmitWaiting(*blocks, waiting, running, 12, 8), 12);
  // b (priority 1) whole, then a chunk of a; c waits: the budget is spent.
  EXPECT_THAT(Ids(running), ElementsAre(1, 0));
  EXPECT_EQ(b->num_scheduled, 10);
  EXPECT_EQ(a->num_scheduled, 2);
  EXPECT_EQ(blocks->num_tokens(0), 2);
  EXPECT_EQ(a->num_cached_prompt_tokens, 0);
  EXPECT_EQ(waiting.front(), c.get());
}

TEST(AdmitWaitingTest, RespectsMaxRunningSeqs) {
  auto blocks = Blocks(16);
  auto r = Seq(9, 5);
  StartRunning(*blocks, *r, 4);
  auto a = Seq(0, 2), b = Seq(1, 2);
  WaitingQueue waiting;
  waiting.Push(a.get());
  waiting.Push(b.get());
  std::vector<Sequence*> running = {r.get()};
  EXPECT_EQ(AdmitWaiting(*blocks, waiting, running, 100, 2), 2);
  EXPECT_THAT(Ids(running), ElementsAre(0, 9));  // kept in scheduling order
  EXPECT_EQ(waiting.size(), 1);
}

TEST(AdmitWaitingTest, StopsAtTheFirstThatDoesNotFitWithoutSkippingAhead) {
  auto blocks = Blocks(4);
  auto r = Seq(9, 5);
  StartRunning(*blocks, *r, 5);  // 2 blocks held
  auto big = Seq(0, 12), small = Seq(1, 2);
  WaitingQueue waiting;
  waiting.Push(big.get());
  waiting.Push(small.get());
  std::vector<Sequence*> running = {r.get()};
  EXPECT_EQ(AdmitWaiting(*blocks, waiting, running, 100, 8), 0);
  EXPECT_EQ(running.size(), 1u);
  EXPECT_EQ(waiting.size(), 2);
  EXPECT_EQ(blocks->num_free_blocks(), 2);
  // With a smaller budget, big's first chunk fits.
  EXPECT_EQ(AdmitWaiting(*blocks, waiting, running, 8, 8), 8);
  EXPECT_EQ(big->num_scheduled, 8);
}

TEST(AdmitWaitingTest, SkipsTheCachedPrefix) {
  auto blocks = Blocks(16);
  auto done = Seq(9, 9);
  StartRunning(*blocks, *done, 9);
  blocks->CacheComputedBlocks(9, done->tokens, 9);
  auto s = Seq(0, 11);  // same first 9 tokens
  WaitingQueue waiting;
  waiting.Push(s.get());
  std::vector<Sequence*> running;
  EXPECT_EQ(AdmitWaiting(*blocks, waiting, running, 100, 8), 3);
  EXPECT_EQ(s->num_computed, 8);
  EXPECT_EQ(s->num_scheduled, 3);
  EXPECT_EQ(s->num_cached_prompt_tokens, 8);
  EXPECT_EQ(blocks->block_table(0)[0], blocks->block_table(9)[0]);
  EXPECT_EQ(blocks->block_table(0)[1], blocks->block_table(9)[1]);
}

TEST(BuildStepPlanTest, DecodesFirstWithTokensPositionsTablesAndSampling) {
  auto blocks = Blocks(16);
  auto p = Seq(0, 10, 0, 100), d = Seq(1, 6, 0, 200), z = Seq(2, 3), idle = Seq(3, 6);
  StartRunning(*blocks, *p, 2);
  StartRunning(*blocks, *d, 5);
  StartRunning(*blocks, *z, 1);
  StartRunning(*blocks, *idle, 5);
  z->max_tokens = 0;  // reads its prompt only: never samples
  std::vector<Sequence*> running = {p.get(), d.get(), z.get(), idle.get()};
  p->num_scheduled = 4;  // a middle chunk
  d->num_scheduled = 1;
  z->num_scheduled = 2;  // its last chunk
  for (Sequence* s : running) ASSERT_TRUE(blocks->Append(s->id, s->num_scheduled).ok());
  StepPlan plan;
  std::vector<Sequence*> in_flight;
  BuildStepPlan(running, *blocks, &plan, &in_flight);
  ASSERT_EQ(plan.seqs.size(), 3u);
  EXPECT_THAT(Ids(in_flight), ElementsAre(1, 0, 2));
  const ScheduledSequence& decode = plan.seqs[0];
  EXPECT_EQ(decode.id, 1u);
  EXPECT_THAT(decode.token_ids, ElementsAre(205));
  EXPECT_EQ(decode.context_len, 6);
  EXPECT_EQ(decode.block_table, blocks->block_table(1));
  EXPECT_TRUE(decode.sample);
  EXPECT_THAT(plan.seqs[1].token_ids, ElementsAre(102, 103, 104, 105));
  EXPECT_EQ(plan.seqs[1].context_len, 6);
  EXPECT_EQ(plan.seqs[1].block_table.size(), 2u);
  EXPECT_FALSE(plan.seqs[1].sample);
  EXPECT_FALSE(plan.seqs[2].sample);
  EXPECT_EQ(plan.num_tokens(), 7);
  EXPECT_TRUE(d->sample);
  EXPECT_FALSE(p->sample);
}

}  // namespace
}  // namespace moeserve::scheduler
