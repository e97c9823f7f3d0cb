#include "tools/moeserve/placement_command.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "scheduler/placement/expert_placement.h"
#include "scheduler/placement/node_placement.h"
#include "tools/moeserve/args.h"

#ifdef MOESERVE_HAVE_GRPC
#include "grpcpp/grpcpp.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "runtime/worker/coordinator_channel.h"
#endif

namespace moeserve {

const char kPlacementUsage[] =
    R"(Usage: moeserve placement (--trace FILE | --server ADDR) --ep-size N [flags]

Computes a balanced expert placement for N ranks from a load trace: the
experts with the most tokens per replica get the redundant slots, then
replicas are packed onto ranks heaviest first and swapped while that lowers
the busiest rank. Prints the placement JSON that moeserve-coordinator
--placement reads, and the balancedness (mean over max tokens per rank) of
each layer before and after on stderr (with --ranks-per-node, also how many
nodes each routing group spans).

  --trace FILE             load trace JSON: {"experts": E, "layers": {"3": [tokens per
                           expert], ...}}
  --server ADDR            take the trace from a running coordinator's load window
                           (Admin.GetClusterState on its internal port, e.g.
                           127.0.0.1:50052); --save-trace FILE keeps a copy
  --admin-token-file FILE  the coordinator's Admin token (its --admin-token-file),
                           for --server (default: $MOESERVE_ADMIN_TOKEN_FILE)
  --ep-size N              ranks of the placement (required)
  --redundant-experts N    extra replicas in all (default 0)
  --out FILE               write the placement there instead of stdout
  --placement-mode MODE    flat (default): best balance, ignores nodes;
                           node-limited: each routing group's experts, replicas
                           included, on one node (as DeepSeek's hierarchical EPLB);
                           relaxed: node-limited, but extra replicas of hot experts
                           may leave their group's node until --target-balancedness
                           is met
  --ranks-per-node N       ranks that share a node, consecutive ranks first
                           (default: all ranks on one node)
  --routing-groups N       the model's routing groups (n_group; DeepSeek-V3: 8),
                           contiguous experts each (default 1)
  --target-balancedness X  relaxed mode spills replicas off-node only until every
                           layer reaches X in (0, 1] (default 0.95)
)";

namespace {

absl::StatusOr<scheduler::LoadTrace> TraceFromServer(const std::string& address,
                                                     const std::string& admin_token,
                                                     scheduler::Placement* current) {
#ifdef MOESERVE_HAVE_GRPC
  InternalPlaneCredentials credentials;
  credentials.token = admin_token;
  auto stub = v1::Admin::NewStub(CreateCoordinatorChannel(address, credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ClusterState state;
  const grpc::Status s = stub->GetClusterState(&ctx, v1::GetClusterStateRequest(), &state);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "cannot ask the coordinator at ", address, ": ",
        s.error_code() == grpc::StatusCode::UNIMPLEMENTED
            ? "it serves no Admin there (--server must name the coordinator's internal port, its "
              "--internal-listen, default 50052, and the coordinator needs --admin-token-file)"
            : s.error_message()));
  }
  scheduler::LoadTrace trace;
  trace.experts = static_cast<int32_t>(state.placement().logical_experts());
  current->ranks = static_cast<int32_t>(state.world_size());
  current->experts = trace.experts;
  current->slots_per_rank = static_cast<int32_t>(state.placement().physical_slots_per_rank());
  for (const v1::LayerPlacement& l : state.placement().layers()) {
    if (l.tokens_per_expert_size() == trace.experts) {
      trace.layers[static_cast<int32_t>(l.layer())] =
          std::vector<double>(l.tokens_per_expert().begin(), l.tokens_per_expert().end());
    }
    current->layers[static_cast<int32_t>(l.layer())] =
        std::vector<int32_t>(l.slot_expert().begin(), l.slot_expert().end());
  }
  if (trace.layers.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the coordinator at ", address, " has no expert loads yet (send it traffic first)"));
  }
  return trace;
#else
  return absl::UnimplementedError("this build of moeserve has no gRPC client; use --trace");
#endif
}

}  // namespace

