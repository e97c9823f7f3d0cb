// The building blocks every placement mode shares: how many replicas each
// expert gets, how replicas are packed onto ranks, and a local search that
// lowers the most loaded rank. Pure functions over plain data, no I/O.
//
// A layer under construction is a RankSlots per rank: the experts it holds
// (never one twice) and the tokens they bring it. An expert with c replicas
// brings load / c to each rank holding one, as routing spreads its tokens
// evenly over its replicas.
#ifndef MOESERVE_SCHEDULER_PLACEMENT_SLOT_PACKING_H_
#define MOESERVE_SCHEDULER_PLACEMENT_SLOT_PACKING_H_

#include <cstdint>
#include <vector>

namespace moeserve::scheduler {

struct RankSlots {
  std::vector<int32_t> experts;  // one per filled slot, in slot order
  double load = 0;               // tokens of those slots
};

// Replica counts for the experts `members` (indices into `load`) sharing
// `slots` slots (slots >= members.size()): every member gets one, then each
// spare slot goes to the member with the most tokens per replica, never past
// `max_replicas` (the ranks it could be spread over). Returns counts in the
// order of `members`. Unplaceable spares (every member at max_replicas) are
// left over; the caller's packing then fills them with the lightest experts.
std::vector<int32_t> ReplicaCounts(const std::vector<double>& load,
                                   const std::vector<int32_t>& members, int32_t slots,
                                   int32_t max_replicas);

// Packs `replicas[i]` copies of expert `members[i]`, each carrying
// per_replica[members[i]] tokens, onto ranks [first_rank, first_rank + count)
// of `ranks`, heaviest first, each to the least loaded rank there with a free
// slot that does not hold that expert yet (a rank with fewer slots filled
// wins a tie). Ranks must have room for all of them. If a copy finds only
// ranks that hold its expert, it is swapped with a slot elsewhere in the
// range so that no rank repeats an expert.
void PackReplicas(const std::vector<int32_t>& members, const std::vector<int32_t>& replicas,
                  const std::vector<double>& per_replica, int32_t slots_per_rank,
                  int32_t first_rank, int32_t count, std::vector<RankSlots>* ranks);

// Where a rank of [first_rank, first_rank + count) holds an expert twice,
// swaps the second copy with a slot of another rank there that holds neither.
void FixRepeats(const std::vector<double>& per_replica, int32_t first_rank, int32_t count,
                std::vector<RankSlots>* ranks);

// Local search over ranks [first_rank, first_rank + count): while swapping a
// slot of the most loaded rank with a lighter slot of another rank lowers
// that rank's load without raising the other to it, do the best such swap;
// slot counts stay as they are. Keeps every rank free of repeats. Stops after
// `max_moves` swaps, or once no rank carries more than `good_enough` tokens.
// per_replica[e] is what one replica of e carries.
void RefineBySwaps(const std::vector<double>& per_replica, int32_t slots_per_rank,
                   int32_t first_rank, int32_t count, int32_t max_moves,
                   std::vector<RankSlots>* ranks, double good_enough = 0);

// The slot_expert list of `ranks`, rank by rank.
std::vector<int32_t> SlotExpert(const std::vector<RankSlots>& ranks);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_PLACEMENT_SLOT_PACKING_H_
