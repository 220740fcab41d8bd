#!/usr/bin/env bash
# tests/gpu_check.sh judged on stand-ins: a CUDA test that skips (exit 77) passes the check where
# nvidia-smi lists no GPU and fails it where one is listed; a failing test fails it anywhere.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/gpu/bin" "$tmp/none/bin" "$tmp/build"
printf '#!/bin/sh\necho "GPU 0: Stand-in GPU (UUID: GPU-0)"\n' >"$tmp/gpu/bin/nvidia-smi"
printf '#!/bin/sh\necho "NVIDIA-SMI has failed" >&2\nexit 9\n' >"$tmp/none/bin/nvidia-smi"
chmod +x "$tmp/gpu/bin/nvidia-smi" "$tmp/none/bin/nvidia-smi"

verdict() {  # verdict <machine: gpu|none> <exit code of the stand-in test>: the check's exit code
  printf '#!/bin/sh\nexit %s\n' "$2" >"$tmp/build/stand_in_cuda_tests"
  chmod +x "$tmp/build/stand_in_cuda_tests"
  PATH="$tmp/$1/bin:$PATH" GPU_CHECK_LOGS="$tmp/logs" bash "$here/gpu_check.sh" "$tmp/build" >"$tmp/out" 2>&1
  echo $?
}

bad=0
expect() {  # expect <machine> <test's exit code> <check's expected exit code: 0 or nonzero>
  local got
  got=$(verdict "$1" "$2")
  if { [[ "$3" == 0 ]] && [[ "$got" != 0 ]]; } || { [[ "$3" != 0 ]] && [[ "$got" == 0 ]]; }; then
    echo "FAIL: machine $1, test exit $2: the check exited $got"
    cat "$tmp/out"
    bad=1
  else
    echo "ok: machine $1, test exit $2: the check exited $got"
  fi
}
expect none 77 0
expect gpu 77 nonzero
expect gpu 0 0
expect none 1 nonzero
expect gpu 1 nonzero
exit $bad
