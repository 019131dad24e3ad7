#!/usr/bin/env bash
# Start an SGLang server for DeepSeek-V4 with the dsv4_sparse plugin on
# (or off with --baseline).  Run with --help for the options.
set -euo pipefail

DSV4_PROG=serve.sh
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<EOF
Usage: scripts/serve.sh [options] [-- extra sglang serve flags]

Start \`sglang serve\` for DeepSeek-V4 with the ${DSV4_PLUGIN_NAME} plugin active
(SGLANG_DSV4_SPARSE=1) and extends routed to sparse prefill
(SGLANG_OPT_FLASHMLA_SPARSE_PREFILL=1).

Options:
  --model-path PATH          model repo id or local dir (default: ${DSV4_DEFAULT_MODEL})
  --tp N                     tensor-parallel size, passed as --tp-size (default: ${DSV4_DEFAULT_TP})
  --chunked-prefill-size N   tokens per prefill chunk, -1 disables chunking (default: ${DSV4_DEFAULT_CHUNKED_PREFILL})
  --host HOST                address to listen on (default: ${DSV4_DEFAULT_HOST})
  --port PORT                port to listen on (default: ${DSV4_DEFAULT_PORT})
  --baseline                 plugin off (SGLANG_DSV4_SPARSE=0): SGLang's own backend,
                             everything else identical, for A/B comparisons
  --dry-run                  print the environment and command instead of running them
                             (no SGLang, GPU or plugin checks)
  -h, --help                 show this help
  -- ARGS...                 passed to \`sglang serve\` unchanged (e.g. -- --mem-fraction-static 0.85)

Runs the \`sglang\` next to \$PYTHON (this checkout's .venv/bin/sglang by default)
when there is one, else the one on PATH.  Before starting it checks that
the interpreter behind it imports SGLang's attention registry, and names
the missing module when it does not.

Environment: ${DSV4_PYTHON_HELP},
DSV4_SKIP_GPU_CHECK=1, SGLANG_PLUGINS (if set, ${DSV4_PLUGIN_NAME} is added to it).

Examples:
  scripts/serve.sh                       # plugin on, TP 4, port ${DSV4_DEFAULT_PORT}
  scripts/serve.sh --baseline            # same server, SGLang's own backend
  scripts/serve.sh --tp 8 -- --mem-fraction-static 0.85

${DSV4_EXIT_CODES_HELP}
EOF
}

model=$DSV4_DEFAULT_MODEL
tp=$DSV4_DEFAULT_TP
chunked=$DSV4_DEFAULT_CHUNKED_PREFILL
host=$DSV4_DEFAULT_HOST
port=$DSV4_DEFAULT_PORT
baseline=0
dry_run=0
extra=()

while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --model-path | --model) dsv4_need_value "$@"; model=$2; shift 2 ;;
    --tp | --tp-size) dsv4_need_value "$@"; tp=$2; shift 2 ;;
    --chunked-prefill-size) dsv4_need_value "$@"; chunked=$2; shift 2 ;;
    --host) dsv4_need_value "$@"; host=$2; shift 2 ;;
    --port) dsv4_need_value "$@"; port=$2; shift 2 ;;
    --baseline) baseline=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) dsv4_die "$DSV4_EXIT_USAGE" "unknown option '$1' (SGLang flags go after --; see --help)" ;;
  esac
done

dsv4_int --tp "$tp"
dsv4_int --chunked-prefill-size "$chunked" -1
dsv4_int --port "$port"
[[ -n $model ]] || dsv4_die "$DSV4_EXIT_USAGE" "option --model-path needs a non-empty value"

dsv4_mode_env "$baseline"
dsv4_find_sglang_cli
cmd=("${DSV4_SGLANG_CLI:-sglang}" serve
  --model-path "$model"
  --tp-size "$tp"
  --chunked-prefill-size "$chunked"
  --host "$host"
  --port "$port"
  ${extra[@]+"${extra[@]}"})

if ((dry_run)); then
  dsv4_print_dry_run "${cmd[@]}"
  exit 0
fi

dsv4_check_sglang_cli
dsv4_check_gpu "$tp"
# The server imports SGLang's attention registry whatever the model, and the
# plugin patches it: an import that fails here (a missing dependency of
# SGLang's) would end the server later, or leave SGLang's own backend on.
dsv4_check_import "$DSV4_SGLANG_PYTHON" "$DSV4_SGLANG_REGISTRY"
if ((!baseline)); then
  if ! "$DSV4_SGLANG_PYTHON" -c '
import sys
from importlib.metadata import entry_points
sys.exit(not any(ep.name == sys.argv[1] for ep in entry_points(group="sglang.srt.plugins")))
' "$DSV4_PLUGIN_NAME" >/dev/null 2>&1; then
    dsv4_warn "plugin '${DSV4_PLUGIN_NAME}' is not installed for $DSV4_SGLANG_PYTHON ($DSV4_SGLANG_PYTHON -m pip install --no-deps ${DSV4_REPO_ROOT}); without it the server runs SGLang's own backend"
  fi
fi

echo "${DSV4_PROG}: starting the ${DSV4_MODE} server on ${host}:${port}:" >&2
dsv4_print_command "${cmd[@]}" >&2
dsv4_export_env
exec "${cmd[@]}"
