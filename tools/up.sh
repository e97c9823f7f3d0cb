#!/usr/bin/env bash
# Starts a moeserve coordinator and CPU workers on this machine, sends one
# example request, and serves until Ctrl-C.
#
#   tools/up.sh [--model DIR] [--workers N] [--port N] [--internal-port N]
#               [--metrics-port N] [--http-port N] [--build-dir DIR]
#
# --workers N starts an expert-parallel group of N worker ranks (default 1),
# each holding a slice of the experts (docs/expert_parallelism.md).
# Without --model it serves a tiny DeepSeek-V3-layout checkpoint (written once
# into the build directory). When the model directory holds tokenizer.json and
# tokenizer_config.json, the coordinator gets them (--tokenizer) and serves
# text; otherwise token ids only. Workers register on the internal port
# (--internal-port, default --port + 1, loopback only) with a random token
# written to <build-dir>/up/internal.token; Admin takes the token in
# <build-dir>/up/admin.token. The OpenAI-compatible HTTP API listens on
# --http-port (default 8000; 0 turns it off). Logs go to <build-dir>/up/.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
model=""
port=50051
internal_port=""
metrics_port=9400
http_port=8000
workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --internal-port) internal_port=$2; shift 2 ;;
    --metrics-port) metrics_port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/up.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$workers" in
  ''|*[!0-9]*|0) echo "tools/up.sh: --workers must be a positive number, got '$workers'" >&2; exit 2 ;;
esac
case "$port" in
  ''|*[!0-9]*) echo "tools/up.sh: --port must be a number, got '$port'" >&2; exit 2 ;;
esac
[ -n "$internal_port" ] || internal_port=$((port + 1))
case "$internal_port" in
  ''|*[!0-9]*) echo "tools/up.sh: --internal-port must be a number, got '$internal_port'" >&2; exit 2 ;;
esac

cli=$build/tools/moeserve/moeserve
for bin in "$cli" "$build/tools/coordinator/moeserve-coordinator" "$build/tools/worker/moeserve-worker"; do
  [ -x "$bin" ] || { echo "tools/up.sh: $bin is missing; build first (tools/build.sh)" >&2; exit 1; }
done
if [ -z "$model" ]; then
  model=$build/models/tiny-deepseek-v3
  # (Re)written when missing or from before tiny models carried the tokenizer.
  [ -f "$model/config.json" ] && [ -f "$model/tokenizer.json" ] ||
    "$cli" make-tiny-model --arch deepseek_v3 --dtype fp8 --out "$model"
fi
http_flags=()
[ "$http_port" = 0 ] || http_flags=(--http-listen "127.0.0.1:$http_port")
tokenizer_flags=()
if [ -f "$model/tokenizer.json" ] && [ -f "$model/tokenizer_config.json" ]; then
  tokenizer_flags=(--tokenizer "$model")
fi

logs=$build/up
mkdir -p "$logs"
# The internal plane's secrets: new ones every run, readable by this user only.
new_token() {
  (umask 077 && head -c 32 /dev/urandom | base64 > "$1")
}
new_token "$logs/internal.token"
new_token "$logs/admin.token"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$build/tools/coordinator/moeserve-coordinator" --listen "127.0.0.1:$port" \
  --internal-listen "127.0.0.1:$internal_port" --internal-token-file "$logs/internal.token" \
  --admin-token-file "$logs/admin.token" \
  --metrics-port "$metrics_port" --ep-size "$workers" "${tokenizer_flags[@]}" "${http_flags[@]}" \
  > "$logs/coordinator.log" 2>&1 &
pids+=($!)
for ((rank = 0; rank < workers; rank++)); do
  log=$logs/worker.log
  [ "$workers" -eq 1 ] || log=$logs/worker$rank.log
  "$build/tools/worker/moeserve-worker" --coordinator "127.0.0.1:$internal_port" \
    --internal-token-file "$logs/internal.token" --model "$model" \
    --rank "$rank" --ep-size "$workers" --connect-timeout-seconds 30 > "$log" 2>&1 &
  pids+=($!)
done

echo "waiting for the worker to load $model ..."
for _ in $(seq 1 120); do
  if "$cli" generate --server "127.0.0.1:$port" --prompt-ids 0 --max-tokens 1 --json \
      > /dev/null 2>&1; then
    break
  fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || {
      echo "tools/up.sh: a process exited; see $logs/" >&2
      tail -n 5 "$logs"/*.log >&2
      exit 1
    }
  done
  sleep 0.5
done

echo
echo "moeserve is serving on 127.0.0.1:$port (metrics: http://127.0.0.1:$metrics_port/metrics)"
echo "workers and Admin: 127.0.0.1:$internal_port (tokens in $logs/internal.token, $logs/admin.token)"
echo "example request:"
if [ ${#tokenizer_flags[@]} -gt 0 ]; then
  # A tiny random model: the text is random too, but it streams.
  echo "  $cli generate --server 127.0.0.1:$port \"The capital of France is\" --max-tokens 16"
  "$cli" generate --server "127.0.0.1:$port" "The capital of France is" --max-tokens 16
  echo "  (also: $cli chat --server 127.0.0.1:$port \"Hello!\")"
  if [ "$http_port" != 0 ]; then
    echo "OpenAI-compatible HTTP API on http://127.0.0.1:$http_port/v1, e.g.:"
    echo "  curl http://127.0.0.1:$http_port/v1/chat/completions -H 'Content-Type: application/json' \\"
    echo "    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 16}'"
  fi
else
  echo "  $cli generate --server 127.0.0.1:$port --prompt-ids 0,17,42 --max-tokens 8"
  "$cli" generate --server "127.0.0.1:$port" --prompt-ids 0,17,42 --max-tokens 8
fi
echo
echo "serving until Ctrl-C; logs in $logs/"
wait
