// Host-side description of one attention call's batch for the paged
// attention kernel: its sequences, their block tables and the thread blocks'
// work items, packed into one upload. Internal to kernels/cuda/.
#ifndef MOESERVE_KERNELS_CUDA_ATTENTION_BATCH_H_
#define MOESERVE_KERNELS_CUDA_ATTENTION_BATCH_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda/attention_kernel.h"
#include "kernels/cuda/contracts.h"
#include "kernels/ops.h"

namespace moeserve::cuda {

struct AttentionBatch {
  std::vector<AttnSeq> seqs;
  std::vector<int32_t> tables;  // every sequence's block table, one after another
  std::vector<AttnItem> items;
  int64_t max_context = 0;

  // Adds a sequence whose context spans `blocks` table entries; returns its index.
  int32_t AddSeq(int64_t num_tokens, int64_t context_len, const int32_t* table, int64_t blocks) {
    seqs.push_back({static_cast<int32_t>(num_tokens), static_cast<int32_t>(context_len),
                    static_cast<int32_t>(tables.size())});
    tables.insert(tables.end(), table, table + blocks);
    max_context = std::max(max_context, context_len);
    return static_cast<int32_t>(seqs.size() - 1);
  }
  int32_t AddSeq(const SeqSlice& s, int64_t block_size) {
    return AddSeq(s.num_tokens, s.context_len, s.block_table.data(),
                  CeilDiv(s.context_len, block_size));
  }

  struct Offsets {
    size_t seqs = 0, tables = 0, items = 0;
  };
  // Appends the three arrays to `pack`.
  Offsets PackInto(HostPack& pack) const {
    Offsets o;
    o.seqs = pack.Put(seqs);
    o.tables = pack.Put(tables);
    o.items = pack.Put(items);
    return o;
  }
  // Points `p` at the uploaded arrays.
  void Bind(const void* device, const Offsets& o, AttnParams& p) const {
    p.seqs = DeviceAt<AttnSeq>(device, o.seqs);
    p.block_tables = DeviceAt<int32_t>(device, o.tables);
    p.items = DeviceAt<AttnItem>(device, o.items);
    p.num_items = static_cast<int32_t>(items.size());
  }
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_ATTENTION_BATCH_H_
