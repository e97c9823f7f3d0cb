// The pure half of `moeserve bench`: length distributions, the drawn workload
// and the report statistics.
#include "tools/moeserve/bench_stats.h"

#include <cmath>
#include <numeric>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;

TEST(PercentileTest, InterpolatesLinearlyBetweenClosestRanks) {
  const std::vector<double> s = {1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(Percentile(s, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(s, 50), 3);
  EXPECT_DOUBLE_EQ(Percentile(s, 90), 4.6);   // rank 3.6
  EXPECT_DOUBLE_EQ(Percentile(s, 99), 4.96);  // rank 3.96
  EXPECT_DOUBLE_EQ(Percentile(s, 100), 5);
  EXPECT_DOUBLE_EQ(Percentile({10}, 99), 10);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

TEST(SummarizeTest, SortsThenSummarizes) {
  const LatencySummary s = Summarize({4, 1, 3, 2});
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);   // rank 1.5
  EXPECT_DOUBLE_EQ(s.p90, 3.7);   // rank 2.7
  EXPECT_DOUBLE_EQ(s.p99, 3.97);  // rank 2.97
  EXPECT_LE(s.p50, s.p90);
  const LatencySummary empty = Summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.mean, 0);
}

TEST(ParseLengthDistTest, AcceptsTheThreeForms) {
  auto fixed = ParseLengthDist("7");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->kind, LengthDist::Kind::kFixed);
  EXPECT_EQ(fixed->a, 7);
  auto uniform = ParseLengthDist("uniform:4:64");
  ASSERT_TRUE(uniform.ok()) << uniform.status();
  EXPECT_EQ(uniform->kind, LengthDist::Kind::kUniform);
  EXPECT_EQ(uniform->a, 4);
  EXPECT_EQ(uniform->b, 64);
  auto normal = ParseLengthDist("normal:100:20.5");
  ASSERT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(normal->kind, LengthDist::Kind::kNormal);
  EXPECT_EQ(normal->a, 100);
  EXPECT_EQ(normal->b, 20.5);
}

TEST(ParseLengthDistTest, BadSpecsAreInvalidArgumentsThatQuoteTheSpec) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not an integer"},
      {"abc", "not an integer"},
      {"0", "must be in [1,"},
      {"-3", "must be in [1,"},
      {"uniform:5:4", "1 <= A <= B"},
      {"uniform:0:4", "1 <= A <= B"},
      {"uniform:a:b", "must be integers"},
      {"uniform:4", "wrong number"},
      {"normal:10:-1", "standard deviation must be >= 0"},
      {"normal:nan:1", "finite"},
      {"gamma:1:2", "unknown distribution \"gamma\""},
  };
  for (const auto& [spec, why] : cases) {
    auto d = ParseLengthDist(spec);
    ASSERT_FALSE(d.ok()) << spec;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_THAT(d.status().message(), HasSubstr("\"" + spec + "\"")) << spec;
    EXPECT_THAT(d.status().message(), HasSubstr(why)) << spec;
  }
}

WorkloadOptions Options(const std::string& prompt, const std::string& output, uint64_t seed) {
  WorkloadOptions o;
  o.num_requests = 500;
  o.prompt_tokens = *ParseLengthDist(prompt);
  o.output_tokens = *ParseLengthDist(output);
  o.vocab_size = 1000;
  o.seed = seed;
  return o;
}

TEST(DrawWorkloadTest, TheSameSeedDrawsTheSameWorkload) {
  WorkloadOptions o = Options("uniform:4:64", "normal:20:5", 3);
  o.request_rate = 10;
  const auto a = DrawWorkload(o);
  const auto b = DrawWorkload(o);
  ASSERT_EQ(a.size(), 500u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt_ids, b[i].prompt_ids) << i;
    EXPECT_EQ(a[i].output_tokens, b[i].output_tokens) << i;
    EXPECT_EQ(a[i].arrival_s, b[i].arrival_s) << i;
  }
  o.seed = 4;
  const auto c = DrawWorkload(o);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i].prompt_ids == c[i].prompt_ids;
  EXPECT_LT(same, 10);
}

TEST(DrawWorkloadTest, LengthsDoNotDependOnVocabularyOrRate) {
  WorkloadOptions o = Options("uniform:1:100", "uniform:1:100", 9);
  const auto a = DrawWorkload(o);
  o.vocab_size = 7;
  o.request_rate = 3;
  const auto b = DrawWorkload(o);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt_ids.size(), b[i].prompt_ids.size()) << i;
    EXPECT_EQ(a[i].output_tokens, b[i].output_tokens) << i;
    for (uint32_t id : b[i].prompt_ids) EXPECT_LT(id, 7u);
  }
}

