#!/usr/bin/env bash
# GSM8K accuracy against a running server started by serve.sh, with the
# output kept in a per-mode log.  Run with --help for options.
set -euo pipefail

DSV4_PROG=eval_gsm8k.sh
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

DEFAULT_NUM_EXAMPLES=1319
DEFAULT_NUM_SHOTS=64

usage() {
  cat <<EOF
Usage: scripts/eval_gsm8k.sh [options] [-- extra sglang.test.run_eval flags]

Run GSM8K (the full ${DEFAULT_NUM_EXAMPLES}-question test set, ${DEFAULT_NUM_SHOTS}-shot) against a running server:
  $PYTHON -m sglang.test.run_eval --eval-name gsm8k --num-examples N --num-shots K
Its output is also written to a log, eval_logs/gsm8k_<mode>.log by default.

The plugin runs inside the server: evaluate a server started with
scripts/serve.sh, and pass --baseline when it was started with
scripts/serve.sh --baseline, so the two logs sit side by side.

Options:
  --host HOST          server address (default: ${DSV4_DEFAULT_HOST})
  --port PORT          server port (default: ${DSV4_DEFAULT_PORT})
  --model-path NAME    model name sent to the server (default: ask the server)
  --num-examples N     questions to run (default: ${DEFAULT_NUM_EXAMPLES}, the whole test set)
  --num-shots K        few-shot examples per prompt (default: ${DEFAULT_NUM_SHOTS})
  --log FILE           where to keep the output (default: eval_logs/gsm8k_dsv4_sparse.log,
                       or eval_logs/gsm8k_baseline.log with --baseline); --no-log for none
  --baseline           label this run as the baseline (plugin off, SGLANG_DSV4_SPARSE=0)
  --dry-run            print the environment and command instead of running them
                       (no SGLang or server checks)
  -h, --help           show this help
  -- ARGS...           passed to run_eval unchanged (e.g. -- --num-threads 128)

Environment: ${DSV4_PYTHON_HELP},
DSV4_SERVER_TIMEOUT (seconds for the reachability check, default 5).
No GPU check: this is an HTTP client.

${DSV4_EXIT_CODES_HELP}
EOF
}

host=$DSV4_DEFAULT_HOST
port=$DSV4_DEFAULT_PORT
model=""
num_examples=$DEFAULT_NUM_EXAMPLES
num_shots=$DEFAULT_NUM_SHOTS
log=""
no_log=0
baseline=0
dry_run=0
extra=()

while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --host) dsv4_need_value "$@"; host=$2; shift 2 ;;
    --port) dsv4_need_value "$@"; port=$2; shift 2 ;;
    --model-path | --model) dsv4_need_value "$@"; model=$2; shift 2 ;;
    --num-examples) dsv4_need_value "$@"; num_examples=$2; shift 2 ;;
    --num-shots) dsv4_need_value "$@"; num_shots=$2; shift 2 ;;
    --log) dsv4_need_value "$@"; log=$2; shift 2 ;;
    --no-log) no_log=1; shift ;;
    --baseline) baseline=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) dsv4_die "$DSV4_EXIT_USAGE" "unknown option '$1' (run_eval flags go after --; see --help)" ;;
  esac
done

dsv4_int --port "$port"
dsv4_int --num-examples "$num_examples"
dsv4_int --num-shots "$num_shots" 0

dsv4_mode_env "$baseline"
[[ -n $log ]] || log="eval_logs/gsm8k_${DSV4_MODE}.log"

cmd=("$PYTHON" -m sglang.test.run_eval
  --eval-name gsm8k
  --num-examples "$num_examples"
  --num-shots "$num_shots"
  --host "$host"
  --port "$port")
[[ -z $model ]] || cmd+=(--model "$model")
cmd+=(${extra[@]+"${extra[@]}"})

if ((dry_run)); then
  dsv4_print_dry_run "${cmd[@]}"
  ((no_log)) || echo "# output also written to $log"
  exit 0
fi

dsv4_check_sglang_module
dsv4_check_server "$host" "$port"

echo "${DSV4_PROG}: GSM8K on the ${DSV4_MODE} server at ${host}:${port}:" >&2
dsv4_print_command "${cmd[@]}" >&2
dsv4_export_env
if ((no_log)); then
  exec "${cmd[@]}"
fi
mkdir -p "$(dirname "$log")"
# Unbuffered, so the log and the terminal see lines as they are printed.
export PYTHONUNBUFFERED=1
status=0
"${cmd[@]}" | tee "$log" || status=$?
echo "${DSV4_PROG}: output kept in $log" >&2
exit "$status"
