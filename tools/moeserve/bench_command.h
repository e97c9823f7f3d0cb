// `moeserve bench --server ADDR`: a load generator for a running coordinator.
// It draws a reproducible workload (tools/moeserve/bench_stats.h), sends it at
// a fixed concurrency or as Poisson arrivals, measures TTFT, TPOT, inter-token
// and end-to-end latency on the client, and prints a text or JSON report.
#ifndef MOESERVE_TOOLS_MOESERVE_BENCH_COMMAND_H_
#define MOESERVE_TOOLS_MOESERVE_BENCH_COMMAND_H_

#include "tools/moeserve/args.h"

namespace moeserve {

// Runs the benchmark described by `args` (the flags of kBenchUsage in main.cc);
// blocks until every request has ended and all sending threads are joined.
// Returns the process exit code: 0 when the run finished (even if some
// requests failed: they are counted in the report), 2 for bad flags, 1 when
// the server could not be asked for the model info.
int RunBench(const Args& args);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_BENCH_COMMAND_H_
