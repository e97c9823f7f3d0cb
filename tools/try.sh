#!/usr/bin/env bash
# First try: installs what is missing, builds, writes a tiny DeepSeek-V3-layout
# checkpoint and generates from it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh -DMOESERVE_GRPC=OFF
model=build/models/tiny-deepseek-v3
[ -f "$model/config.json" ] || build/tools/moeserve/moeserve make-tiny-model \
  --arch deepseek_v3 --dtype fp8 --out "$model"
build/tools/moeserve/moeserve generate --model "$model" --prompt-ids 0,17,42 --max-tokens 12 \
  --prompt-logprobs
