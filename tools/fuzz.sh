#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (one per parser of outside
# bytes) with clang under ASan + UBSan into build-fuzz/ (or
# $MOESERVE_FUZZ_BUILD_DIR), then runs each for $MOESERVE_FUZZ_SECONDS
# (default 45), $(nproc) at a time, from a copy of its seed corpus
# tests/fuzz/corpus/<target>/: what they find goes to a scratch directory,
# never into the checkout. Exits non-zero when a target crashes, leaks, hangs
# on one input or runs out of memory, naming the reproducer and the command
# that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${MOESERVE_FUZZ_BUILD_DIR:-build-fuzz}
seconds=${MOESERVE_FUZZ_SECONDS:-45}
parallel=$(nproc)

echo "== build the fuzz targets ($build_dir/)"
# -O1 with line tables, as fuzzers are usually built: quick to compile on a
# small machine, fast enough to run, stacks that name the line; assertions on.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DMOESERVE_FUZZ=ON \
  -DMOESERVE_CUDA=OFF -DMOESERVE_GRPC=ON >/dev/null
cmake --build "$build_dir" -j "$parallel" --target moeserve_fuzzers

scratch=$(mktemp -d "${TMPDIR:-/tmp}/moeserve-fuzz.XXXXXX")

# Runs one target; its corpus grows in the scratch copy, its findings land in
# the scratch artifacts directory.
fuzz_one() {
  local target=$1 dir="$scratch/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -R "tests/fuzz/corpus/$target/." "$dir/corpus/"
  # -timeout: seconds one input may take; -rss_limit_mb: the process's memory
  # (one allocation past it is a finding as well).
  if "$build_dir/tests/fuzz/$target" "$dir/corpus" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$dir/artifacts/" -print_final_stats=1 \
    >"$dir/log" 2>&1; then
    echo "   $target: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" |
      grep -o '[0-9]*$') inputs, no finding"
  else
    echo "!! $target failed; its log: $dir/log"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$dir/log" | head -5 | sed 's/^/   /' || true
    for reproducer in "$dir"/artifacts/*; do
      [ -e "$reproducer" ] || continue
      echo "   reproducer: $reproducer"
      echo "   replay:     $build_dir/tests/fuzz/$target $reproducer"
    done
    return 1
  fi
}

echo "== fuzz each target for ${seconds}s, $parallel at a time (scratch: $scratch)"
targets=()
for corpus in tests/fuzz/corpus/*/; do targets+=("$(basename "$corpus")"); done
failed=0
running=0
for target in "${targets[@]}"; do
  if [ ! -x "$build_dir/tests/fuzz/$target" ]; then
    echo "!! tests/fuzz/corpus/$target has no fuzz target $build_dir/tests/fuzz/$target"
    failed=1
    continue
  fi
  fuzz_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done

if [ "$failed" -ne 0 ]; then
  echo "== fuzzing found problems; the scratch directory $scratch is kept"
  exit 1
fi
rm -rf "$scratch"
echo "== fuzzing found nothing"
