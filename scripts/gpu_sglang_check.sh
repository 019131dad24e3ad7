#!/usr/bin/env bash
# One call on a GPU machine: SGLang 0.5.23 itself as the yardstick.
#
#   bash scripts/gpu_sglang_check.sh [--skip-tests] [--skip-kit] [--skip-ab] [--skip-verify-ab] [--skip-soak]
#                                    [--quick] [--verify-sweep]
#
# Installs the wheels carried in .whl/ (fetch them first, where PyPI is
# reachable: bash scripts/fetch_gpu_wheels.sh), then runs
#   (a) tests/sglang and the verify kernel's tests on CUDA;
#   (b) SGLang's DSv4 attention kit on both backends, every case, C0/C4/C128,
#       8/16/64/128 heads, and (c) the kit's CUDA-graph decode runner
#       (scripts/sglang_kit_matrix.py);
#   (d) the per-layer and per-step A/B against SGLang's backend
#       (scripts/bench_sglang_ab.py; --quick trims it), and the verify /
#       draft-extend CUDA-graph A/B (scripts/bench_sglang_verify.py --breakdown:
#       each layer and kernel's time; --verify-sweep adds its --sweep of the
#       verify kernel's launch configs and split counts, not yet timed on a GPU);
#   (e) the short churn soak of both backends on one pool
#       (scripts/soak_sglang.py --quick: 300 random steps, compared every 20th).
# Logs and JSON go to $OUT (or ./gpu_check_out); a summary table comes last.
# Exit status: 2 bad usage, 3 no SGLang wheel in .whl/, 4 no GPU visible.
set -uo pipefail
cd "$(dirname "$0")/.."
SKIP_TESTS=0; SKIP_KIT=0; SKIP_AB=0; SKIP_VERIFY_AB=0; SKIP_SOAK=0; QUICK=""; VERIFY_SWEEP=""
for a in "$@"; do
  case "$a" in
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-kit) SKIP_KIT=1 ;;
    --skip-ab) SKIP_AB=1 ;;
    --skip-verify-ab) SKIP_VERIFY_AB=1 ;;
    --skip-soak) SKIP_SOAK=1 ;;
    --quick) QUICK="--quick" ;;
    --verify-sweep) VERIFY_SWEEP="--sweep" ;;
    -h|--help) sed -n 2,21p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_sglang_check.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
. scripts/_gpu_env.sh
gpu_env gpu_sglang_check.sh
if ! ls .whl/sglang-0.5.23-*.whl >/dev/null 2>&1; then
  dsv4_die "$DSV4_EXIT_NO_SGLANG" "no SGLang wheel in .whl/: run 'bash scripts/fetch_gpu_wheels.sh' where PyPI is reachable and carry .whl/"
fi
# This package too, for its sglang.srt.plugins entry point (load_plugins() finds
# plugins through installed distributions); $PWD comes first on the path, so
# the working tree's code is what runs.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . \
  || echo "gpu_sglang_check.sh: could not install the package (its entry-point tests will skip)" >&2
# The kit's C4 indexer metadata then needs neither DeepGEMM nor a JIT planner.
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import sys; sys.path.insert(0, 'tests/sglang'); import stand_ins; print('stand-ins:', stand_ins.install()); import sglang, flash_mla; print('sglang', sglang.__version__)"

STEP_TIMEOUT="${STEP_TIMEOUT:-420}"
# pytest loads tests/sglang/conftest.py, which puts the stand-ins in place first.
[ "$SKIP_TESTS" = 1 ] || run_step sglang_tests python3 -m pytest tests/sglang tests/kernels/sparse_attn/test_verify_paged.py -q -p no:cacheprovider
[ "$SKIP_KIT" = 1 ] || run_step kit_matrix python3 scripts/sglang_kit_matrix.py
[ "$SKIP_AB" = 1 ] || [ ! -f scripts/bench_sglang_ab.py ] || run_step sglang_ab python3 scripts/bench_sglang_ab.py $QUICK
[ "$SKIP_VERIFY_AB" = 1 ] || run_step verify_ab python3 scripts/bench_sglang_verify.py $QUICK --breakdown $VERIFY_SWEEP
# The soak stops itself a minute before the step's timeout, so its report is written either way.
[ "$SKIP_SOAK" = 1 ] || run_step soak python3 scripts/soak_sglang.py --quick --max-seconds $((STEP_TIMEOUT - 60))

[ -f "$OUT/kit_matrix.log" ] && awk '/^== SGLang DSv4/{p=1} p' "$OUT/kit_matrix.log" | tail -45
[ -f "$OUT/sglang_ab.log" ] && awk '/^== /{p=1} p' "$OUT/sglang_ab.log" | tail -60
[ -f "$OUT/verify_ab.log" ] && awk '/^Run: /{p=1} p' "$OUT/verify_ab.log" | tail -70
[ -f "$OUT/soak.log" ] && awk '/^== soak_sglang/{p=1} p' "$OUT/soak.log" | tail -30
# The status lines come last, so the end of the output (all a remote runner may return) holds them.
echo; echo "===== gpu_sglang_check summary ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
for s in "${status[@]}"; do echo "$s"; done
grep -h "^FAILED\|^ERROR" "$OUT/sglang_tests.log" 2>/dev/null | head -20
grep -h "passed\|failed" "$OUT/sglang_tests.log" 2>/dev/null | tail -1
pack_logs
exit 0
