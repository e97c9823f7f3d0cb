#include "kernels/stream.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moeserve {

std::string DeviceId::ToString() const {
  return kind == DeviceKind::kCpu ? std::string("cpu") : absl::StrCat("cuda:", index);
}

absl::StatusOr<DeviceId> ParseDeviceId(std::string_view text) {
  if (text == "cpu") return DeviceId{DeviceKind::kCpu, 0};
  if (text == "cuda") return DeviceId{DeviceKind::kCuda, 0};
  constexpr std::string_view kCudaPrefix = "cuda:";
  int index = -1;
  if (text.substr(0, kCudaPrefix.size()) == kCudaPrefix &&
      absl::SimpleAtoi(std::string(text.substr(kCudaPrefix.size())), &index) && index >= 0) {
    return DeviceId{DeviceKind::kCuda, index};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", std::string(text), "\" is not one of cpu, cuda, cuda:N (N >= 0)"));
}

}  // namespace moeserve
