#include "runtime/model/deepseek_v4_weights.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moeserve {
namespace {

using Shape = std::vector<int64_t>;

class Manifest {
 public:
  explicit Manifest(const ModelConfig& c) : c_(c) {}

  void Add(std::string name, Shape shape, V4TensorKind kind) {
    out_.push_back({std::move(name), std::move(shape), kind, layer_, mtp_});
  }
  void Float(std::string name, Shape shape) {
    Add(std::move(name), std::move(shape), V4TensorKind::kFloat);
  }
  void Linear(std::string name, Shape shape) {
    Add(std::move(name), std::move(shape), V4TensorKind::kFp8Linear);
  }

  // mHC: each of the attention and FFN sub-blocks mixes hc_mult streams of
  // hidden_size with (2 + hc_mult) * hc_mult coefficients (pre, post and the
  // hc x hc residual matrix), three scales; the head collapses them.
  void HyperConnection(const std::string& p, const std::string& which) {
    const int64_t hc = c_.v4.hc_mult;
    const int64_t mix = (2 + hc) * hc;
    Float(p + "hc_" + which + "_fn", {mix, hc * c_.hidden_size});
    Float(p + "hc_" + which + "_base", {mix});
    Float(p + "hc_" + which + "_scale", {3});
  }
  void HyperConnectionHead(const std::string& p) {
    const int64_t hc = c_.v4.hc_mult;
    Float(p + "hc_head_fn", {hc, hc * c_.hidden_size});
    Float(p + "hc_head_base", {hc});
    Float(p + "hc_head_scale", {1});
  }

  // A compressor of `width`-wide entries every `ratio` tokens.
  void Compressor(const std::string& p, int64_t ratio, int64_t width, int64_t overlap) {
    Float(p + "wkv.weight", {overlap * width, c_.hidden_size});
    Float(p + "wgate.weight", {overlap * width, c_.hidden_size});
    Float(p + "ape", {ratio, overlap * width});
    Float(p + "norm.weight", {width});
  }

  void Attention(const std::string& p, int64_t layer) {
    const DeepseekV4Params& v4 = c_.v4;
    const int64_t h = c_.hidden_size, hd = c_.head_dim, heads = c_.num_attention_heads;
    Linear(p + "wq_a.weight", {c_.q_lora_rank, h});
    Float(p + "q_norm.weight", {c_.q_lora_rank});
    Linear(p + "wq_b.weight", {heads * hd, c_.q_lora_rank});
    Linear(p + "wkv.weight", {hd, h});
    Float(p + "kv_norm.weight", {hd});
    Linear(p + "wo_a.weight", {v4.o_groups * v4.o_lora_rank, heads * hd / v4.o_groups});
    Linear(p + "wo_b.weight", {h, v4.o_groups * v4.o_lora_rank});
    Float(p + "attn_sink", {heads});
    const int64_t ratio = v4.compress_ratio(layer);
    if (ratio == 0) return;
    const int64_t overlap = v4.compressor_overlap(layer);
    Compressor(p + "compressor.", ratio, hd, overlap);
    if (!v4.IsCsaLayer(layer)) return;
    Linear(p + "indexer.wq_b.weight", {v4.index_n_heads * v4.index_head_dim, c_.q_lora_rank});
    Float(p + "indexer.weights_proj.weight", {v4.index_n_heads, h});
    Compressor(p + "indexer.compressor.", ratio, v4.index_head_dim, overlap);
  }

  void Ffn(const std::string& p, int64_t layer) {
    const int64_t h = c_.hidden_size, inter = c_.moe_intermediate_size;
    Float(p + "gate.weight", {c_.n_routed_experts, h});
    if (c_.v4.IsHashLayer(layer)) {
      Add(p + "gate.tid2eid", {c_.vocab_size, c_.num_experts_per_tok}, V4TensorKind::kExpertIds);
    } else {
      Float(p + "gate.bias", {c_.n_routed_experts});
    }
    for (int64_t e = 0; e < c_.n_routed_experts; ++e) {
      const std::string x = absl::StrCat(p, "experts.", e, ".");
      Add(x + "w1.weight", {inter, h}, V4TensorKind::kExpert);
      Add(x + "w2.weight", {h, inter}, V4TensorKind::kExpert);
      Add(x + "w3.weight", {inter, h}, V4TensorKind::kExpert);
    }
    if (c_.n_shared_experts == 0) return;
    const int64_t shared = c_.n_shared_experts * inter;
    Linear(p + "shared_experts.w1.weight", {shared, h});
    Linear(p + "shared_experts.w2.weight", {h, shared});
    Linear(p + "shared_experts.w3.weight", {shared, h});
  }

