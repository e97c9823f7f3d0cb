// Fuzzes the expert placement file and the load trace (the same input read
// as each). A placement that parses must pass ValidatePlacement (the parser
// promises that); a trace that parses must give a balanced placement that
// validates.
#include <cstddef>
#include <cstdint>
#include <string>

#include "scheduler/placement/expert_placement.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  namespace sp = moeserve::scheduler;
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (auto placement = sp::ParsePlacementJson(text); placement.ok()) {
    Require(sp::ValidatePlacement(*placement).ok());
    (void)sp::PlacementToJson(*placement);
  }
  if (auto trace = sp::ParseLoadTraceJson(text); trace.ok()) {
    (void)sp::LoadTraceToJson(*trace);
    // Ranks and redundancy as an operator gives them to `moeserve placement`.
    // Ranks and redundancy as `moeserve placement` takes them: when they fit
    // the trace's experts, the placement is valid.
    for (int32_t ranks : {1, 2, 3}) {
      for (int32_t redundant : {0, 1, 5}) {
        if (!sp::CheckPlacementShape(trace->experts, ranks, redundant).ok()) continue;
        const sp::Placement placement = sp::PlacementFromTrace(*trace, ranks, redundant);
        Require(sp::ValidatePlacement(placement).ok());
      }
    }
  }
  return 0;
}
