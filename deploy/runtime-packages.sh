#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given
# executables load, one per line, sorted: what a runtime image must install
# to run them (deploy/Dockerfile's runtime stage installs exactly these).
# libcuda and the other libnvidia-* driver libraries are left out: the NVIDIA
# container toolkit mounts the node's driver into the container. Any other
# library that cannot be resolved, or that no package owns, is an error.
#
#   deploy/runtime-packages.sh BINARY...
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi

driver_lib='^lib(cuda|nvidia-[a-z-]+|nvcuvid|nvoptix)\.so'
ldd_out=$(ldd "$@")
status=0
declare -A packages=()
while read -r name arrow path _; do
  case "$name" in *:) continue ;; esac  # "binary:" headers when ldd gets several files
  if [ "$arrow" != "=>" ]; then continue; fi  # the vDSO and the dynamic loader itself
  if [ "$path" = "not" ]; then
    if [[ "$name" =~ $driver_lib ]]; then continue; fi
    echo "runtime-packages: $name is not found (ldd $*)" >&2
    status=1
    continue
  fi
  # ldd may name a path through a symlinked directory (/lib -> usr/lib) that
  # dpkg does not record: ask for the file the path resolves to, then the path.
  owner=""
  for candidate in "$(readlink -f "$path")" "$path"; do
    if owner=$(dpkg-query --search "$candidate" 2>/dev/null | grep -v '^diversion by' | head -n 1) &&
       [ -n "$owner" ]; then
      break
    fi
    owner=""
  done
  if [ -z "$owner" ]; then
    if [[ "$name" =~ $driver_lib ]]; then continue; fi
    echo "runtime-packages: no Debian package owns $path ($name)" >&2
    status=1
    continue
  fi
  owner=${owner%%: *}  # "pkg:arch: /path" or "pkg1, pkg2: /path"
  owner=${owner%%,*}
  packages["${owner%%:*}"]=1
done <<< "$ldd_out"
if [ "$status" -ne 0 ]; then exit "$status"; fi
printf '%s\n' "${!packages[@]}" | sort
