// Qwen3-MoE against an independent, naive double-precision implementation of
// Hugging Face transformers' modeling_qwen3_moe.py written here from its
// definition (no shared code with the engine beyond reading weights).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

class NaiveQwen3 {
 public:
  explicit NaiveQwen3(Checkpoint& ckpt) : ckpt_(ckpt), j_(ckpt.config_json()) {}

  // Log-probabilities [tokens][vocab] for every position of `tokens`.
  Mat Run(const std::vector<int32_t>& tokens) {
    const int64_t hidden = j_["hidden_size"];
    const int64_t layers = j_["num_hidden_layers"];
    Mat embed = W("model.embed_tokens.weight");
    Mat h;
    for (int32_t t : tokens) h.push_back(embed[static_cast<size_t>(t)]);
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l);
      Mat x = Norm(h, V(p + ".input_layernorm.weight"));
      Add(h, Attention(x, p + ".self_attn"));
      x = Norm(h, V(p + ".post_attention_layernorm.weight"));
      Add(h, IsSparse(l) ? Moe(x, p + ".mlp") : Ffn(x, p + ".mlp"));
    }
    h = Norm(h, V("model.norm.weight"));
    Mat logits = MatMulT(h, j_.value("tie_word_embeddings", false) ? embed : W("lm_head.weight"));
    (void)hidden;
    for (auto& row : logits) {
      const double m = *std::max_element(row.begin(), row.end());
      double s = 0;
      for (double v : row) s += std::exp(v - m);
      for (double& v : row) v = v - m - std::log(s);
    }
    return logits;
  }

 private:
  bool IsSparse(int64_t l) const {
    for (const auto& m : j_.value("mlp_only_layers", nlohmann::json::array())) {
      if (m.get<int64_t>() == l) return false;
    }
    return (l + 1) % j_.value("decoder_sparse_step", 1) == 0;
  }

  Mat W(const std::string& name) {
    auto info = ckpt_.Info(name);
    EXPECT_TRUE(info.ok()) << info.status();
    auto t = ckpt_.ReadF32(name, info->shape);
    EXPECT_TRUE(t.ok()) << t.status();
    const int64_t rows = info->shape[0];
    const int64_t cols = info->shape.size() > 1 ? info->shape[1] : 1;
    Mat m(static_cast<size_t>(rows), std::vector<double>(static_cast<size_t>(cols)));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) m[r][c] = t->f32()[r * cols + c];
    }
    return m;
  }
  std::vector<double> V(const std::string& name) {
    Mat m = W(name);
    std::vector<double> v;
    for (auto& r : m) v.push_back(r[0]);
    return v;
  }

  static Mat MatMulT(const Mat& x, const Mat& w) {  // x w^T
    Mat y(x.size(), std::vector<double>(w.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      for (size_t o = 0; o < w.size(); ++o) {
        y[i][o] = std::inner_product(x[i].begin(), x[i].end(), w[o].begin(), 0.0);
      }
    }
    return y;
  }
  std::vector<double> NormRow(const std::vector<double>& x, const std::vector<double>& w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r =
        1.0 / std::sqrt(ss / static_cast<double>(x.size()) + j_.value("rms_norm_eps", 1e-6));
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
  }
  Mat Norm(const Mat& x, const std::vector<double>& w) const {
    Mat y;
    for (const auto& row : x) y.push_back(NormRow(row, w));
    return y;
  }
  static void Add(Mat& h, const Mat& d) {
    for (size_t i = 0; i < h.size(); ++i) {
      for (size_t c = 0; c < h[i].size(); ++c) h[i][c] += d[i][c];
    }
  }
  // Rotate-half RoPE on one head vector at position `pos`.
  void Rope(std::vector<double>& v, size_t pos) const {
    const size_t d = v.size();
    const double theta = j_.value("rope_theta", 10000.0);
    std::vector<double> out(d);
    for (size_t i = 0; i < d / 2; ++i) {
      const double ang = static_cast<double>(pos) *
                         std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
      out[i] = v[i] * std::cos(ang) - v[i + d / 2] * std::sin(ang);
      out[i + d / 2] = v[i + d / 2] * std::cos(ang) + v[i] * std::sin(ang);
    }
    v = out;
  }
  Mat Attention(const Mat& x, const std::string& p) {
    const size_t heads = j_["num_attention_heads"], kv_heads = j_["num_key_value_heads"],
                 d = j_["head_dim"];
    Mat q = MatMulT(x, W(p + ".q_proj.weight")), k = MatMulT(x, W(p + ".k_proj.weight")),
        v = MatMulT(x, W(p + ".v_proj.weight"));
    const auto qn = V(p + ".q_norm.weight"), kn = V(p + ".k_norm.weight");
    auto head = [&](Mat& m, size_t t, size_t hh) {
      return std::vector<double>(m[t].begin() + static_cast<long>(hh * d),
                                 m[t].begin() + static_cast<long>((hh + 1) * d));
    };
    const size_t T = x.size();
    Mat out(T, std::vector<double>(heads * d, 0.0));
    for (size_t t = 0; t < T; ++t) {
      for (size_t hh = 0; hh < heads; ++hh) {
        auto qv = NormRow(head(q, t, hh), qn);
        Rope(qv, t);
        const size_t kvh = hh / (heads / kv_heads);
        std::vector<double> scores;
        for (size_t s = 0; s <= t; ++s) {
          auto kv = NormRow(head(k, s, kvh), kn);
          Rope(kv, s);
          scores.push_back(std::inner_product(qv.begin(), qv.end(), kv.begin(), 0.0) /
                           std::sqrt(static_cast<double>(d)));
        }
        const double m = *std::max_element(scores.begin(), scores.end());
        double z = 0;
        for (double& sc : scores) z += (sc = std::exp(sc - m));
        for (size_t s = 0; s <= t; ++s) {
          for (size_t c = 0; c < d; ++c) out[t][hh * d + c] += scores[s] / z * v[s][kvh * d + c];
        }
      }
    }
    return MatMulT(out, W(p + ".o_proj.weight"));
  }
  Mat Ffn(const Mat& x, const std::string& p) {
    Mat g = MatMulT(x, W(p + ".gate_proj.weight")), u = MatMulT(x, W(p + ".up_proj.weight"));
    for (size_t i = 0; i < g.size(); ++i) {
      for (size_t c = 0; c < g[i].size(); ++c)
        g[i][c] = g[i][c] / (1 + std::exp(-g[i][c])) * u[i][c];
    }
    return MatMulT(g, W(p + ".down_proj.weight"));
  }
  Mat Moe(const Mat& x, const std::string& p) {
    const size_t experts = j_["num_experts"], top_k = j_["num_experts_per_tok"];
    Mat logits = MatMulT(x, W(p + ".gate.weight"));
    Mat out(x.size(), std::vector<double>(x[0].size(), 0.0));
    for (size_t t = 0; t < x.size(); ++t) {
      std::vector<double> prob(experts);
      const double m = *std::max_element(logits[t].begin(), logits[t].end());
      double z = 0;
      for (size_t e = 0; e < experts; ++e) z += (prob[e] = std::exp(logits[t][e] - m));
      for (double& pr : prob) pr /= z;
      std::vector<size_t> order(experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return prob[a] > prob[b]; });
      double sum = 0;
      for (size_t i = 0; i < top_k; ++i) sum += prob[order[i]];
      for (size_t i = 0; i < top_k; ++i) {
        const double w = j_.value("norm_topk_prob", false) ? prob[order[i]] / sum : prob[order[i]];
        Mat y = Ffn({x[t]}, p + ".experts." + std::to_string(order[i]));
        for (size_t c = 0; c < y[0].size(); ++c) out[t][c] += w * y[0][c];
      }
    }
    return out;
  }

  Checkpoint& ckpt_;
  nlohmann::json j_;
};

