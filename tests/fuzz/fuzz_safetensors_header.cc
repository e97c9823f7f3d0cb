// Fuzzes SafetensorsFile::Open with the whole file as input: the 8-byte
// header length, the JSON header and the data section. A file that opens
// must keep every promise of safetensors.h: each tensor's bytes inside the
// mapping, sized as its shape says, found by its name.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/checkpoint/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

// An anonymous in-memory file, named by /proc/self/fd, so that Open maps it
// as it maps a checkpoint and the fuzzer writes nothing to disk.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size) : fd_(::memfd_create("fuzz.safetensors", 0)) {
    moeserve::fuzz::Require(fd_ >= 0);
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      moeserve::fuzz::Require(n > 0);
      done += static_cast<size_t>(n);
    }
  }
  ~MemoryFile() { ::close(fd_); }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  MemoryFile memory(data, size);
  auto file = moeserve::SafetensorsFile::Open(memory.path());
  if (!file.ok()) return 0;
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | data[i];
  const uint64_t data_offset = 8 + header_bytes;
  for (const moeserve::TensorInfo& t : (*file)->tensors()) {
    Require((*file)->Find(t.name) != nullptr);
    // The tensor lies inside the input's data section, and its bytes are
    // the input's bytes there.
    Require(t.begin <= t.end && t.end <= size - data_offset);
    const auto bytes = (*file)->Data(t);
    Require(bytes.size() == t.end - t.begin);
    Require(bytes.empty() ||
            std::memcmp(bytes.data(), data + data_offset + t.begin, bytes.size()) == 0);
    uint64_t nbytes = moeserve::DTypeSize(t.dtype);
    for (int64_t d : t.shape)
      Require(!__builtin_mul_overflow(nbytes, static_cast<uint64_t>(d), &nbytes));
    Require(nbytes == bytes.size());
  }
  return 0;
}
