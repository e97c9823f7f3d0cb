// The coordinator's Prometheus metrics (prometheus-cpp), named as operators
// expect: a moeserve_ prefix, base units, _total counters. Served on
// --metrics-port at /metrics.
//
// Thread safety: prometheus-cpp metrics are safe to update from any thread.
#ifndef MOESERVE_SCHEDULER_SERVER_METRICS_H_
#define MOESERVE_SCHEDULER_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moeserve {

class CoordinatorMetrics {
 private:
  // Declared first: the metric references below are initialised from it.
  std::shared_ptr<prometheus::Registry> registry_;

 public:
  CoordinatorMetrics();
  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  prometheus::Gauge& requests_running;
  prometheus::Gauge& requests_waiting;
  prometheus::Gauge& kv_cache_usage_ratio;
  prometheus::Gauge& workers_up;
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& generation_tokens;
  prometheus::Counter& prefix_cache_hit_tokens;
  prometheus::Counter& preemptions;
  prometheus::Counter& requests_recovered;
  prometheus::Histogram& time_to_first_token;
  prometheus::Histogram& inter_token_latency;
  prometheus::Histogram& request_latency;
  prometheus::Histogram& queue_time;
  prometheus::Histogram& step_duration;
  prometheus::Histogram& step_tokens;
  prometheus::Counter& step_plan_bytes;
  // Worker ranks the coordinator is configured for (the expert-parallel size).
  prometheus::Gauge& workers_expected;
  // Expert parallelism: dispatch and combine time summed over ranks, and the
  // part of it that compute waited for (not hidden by the overlap).
  prometheus::Counter& all_to_all_seconds;
  prometheus::Counter& all_to_all_exposed_seconds;
  // Share of all-to-all time hidden behind compute over the recent window, 0 to 1.
  prometheus::Gauge& overlap_ratio;
  prometheus::Counter& expert_rebalances;

  // 1 while worker `rank` is connected and ready, else 0.
  prometheus::Gauge& WorkerUp(int rank);
  // Mean over max tokens per rank for MoE layer `layer` over the recent window
  // (1 is perfect balance).
  prometheus::Gauge& ExpertBalancedness(int layer);

  // Requests that ended, by finish reason: stop, length, stop_string, abort.
  prometheus::Counter& Finished(const std::string& reason);
  // Requests refused at admission, by reason: invalid_argument, queue_full,
  // unavailable, deadline_exceeded.
  prometheus::Counter& Rejected(const std::string& reason);

 private:
  prometheus::Family<prometheus::Counter>* finished_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Family<prometheus::Gauge>* worker_up_;
  prometheus::Family<prometheus::Gauge>* expert_balancedness_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_METRICS_H_
