#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given
# executables load, one per line, sorted: what a runtime image must install
# to run them (deploy/Dockerfile's runtime stage installs exactly these).
# libcuda and the other libnvidia-* driver libraries are left out: the NVIDIA
# container toolkit mounts the node's driver into the container. So are the
# CUDA toolkit's runtime libraries (cudart, cuBLAS/cuBLASLt, NCCL): the
# runtime stage's nvidia/cuda *-runtime base image carries them. Any other
# library that cannot be resolved, or that no package owns, is an error.
#
#   deploy/runtime-packages.sh BINARY...
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi

driver_lib='^lib(cuda|nvidia-[a-z-]+|nvcuvid|nvoptix|cudart|cublas|cublasLt|nccl)\.so'
ldd_out=$(ldd "$@")
status=0
declare -A candidates=()  # a path dpkg may have recorded -> library name
while read -r name arrow path _; do
  case "$name" in *:) continue ;; esac  # "binary:" headers when ldd gets several files
  if [ "$arrow" != "=>" ]; then continue; fi  # the vDSO and the dynamic loader itself
  if [ "$path" = "not" ]; then
    if [[ "$name" =~ $driver_lib ]]; then continue; fi
    echo "runtime-packages: $name is not found (ldd $*)" >&2
    status=1
    continue
  fi
  # dpkg records the path a package shipped: ldd's, the file it resolves to,
  # or either one across the merged /lib -> /usr/lib.
  for p in "$path" "$(readlink -f "$path")"; do
    candidates["$p"]=$name
    case "$p" in
      /usr/lib/*) candidates["${p#/usr}"]=$name ;;
      /lib/*) candidates["/usr$p"]=$name ;;
    esac
  done
done <<< "$ldd_out"
if [ "$status" -ne 0 ]; then exit "$status"; fi

# One dpkg query for all paths: lines "pkg[:arch][, pkg2...]: /path".
declare -A packages=() owned=()  # owned: library names with a package
while IFS= read -r line; do
  case "$line" in "diversion by"*) continue ;; esac
  owners=${line%%: /*}
  file=/${line#*: /}
  owner=${owners%%,*}
  packages["${owner%%:*}"]=1
  owned["${candidates[$file]:-}"]=1
done < <(dpkg-query --search "${!candidates[@]}" 2>/dev/null || true)
for name in $(printf '%s\n' "${candidates[@]}" | sort -u); do
  if [ -z "${owned[$name]:-}" ] && ! [[ "$name" =~ $driver_lib ]]; then
    echo "runtime-packages: no Debian package owns $name" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then exit "$status"; fi
printf '%s\n' "${!packages[@]}" | sort
