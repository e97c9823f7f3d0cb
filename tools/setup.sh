#!/usr/bin/env bash
# Installs every Debian package moeserve needs to build, run and test.
# Idempotent; run as root on Debian 12 (bookworm). Nothing is downloaded from
# anywhere but Debian's archive.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  # runtime/ and kernels/
  libabsl-dev libopenblas-dev nlohmann-json3-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3
  # the gRPC front end (MOESERVE_GRPC=ON); prometheus for promtool in the tests
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev
  prometheus
  # style
  clang-format
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/setup.sh: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "tools/setup.sh: all packages present"
