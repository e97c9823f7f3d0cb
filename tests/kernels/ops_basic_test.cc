// Dense and elementwise CPU ops against hand-checked values and naive
// double-precision reimplementations.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

using testing::RandomTensor;
using testing::RandomVector;

class OpsBasicTest : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ops_ = CreateCpuOps();
};

TEST_F(OpsBasicTest, EmbeddingCopiesRows) {
  Tensor table = Tensor::FromF32({3, 2}, {0, 1, 10, 11, 20, 21});
  Tensor out = Tensor::Zeros(DType::kF32, {3, 2});
  const std::vector<int32_t> ids = {2, 0, 2};
  ops_->Embedding(table, ids, out.mat());
  EXPECT_EQ(std::vector<float>(out.f32(), out.f32() + 6),
            (std::vector<float>{20, 21, 0, 1, 20, 21}));
}

TEST_F(OpsBasicTest, RmsNormHandChecked) {
  // Row [3, 4]: mean square 12.5, so x / sqrt(12.5) = [0.848528, 1.131371].
  Tensor x = Tensor::FromF32({1, 2}, {3, 4});
  Tensor w = Tensor::FromF32({2}, {1, 2});
  Tensor out = Tensor::Empty(DType::kF32, {1, 2});
  ops_->RmsNorm(x.mat(), w, 0.0f, out.mat());
  // Float32 math on O(1) values: a few ulps (~1e-7).
  EXPECT_NEAR(out.f32()[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(out.f32()[1], 2 * 4.0 / std::sqrt(12.5), 1e-6);
}

TEST_F(OpsBasicTest, RmsNormMatchesNaiveInPlaceOnStridedView) {
  const int64_t rows = 3, cols = 37, stride = 41;
  Tensor buf = RandomTensor({rows, stride}, 1, 3.0f);
  const Tensor orig = buf.Clone();
  Tensor w = RandomTensor({cols}, 2);
  const float eps = 1e-6f;
  MatView x{buf.f32() + 2, rows, cols, stride};
  ops_->RmsNorm(x, w, eps, x);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = orig.f32() + r * stride + 2;
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += static_cast<double>(in[c]) * in[c];
    const double inv = 1.0 / std::sqrt(ss / cols + eps);
    for (int64_t c = 0; c < cols; ++c) {
      // Three float roundings of O(1) values: relative error < 1e-6.
      EXPECT_NEAR(x.row(r)[c], in[c] * inv * w.f32()[c], 1e-6 * (1 + std::fabs(in[c] * inv)));
    }
    // The columns outside the view are untouched.
    EXPECT_EQ(buf.f32()[r * stride], orig.f32()[r * stride]);
    EXPECT_EQ(buf.f32()[r * stride + 39], orig.f32()[r * stride + 39]);
  }
}

TEST_F(OpsBasicTest, LinearHonoursRowStridesOfBothViews) {
  const int64_t t = 4, in = 7, out = 5;
  Tensor xbuf = RandomTensor({t, 10}, 3);
  Tensor ybuf = Tensor::Zeros(DType::kF32, {t, 12});
  Tensor w = RandomTensor({out, in}, 4);
  ConstMatView x{xbuf.f32() + 3, t, in, 10};
  MatView y{ybuf.f32() + 2, t, out, 12};
  ops_->Linear(x, w, y);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double want = 0;
      for (int64_t k = 0; k < in; ++k)
        want += static_cast<double>(x.row(r)[k]) * w.f32()[o * in + k];
      // 7-term float dot product of values in [-1, 1]: error < 7 * 2^-24 * 7.
      EXPECT_NEAR(y.row(r)[o], want, 1e-5);
    }
    for (int64_t c : {0, 1, 7, 8, 11}) EXPECT_EQ(ybuf.f32()[r * 12 + c], 0.0f) << "column " << c;
  }
}

TEST_F(OpsBasicTest, LinearWithNoRowsIsANoOp) {
  Tensor w = RandomTensor({3, 2}, 5);
  ops_->Linear(ConstMatView{nullptr, 0, 2, 2}, w, MatView{nullptr, 0, 3, 3});
}

