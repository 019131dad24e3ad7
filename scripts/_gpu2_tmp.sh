set -uo pipefail
. scripts/_gpu_env.sh
gpu_env gpuB >/dev/null
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null 2>&1
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0 SGLANG_DSV4_SPARSE_COMMIT=$1
t0=$SECONDS
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile tests/sglang tests/test_routing.py tests/kernels/indices/test_plan_rows.py > $OUT/tests.log 2>&1; echo "tests rc=$? $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.log | tail -8
t0=$SECONDS
timeout 300 python3 scripts/sglang_kit_matrix.py --json $OUT/sglang_kit_matrix.json > $OUT/kit.log 2>&1; echo "kit rc=$? $((SECONDS-t0))s"
awk '/^== SGLang DSv4/{p=1} p' $OUT/kit.log | tail -25
if [ -f scripts/soak_sglang.py ]; then t0=$SECONDS; timeout ${SOAK_S:-120} python3 scripts/soak_sglang.py --quick --max-seconds $(( ${SOAK_S:-120} - 20 )) --json $OUT/soak_sglang.json > $OUT/soak.log 2>&1; echo "soak rc=$? $((SECONDS-t0))s"; tail -25 $OUT/soak.log; fi
