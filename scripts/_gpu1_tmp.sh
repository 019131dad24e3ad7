set -uo pipefail
. scripts/_gpu_env.sh
gpu_env gpu1 >/dev/null
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0 SGLANG_DSV4_SPARSE_COMMIT=$1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$SECONDS
timeout 170 python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile tests/sglang tests/test_routing.py > $OUT/tests.log 2>&1; echo "tests rc=$? $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.log | tail -12
t0=$SECONDS
timeout 390 python3 scripts/bench_sglang_ab.py --heads 8,16 --skip-decode --breakdown --route-table $OUT/sm90.json --json $OUT/ab_narrow.json > $OUT/ab.log 2>&1; echo "ab rc=$? $((SECONDS-t0))s"
grep -E "^\[" $OUT/ab.log | tail -50
awk '/^== /{p=1} p' $OUT/ab.log | tail -70
grep -B2 -A12 Traceback $OUT/ab.log | head -40
cp $OUT/tests.log $OUT/ab.log /tmp/ 2>/dev/null; rm -f $OUT/trace_*.json