TEST(Qwen3MoeReferenceTest, MatchesANaiveDoublePrecisionImplementation) {
  const std::string dir = MakeTinyForTest("qwen3_moe", "bf16", 11);
  LoadedModel m = LoadForTest(dir);
  ASSERT_NE(m.model, nullptr);
  const std::vector<int32_t> tokens = {0, 5, 77, 300, 12, 999, 5, 64, 1000, 3};
  const std::vector<float> ours = RunChunked(m, tokens, 1 << 20);
  NaiveQwen3 naive(*m.checkpoint);
  const Mat ref = naive.Run(tokens);
  const size_t vocab = ref[0].size();
  double max_err = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (size_t v = 0; v < vocab; ++v) {
      max_err = std::max(max_err, std::fabs(ours[t * vocab + v] - ref[t][v]));
    }
  }
  // float32 against double over 3 layers: each op rounds at ~6e-8 relative;
  // log-probabilities of magnitude ~7 accumulate errors of order 1e-6. A
  // wiring mistake (wrong KV head, rope style, norm, routing) moves them by
  // more than 1e-2.
  std::printf("qwen3_moe: largest |logprob - naive double| = %.3g\n", max_err);
  EXPECT_LT(max_err, 1e-4);
}

}  // namespace
}  // namespace moeserve::testing
