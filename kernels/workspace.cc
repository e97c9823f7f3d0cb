#include "kernels/workspace.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace moeserve {

std::unique_ptr<Workspace> Workspace::ForPlanning() {
  std::unique_ptr<Workspace> ws(new Workspace());
  ws->planning_ = true;
  return ws;
}

absl::StatusOr<std::unique_ptr<Workspace>> Workspace::Create(Backend& backend,
                                                             size_t capacity_bytes) {
  std::unique_ptr<Workspace> ws(new Workspace());
  auto memory = backend.Allocate(std::max<size_t>(capacity_bytes, kAlignment));
  if (!memory.ok()) return memory.status();
  ws->memory_ = *std::move(memory);
  ws->capacity_ = capacity_bytes;
  return ws;
}

MatView Workspace::Matrix(int64_t rows, int64_t cols) {
  float* data = static_cast<float*>(Take(static_cast<size_t>(rows * cols) * sizeof(float)));
  return {data, rows, cols, cols};
}

void* Workspace::Take(size_t bytes) {
  const size_t begin = used_;
  const size_t end = begin + (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (!planning_ && end > capacity_) {
    std::fprintf(stderr,
                 "moeserve: the step needs more than its planned workspace (%zu bytes wanted at "
                 "offset %zu of %zu): the engine admitted a step larger than it planned for\n",
                 bytes, begin, capacity_);
    std::abort();
  }
  used_ = end;
  high_water_ = std::max(high_water_, used_);
  if (planning_) return nullptr;
  return memory_.get() + begin;
}

}  // namespace moeserve
