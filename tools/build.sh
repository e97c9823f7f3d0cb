#!/usr/bin/env bash
# Configures and builds moeserve into build/ (or $MOESERVE_BUILD_DIR).
# Extra arguments go to CMake's configure step. $MOESERVE_BUILD_TARGET, when
# set, builds that target only (e.g. threaded_tests) instead of everything.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${MOESERVE_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" ${MOESERVE_BUILD_TARGET:+--target "$MOESERVE_BUILD_TARGET"}
