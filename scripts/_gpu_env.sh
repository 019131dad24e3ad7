# Sourced by the GPU-machine scripts (gpu_check.sh, gpu_sglang_check.sh), with
# scripts/_common.sh (its exit statuses and GPU check):
#   gpu_env NAME   checks that a GPU is visible (exit status DSV4_EXIT_NO_GPU,
#                  4, when none is; DSV4_SKIP_GPU_CHECK=1 skips the check), then
#                  sets OUT (default ./gpu_check_out) and PYTHONUNBUFFERED, and
#                  installs the wheels carried in .whl/ (the GPU machine has no
#                  network) into /tmp/site, first on PYTHONPATH after this checkout.
#   run_step NAME CMD...  runs one step under $STEP_TIMEOUT seconds, its output
#                  also in $OUT/NAME.log, and adds its status line to ${status[@]}.
#   pack_logs      folds $OUT/*.log into $OUT/logs.tar.gz (a remote runner may
#                  return only a few files: the JSON and one archive).
# shellcheck source=scripts/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

gpu_env() {
  local name=$1
  DSV4_PROG=$name
  dsv4_check_gpu 1  # first: nothing is written or installed without a GPU
  OUT="${OUT:-$PWD/gpu_check_out}"; mkdir -p "$OUT"; export OUT
  export PYTHONUNBUFFERED=1
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "$name: installing .whl/ failed" >&2; exit 2; }
    export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

status=()
run_step() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo; echo "### $name: $*"
  timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  status+=("$(printf '%-16s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
}

pack_logs() {
  ( cd "$OUT" && ls ./*.log >/dev/null 2>&1 && tar czf logs.tar.gz ./*.log && rm -f ./*.log ) || true
}
