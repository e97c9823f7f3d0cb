#include "kernels/seq_table.h"

#include <algorithm>

#include "kernels/ops.h"

namespace moeserve {

HostSeqTable HostSeqTable::Build(std::span<const SeqSlice> seqs, int64_t rows, int64_t block_size,
                                 int64_t num_seqs, int64_t max_blocks, int64_t max_tokens,
                                 int64_t max_context) {
  HostSeqTable t;
  t.rows = rows;
  t.max_tokens = max_tokens;
  t.max_context = max_context;
  // The blocks a sequence's context needs (a longer table's tail is unused).
  auto needed = [block_size](const SeqSlice& s) {
    return std::min<int64_t>(static_cast<int64_t>(s.block_table.size()),
                             block_size > 0 ? (s.context_len + block_size - 1) / block_size : 0);
  };
  int64_t longest = 0;
  for (const SeqSlice& s : seqs) {
    longest = std::max<int64_t>(longest, needed(s));
    t.max_tokens = std::max(t.max_tokens, s.num_tokens);
    t.max_context = std::max(t.max_context, s.context_len);
  }
  t.max_blocks = std::max(max_blocks, longest);
  const auto n = static_cast<size_t>(std::max<int64_t>(num_seqs, static_cast<int64_t>(seqs.size())));
  t.token_begin.assign(n, 0);
  t.num_tokens.assign(n, 0);
  t.context_len.assign(n, 0);
  t.block_tables.assign(n * static_cast<size_t>(t.max_blocks), 0);
  t.slots.assign(static_cast<size_t>(rows), -1);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqSlice& s = seqs[i];
    t.token_begin[i] = static_cast<int32_t>(s.token_begin);
    t.num_tokens[i] = static_cast<int32_t>(s.num_tokens);
    t.context_len[i] = static_cast<int32_t>(s.context_len);
    std::copy_n(s.block_table.begin(), needed(s),
                t.block_tables.begin() + static_cast<std::ptrdiff_t>(i * static_cast<size_t>(t.max_blocks)));
    // Slots of the new tokens, where the table covers them (the ops check
    // the table; a short one is the caller's bug they report).
    for (int64_t j = 0; j < s.num_tokens; ++j) {
      const int64_t row = s.token_begin + j;
      const int64_t pos = s.context_len - s.num_tokens + j;
      const int64_t b = block_size > 0 ? pos / block_size : -1;
      if (row < 0 || row >= rows || pos < 0 || b < 0 ||
          b >= static_cast<int64_t>(s.block_table.size())) {
        continue;
      }
      t.slots[static_cast<size_t>(row)] =
          static_cast<int32_t>(s.block_table[static_cast<size_t>(b)] * block_size + pos % block_size);
    }
  }
  return t;
}

SeqTable HostSeqTable::View() const {
  SeqTable v;
  v.token_begin = token_begin.data();
  v.num_tokens = num_tokens.data();
  v.context_len = context_len.data();
  v.block_tables = block_tables.data();
  v.slots = slots.data();
  v.num_seqs = num_seqs();
  v.rows = rows;
  v.max_blocks = max_blocks;
  v.max_tokens = max_tokens;
  v.max_context = max_context;
  return v;
}

}  // namespace moeserve
