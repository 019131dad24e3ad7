#!/usr/bin/env bash
# One call on a GPU machine: install carried wheels, run the test suite on CUDA,
# then the benchmarks and the end-to-end check; a short summary table comes last.
#
#   bash scripts/gpu_check.sh [--quick] [--sweep] [--skip-tests] [--skip-benches]
#
# Wheels (FlashMLA: sgl-flash-mla) are taken from .whl/ when present; logs and
# JSON results go to $OUT (or ./gpu_check_out). Exit status: 2 bad usage,
# 4 no GPU visible.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""; SWEEP=""; SKIP_TESTS=0; SKIP_BENCHES=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK="--quick" ;;
    --sweep) SWEEP="--sweep" ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-benches) SKIP_BENCHES=1 ;;
    -h|--help) sed -n 2,9p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
. scripts/_gpu_env.sh
gpu_env gpu_check.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import flash_mla; print('flash_mla', flash_mla.__file__)" 2>/dev/null || echo "flash_mla: not importable (FlashMLA comparisons skipped)"

STEP_TIMEOUT="${STEP_TIMEOUT:-300}"  # seconds per step, so one stuck step cannot eat the whole call

if [ "$SKIP_TESTS" = 0 ]; then
  # The whole suite (no -x: one call should show every failure). Its time is mostly Triton compiling
  # kernels, about 10 minutes in one process on an H200: with pytest-xdist (carried in .whl/) the
  # test files are spread over worker processes.
  XDIST=()
  python3 -c "import xdist" 2>/dev/null && XDIST=(-n "${TEST_WORKERS:-8}" --dist loadfile)
  STEP_TIMEOUT="${TEST_TIMEOUT:-420}" run_step tests python3 -m pytest tests -q -rf -p no:cacheprovider "${XDIST[@]}"
fi
if [ "$SKIP_BENCHES" = 0 ]; then
  run_step bench_kernels python3 scripts/bench_kernels.py $QUICK $SWEEP
  run_step bench_attention python3 scripts/bench_attention.py $QUICK
  run_step e2e_stack python3 scripts/e2e_stack.py $QUICK
  run_step bench_prefill_routes python3 scripts/bench_prefill_routes.py $QUICK $SWEEP
fi

for f in bench_kernels bench_attention e2e_stack bench_prefill_routes; do
  [ -f "$OUT/$f.log" ] && { echo "--- $f"; awk '/^== /{p=1} p' "$OUT/$f.log" | tail -40; }
done
# The status lines come last, so the end of the output (all a remote runner may return) holds them.
echo; echo "===== gpu_check summary ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
for s in "${status[@]}"; do echo "$s"; done
grep -h "^FAILED\|^ERROR" "$OUT/tests.log" 2>/dev/null | head -20
grep -h "passed\|failed" "$OUT/tests.log" 2>/dev/null | tail -1
pack_logs
