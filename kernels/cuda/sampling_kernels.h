// Launchers of token sampling, the device twin of kernels/cpu/sampling.cc.
//
// 1. LaunchSampleProbs: per row, the logits' maximum and sum of exponentials
//    (for the log-probability) and, for temperature > 0, the unnormalized
//    tempered probabilities exp((x - max) / T) in double (NaN -> 0).
// 2. SortRowsDescending: rows that use top-k or top-p get their
//    probabilities sorted, descending and stable (ties keep the lower id),
//    with cub's segmented radix sort.
// 3. LaunchSampleChoose: greedy rows take the first maximal logit; the others
//    run the CPU twin's filter (top_k, top_p, min_p) and inverse CDF on one
//    thread, in the CPU's order of summation, with the same counter-based
//    uniform draw (SplitMix64 of seed and draw index).
#ifndef MOESERVE_KERNELS_CUDA_SAMPLING_KERNELS_H_
#define MOESERVE_KERNELS_CUDA_SAMPLING_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace moeserve::cuda {

struct SampleRowParams {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  uint64_t seed;
};

struct SampleArgs {
  const float* logits = nullptr;  // [rows, vocab], row stride `stride`
  int64_t stride = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  const SampleRowParams* params = nullptr;  // [rows]
  const uint64_t* draw_index = nullptr;     // [rows]
  double* probs = nullptr;                  // [rows, vocab]
  double* sorted_probs = nullptr;           // [rows, vocab], rows that sort
  int32_t* ids = nullptr;                   // [rows, vocab]: 0..vocab-1 per row
  int32_t* sorted_ids = nullptr;            // [rows, vocab]
  float* row_max = nullptr;                 // [rows]
  double* row_sum = nullptr;                // [rows]
  int32_t* token_ids = nullptr;             // [rows]
  float* logprobs = nullptr;                // [rows]
};

// Whether a row sorts its candidates (temperature > 0 and top_k or top_p on).
bool RowSorts(const SampleRowParams& p, int64_t vocab);

void LaunchSampleProbs(const SampleArgs& args, cudaStream_t stream);

// Bytes of temporary storage SortRowsDescending needs for `segments` rows.
size_t SortTempBytes(int64_t rows, int64_t vocab, int64_t segments);
// Sorts rows `segment_rows[0, segments)` (device) of probs/ids into
// sorted_probs/sorted_ids. `segment_begin` and `segment_end` are device
// arrays of element offsets (row * vocab, row * vocab + vocab).
void SortRowsDescending(const SampleArgs& args, const int32_t* segment_begin,
                        const int32_t* segment_end, int64_t segments, void* temp, size_t temp_bytes,
                        cudaStream_t stream);

void LaunchSampleChoose(const SampleArgs& args, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_SAMPLING_KERNELS_H_
