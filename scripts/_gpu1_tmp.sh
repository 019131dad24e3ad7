set -uo pipefail
. scripts/_gpu_env.sh
gpu_env gpuA >/dev/null
export SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1 SGLANG_OPT_USE_TOPK_V2=0 SGLANG_DSV4_SPARSE_COMMIT=$1
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$SECONDS
timeout ${AB_S:-420} python3 scripts/bench_sglang_ab.py --no-variants --breakdown --json $OUT/bench_sglang_ab.json > $OUT/ab.log 2>&1; echo "ab rc=$? $((SECONDS-t0))s"
grep -B2 -A8 Traceback $OUT/ab.log | head -30
grep -E "^\[" $OUT/ab.log | tail -3
awk '/^== sglang A\/B, extend/{p=1} p' $OUT/ab.log | cut -c1-180 | tail -175
rm -f $OUT/trace_*.json