int RunPlacementCommand(const std::vector<std::string>& argv) {
  auto args = Args::Parse(
      argv,
      {"trace", "server", "ep-size", "redundant-experts", "out", "save-trace", "admin-token-file",
       "placement-mode", "ranks-per-node", "routing-groups", "target-balancedness"},
      {"help"});
  auto fail = [](const absl::Status& s, int code) {
    std::cerr << "moeserve placement: " << s.message() << "\n";
    return code;
  };
  if (!args.ok()) return fail(args.status(), 2);
  if (args->Has("help")) {
    std::cout << kPlacementUsage;
    return 0;
  }
  auto ranks = args->Int("ep-size", 0);
  auto redundant = args->Int("redundant-experts", 0);
  if (!ranks.ok()) return fail(ranks.status(), 2);
  if (!redundant.ok()) return fail(redundant.status(), 2);
  if (*ranks < 1 || *ranks > 4096 || *redundant < 0 || *redundant > 65536) {
    return fail(absl::InvalidArgumentError(
                    "--ep-size must be in [1, 4096] and --redundant-experts in [0, 65536]"),
                2);
  }
  scheduler::NodePlacementOptions node_options;
  {
    auto mode = scheduler::ParsePlacementMode(args->Get("placement-mode").value_or("flat"));
    auto per_node = args->Int("ranks-per-node", 0);
    auto groups = args->Int("routing-groups", 1);
    auto target = args->Double("target-balancedness", 0.95);
    for (const absl::Status& s :
         {mode.status(), per_node.status(), groups.status(), target.status()}) {
      if (!s.ok()) return fail(s, 2);
    }
    if (*per_node < 0 || *per_node > 4096 || *groups < 1 || *groups > 65536) {
      return fail(absl::InvalidArgumentError(
                      "--ranks-per-node must be in [0, 4096] and --routing-groups in [1, 65536]"),
                  2);
    }
    node_options.mode = *mode;
    node_options.ranks_per_node = static_cast<int32_t>(*per_node);
    node_options.routing_groups = static_cast<int32_t>(*groups);
    node_options.relaxed_target_balancedness = *target;
  }
  if (args->Has("trace") == args->Has("server")) {
    return fail(absl::InvalidArgumentError("give exactly one of --trace FILE and --server ADDR"),
                2);
  }
  scheduler::Placement current;
  absl::StatusOr<scheduler::LoadTrace> trace;
  if (args->Has("trace")) {
    std::ifstream in(*args->Get("trace"));
    if (!in) {
      return fail(absl::InvalidArgumentError(absl::StrCat("cannot read ", *args->Get("trace"))), 2);
    }
    std::stringstream text;
    text << in.rdbuf();
    trace = scheduler::ParseLoadTraceJson(text.str());
    if (!trace.ok()) return fail(trace.status(), 2);
  } else {
    std::optional<std::string> token_file = args->Get("admin-token-file");
    if (const char* env = std::getenv("MOESERVE_ADMIN_TOKEN_FILE");
        !token_file.has_value() && env != nullptr && *env != '\0') {
      token_file = env;
    }
    std::string token;
    if (token_file.has_value()) {
      std::ifstream in(*token_file);
      if (!in || !std::getline(in, token) || token.empty()) {
        return fail(absl::InvalidArgumentError(
                        absl::StrCat("--admin-token-file ", *token_file, ": cannot read a token")),
                    2);
      }
      while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
    }
    trace = TraceFromServer(*args->Get("server"), token, &current);
    if (!trace.ok()) return fail(trace.status(), 1);
    if (auto save = args->Get("save-trace"); save.has_value()) {
      std::ofstream(*save) << scheduler::LoadTraceToJson(*trace) << "\n";
    }
  }
  if (trace->experts < 1) return fail(absl::InvalidArgumentError("the trace has no experts"), 2);
  if (absl::Status s = scheduler::CheckPlacementShape(trace->experts, static_cast<int32_t>(*ranks),
                                                      static_cast<int32_t>(*redundant));
      !s.ok()) {
    return fail(s, 2);
  }
  auto computed = scheduler::PlacementFromTrace(*trace, static_cast<int32_t>(*ranks),
                                                static_cast<int32_t>(*redundant), node_options);
  if (!computed.ok()) return fail(computed.status(), 2);
  const scheduler::Placement& placement = *computed;
  for (const auto& [layer, load] : trace->layers) {
    std::cerr << "layer " << layer << ": balancedness ";
    auto was = current.layers.find(layer);
    if (was != current.layers.end() && current.ranks > 0 && current.slots_per_rank > 0 &&
        static_cast<int64_t>(was->second.size()) ==
            static_cast<int64_t>(current.ranks) * current.slots_per_rank) {
      std::cerr << scheduler::Balancedness(load, was->second, current.ranks, current.slots_per_rank)
                << " now, ";
    } else {
      const scheduler::Placement plain =
          scheduler::DefaultPlacement({layer}, trace->experts, static_cast<int32_t>(*ranks), 0);
      std::cerr << scheduler::Balancedness(load, plain.layers.at(layer), plain.ranks,
                                           plain.slots_per_rank)
                << " contiguous, ";
    }
    std::cerr << scheduler::Balancedness(load, placement.layers.at(layer), placement.ranks,
                                         placement.slots_per_rank)
              << " " << scheduler::PlacementModeName(node_options.mode);
    if (node_options.ranks_per_node > 0) {
      std::cerr << ", "
                << scheduler::NodesPerGroup(placement.layers.at(layer), placement.experts,
                                            node_options.routing_groups, placement.slots_per_rank,
                                            node_options.ranks_per_node)
                << " nodes per routing group";
    }
    std::cerr << "\n";
  }
  const std::string json = scheduler::PlacementToJson(placement);
  if (auto out = args->Get("out"); out.has_value()) {
    std::ofstream f(*out);
    f << json << "\n";
    if (!f) return fail(absl::UnavailableError(absl::StrCat("cannot write ", *out)), 1);
  } else {
    std::cout << json << "\n";
  }
  return 0;
}

}  // namespace moeserve
