#!/usr/bin/env bash
# The GPU verification of docs/gpu.md, in one command, on a machine with one
# H100 or H200 (the device tool), from the bundle tools/bench/gpu_bundle.sh
# made on a build machine (the GPU machine has CUDA, CMake and ninja but not
# this project's libraries; the bundle is built with MOESERVE_GRPC=OFF):
#
#   bash tools/gpu/verify.sh [--quick]
#
# Runs, writing their logs and one JSON report, $OUT/verify.json:
#   1. every CUDA test binary: each op against its CPU twin, the MoE ops,
#      the CUDA backend's streams, events and graphs, the KV-cache dtypes,
#      one NCCL rank, and the golden fixtures through the CUDA backend
#      (bf16 and fp8 weights x fp32, bf16 and fp8 KV; two ranks sharing the
#      GPU through Gloo staging);
#   2. compute-sanitizer memcheck over the small-shape op tests and one short
#      model run;
#   3. the GPU benchmarks (--quick: fewer sizes).
# Exit status: non-zero when a test failed or the sanitizer found an error.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/moeserve-gpu/out}
mkdir -p "$out"
quick=()
if [[ "${1:-}" == "--quick" ]]; then quick=(--quick); fi
start=$SECONDS

bash "$root/tools/bench/gpu_run.sh" tests > "$out/verify-tests.txt" 2>&1
tests_status=$?
bash "$root/tools/bench/gpu_run.sh" sanitize > "$out/verify-sanitize.txt" 2>&1
sanitize_status=$?
bash "$root/tools/bench/gpu_run.sh" bench "${quick[@]}" > "$out/verify-bench.txt" 2>&1
bench_status=$?

python3 - "$out" "$tests_status" "$sanitize_status" "$bench_status" "$((SECONDS - start))" <<'PY'
import json, re, sys
out, tests_status, sanitize_status, bench_status, seconds = sys.argv[1:]
def read(name):
    try:
        with open(f"{out}/{name}") as f:
            return f.read()
    except OSError:
        return ""
tests = {}
current = None
for line in read("tests.log").splitlines():
    m = re.match(r"=== (\S+)", line)
    if m:
        current = m.group(1)
        tests[current] = {"passed": 0, "failed": 0, "skipped": 0}
        continue
    m = re.match(r"\[  (PASSED|FAILED|SKIPPED) +\] (\d+) test", line)
    if m and current:
        tests[current][m.group(1).lower()] = int(m.group(2))
report = {
    "device": read("gpu.txt").strip().splitlines()[-1:] or ["unknown"],
    "seconds": int(seconds),
    "tests": tests,
    "tests_ok": tests_status == "0",
    "failures": sorted(set(re.findall(r"^\[  FAILED  \] (?!\d+ tests?,)(\S+)", read("tests.log"), re.M))),
    # The figures to record in docs/performance.md: largest errors the tests print.
    "largest_errors": [l for l in read("tests.log").splitlines() if "largest" in l],
    "sanitizer_ok": sanitize_status == "0",
    "sanitizer": re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*", read("sanitize.log")),
    "bench_ok": bench_status == "0",
    "bench_jsonl": "gpu_bench.jsonl",
}
with open(f"{out}/verify.json", "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps(report, indent=2))
PY
[[ $tests_status == 0 && $sanitize_status == 0 ]]
