#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors, and runs the test
# suite three times: a normal build (with the CUDA backend when nvcc is
# present; GPU tests skip without a GPU); everything but CUDA under
# AddressSanitizer and UndefinedBehaviorSanitizer, the gRPC coordinator,
# workers and their integration tests included; and the tests of the parts
# that run threads under ThreadSanitizer. Then it fuzzes every parser of
# outside bytes for a bounded time (tools/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
jobs=$(nproc)

echo "== build and test (build/)"
MOESERVE_BUILD_DIR=build bash tools/build.sh -DMOESERVE_WERROR=ON
(cd build && ctest --output-on-failure -j "$jobs")

echo "== build and test under ASan + UBSan (build-sanitize/)"
MOESERVE_BUILD_DIR=build-sanitize bash tools/build.sh -DMOESERVE_WERROR=ON -DMOESERVE_CUDA=OFF \
  -DMOESERVE_SANITIZE=address,undefined
(cd build-sanitize && ctest --output-on-failure -j "$jobs")

echo "== build and test the threaded parts under TSan (build-tsan/)"
MOESERVE_BUILD_DIR=build-tsan MOESERVE_BUILD_TARGET=threaded_tests bash tools/build.sh \
  -DMOESERVE_WERROR=ON -DMOESERVE_CUDA=OFF -DMOESERVE_SANITIZE=thread
(cd build-tsan && ctest --output-on-failure -j "$jobs")

echo "== fuzz every parser of outside bytes for a bounded time (build-fuzz/)"
bash tools/fuzz.sh
echo "== all tests passed"
