// The pure parts of `moeserve bench`: the drawn workload (prompt and output
// lengths, prompt token ids, arrival times) and the statistics of a run
// (percentiles, throughput, goodput). No I/O, no threads, no gRPC, so every
// build unit-tests them; tools/moeserve/bench_command.cc does the sending.
#ifndef MOESERVE_TOOLS_MOESERVE_BENCH_STATS_H_
#define MOESERVE_TOOLS_MOESERVE_BENCH_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve {

// A distribution of token counts, parsed from a spec:
//   "N"                  always N (N >= 1)
//   "uniform:A:B"        an integer uniformly in [A, B] (1 <= A <= B)
//   "normal:MEAN:STD"    rounded normal draw, clamped to >= 1 (STD >= 0)
struct LengthDist {
  enum class Kind { kFixed, kUniform, kNormal };
  Kind kind = Kind::kFixed;
  double a = 1;  // fixed value, uniform low bound, or normal mean
  double b = 0;  // uniform high bound or normal standard deviation
};

// Errors are INVALID_ARGUMENT and quote the spec.
absl::StatusOr<LengthDist> ParseLengthDist(const std::string& spec);

// What `moeserve bench` sends. Every random stream is derived from `seed`
// alone and each quantity has its own stream, so the same options give the
// same workload on every platform (no std:: distributions, whose output is
// implementation-defined), and changing e.g. the vocabulary size or the rate
// does not change the drawn lengths.
struct WorkloadOptions {
  int64_t num_requests = 200;
  LengthDist prompt_tokens{LengthDist::Kind::kFixed, 128, 0};
  LengthDist output_tokens{LengthDist::Kind::kFixed, 128, 0};
  uint32_t vocab_size = 0;  // prompt ids are drawn in [0, vocab_size); must be > 0
  double request_rate = 0;  // Poisson arrivals per second; 0: all arrive at time 0
  uint64_t seed = 0;
};

struct BenchRequest {
  std::vector<uint32_t> prompt_ids;
  uint32_t output_tokens = 1;  // sent as stopping.max_tokens with ignore_eos
  double arrival_s = 0;        // offset from the start of the run; the first is 0
};

std::vector<BenchRequest> DrawWorkload(const WorkloadOptions& options);

// What the client measured for one request. Times in seconds.
struct RequestResult {
  bool ok = false;
  std::string error_code;  // status code name when !ok, e.g. "RESOURCE_EXHAUSTED"
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;  // tokens received
  double ttft_s = 0;          // send -> first chunk carrying tokens
  double e2e_s = 0;           // send -> end of the stream
  // Gaps between token arrivals: a chunk with k tokens contributes the gap
  // since the previous token-carrying chunk (none for the first chunk, whose
  // gap is the TTFT) followed by k-1 zero gaps, so a request with n tokens has
  // n-1 entries summing to (last token time - first token time).
  std::vector<double> itl_s;
};

// (e2e - TTFT) / (output_tokens - 1); only defined for output_tokens > 1.
double TimePerOutputToken(const RequestResult& r);

// Percentile p in [0, 100] of ascending `sorted` by linear interpolation
// between closest ranks (numpy's default): rank = p/100 * (n-1). 0 if empty.
double Percentile(const std::vector<double>& sorted, double p);

struct LatencySummary {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;  // all 0 when count == 0
};

// Sorts `samples` and summarizes them; units are the caller's.
LatencySummary Summarize(std::vector<double> samples);

struct SloOptions {
  double ttft_ms = 1000;
  double tpot_ms = 100;
};

// A completed request with TTFT <= ttft_ms and, when it has more than one
// output token, TPOT <= tpot_ms.
bool MeetsSlo(const RequestResult& r, const SloOptions& slo);

struct BenchReport {
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> failed_by_code;
  double duration_s = 0;
  int64_t prompt_tokens = 0;           // of completed requests
  int64_t output_tokens = 0;           // received by completed requests
  double request_throughput = 0;       // completed / duration, req/s
  double output_token_throughput = 0;  // tok/s
  double total_token_throughput = 0;   // (prompt + output) / duration, tok/s
  LatencySummary ttft_ms, tpot_ms, itl_ms, e2e_ms;
  SloOptions slo;
  int64_t good_requests = 0;
  double goodput = 0;     // good requests / duration, req/s
  double good_share = 0;  // good requests / all measured requests (failed count as not good)
};

// `duration_s` is the wall time of the measured run (first send to last end).
BenchReport ComputeReport(const std::vector<RequestResult>& results, double duration_s,
                          const SloOptions& slo);

// The report as a JSON object (latencies in ms, throughputs per second).
nlohmann::ordered_json ReportToJson(const BenchReport& report);

// The human-readable report, several lines ending in '\n'.
std::string FormatReport(const BenchReport& report);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_BENCH_STATS_H_
