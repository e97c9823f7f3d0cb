#include "scheduler/server/metrics.h"

#include <vector>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace moeserve {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;
using prometheus::Registry;

// Latency buckets in seconds: 1 ms to 2 minutes.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

Histogram::BucketBoundaries TokenBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
}

prometheus::Gauge& Gauge(Registry& r, const char* name, const char* help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Counter& Counter(Registry& r, const char* name, const char* help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram& Hist(Registry& r, const char* name, const char* help,
                            const Histogram::BucketBoundaries& buckets) {
  return BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics()
    : registry_(std::make_shared<Registry>()),
      requests_running(Gauge(*registry_, "moeserve_requests_running",
                             "Requests with a sequence in the running batch.")),
      requests_waiting(Gauge(*registry_, "moeserve_requests_waiting",
                             "Admitted requests waiting to be scheduled (including preempted).")),
      kv_cache_usage_ratio(Gauge(*registry_, "moeserve_kv_cache_usage_ratio",
                                 "Used KV cache blocks over all blocks, 0 to 1.")),
      workers_up(Gauge(*registry_, "moeserve_workers_up", "Workers connected and ready.")),
      prompt_tokens(Counter(*registry_, "moeserve_prompt_tokens_total",
                            "Prompt tokens of admitted requests.")),
      generation_tokens(
          Counter(*registry_, "moeserve_generation_tokens_total", "Tokens generated.")),
      prefix_cache_hit_tokens(Counter(*registry_, "moeserve_prefix_cache_hit_tokens_total",
                                      "Prompt tokens whose KV cache was reused.")),
      preemptions(Counter(*registry_, "moeserve_preemptions_total",
                          "Sequences preempted (recomputed later) because KV blocks ran out.")),
      requests_recovered(
          Counter(*registry_, "moeserve_requests_recovered_total",
                  "Requests in flight when the worker group was lost that resumed on the "
                  "group formed again, their KV recomputed.")),
      time_to_first_token(Hist(*registry_, "moeserve_time_to_first_token_seconds",
                               "From arrival to the first generated token.", LatencyBuckets())),
      inter_token_latency(Hist(*registry_, "moeserve_inter_token_latency_seconds",
                               "Between consecutive generated tokens of a request.",
                               LatencyBuckets())),
      request_latency(Hist(*registry_, "moeserve_request_latency_seconds",
                           "From arrival to the final message (end-to-end).", LatencyBuckets())),
      queue_time(Hist(*registry_, "moeserve_request_queue_seconds",
                      "From arrival to the first scheduled step.", LatencyBuckets())),
      step_duration(Hist(*registry_, "moeserve_step_duration_seconds",
                         "Wall time of one engine step, plan to result.", LatencyBuckets())),
      step_tokens(Hist(*registry_, "moeserve_step_tokens",
                       "Tokens (prefill and decode) in one engine step.", TokenBuckets())),
      step_plan_bytes(Counter(*registry_, "moeserve_step_plan_bytes_total",
                              "Bytes of step plans sent to the worker ranks (serialized).")),
      workers_expected(Gauge(*registry_, "moeserve_workers_expected",
                             "Worker ranks the coordinator is configured for (the EP size).")),
      all_to_all_seconds(Counter(*registry_, "moeserve_all_to_all_seconds_total",
                                 "Expert all-to-all time (dispatch and combine), summed over "
                                 "ranks.")),
      all_to_all_exposed_seconds(
          Counter(*registry_, "moeserve_all_to_all_exposed_seconds_total",
                  "Part of the all-to-all time that compute waited for (not hidden by the "
                  "two-micro-batch overlap), summed over ranks.")),
      overlap_ratio(Gauge(*registry_, "moeserve_overlap_ratio",
                          "Share of all-to-all time hidden behind compute over the last 64 "
                          "steps, 0 to 1.")),
      expert_rebalances(Counter(*registry_, "moeserve_expert_rebalances_total",
                                "Expert placements switched at a step boundary.")),
      finished_(&BuildCounter()
                     .Name("moeserve_requests_finished_total")
                     .Help("Requests that ended, by finish reason.")
                     .Register(*registry_)),
      rejected_(&BuildCounter()
                     .Name("moeserve_requests_rejected_total")
                     .Help("Requests refused at admission, by reason.")
                     .Register(*registry_)),
      worker_up_(&BuildGauge()
                      .Name("moeserve_worker_up")
                      .Help("1 while the worker rank is connected and ready, else 0.")
                      .Register(*registry_)),
      expert_balancedness_(&BuildGauge()
                                .Name("moeserve_expert_balancedness")
                                .Help("Mean over max routed tokens per rank, per MoE layer, over "
                                      "the recent window (1 is perfect balance).")
                                .Register(*registry_)) {}

prometheus::Counter& CoordinatorMetrics::Finished(const std::string& reason) {
  return finished_->Add({{"finish_reason", reason}});
}

prometheus::Counter& CoordinatorMetrics::Rejected(const std::string& reason) {
  return rejected_->Add({{"reason", reason}});
}

prometheus::Gauge& CoordinatorMetrics::WorkerUp(int rank) {
  return worker_up_->Add({{"rank", std::to_string(rank)}});
}

prometheus::Gauge& CoordinatorMetrics::ExpertBalancedness(int layer) {
  return expert_balancedness_->Add({{"layer", std::to_string(layer)}});
}

}  // namespace moeserve
