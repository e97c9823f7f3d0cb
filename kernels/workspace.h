// The step workspace: one allocation of backend memory, planned at start-up
// for the largest step, out of which every step carves its activations and
// exchange buffers. Nothing is allocated inside a step.
//
// Planning: a workspace made by ForPlanning() has no memory; it hands out
// null views and records how many bytes a pass takes. The engine runs its
// forward pass once that way, on the largest batch it accepts and with an op
// set that does nothing (NullOps), then creates the real workspace with
// the recorded high-water mark. A pass that touched workspace memory from
// the host would crash in planning, which is a feature: model code must
// not.
//
// Lifetime: buffers are valid until Release() of an earlier mark or Reset().
// Reusing memory is safe when every stream that used it is ordered before
// the new user: the same stream (stream order), or an event the new user's
// stream waited for. Reset() is for between steps, after the streams are
// synchronized.
//
// Not thread safe: one host thread feeds a step.
#ifndef MOESERVE_KERNELS_WORKSPACE_H_
#define MOESERVE_KERNELS_WORKSPACE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace moeserve {

class Workspace {
 public:
  // A workspace that only measures.
  static std::unique_ptr<Workspace> ForPlanning();
  // `capacity_bytes` of `backend`'s memory, allocated now.
  static absl::StatusOr<std::unique_ptr<Workspace>> Create(Backend& backend, size_t capacity_bytes);
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // A float32 [rows, cols] matrix (stride cols).
  MatView Matrix(int64_t rows, int64_t cols);
  // `count` elements of T (int32_t, int64_t, float, bytes).
  template <typename T>
  std::span<T> Array(int64_t count) {
    return {static_cast<T*>(Take(static_cast<size_t>(count) * sizeof(T))),
            static_cast<size_t>(count)};
  }

  using Mark = size_t;
  Mark mark() const { return used_; }
  void Release(Mark mark) { used_ = mark; }
  void Reset() { used_ = 0; }

  bool planning() const { return planning_; }
  size_t used_bytes() const { return used_; }
  size_t high_water_bytes() const { return high_water_; }
  size_t capacity_bytes() const { return capacity_; }

  static constexpr size_t kAlignment = 256;

 private:
  Workspace() = default;
  // Aborts, naming the sizes, when a step needs more than the plan: the
  // engine refuses batches larger than the one it planned for, so this is a
  // broken invariant, never a user's input.
  void* Take(size_t bytes);

  bool planning_ = false;
  std::shared_ptr<std::byte[]> memory_;
  size_t capacity_ = 0;
  size_t used_ = 0;
  size_t high_water_ = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_WORKSPACE_H_