TEST_F(OpsBasicTest, AddAccumulates) {
  Tensor a = Tensor::FromF32({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::FromF32({2, 2}, {10, 20, 30, 40});
  ops_->Add(a.mat(), b.mat());
  EXPECT_EQ(std::vector<float>(b.f32(), b.f32() + 4), (std::vector<float>{11, 22, 33, 44}));
}

TEST_F(OpsBasicTest, GatedFfnMatchesNaive) {
  const int64_t t = 3, hidden = 6, inter = 10;
  Tensor x = RandomTensor({t, hidden}, 6, 2.0f);
  Tensor gate = RandomTensor({inter, hidden}, 7), up = RandomTensor({inter, hidden}, 8);
  Tensor down = RandomTensor({hidden, inter}, 9);
  Tensor out = Tensor::Empty(DType::kF32, {t, hidden});
  ops_->GatedFfn(x.mat(), gate, up, down, out.mat());
  for (int64_t r = 0; r < t; ++r) {
    std::vector<double> act(inter);
    for (int64_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int64_t k = 0; k < hidden; ++k) {
        g += static_cast<double>(x.f32()[r * hidden + k]) * gate.f32()[i * hidden + k];
        u += static_cast<double>(x.f32()[r * hidden + k]) * up.f32()[i * hidden + k];
      }
      act[i] = g / (1 + std::exp(-g)) * u;
    }
    for (int64_t o = 0; o < hidden; ++o) {
      double want = 0;
      for (int64_t i = 0; i < inter; ++i) want += act[i] * down.f32()[o * inter + i];
      // Two chained float products with O(10) intermediates: absolute 1e-5.
      EXPECT_NEAR(out.f32()[r * hidden + o], want, 1e-5);
    }
  }
}

TEST_F(OpsBasicTest, GatherAndScatterAdd) {
  Tensor x = Tensor::FromF32({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor g = Tensor::Empty(DType::kF32, {4, 2});
  const std::vector<int32_t> rows = {2, 0, 2, 1};
  ops_->GatherRows(x.mat(), rows, g.mat());
  EXPECT_EQ(std::vector<float>(g.f32(), g.f32() + 8), (std::vector<float>{5, 6, 1, 2, 5, 6, 3, 4}));

  Tensor y = Tensor::Zeros(DType::kF32, {2, 2});
  const std::vector<int32_t> dst = {1, 0, 1};
  const std::vector<float> weights = {0.5f, 2.0f, 1.0f};
  ops_->ScatterAddRows(x.mat(), dst, weights, y.mat());
  // Row 1 receives 0.5*[1,2] + [5,6]; row 0 receives 2*[3,4]: exact in float.
  EXPECT_EQ(std::vector<float>(y.f32(), y.f32() + 4), (std::vector<float>{6, 8, 5.5f, 7}));
}

TEST_F(OpsBasicTest, LogSoftmaxMatchesNaiveInPlace) {
  const int64_t rows = 2, cols = 50;
  Tensor x = RandomTensor({rows, cols}, 10, 20.0f);
  const Tensor orig = x.Clone();
  ops_->LogSoftmax(x.mat(), x.mat());
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = orig.f32() + r * cols;
    double max = -INFINITY, sum = 0;
    for (int64_t c = 0; c < cols; ++c) max = std::max(max, static_cast<double>(in[c]));
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(in[c] - max);
    for (int64_t c = 0; c < cols; ++c) {
      // One float rounding of values below 64 in magnitude: half an ulp <= 1.9e-6.
      EXPECT_NEAR(x.f32()[r * cols + c], in[c] - max - std::log(sum), 4e-6);
    }
  }
}

TEST_F(OpsBasicTest, CacheWriteFollowsTheBlockTable) {
  const int64_t width = 3;
  testing::TestCache cache(/*num_blocks=*/6, /*block_size=*/4, width);
  const std::vector<int32_t> table_a = {5, 2}, table_b = {0};
  // Sequence a: 3 new tokens at positions 4..6 (block 2, slots 0..2);
  // sequence b: 2 new tokens at positions 1..2 (block 0, slots 1..2).
  const std::vector<SeqSlice> seqs = {{0, 3, 7, table_a}, {3, 2, 3, table_b}};
  Tensor values = RandomTensor({5, width}, 11);
  ops_->CacheWrite(values.mat(), HostSeqTable::Build(seqs, 5, 4).View(), cache.view);
  auto expect_row = [&](int32_t block, int64_t slot, int64_t batch_row) {
    for (int64_t c = 0; c < width; ++c) {
      EXPECT_EQ(reinterpret_cast<const float*>(cache.view.token(block, slot))[c],
                values.f32()[batch_row * width + c])
          << "block " << block << " slot " << slot;
    }
  };
  expect_row(2, 0, 0);
  expect_row(2, 1, 1);
  expect_row(2, 2, 2);
  expect_row(0, 1, 3);
  expect_row(0, 2, 4);
  int64_t written = 0;
  for (float v : cache.storage) written += std::isnan(v) ? 0 : 1;
  EXPECT_EQ(written, 5 * width);  // nothing else was touched
}

TEST_F(OpsBasicTest, Bf16Conversion) {
  const std::vector<uint16_t> in = {0x3f80, 0xc000, 0x0000, 0x4049, 0x7f80};
  std::vector<float> out(in.size());
  ConvertBf16ToF32(in.data(), static_cast<int64_t>(in.size()), out.data());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 3.140625f);  // 0x4049: 1.5703125 * 2
  EXPECT_EQ(out[4], std::numeric_limits<float>::infinity());
}

TEST_F(OpsBasicTest, ShapeContractViolationAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS may have started threads
  Tensor x = Tensor::Zeros(DType::kF32, {2, 3});
  Tensor w = Tensor::Zeros(DType::kF32, {4, 5});  // should be [4, 3]
  Tensor y = Tensor::Zeros(DType::kF32, {2, 4});
  EXPECT_DEATH(ops_->Linear(x.mat(), w, y.mat()), "linear weight");
}

}  // namespace
}  // namespace moeserve
