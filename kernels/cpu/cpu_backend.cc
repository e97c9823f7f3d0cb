#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options) : options_(options) {}

  DeviceId device() const override { return {DeviceKind::kCpu, 0}; }
  std::string name() const override { return "cpu"; }

  absl::StatusOr<std::shared_ptr<std::byte[]>> Allocate(size_t bytes) override {
    allocations_.fetch_add(1, std::memory_order_relaxed);
    const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    void* p = ::operator new[](rounded, std::align_val_t{256}, std::nothrow);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu: cannot allocate ", bytes, " bytes of host memory"));
    }
    if (options_.poison_allocations) std::memset(p, 0xff, rounded);
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p), [](std::byte* q) {
      ::operator delete[](q, std::align_val_t{256});
    });
  }

  // Every weight in float32, the CPU op set's compute dtype, whatever its use.
  absl::StatusOr<Tensor> LoadWeight(const HostWeight& w, WeightUse use) override {
    return HostWeightToF32(w);
  }

  std::unique_ptr<Stream> CreateStream() override {
    cpu::CpuStreamOptions o = options_.stream;
    const auto& delays = options_.stream_delays;
    if (!delays.empty()) {
      const size_t n = streams_created_.fetch_add(1);
      o.delay_per_item = delays[std::min(n, delays.size() - 1)];
    }
    return cpu::CreateCpuStream(o);
  }
  std::unique_ptr<Event> CreateEvent() override { return cpu::CreateCpuEvent(); }
  std::unique_ptr<Ops> CreateOps(Stream& stream) override {
    return CreateCpuStreamOps(stream, options_.ops);
  }
  bool host_accessible() const override { return true; }
  int64_t allocations() const override { return allocations_.load(std::memory_order_relaxed); }

 private:
  const CpuBackendOptions options_;
  std::atomic<int64_t> allocations_{0};
  std::atomic<size_t> streams_created_{0};
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace moeserve
