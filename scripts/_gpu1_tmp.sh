set -uo pipefail
. scripts/_gpu_env.sh
gpu_env gpuA >/dev/null
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null 2>&1
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0 SGLANG_DSV4_SPARSE_COMMIT=$1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$SECONDS
timeout ${AB_S:-150} python3 scripts/bench_sglang_ab.py --quick --heads 8,16,64,128 --no-variants --breakdown --json $OUT/bench_sglang_ab.json > $OUT/ab.log 2>&1; echo "ab rc=$? $((SECONDS-t0))s"
grep -B2 -A8 Traceback $OUT/ab.log | head -20
awk '/^== sglang A\/B, extend/{p=1} p' $OUT/ab.log | cut -c1-180 | tail -60
rm -f $OUT/trace_*.json
t0=$SECONDS
timeout ${TEST_S:-60} python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile tests/sglang/test_routes.py tests/sglang/test_backend_forward.py tests/sglang/test_plan_from_forward_batch.py tests/kernels/indices/test_plan_rows.py > $OUT/tests.log 2>&1; echo "tests rc=$? $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.log | tail -6
t0=$SECONDS
timeout ${KIT_S:-100} python3 scripts/sglang_kit_matrix.py --no-graph --json $OUT/sglang_kit_matrix.json > $OUT/kit.log 2>&1; echo "kit rc=$? $((SECONDS-t0))s"
awk '/^== SGLang DSv4/{p=1} p' $OUT/kit.log | tail -14
