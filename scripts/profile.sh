#!/usr/bin/env bash
# Profile one long request against a running server started by serve.sh and
# keep the traces under a per-mode directory.  Run with --help for options.
set -euo pipefail

DSV4_PROG=profile.sh
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

DEFAULT_INPUT_LEN=131072

usage() {
  cat <<EOF
Usage: scripts/profile.sh [options] [-- extra sglang.test.send_one flags]

Send one ${DEFAULT_INPUT_LEN}-token random prompt with the PyTorch profiler on, one
trace per stage (prefill EXTEND, DECODE) and rank:
  $PYTHON -m sglang.test.send_one --batch-size 1 --random-input-len N --profile --profile-by-stage
Traces land in OUTPUT_DIR/<timestamp>/ (SGLANG_TORCH_PROFILER_DIR=OUTPUT_DIR).

The plugin runs inside the server: profile a server started with
scripts/serve.sh for the plugin run, and one started with
scripts/serve.sh --baseline for the --baseline run.  Then compare:
  dsv4-kernel-diff profiles/baseline profiles/dsv4_sparse --stage extend

Options:
  --host HOST         server address (default: ${DSV4_DEFAULT_HOST})
  --port PORT         server port (default: ${DSV4_DEFAULT_PORT})
  --input-len N       prompt length in tokens (default: ${DEFAULT_INPUT_LEN})
  --output-dir DIR    where traces go (default: profiles/dsv4_sparse, or
                      profiles/baseline with --baseline)
  --baseline          label this run as the baseline (plugin off,
                      SGLANG_DSV4_SPARSE=0) and default to profiles/baseline
  --dry-run           print the environment and command instead of running them
                      (no SGLang, GPU or server checks)
  -h, --help          show this help
  -- ARGS...          passed to send_one unchanged (e.g. -- --profile-steps 3 --max-new-tokens 64)

Environment: ${DSV4_PYTHON_HELP},
DSV4_SKIP_GPU_CHECK=1,
DSV4_SERVER_TIMEOUT (seconds for the reachability check, default 5).
The GPU check is there because the server writes the traces to OUTPUT_DIR
on its own filesystem: run this on the server's machine.

${DSV4_EXIT_CODES_HELP}
EOF
}

host=$DSV4_DEFAULT_HOST
port=$DSV4_DEFAULT_PORT
input_len=$DEFAULT_INPUT_LEN
output_dir=""
baseline=0
dry_run=0
extra=()

while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --host) dsv4_need_value "$@"; host=$2; shift 2 ;;
    --port) dsv4_need_value "$@"; port=$2; shift 2 ;;
    --input-len | --random-input-len) dsv4_need_value "$@"; input_len=$2; shift 2 ;;
    --output-dir) dsv4_need_value "$@"; output_dir=$2; shift 2 ;;
    --baseline) baseline=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) dsv4_die "$DSV4_EXIT_USAGE" "unknown option '$1' (send_one flags go after --; see --help)" ;;
  esac
done

dsv4_int --port "$port"
dsv4_int --input-len "$input_len"

dsv4_mode_env "$baseline"
[[ -n $output_dir ]] || output_dir="profiles/${DSV4_MODE}"
# The client sends this path to the server, which writes there: make it
# absolute so both sides mean the same directory.
[[ $output_dir == /* ]] || output_dir="$PWD/$output_dir"
DSV4_ENV+=("SGLANG_TORCH_PROFILER_DIR=$output_dir")

cmd=("$PYTHON" -m sglang.test.send_one
  --host "$host"
  --port "$port"
  --batch-size 1
  --random-input-len "$input_len"
  --profile
  --profile-by-stage
  ${extra[@]+"${extra[@]}"})

if ((dry_run)); then
  dsv4_print_dry_run "${cmd[@]}"
  exit 0
fi

dsv4_check_sglang_module
dsv4_check_gpu 1
dsv4_check_server "$host" "$port"

mkdir -p "$output_dir"
echo "${DSV4_PROG}: profiling the ${DSV4_MODE} server at ${host}:${port}, traces to ${output_dir}:" >&2
dsv4_print_command "${cmd[@]}" >&2
dsv4_export_env
status=0
"${cmd[@]}" || status=$?
if ((status == 0)); then
  echo "${DSV4_PROG}: traces are in the newest subdirectory of ${output_dir}; compare runs with:" >&2
  echo "  dsv4-kernel-diff profiles/baseline profiles/dsv4_sparse --stage extend" >&2
fi
exit "$status"
