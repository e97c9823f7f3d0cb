// Token sampling on the GPU: the CPU twin's algorithm (kernels/cpu/sampling.cc)
// in three launches (sampling_kernels.h).
#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/sampling_kernels.h"

namespace moeserve::cuda {

void CudaOps::Sample(ConstMatView logits, std::span<const SamplingParams> params,
                     std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
                     std::span<float> logprobs) {
  RequireView(logits, "sample logits");
  const auto rows = static_cast<size_t>(logits.rows);
  Require(params.size() == rows && draw_index.size() == rows && token_ids.size() == rows &&
              logprobs.size() == rows,
          "sample: params, draw_index, token_ids and logprobs need one entry per row");
  Require(logits.rows == 0 || logits.cols > 0, "sample: empty vocabulary");
  if (rows == 0) return;
  const int64_t vocab = logits.cols;
  Require(logits.rows * vocab < (int64_t{1} << 31), "sample: rows * vocab must be < 2^31");

  std::vector<SampleRowParams> row_params(rows);
  std::vector<int32_t> seg_begin, seg_end;
  for (size_t r = 0; r < rows; ++r) {
    const SamplingParams& sp = params[r];
    row_params[r] = {sp.temperature, sp.top_k, sp.top_p, sp.min_p, sp.seed};
    if (RowSorts(row_params[r], vocab)) {
      seg_begin.push_back(static_cast<int32_t>(static_cast<int64_t>(r) * vocab));
      seg_end.push_back(static_cast<int32_t>(static_cast<int64_t>(r) * vocab + vocab));
    }
  }
  const auto segments = static_cast<int64_t>(seg_begin.size());
  HostPack pack;
  const size_t params_off = pack.Put(row_params);
  const size_t begin_off = pack.Put(seg_begin);
  const size_t end_off = pack.Put(seg_end);
  void* meta = sample_meta_.Reserve(pack.bytes().size());
  uploader_.Upload(pack.bytes().data(), meta, pack.bytes().size());

  const int64_t n = logits.rows * vocab;
  const size_t temp_bytes = segments > 0 ? SortTempBytes(logits.rows, vocab, segments) : 0;
  ScratchLayout layout;
  const size_t probs_off = layout.Add<double>(n);
  const size_t sorted_off = layout.Add<double>(segments > 0 ? n : 0);
  const size_t ids_off = layout.Add<int32_t>(segments > 0 ? n : 0);
  const size_t sorted_ids_off = layout.Add<int32_t>(segments > 0 ? n : 0);
  const size_t max_off = layout.Add<float>(logits.rows);
  const size_t sum_off = layout.Add<double>(logits.rows);
  const size_t temp_off = layout.Add<std::byte>(static_cast<int64_t>(temp_bytes));
  void* base = scratch_.Reserve(layout.bytes());

  SampleArgs a;
  a.logits = logits.data;
  a.stride = logits.stride;
  a.rows = logits.rows;
  a.vocab = vocab;
  a.params = DeviceAt<SampleRowParams>(meta, params_off);
  a.draw_index = draw_index.data();
  a.probs = At<double>(base, probs_off);
  a.sorted_probs = segments > 0 ? At<double>(base, sorted_off) : nullptr;
  a.ids = segments > 0 ? At<int32_t>(base, ids_off) : nullptr;
  a.sorted_ids = segments > 0 ? At<int32_t>(base, sorted_ids_off) : nullptr;
  a.row_max = At<float>(base, max_off);
  a.row_sum = At<double>(base, sum_off);
  a.token_ids = token_ids.data();
  a.logprobs = logprobs.data();
  LaunchSampleProbs(a, stream_);
  if (segments > 0) {
    SortRowsDescending(a, DeviceAt<int32_t>(meta, begin_off), DeviceAt<int32_t>(meta, end_off),
                       segments, At<std::byte>(base, temp_off), temp_bytes, stream_);
  }
  LaunchSampleChoose(a, stream_);
}

}  // namespace moeserve::cuda
