#!/usr/bin/env bash
# Installs what is missing, then, each part with warnings as errors:
#   1. the ordinary build (build/) of the CUDA op set, its tests and the GPU
#      benchmark: every CUDA source compiles (nvcc from /usr/local/cuda when
#      present); the GPU tests run, and skip without a GPU;
#   2. everything but CUDA under AddressSanitizer and UndefinedBehaviorSanitizer
#      (build-sanitize/): every test, the gRPC coordinator, the workers and the
#      integration tests that start them included;
#   3. the tests of our threads in one process under ThreadSanitizer
#      (build-tsan/; not the gRPC processes: Debian's gRPC and Abseil are not
#      built for TSan, see tests/CMakeLists.txt);
#   4. every parser of outside bytes fuzzed for a bounded time (tools/fuzz.sh).
# The sanitizer builds use -O1 with line tables (-g1): quicker to compile on a
# small machine, and their reports still name the line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
jobs=$(nproc)
started=$SECONDS
phase() {
  echo "== $1 (at $((SECONDS - started)) s)"
}
sanitizer_flags=(-DMOESERVE_WERROR=ON -DMOESERVE_CUDA=OFF
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")

phase "build the CUDA op set, its tests and the GPU benchmark (build/)"
MOESERVE_BUILD_DIR=build MOESERVE_BUILD_TARGET=gpu_tests bash tools/build.sh -DMOESERVE_WERROR=ON
(cd build && ctest --output-on-failure -j "$jobs" -L gpu)

phase "build and test everything but CUDA under ASan + UBSan (build-sanitize/)"
MOESERVE_BUILD_DIR=build-sanitize bash tools/build.sh "${sanitizer_flags[@]}" \
  -DMOESERVE_SANITIZE=address,undefined
(cd build-sanitize && ctest --output-on-failure -j "$jobs")

phase "build and test the threaded parts under TSan (build-tsan/)"
MOESERVE_BUILD_DIR=build-tsan MOESERVE_BUILD_TARGET=threaded_tests bash tools/build.sh \
  "${sanitizer_flags[@]}" -DMOESERVE_SANITIZE=thread
(cd build-tsan && TSAN_OPTIONS="suppressions=$PWD/../tools/tsan.supp second_deadlock_stack=1" \
  ctest --output-on-failure -j "$jobs")

phase "fuzz every parser of outside bytes for a bounded time (build-fuzz/)"
bash tools/fuzz.sh
phase "all tests passed"
