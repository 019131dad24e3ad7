set -uo pipefail
. scripts/_gpu_env.sh
gpu_env gpuC >/dev/null
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null 2>&1
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0 SGLANG_DSV4_SPARSE_COMMIT=$1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$SECONDS
timeout 140 python3 scripts/bench_sglang_ab.py --quick --heads 8,16,64,128 --no-variants --breakdown --json $OUT/bench_sglang_ab.json > $OUT/ab.log 2>&1; echo "ab rc=$? $((SECONDS-t0))s"
grep -B2 -A8 Traceback $OUT/ab.log | head -16
awk '/^== sglang A\/B, extend/{p=1} p' $OUT/ab.log | cut -c1-180 | tail -45
rm -f $OUT/trace_*.json
t0=$SECONDS
timeout 70 python3 scripts/soak_sglang.py --quick --max-seconds 55 --json $OUT/soak_sglang.json > $OUT/soak.log 2>&1; echo "soak rc=$? $((SECONDS-t0))s"
tail -12 $OUT/soak.log
