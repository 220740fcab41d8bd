#!/usr/bin/env bash
# The GPU check: every CUDA test and CUDA benchmark of dsv4, run in one call on a machine with an
# NVIDIA GPU, ending with a short table (executable, result, seconds, last summary line).
#
#   tests/gpu_check.sh          configure and build with the `cuda` preset, then run
#   tests/gpu_check.sh DIR      only run the executables already built in DIR (a `cuda` build tree
#                               made on another machine with the same CUDA toolkit major version)
#
# CUDA tests are the <module>_cuda_tests executables (exit code 77 means "no GPU": skipped, which
# fails the check when nvidia-smi lists a GPU, since the test then did not run where it should);
# CUDA benchmarks are the <module>_cuda_bench executables. Logs go to $GPU_CHECK_LOGS (default:
# a temporary folder) so that a remote run can bring them back.
set -u
cd "$(dirname "$0")/.."

build=${1:-}
if [[ -z "$build" ]]; then
  build=build/cuda
  cmake --preset cuda >/dev/null && cmake --build --preset cuda -j"$(nproc)" || exit 1
fi
[[ -d /usr/local/cuda/lib64 ]] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
[[ -d /usr/local/cuda/lib ]] && export LD_LIBRARY_PATH=/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}

logs=${GPU_CHECK_LOGS:-$(mktemp -d)}
mkdir -p "$logs"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
if [[ "$gpus" -gt 0 ]]; then
  nvidia-smi -L
else
  echo "nvidia-smi: no GPU listed"
fi

rows=()
failed=0
while IFS= read -r exe; do
  name=$(basename "$exe")
  args=()
  [[ "$name" == *_cuda_bench ]] && args=(--benchmark_min_time=0.2s --benchmark_counters_tabular=true)
  start=$(date +%s.%N)
  "$exe" "${args[@]}" >"$logs/$name.log" 2>&1
  rc=$?
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  case $rc in
    0) result=pass ;;
    77)
      if [[ "$gpus" -gt 0 ]]; then
        result="FAIL(skipped with $gpus GPU listed)"
        failed=1
      else
        result=skipped
      fi
      ;;
    *) result="FAIL($rc)"; failed=1 ;;
  esac
  echo "==== $name ($result)"
  tail -n 40 "$logs/$name.log"
  summary=$(grep -v '^\s*$' "$logs/$name.log" | tail -n 1 | cut -c1-70)
  rows+=("$(printf '%-26s %-9s %7.1f  %s' "$name" "$result" "$seconds" "$summary")")
done < <(find "$build" -type f -perm -u+x \( -name '*_cuda_tests' -o -name '*_cuda_bench' \) | sort)

echo
echo "GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
printf '%-26s %-9s %7s  %s\n' executable result seconds summary
if [[ ${#rows[@]} -eq 0 ]]; then
  echo "no CUDA executables found under $build"
  exit 1
fi
printf '%s\n' "${rows[@]}"
exit $failed
