#include "tools/moeserve/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moeserve {
namespace {

// Lengths beyond this are certainly a typo, not a workload.
constexpr int64_t kMaxLengthTokens = int64_t{1} << 24;

// splitmix64: a tiny generator whose output is fixed by its definition, so a
// seed draws the same workload with every compiler and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;  // advanced by the golden-ratio increment per draw
};

// Independent streams per quantity, derived from the user's seed.
uint64_t StreamSeed(uint64_t seed, uint64_t stream) {
  return Rng(seed ^ (stream * 0xD1B54A32D192ED03ull)).Next();
}

int64_t DrawLength(const LengthDist& d, Rng& rng) {
  double v = d.a;
  switch (d.kind) {
    case LengthDist::Kind::kFixed:
      break;
    case LengthDist::Kind::kUniform:
      v = std::floor(d.a + rng.Uniform() * (d.b - d.a + 1));
      v = std::min(v, d.b);
      break;
    case LengthDist::Kind::kNormal: {
      // Box-Muller; 1 - Uniform() is in (0, 1], so the log is finite.
      const double u1 = 1.0 - rng.Uniform();
      const double u2 = rng.Uniform();
      v = std::round(d.a +
                     d.b * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
      break;
    }
  }
  return std::clamp(static_cast<int64_t>(v), int64_t{1}, kMaxLengthTokens);
}

absl::Status BadSpec(const std::string& spec, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("length distribution \"", spec,
                                                 "\": ", std::string(why),
                                                 " (expected N, uniform:A:B or normal:MEAN:STD)"));
}

void AddSummary(nlohmann::ordered_json& out, const char* name, const LatencySummary& s) {
  out[name] = {
      {"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}};
}

}  // namespace

absl::StatusOr<LengthDist> ParseLengthDist(const std::string& spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  LengthDist d;
  if (parts.size() == 1) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(parts[0], &n)) return BadSpec(spec, "not an integer");
    if (n < 1 || n > kMaxLengthTokens) {
      return BadSpec(spec, absl::StrCat("must be in [1, ", kMaxLengthTokens, "]"));
    }
    d.kind = LengthDist::Kind::kFixed;
    d.a = static_cast<double>(n);
    return d;
  }
  if (parts.size() != 3) return BadSpec(spec, "wrong number of ':'-separated fields");
  if (parts[0] == "uniform") {
    int64_t lo = 0, hi = 0;
    if (!absl::SimpleAtoi(parts[1], &lo) || !absl::SimpleAtoi(parts[2], &hi)) {
      return BadSpec(spec, "uniform bounds must be integers");
    }
    if (lo < 1 || hi < lo || hi > kMaxLengthTokens) {
      return BadSpec(spec, absl::StrCat("uniform bounds need 1 <= A <= B <= ", kMaxLengthTokens));
    }
    d.kind = LengthDist::Kind::kUniform;
    d.a = static_cast<double>(lo);
    d.b = static_cast<double>(hi);
    return d;
  }
  if (parts[0] == "normal") {
    double mean = 0, stddev = 0;
    if (!absl::SimpleAtod(parts[1], &mean) || !absl::SimpleAtod(parts[2], &stddev) ||
        !std::isfinite(mean) || !std::isfinite(stddev)) {
      return BadSpec(spec, "normal mean and standard deviation must be finite numbers");
    }
    if (stddev < 0) return BadSpec(spec, "standard deviation must be >= 0");
    d.kind = LengthDist::Kind::kNormal;
    d.a = mean;
    d.b = stddev;
    return d;
  }
  return BadSpec(spec, absl::StrCat("unknown distribution \"", parts[0], "\""));
}

std::vector<BenchRequest> DrawWorkload(const WorkloadOptions& options) {
  Rng prompt_len(StreamSeed(options.seed, 1));
  Rng output_len(StreamSeed(options.seed, 2));
  Rng arrival(StreamSeed(options.seed, 3));
  Rng ids(StreamSeed(options.seed, 4));
  std::vector<BenchRequest> out(static_cast<size_t>(std::max<int64_t>(options.num_requests, 0)));
  double t = 0;
  for (BenchRequest& r : out) {
    r.prompt_ids.resize(static_cast<size_t>(DrawLength(options.prompt_tokens, prompt_len)));
    r.output_tokens = static_cast<uint32_t>(DrawLength(options.output_tokens, output_len));
    r.arrival_s = t;
    // Exponential gaps make a Poisson process; 1 - Uniform() is in (0, 1].
    if (options.request_rate > 0) t += -std::log(1.0 - arrival.Uniform()) / options.request_rate;
    for (uint32_t& id : r.prompt_ids) {
      id = options.vocab_size == 0 ? 0 : static_cast<uint32_t>(ids.Next() % options.vocab_size);
    }
  }
  return out;
}

double TimePerOutputToken(const RequestResult& r) {
  if (r.output_tokens <= 1) return 0;
  return (r.e2e_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1);
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = static_cast<int64_t>(samples.size());
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(samples.size());
  s.p50 = Percentile(samples, 50);
  s.p90 = Percentile(samples, 90);
  s.p99 = Percentile(samples, 99);
  return s;
}

bool MeetsSlo(const RequestResult& r, const SloOptions& slo) {
  if (!r.ok || r.output_tokens < 1) return false;
  if (r.ttft_s * 1e3 > slo.ttft_ms) return false;
  return r.output_tokens <= 1 || TimePerOutputToken(r) * 1e3 <= slo.tpot_ms;
}

