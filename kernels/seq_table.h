// A ragged batch's sequences as the cache write and the attention ops read
// them: arrays in backend memory, read when the op runs, so that a captured
// step (kernels/stream.h, Graph) replays over whatever the host wrote into
// the same arrays for the next step; and host bounds, fixed for every run.
//
// Sequence i's num_tokens[i] new tokens occupy batch rows [token_begin[i],
// token_begin[i] + num_tokens[i]) and positions [context_len[i] -
// num_tokens[i], context_len[i]); its block table is block_tables[i *
// max_blocks, + ceil(context_len[i] / block_size)). An entry with
// num_tokens 0 takes no part (the padding of a batch-size bucket). slots[r]
// is where row r's key goes in the cache, block * block_size + offset, or -1
// for a row that writes nothing (padding).
#ifndef MOESERVE_KERNELS_SEQ_TABLE_H_
#define MOESERVE_KERNELS_SEQ_TABLE_H_

#include <cstdint>
#include <span>
#include <vector>

namespace moeserve {

struct SeqSlice;

struct SeqTable {
  // Backend memory.
  const int32_t* token_begin = nullptr;   // [num_seqs]
  const int32_t* num_tokens = nullptr;    // [num_seqs]
  const int32_t* context_len = nullptr;   // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs * max_blocks]
  const int32_t* slots = nullptr;         // [rows]
  // Host values, the same for every run of a captured step.
  int64_t num_seqs = 0;
  int64_t rows = 0;         // batch rows the table describes
  int64_t max_blocks = 0;   // block table stride
  int64_t max_tokens = 0;   // >= every num_tokens
  int64_t max_context = 0;  // >= every context_len; <= max_blocks * block_size
};

// The host side of a SeqTable, built from slices: what a caller uploads (or,
// on a backend whose memory is host memory, points the ops at directly).
struct HostSeqTable {
  std::vector<int32_t> token_begin, num_tokens, context_len, block_tables, slots;
  int64_t rows = 0;
  int64_t max_blocks = 0;
  int64_t max_tokens = 0;
  int64_t max_context = 0;

  // `seqs` over `rows` batch rows of a cache of `block_size` tokens per
  // block. `num_seqs` pads the table with entries of no tokens (0: as many
  // as seqs); `max_blocks` fixes the table stride (0: the longest table).
  // Bounds are at least those given (for a bucket's fixed bounds).
  static HostSeqTable Build(std::span<const SeqSlice> seqs, int64_t rows, int64_t block_size,
                            int64_t num_seqs = 0, int64_t max_blocks = 0, int64_t max_tokens = 0,
                            int64_t max_context = 0);

  int64_t num_seqs() const { return static_cast<int64_t>(token_begin.size()); }
  // A SeqTable over these vectors: for host-accessible backends and tests.
  SeqTable View() const;
};

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_SEQ_TABLE_H_
