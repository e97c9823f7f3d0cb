#!/usr/bin/env bash
# Starts one moeserve-worker per local GPU in a worker pod and keeps them
# together: when any of them exits, the others are stopped and the script
# exits with that worker's status, so that Kubernetes restarts the pod as a
# whole. SIGTERM and SIGINT are passed on to every worker.
#
#   launch-workers.sh [--local-workers N] [--pod-index I] [--device cuda|cpu]
#                     -- WORKER [ARGS...]
#
# Worker i (0 <= i < N) runs `WORKER ARGS... --rank R --worker-id POD/gpuI
# --device cuda:I` with R = I x N + i (--device cpu: `--device cpu`); every
# worker sees all the pod's GPUs and uses its own, as NCCL prefers. Its
# output lines are prefixed with "[rank R] ". The pod index I defaults to $POD_INDEX (the
# StatefulSet's apps.kubernetes.io/pod-index label, or the LeaderWorkerSet's
# worker index), else to the number that ends the host name (pod-name-3 -> 3).
set -uo pipefail

local_workers=8
device_kind=cuda
pod_index="${POD_INDEX:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --local-workers) local_workers=${2:-}; shift 2 || shift ;;
    --pod-index) pod_index=${2:-}; shift 2 || shift ;;
    --device) device_kind=${2:-}; shift 2 || shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "launch-workers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "launch-workers: no worker command after --" >&2
  exit 2
fi
if [ "$device_kind" != cuda ] && [ "$device_kind" != cpu ]; then
  echo "launch-workers: --device must be cuda or cpu, got '$device_kind'" >&2
  exit 2
fi
if ! [[ "$local_workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "launch-workers: --local-workers must be a positive integer, got '$local_workers'" >&2
  exit 2
fi
host="${POD_NAME:-${HOSTNAME:-$(hostname)}}"
if [ -z "$pod_index" ] && [[ "$host" =~ -([0-9]+)$ ]]; then
  pod_index=${BASH_REMATCH[1]}
fi
if ! [[ "$pod_index" =~ ^[0-9]+$ ]]; then
  echo "launch-workers: no pod index: set POD_INDEX or --pod-index, or run in a pod named NAME-ORDINAL (host name '$host')" >&2
  exit 2
fi
pod_index=$((10#$pod_index))

pids=()
stop_all() {
  local signal=$1
  for pid in "${pids[@]}"; do kill "-$signal" "$pid" 2>/dev/null; done
}
trap 'echo "launch-workers: stopping the workers" >&2; stop_all TERM' TERM INT

for ((i = 0; i < local_workers; i++)); do
  rank=$((pod_index * local_workers + i))
  device=cpu
  if [ "$device_kind" = cuda ]; then device="cuda:$i"; fi
  echo "launch-workers: starting rank $rank on $device: $* --rank $rank --worker-id $host/gpu$i --device $device" >&2
  "$@" --rank "$rank" --worker-id "$host/gpu$i" --device "$device" \
    > >(sed -u "s/^/[rank $rank] /") 2> >(sed -u "s/^/[rank $rank] /" >&2) &
  pids+=($!)
done

# The first worker to exit decides the outcome. `wait -n` also returns when a
# trapped signal arrives; then the workers are stopping and we wait for one.
status=0
while :; do
  unset exited
  wait -n -p exited "${pids[@]}"
  status=$?
  if [ -n "${exited:-}" ]; then break; fi
done
echo "launch-workers: worker pid $exited exited with status $status; stopping the others" >&2
stop_all TERM
deadline=$((SECONDS + ${LAUNCHER_STOP_SECONDS:-20}))
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
done
stop_all KILL
wait 2>/dev/null
exit "$status"
