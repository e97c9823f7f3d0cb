#include "runtime/worker/group_setup.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat("Welcome: ", what));
}

}  // namespace

bool GroupSetup::SameModelAs(const GroupSetup& o) const {
  if (rank != o.rank || world_size != o.world_size || micro_batches != o.micro_batches ||
      overlap != o.overlap || max_batch_tokens != o.max_batch_tokens ||
      max_exchange_tokens != o.max_exchange_tokens ||
      placement.layers.size() != o.placement.layers.size()) {
    return false;
  }
  for (size_t l = 0; l < placement.layers.size(); ++l) {
    if (placement.layers[l].slot_expert != o.placement.layers[l].slot_expert) return false;
  }
  return true;
}

absl::StatusOr<GroupSetup> GroupSetupFromWelcome(const worker::v1::Welcome& w,
                                                 const ModelConfig& config) {
  GroupSetup g;
  if (w.world_size() == 0 || w.rank() >= w.world_size()) {
    return Bad(absl::StrCat("rank ", w.rank(), " of world size ", w.world_size()));
  }
  g.rank = w.rank();
  g.world_size = w.world_size();
  g.communicator = w.communicator().empty() ? "local" : w.communicator();
  if (g.communicator == "local" && g.world_size != 1) {
    return Bad(absl::StrCat("the local communicator serves one rank, not ", g.world_size));
  }
  if (g.communicator != "local" && g.communicator != "gloo" && g.communicator != "nccl") {
    return Bad(absl::StrCat("communicator \"", g.communicator,
                            "\" is not one this worker knows (local, gloo, nccl)"));
  }
  if (w.max_batch_tokens() > (uint32_t{1} << 24)) {
    return Bad(absl::StrCat("max batch tokens ", w.max_batch_tokens(), " (at most 16777216)"));
  }
  g.max_batch_tokens = w.max_batch_tokens();
  if (w.max_exchange_tokens() > (uint32_t{1} << 24)) {
    return Bad(
        absl::StrCat("max exchange tokens ", w.max_exchange_tokens(), " (at most 16777216)"));
  }
  g.max_exchange_tokens = w.max_exchange_tokens();
  g.prefix = w.communicator_id();
  if (g.communicator != "local" && g.prefix.empty()) {
    return Bad(absl::StrCat("a ", g.communicator, " group without an id"));
  }
  const double timeout =
      w.communicator_timeout_seconds() > 0 ? w.communicator_timeout_seconds() : 30;
  if (!std::isfinite(timeout) || timeout > 86400) {
    return Bad(absl::StrCat("communicator timeout ", timeout, " s"));
  }
  g.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000 + 0.5));
  g.micro_batches = w.micro_batches() == 0 ? 1 : static_cast<int>(w.micro_batches());
  if (g.micro_batches > 2) return Bad(absl::StrCat(w.micro_batches(), " micro-batches"));
  g.overlap = w.overlap();
  if (g.overlap && g.micro_batches != 2) return Bad("overlap without 2 micro-batches");
  g.link.latency_us = w.emulated_link().latency_us();
  g.link.bandwidth_gbps = w.emulated_link().bandwidth_gbps();
  if (!(g.link.latency_us >= 0) || !(g.link.bandwidth_gbps >= 0)) {
    return Bad("a negative emulated link latency or bandwidth");
  }

  const auto experts = static_cast<int32_t>(config.n_routed_experts);
  const auto layers = static_cast<size_t>(config.num_hidden_layers);
  g.placement.layers.resize(layers);
  std::vector<bool> placed(layers, false);
  const worker::v1::ExpertPlacement& p = w.placement();
  for (const worker::v1::LayerPlacement& lp : p.layers()) {
    if (lp.layer() >= layers || !config.IsMoeLayer(lp.layer())) {
      return Bad(absl::StrCat("placement for layer ", lp.layer(), ", which is not an MoE layer"));
    }
    if (placed[lp.layer()]) return Bad(absl::StrCat("two placements for layer ", lp.layer()));
    placed[lp.layer()] = true;
    std::vector<int32_t> slots;
    for (uint32_t e : lp.slot_expert()) {
      slots.push_back(e > static_cast<uint32_t>(INT32_MAX) ? -1 : static_cast<int32_t>(e));
    }
    auto layer =
        MakeLayerPlacement(static_cast<int32_t>(g.world_size),
                           static_cast<int32_t>(p.slots_per_rank()), experts, std::move(slots));
    if (!layer.ok()) {
      return Bad(absl::StrCat("placement of layer ", lp.layer(), ": ", layer.status().message()));
    }
    g.placement.layers[lp.layer()] = *std::move(layer);
  }
  for (size_t l = 0; l < layers; ++l) {
    if (config.IsMoeLayer(static_cast<int64_t>(l)) && !placed[l]) {
      if (p.layers_size() > 0) return Bad(absl::StrCat("no placement for MoE layer ", l));
      g.placement.layers[l] = ContiguousPlacement(static_cast<int32_t>(g.world_size), experts);
    }
  }
  return g;
}

}  // namespace moeserve
