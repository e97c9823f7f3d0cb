#include "kernels/backend.h"

namespace moeserve {

absl::StatusOr<Tensor> Backend::AllocateTensor(DType dtype, std::vector<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  auto memory = Allocate(std::max<size_t>(static_cast<size_t>(numel) * DTypeSize(dtype), 1));
  if (!memory.ok()) return memory.status();
  return Tensor::FromStorage(dtype, std::move(shape), *std::move(memory),
                             device().kind == DeviceKind::kCpu ? Device::kCpu : Device::kCuda);
}

}  // namespace moeserve