TEST(DrawWorkloadTest, LengthsFollowTheirDistributions) {
  const auto uniform = DrawWorkload(Options("uniform:4:64", "9", 1));
  std::set<size_t> seen;
  for (const BenchRequest& r : uniform) {
    EXPECT_GE(r.prompt_ids.size(), 4u);
    EXPECT_LE(r.prompt_ids.size(), 64u);
    seen.insert(r.prompt_ids.size());
    EXPECT_EQ(r.output_tokens, 9u);
    EXPECT_EQ(r.arrival_s, 0);  // no rate: all at once
    for (uint32_t id : r.prompt_ids) EXPECT_LT(id, 1000u);
  }
  EXPECT_TRUE(seen.count(4) && seen.count(64)) << "both bounds are reachable";

  const auto normal = DrawWorkload(Options("normal:50:10", "normal:2:10", 1));
  double sum = 0;
  for (const BenchRequest& r : normal) {
    sum += static_cast<double>(r.prompt_ids.size());
    EXPECT_GE(r.output_tokens, 1u) << "clamped to >= 1";
  }
  EXPECT_NEAR(sum / static_cast<double>(normal.size()), 50, 2);
}

TEST(DrawWorkloadTest, PoissonArrivalsHaveTheRequestedRate) {
  WorkloadOptions o = Options("8", "8", 5);
  o.num_requests = 4000;
  o.request_rate = 50;
  const auto w = DrawWorkload(o);
  EXPECT_EQ(w.front().arrival_s, 0);
  for (size_t i = 1; i < w.size(); ++i) EXPECT_GE(w[i].arrival_s, w[i - 1].arrival_s);
  const double mean_gap = w.back().arrival_s / static_cast<double>(w.size() - 1);
  EXPECT_NEAR(mean_gap, 1.0 / 50, 0.002);
}

RequestResult Done(double ttft_s, double e2e_s, int64_t tokens) {
  RequestResult r;
  r.ok = true;
  r.prompt_tokens = 10;
  r.output_tokens = tokens;
  r.ttft_s = ttft_s;
  r.e2e_s = e2e_s;
  for (int64_t i = 1; i < tokens; ++i) {
    r.itl_s.push_back((e2e_s - ttft_s) / static_cast<double>(tokens - 1));
  }
  return r;
}

TEST(ComputeReportTest, CountsGoodputThroughputAndFailures) {
  RequestResult failed;
  failed.error_code = "RESOURCE_EXHAUSTED";
  const std::vector<RequestResult> results = {
      Done(0.5, 1.0, 11),  // TPOT 50 ms: good
      Done(1.2, 1.7, 11),  // TTFT 1200 ms: misses
      Done(0.1, 2.1, 11),  // TPOT 200 ms: misses
      Done(0.2, 0.2, 1),   // one token: only TTFT counts; good
      failed,
  };
  EXPECT_DOUBLE_EQ(TimePerOutputToken(results[0]), 0.05);
  EXPECT_EQ(TimePerOutputToken(results[3]), 0);
  const BenchReport r = ComputeReport(results, 4.0, SloOptions{1000, 100});
  EXPECT_EQ(r.completed, 4);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.failed_by_code.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(r.output_tokens, 34);
  EXPECT_EQ(r.prompt_tokens, 40);
  EXPECT_DOUBLE_EQ(r.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(r.output_token_throughput, 8.5);
  EXPECT_DOUBLE_EQ(r.total_token_throughput, 18.5);
  EXPECT_EQ(r.good_requests, 2);
  EXPECT_DOUBLE_EQ(r.goodput, 0.5);
  EXPECT_DOUBLE_EQ(r.good_share, 0.4);  // failed requests count as not good
  EXPECT_EQ(r.ttft_ms.count, 4);
  EXPECT_DOUBLE_EQ(r.ttft_ms.mean, 500);
  EXPECT_EQ(r.tpot_ms.count, 3);
  EXPECT_NEAR(r.tpot_ms.p50, 50, 1e-9);
  EXPECT_EQ(r.itl_ms.count, 30);
  EXPECT_EQ(r.e2e_ms.count, 4);

  const auto json = ReportToJson(r);
  EXPECT_EQ(json.at("completed"), 4);
  EXPECT_EQ(json.at("failed_by_code").at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_DOUBLE_EQ(json.at("goodput").at("share").get<double>(), 0.4);
  EXPECT_TRUE(json.at("ttft_ms").contains("p99"));
  const std::string text = FormatReport(r);
  EXPECT_THAT(text, HasSubstr("Failed requests:"));
  EXPECT_THAT(text, HasSubstr("RESOURCE_EXHAUSTED=1"));
  EXPECT_THAT(text, HasSubstr("TPOT"));
}

TEST(ComputeReportTest, SloBoundsAreInclusiveAndEmptyRunsAreZero) {
  EXPECT_TRUE(MeetsSlo(Done(0.25, 0.25, 1), SloOptions{250, 1}));
  EXPECT_FALSE(MeetsSlo(Done(0.26, 0.26, 1), SloOptions{250, 1}));
  const BenchReport r = ComputeReport({}, 0, SloOptions{});
  EXPECT_EQ(r.completed, 0);
  EXPECT_EQ(r.goodput, 0);
  EXPECT_EQ(r.good_share, 0);
}

}  // namespace
}  // namespace moeserve
