#!/usr/bin/env bash
# Runs the CUDA tests and benchmarks on the GPU machine (the device tool),
# from the bundle tools/bench/gpu_bundle.sh made here (docs/gpu.md):
#
#   bash tools/bench/gpu_run.sh tests            # every CUDA test
#   bash tools/bench/gpu_run.sh sanitize         # small-shape tests under compute-sanitizer
#   bash tools/bench/gpu_run.sh bench [ARGS...]  # gpu_bench ARGS (e.g. --section=gemm)
#
# Logs go to $OUT (the device tool brings them back; at most 8 files), or to
# /tmp/moeserve-gpu/out. The exit status is non-zero when a test failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-tests}
shift || true
b=/tmp/moeserve-gpu
out=${OUT:-$b/out}
mkdir -p "$b" "$out"
tar -C "$b" -xJf "$root/build-gpu-bundle/bundle.tar.xz" || { echo "no bundle: run gpu_bundle.sh"; exit 2; }

export LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if ! "$b/bin/kernels_cuda_device_test" --gtest_list_tests > /dev/null 2>&1; then
  export LD_LIBRARY_PATH="$b/lib-fallback:$LD_LIBRARY_PATH"  # an older libstdc++ here
fi
fixtures=$(cat "$b/fixtures_dir_compiled_in")
if [[ ! -e "$fixtures" ]]; then mkdir -p "$(dirname "$fixtures")" && ln -s "$b/fixtures" "$fixtures"; fi
export MOESERVE_CACHE_DIR="$b/cache"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
  --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

tests=(kernels_cuda_device_test kernels_cuda_ops_test kernels_cuda_gemm_test
       kernels_cuda_attention_test kernels_cuda_kv_cache_test kernels_cuda_moe_test
       kernels_cuda_backend_test nccl_communicator_test kernels_cuda_model_test)
status=0
case "$mode" in
  tests)
    for t in "${tests[@]}"; do
      echo "=== $t" | tee -a "$out/tests.log"
      "$b/bin/$t" "$@" > "$b/last.log" 2>&1 || status=1
      cat "$b/last.log" >> "$out/tests.log"
      grep -E "^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test" "$b/last.log"
    done
    grep -E "^\[  FAILED  \]" "$out/tests.log" | sort -u
    ;;
  sanitize)
    # Small shapes only: the sanitizer slows kernels 10-100x.
    declare -A filter=(
      [kernels_cuda_ops_test]='-*Death*'
      [kernels_cuda_gemm_test]='*odd_k40*:*tiny_k96*:*tiny_all_local*:*tiny_ep_slice*'
      [kernels_cuda_attention_test]='*tiny*:*CacheWrite*'
      [kernels_cuda_model_test]='*Qwen3MoeMatchesTheCpuBackend*'
      [kernels_cuda_moe_test]='*'
    )
    for tool in memcheck racecheck; do
      for t in kernels_cuda_ops_test kernels_cuda_gemm_test kernels_cuda_attention_test; do
        echo "=== $tool $t" | tee -a "$out/sanitize.log"
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$b/bin/$t" \
          --gtest_filter="${filter[$t]}" >> "$out/sanitize.log" 2>&1 || status=1
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED)" "$out/sanitize.log" | tail -n 2
      done
    done
    # A short whole-model run (a tiny Qwen3-MoE through the CUDA backend) and
    # the MoE ops, under memcheck.
    for t in kernels_cuda_model_test kernels_cuda_moe_test; do
      echo "=== memcheck $t" | tee -a "$out/sanitize.log"
      compute-sanitizer --tool memcheck --error-exitcode 9 "$b/bin/$t" \
        --gtest_filter="${filter[$t]}" >> "$out/sanitize.log" 2>&1 || status=1
      grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)" "$out/sanitize.log" | tail -n 2
    done
    ;;
  bench)
    "$b/bin/gpu_bench" --json="$out/gpu_bench.jsonl" "$@" 2>&1 | tee "$out/gpu_bench.txt"
    status=${PIPESTATUS[0]}
    ;;
  *)
    echo "usage: gpu_run.sh tests|sanitize|bench [args]"
    exit 2
    ;;
esac
exit "$status"
