#!/usr/bin/env bash
# The serving path's own cost, without a model: a coordinator and worker
# ranks started with --null-model-for-benchmarks (no weights, no forward
# pass), driven by `moeserve bench` at a fixed number of running sequences.
# For each (ranks, sequences) it prints the coordinator's CPU time per engine
# step (from /proc), the engine step latency (plan sent to every result back,
# moeserve_step_duration_seconds), step plan bytes per step, and the served
# time per output token (bench TPOT p50).
#
#   tools/bench/host_overhead.sh [--ranks "1 4 8"] [--seqs "256 1024 4096"]
#                                [--prompt-tokens N] [--output-tokens N] [--build-dir DIR]
#
# Every process shares this machine's cores with the bench client, so wall
# times are upper bounds; CPU per step is the coordinator's alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build
ranks_list="1 4 8"
seqs_list="256 1024 4096"
output_tokens=64
prompt_tokens=32
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks_list=$2; shift 2 ;;
    --seqs) seqs_list=$2; shift 2 ;;
    --output-tokens) output_tokens=$2; shift 2 ;;
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "host_overhead.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
model=${MOESERVE_FIXTURES_DIR:-../shared/fixtures}/deepseek_v3_small_bf16
[ -f "$model/config.json" ] || model=/work/shared/fixtures/deepseek_v3_small_bf16
logs=$build/host_overhead
mkdir -p "$logs"
token=$logs/internal.token  # the internal plane's shared secret, fresh each run
(umask 077; head -c 32 /dev/urandom | base64 > "$token")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }

printf "%-5s %-6s %-7s %-18s %-16s %-15s %-12s\n" ranks seqs steps "coord CPU us/step" \
  "step ms (mean)" "plan B/step" "TPOT p50 ms"
for ranks in $ranks_list; do
  for seqs in $seqs_list; do
    port=$(free_port); iport=$(free_port); mport=$(free_port)
    per_rank=$(( (seqs + ranks - 1) / ranks ))
    kv=$(( per_rank * (prompt_tokens + output_tokens + 64) ))
    pids=()
    "$build/tools/coordinator/moeserve-coordinator" --listen "127.0.0.1:$port" \
      --internal-listen "127.0.0.1:$iport" --internal-token-file "$token" --metrics-port "$mport" --ep-size "$ranks" --max-running-seqs "$per_rank" \
      --max-waiting "$seqs" --max-batch-tokens "$(( per_rank < 64 ? 64 * prompt_tokens : per_rank * 32 ))" \
      > "$logs/coordinator.log" 2>&1 &
    coord=$!; pids+=("$coord")
    for ((r = 0; r < ranks; r++)); do
      "$build/tools/worker/moeserve-worker" --coordinator "127.0.0.1:$iport" \
        --internal-token-file "$token" --model "$model" \
        --rank "$r" --kv-cache-tokens "$kv" --null-model-for-benchmarks \
        --connect-timeout-seconds 30 > "$logs/worker$r.log" 2>&1 &
      pids+=("$!")
    done
    for _ in $(seq 300); do
      [ "$(metric "$mport" moeserve_workers_up)" = "$ranks" ] && break
      sleep 0.2
    done
    steps0=$(metric "$mport" moeserve_step_duration_seconds_count); steps0=${steps0:-0}
    sum0=$(metric "$mport" moeserve_step_duration_seconds_sum); sum0=${sum0:-0}
    bytes0=$(metric "$mport" moeserve_step_plan_bytes_total); bytes0=${bytes0:-0}
    cpu0=$(cpu_ticks "$coord")
    report=$("$build/tools/moeserve/moeserve" bench --server "127.0.0.1:$port" \
      --num-requests "$seqs" --concurrency "$seqs" --prompt-tokens "$prompt_tokens" \
      --output-tokens "$output_tokens" --seed 1 --json)
    cpu1=$(cpu_ticks "$coord")
    steps1=$(metric "$mport" moeserve_step_duration_seconds_count)
    sum1=$(metric "$mport" moeserve_step_duration_seconds_sum)
    bytes1=$(metric "$mport" moeserve_step_plan_bytes_total)
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    hz=$(getconf CLK_TCK)
    python3 - "$ranks" "$seqs" "$steps0" "$steps1" "$sum0" "$sum1" "$bytes0" "$bytes1" \
      "$cpu0" "$cpu1" "$hz" "$report" <<'PY'
import json, sys
r, n, s0, s1, t0, t1, b0, b1, c0, c1, hz, report = sys.argv[1:]
steps = float(s1) - float(s0)
cpu_us = (float(c1) - float(c0)) / float(hz) * 1e6 / steps
step_ms = (float(t1) - float(t0)) / steps * 1e3
plan = (float(b1) - float(b0)) / steps
tpot = json.loads(report)["tpot_ms"]["p50"]
print(f"{r:<5} {n:<6} {int(steps):<7} {cpu_us:<18.0f} {step_ms:<16.2f} {plan:<15.0f} {tpot:<12.2f}")
PY
  done
done