BenchReport ComputeReport(const std::vector<RequestResult>& results, double duration_s,
                          const SloOptions& slo) {
  BenchReport rep;
  rep.duration_s = duration_s;
  rep.slo = slo;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestResult& r : results) {
    if (!r.ok) {
      ++rep.failed;
      ++rep.failed_by_code[r.error_code];
      continue;
    }
    ++rep.completed;
    rep.prompt_tokens += r.prompt_tokens;
    rep.output_tokens += r.output_tokens;
    if (r.output_tokens > 0) ttft.push_back(r.ttft_s * 1e3);
    if (r.output_tokens > 1) tpot.push_back(TimePerOutputToken(r) * 1e3);
    for (double gap : r.itl_s) itl.push_back(gap * 1e3);
    e2e.push_back(r.e2e_s * 1e3);
    if (MeetsSlo(r, slo)) ++rep.good_requests;
  }
  rep.ttft_ms = Summarize(std::move(ttft));
  rep.tpot_ms = Summarize(std::move(tpot));
  rep.itl_ms = Summarize(std::move(itl));
  rep.e2e_ms = Summarize(std::move(e2e));
  if (duration_s > 0) {
    rep.request_throughput = static_cast<double>(rep.completed) / duration_s;
    rep.output_token_throughput = static_cast<double>(rep.output_tokens) / duration_s;
    rep.total_token_throughput =
        static_cast<double>(rep.prompt_tokens + rep.output_tokens) / duration_s;
    rep.goodput = static_cast<double>(rep.good_requests) / duration_s;
  }
  if (!results.empty()) {
    rep.good_share = static_cast<double>(rep.good_requests) / static_cast<double>(results.size());
  }
  return rep;
}

nlohmann::ordered_json ReportToJson(const BenchReport& r) {
  nlohmann::ordered_json out;
  out["completed"] = r.completed;
  out["failed"] = r.failed;
  out["failed_by_code"] = nlohmann::ordered_json::object();
  for (const auto& [code, n] : r.failed_by_code) out["failed_by_code"][code] = n;
  out["duration_s"] = r.duration_s;
  out["prompt_tokens"] = r.prompt_tokens;
  out["output_tokens"] = r.output_tokens;
  out["request_throughput"] = r.request_throughput;
  out["output_token_throughput"] = r.output_token_throughput;
  out["total_token_throughput"] = r.total_token_throughput;
  AddSummary(out, "ttft_ms", r.ttft_ms);
  AddSummary(out, "tpot_ms", r.tpot_ms);
  AddSummary(out, "itl_ms", r.itl_ms);
  AddSummary(out, "e2e_ms", r.e2e_ms);
  out["goodput"] = {{"slo_ttft_ms", r.slo.ttft_ms},
                    {"slo_tpot_ms", r.slo.tpot_ms},
                    {"requests", r.good_requests},
                    {"request_rate", r.goodput},
                    {"share", r.good_share}};
  return out;
}

std::string FormatReport(const BenchReport& r) {
  char buf[256];
  std::string out;
  auto line = [&](const char* label, const std::string& value) {
    std::snprintf(buf, sizeof(buf), "%-34s %s\n", label, value.c_str());
    out += buf;
  };
  auto num = [&](double v, int digits) {
    std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
    return std::string(buf);
  };
  out += "============ moeserve bench ============\n";
  line("Completed requests:", std::to_string(r.completed));
  std::string failed = std::to_string(r.failed);
  for (const auto& [code, n] : r.failed_by_code) absl::StrAppend(&failed, " ", code, "=", n);
  line("Failed requests:", failed);
  line("Duration (s):", num(r.duration_s, 2));
  line("Prompt tokens:", std::to_string(r.prompt_tokens));
  line("Output tokens:", std::to_string(r.output_tokens));
  line("Request throughput (req/s):", num(r.request_throughput, 2));
  line("Output token throughput (tok/s):", num(r.output_token_throughput, 1));
  line("Total token throughput (tok/s):", num(r.total_token_throughput, 1));
  std::snprintf(buf, sizeof(buf), "TTFT <= %g ms, TPOT <= %g ms", r.slo.ttft_ms, r.slo.tpot_ms);
  line("Goodput SLOs:", buf);
  line("Goodput (req/s):",
       absl::StrCat(num(r.goodput, 2), " (", num(r.good_share * 100, 1), "% of requests)"));
  std::snprintf(buf, sizeof(buf), "%-14s %10s %10s %10s %10s %8s\n", "Latency (ms)", "mean", "p50",
                "p90", "p99", "samples");
  out += "----------------------------------------\n";
  out += buf;
  auto row = [&](const char* name, const LatencySummary& s) {
    std::snprintf(buf, sizeof(buf), "%-14s %10.2f %10.2f %10.2f %10.2f %8lld\n", name, s.mean,
                  s.p50, s.p90, s.p99, static_cast<long long>(s.count));
    out += buf;
  };
  row("TTFT", r.ttft_ms);
  row("TPOT", r.tpot_ms);
  row("ITL", r.itl_ms);
  row("E2E", r.e2e_ms);
  out += "========================================\n";
  return out;
}

}  // namespace moeserve
