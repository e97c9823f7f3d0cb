// `moeserve placement`: a balanced expert placement (scheduler/placement/)
// from a recorded load trace, either a trace file or the load window of a
// running coordinator (Admin.GetClusterState), printed as the JSON file the
// coordinator's --placement reads, with the balancedness before and after.
#ifndef MOESERVE_TOOLS_MOESERVE_PLACEMENT_COMMAND_H_
#define MOESERVE_TOOLS_MOESERVE_PLACEMENT_COMMAND_H_

#include <string>
#include <vector>

namespace moeserve {

extern const char kPlacementUsage[];

// Returns the process exit code: 0 on success, 2 for bad flags or a bad
// trace, 1 when the coordinator cannot be asked.
int RunPlacementCommand(const std::vector<std::string>& argv);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_PLACEMENT_COMMAND_H_
