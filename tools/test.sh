#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors, and runs the whole
# test suite twice: a normal build (with the CUDA backend when nvcc is
# present; GPU tests skip without a GPU), then under AddressSanitizer and
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
jobs=$(nproc)

echo "== build and test (build/)"
MOESERVE_BUILD_DIR=build bash tools/build.sh -DMOESERVE_WERROR=ON
(cd build && ctest --output-on-failure -j "$jobs")

echo "== build and test under ASan + UBSan (build-sanitize/)"
MOESERVE_BUILD_DIR=build-sanitize bash tools/build.sh -DMOESERVE_WERROR=ON -DMOESERVE_GRPC=OFF \
  -DMOESERVE_CUDA=OFF -DMOESERVE_SANITIZE=address,undefined
(cd build-sanitize && OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j "$jobs")
echo "== all tests passed"
