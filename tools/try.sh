#!/usr/bin/env bash
# First try: installs what is missing, builds, and runs the service on the CPU
# with a tiny DeepSeek-V3-layout model and its published tokenizer: a
# coordinator (--tokenizer) and one worker on loopback, one example text
# request, then serving until Ctrl-C (tools/up.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
exec bash tools/up.sh "$@"
