// GPU tests start here: they run where a GPU is visible and skip, saying
// why, everywhere else (CI builds the CUDA code but has no GPU).
#include "gtest/gtest.h"
#include "kernels/cuda/device_info.h"

namespace moeserve::cuda {
namespace {

TEST(CudaDeviceTest, ReportsTheDeviceOrWhyThereIsNone) {
  const DeviceInfo info = QueryDevices();
  if (info.device_count == 0) {
    EXPECT_FALSE(info.unavailable_reason.empty());
    GTEST_SKIP() << "no GPU: " << info.unavailable_reason;
  }
  EXPECT_FALSE(info.name.empty());
  EXPECT_GE(info.compute_capability, 70);
  EXPECT_GT(info.total_memory_bytes, 0u);
}

}  // namespace
}  // namespace moeserve::cuda
