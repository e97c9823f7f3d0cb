// The DeepSeek-V3 engine against DeepSeek's own reference implementation
// (inference/model.py in float32; see ../shared/fixtures/README.md).
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

// Both engines compute in float32 and differ only in summation order
// (OpenBLAS vs PyTorch GEMMs, blocked softmax sums, double-accumulated norms).
// Over 4 layers that moves log-probabilities by at most 1.05e-5 on these
// fixtures (the test prints the largest difference). 5e-5 leaves 5x headroom
// for other BLAS builds and is 20x tighter than the 1e-3 the project asks
// for; a wrong position, scale or routing decision moves them by > 1e-2.
constexpr double kLogprobTolerance = 5e-5;
constexpr double kGreedyMargin = 0.01;

class GoldenTest : public ::testing::TestWithParam<std::tuple<std::string, MlaForm>> {};

nlohmann::json ReadGolden(const std::string& dir) {
  std::ifstream in(dir + "/golden.json");
  EXPECT_TRUE(in.good()) << "cannot read " << dir << "/golden.json";
  return nlohmann::json::parse(in);
}

int32_t Argmax(const float* row, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

TEST_P(GoldenTest, MatchesReferenceImplementation) {
  const auto& [fixture, form] = GetParam();
  const std::string dir = std::string(MOESERVE_FIXTURES_DIR) + "/" + fixture;
  ModelOptions options;
  options.mla_form = form;
  LoadedModel m = LoadForTest(dir, options);
  ASSERT_NE(m.model, nullptr);
  const int64_t vocab = m.model->config().vocab_size;
  const nlohmann::json golden = ReadGolden(dir);
  double max_err = 0;
  int compared = 0;
  for (const auto& c : golden.at("cases")) {
    const auto prompt = c.at("prompt_ids").get<std::vector<int32_t>>();
    TestSequence seq;
    const std::vector<float> lp = FeedChunks(m, {&seq}, {prompt})[0];
    ASSERT_EQ(lp.size(), prompt.size() * static_cast<size_t>(vocab));
    const auto& positions = c.at("positions");
    ASSERT_EQ(positions.size(), prompt.size());
    for (size_t i = 0; i < prompt.size(); ++i) {
      const float* row = lp.data() + i * static_cast<size_t>(vocab);
      const auto& p = positions[i];
      if (!p.at("next_id").is_null()) {
        const double err =
            std::fabs(row[p.at("next_id").get<int>()] - p.at("next_logprob").get<double>());
        max_err = std::max(max_err, err);
        EXPECT_LE(err, kLogprobTolerance) << fixture << " prompt position " << i;
      }
      const auto ids = p.at("top_ids").get<std::vector<int>>();
      const auto lps = p.at("top_logprobs").get<std::vector<double>>();
      for (size_t k = 0; k < ids.size(); ++k) {
        const double err = std::fabs(row[ids[k]] - lps[k]);
        max_err = std::max(max_err, err);
        EXPECT_LE(err, kLogprobTolerance) << fixture << " position " << i << " top-" << k;
        ++compared;
      }
    }
    // Greedy continuation, fed the reference's tokens so that one near-tie
    // cannot derail the rest of the comparison.
    std::vector<float> row(lp.end() - vocab, lp.end());
    for (const auto& g : c.at("greedy")) {
      const int32_t id = g.at("id").get<int32_t>();
      const double err = std::fabs(row[static_cast<size_t>(id)] - g.at("logprob").get<double>());
      max_err = std::max(max_err, err);
      EXPECT_LE(err, kLogprobTolerance) << fixture << " greedy token " << id;
      if (g.at("margin").get<double>() > kGreedyMargin) {
        EXPECT_EQ(Argmax(row.data(), vocab), id) << fixture << " greedy step";
      }
      row = FeedChunks(m, {&seq}, {{id}})[0];
    }
  }
  EXPECT_GT(compared, 1000);
  std::printf("%s: largest |logprob - reference| = %.3g over %d top-5 entries\n", fixture.c_str(),
              max_err, compared);
}

std::string CaseName(const ::testing::TestParamInfo<GoldenTest::ParamType>& info) {
  static const char* const kForms[] = {"auto", "prefill", "absorbed"};
  return std::get<0>(info.param).substr(std::string("deepseek_v3_small_").size()) + "_" +
         kForms[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, GoldenTest,
    ::testing::Combine(::testing::Values("deepseek_v3_small_bf16", "deepseek_v3_small_fp8"),
                       ::testing::Values(MlaForm::kAuto, MlaForm::kPrefill, MlaForm::kAbsorbed)),
    CaseName);

}  // namespace
}  // namespace moeserve::testing