  void Block(const std::string& p, int64_t layer) {
    Float(p + "attn_norm.weight", {c_.hidden_size});
    Attention(p + "attn.", layer);
    Float(p + "ffn_norm.weight", {c_.hidden_size});
    Ffn(p + "ffn.", layer);
    HyperConnection(p, "attn");
    HyperConnection(p, "ffn");
  }

  std::vector<V4Tensor> Build() {
    const int64_t h = c_.hidden_size;
    Float("embed.weight", {c_.vocab_size, h});
    for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      layer_ = l;
      Block(absl::StrCat("layers.", l, "."), l);
    }
    // An MTP module: a layer of its own over the main model's final streams
    // (hnorm, h_proj) and the next token's embedding (enorm, e_proj), with
    // its own head collapse and norm; it shares embed and head.
    mtp_ = true;
    for (int64_t k = 0; k < c_.num_nextn_predict_layers; ++k) {
      layer_ = c_.num_hidden_layers + k;
      const std::string p = absl::StrCat("mtp.", k, ".");
      Block(p, layer_);
      Float(p + "enorm.weight", {h});
      Float(p + "hnorm.weight", {h});
      Linear(p + "e_proj.weight", {h, h});
      Linear(p + "h_proj.weight", {h, h});
      Float(p + "norm.weight", {h});
      HyperConnectionHead(p);
    }
    mtp_ = false;
    layer_ = -1;
    Float("head.weight", {c_.vocab_size, h});
    Float("norm.weight", {h});
    HyperConnectionHead("");
    return std::move(out_);
  }

 private:
  const ModelConfig& c_;
  int64_t layer_ = -1;  // of the tensors added next
  bool mtp_ = false;
  std::vector<V4Tensor> out_;
};

// A dtype the tensor's kind does not allow, or nothing.
std::string DtypeMismatch(const V4Tensor& t, DType dtype, ExpertDtype expert_dtype) {
  switch (t.kind) {
    case V4TensorKind::kFloat:
      if (dtype == DType::kF32 || dtype == DType::kBF16) return "";
      return "expected F32 or BF16";
    case V4TensorKind::kFp8Linear:
      if (dtype == DType::kF8E4M3 || dtype == DType::kF32 || dtype == DType::kBF16) return "";
      return "expected F8_E4M3 with block scales (or F32, BF16)";
    case V4TensorKind::kExpert:
      if (expert_dtype == ExpertDtype::kFp4 && dtype != DType::kF4E2M1x2) {
        return "config.json says expert_dtype \"fp4\": expected I8 holding two FP4 codes a byte";
      }
      if (expert_dtype == ExpertDtype::kFp8 && dtype != DType::kF8E4M3) {
        return "config.json says expert_dtype \"fp8\": expected F8_E4M3 with block scales";
      }
      return "";
    case V4TensorKind::kExpertIds:
      return "";
  }
  return "unknown kind";
}

}  // namespace

std::vector<V4Tensor> DeepseekV4Tensors(const ModelConfig& config) {
  return Manifest(config).Build();
}

absl::StatusOr<int64_t> CheckDeepseekV4Checkpoint(Checkpoint& checkpoint,
                                                  const ModelConfig& config) {
  std::set<std::string> accounted;
  for (const V4Tensor& t : DeepseekV4Tensors(config)) {
    if (t.kind == V4TensorKind::kExpertIds) {
      auto ids = checkpoint.ReadIds(t.name, t.shape, config.n_routed_experts,
                                    "expert ids (n_routed_experts) for hash routing");
      if (!ids.ok()) return ids.status();
      accounted.insert(t.name);
      continue;
    }
    auto layout = checkpoint.CheckWeight(t.name, t.shape);
    if (!layout.ok()) return layout.status();
    const std::string mismatch = DtypeMismatch(t, layout->dtype, config.v4.expert_dtype);
    if (!mismatch.empty()) {
      auto info = checkpoint.Info(t.name);
      return absl::InvalidArgumentError(absl::StrCat(
          info.ok() ? absl::StrCat(checkpoint.dir(), ": ") : std::string(), "tensor ", t.name,
          ": dtype ", std::string(DTypeName(info.ok() ? info->dtype : layout->dtype)), "; ",
          mismatch));
    }
    accounted.insert(t.name);
    if (!layout->scale_name.empty()) accounted.insert(layout->scale_name);
  }
  std::vector<std::string> unknown;
  for (const std::string& name : checkpoint.TensorNames()) {
    if (!accounted.contains(name)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    const size_t shown = std::min<size_t>(unknown.size(), 8);
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint.dir(), ": ", unknown.size(),
        " tensor(s) that are not part of the DeepSeek-V4 layout this config.json implies: ",
        absl::StrJoin(unknown.begin(), unknown.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
        unknown.size() > shown ? ", ..." : ""));
  }
  return static_cast<int64_t>(accounted.size());
}

}  // namespace moeserve
