# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Helpers shared by serve.sh, profile.sh and eval_gsm8k.sh, and (through
# _gpu_env.sh) gpu_check.sh and gpu_sglang_check.sh.  Sourced, never run: it
# only defines variables and functions.
#
# Exit statuses used by the wrappers (each --help repeats them):
#   2  bad usage
#   3  SGLang not installed or not importable (no `sglang` next to $PYTHON
#      or on PATH / an import of SGLang fails; the message names what is missing)
#   4  no GPU visible (skip the check with DSV4_SKIP_GPU_CHECK=1); the Python
#      scripts use the same status (sglang_dsv4_sparse.benchmarking.EXIT_NO_GPU)
#   5  no SGLang server answering on --host/--port

DSV4_DEFAULT_MODEL="deepseek-ai/DeepSeek-V4-Flash"
DSV4_DEFAULT_TP=4
DSV4_DEFAULT_CHUNKED_PREFILL=32768
DSV4_DEFAULT_HOST="127.0.0.1"
DSV4_DEFAULT_PORT=30000
DSV4_PLUGIN_NAME="dsv4_sparse"
# What serve.sh imports before starting the server (and what the plugin patches).
DSV4_SGLANG_REGISTRY="sglang.srt.layers.attention.attention_registry"

DSV4_EXIT_USAGE=2
DSV4_EXIT_NO_SGLANG=3
DSV4_EXIT_NO_GPU=4
DSV4_EXIT_NO_SERVER=5

# The interpreter that runs `python -m sglang...`: $PYTHON if set, else the
# repository's .venv (what scripts/setup.sh makes) when it exists, else python3.
DSV4_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DSV4_REPO_VENV_PYTHON="$DSV4_REPO_ROOT/.venv/bin/python"
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $DSV4_REPO_VENV_PYTHON ]]; then
    PYTHON=$DSV4_REPO_VENV_PYTHON
  else
    PYTHON=python3
  fi
fi
DSV4_PYTHON_HELP="PYTHON (default: .venv/bin/python of this checkout when it exists, else python3)"

DSV4_EXIT_CODES_HELP="Exit status: 0 ok; 2 bad usage; 3 SGLang not installed or not importable; 4 no GPU visible
(DSV4_SKIP_GPU_CHECK=1 skips that check); 5 server not reachable; otherwise
the status of the SGLang command itself."

dsv4_die() {
  local code=$1
  shift
  echo "${DSV4_PROG}: error: $*" >&2
  exit "$code"
}

dsv4_warn() {
  echo "${DSV4_PROG}: warning: $*" >&2
}

# dsv4_need_value "$@": the option in $1 must be followed by a value.
dsv4_need_value() {
  (($# >= 2)) || dsv4_die "$DSV4_EXIT_USAGE" "option $1 needs a value (see --help)"
}

# dsv4_int OPTION VALUE [MIN]: VALUE must be an integer >= MIN (default 1).
dsv4_int() {
  local opt=$1 value=$2 min=${3:-1}
  if ! [[ $value =~ ^-?[0-9]+$ ]] || ((value < min)); then
    dsv4_die "$DSV4_EXIT_USAGE" "option $opt needs an integer >= $min, got '$value'"
  fi
}

# Sets DSV4_ENV (NAME=VALUE words) for plugin on ($1 = 0) or off ($1 = 1).
# Sparse prefill stays on in both modes so the plugin is the only difference.
dsv4_mode_env() {
  local baseline=$1
  DSV4_ENV=("SGLANG_OPT_FLASHMLA_SPARSE_PREFILL=1")
  if ((baseline)); then
    DSV4_MODE="baseline"
    DSV4_ENV+=("SGLANG_DSV4_SPARSE=0")
  else
    DSV4_MODE="dsv4_sparse"
    DSV4_ENV+=("SGLANG_DSV4_SPARSE=1")
    # SGLANG_PLUGINS is a whitelist: a non-empty one without our name would
    # silently load SGLang's own backend, so add the plugin to it.
    local plugins="${SGLANG_PLUGINS:-}"
    if [[ -n $plugins && ",${plugins// /}," != *",${DSV4_PLUGIN_NAME},"* ]]; then
      DSV4_ENV+=("SGLANG_PLUGINS=${plugins},${DSV4_PLUGIN_NAME}")
    fi
  fi
}

# Shell-quotes one word, leaving plain ones bare (printf %q escapes even
# commas, which makes the printed commands hard to read).
dsv4_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a runnable shell snippet: one export per DSV4_ENV word, then the
# command given as arguments.
dsv4_print_command() {
  local kv
  for kv in ${DSV4_ENV[@]+"${DSV4_ENV[@]}"}; do
    printf 'export %s=%s\n' "${kv%%=*}" "$(dsv4_quote "${kv#*=}")"
  done
  local out="" word
  for word in "$@"; do
    out+="$(dsv4_quote "$word") "
  done
  printf '%s\n' "${out% }"
}

# What --dry-run prints: a header naming the script and mode, then the command.
dsv4_print_dry_run() {
  echo "# ${DSV4_PROG} (${DSV4_MODE}) would run:"
  dsv4_print_command "$@"
}

dsv4_export_env() {
  local kv
  for kv in ${DSV4_ENV[@]+"${DSV4_ENV[@]}"}; do
    export "${kv?}"
  done
}

# dsv4_find_sglang_cli: the `sglang` console script serve.sh runs.  The one
# next to $PYTHON comes first (by default this checkout's .venv/bin/sglang,
# where scripts/setup.sh --with-sglang puts it), then the first on PATH.
# Sets DSV4_SGLANG_CLI (empty when there is none) and DSV4_SGLANG_PYTHON, the
# interpreter behind it: $PYTHON for the one next to it, else the one its #!
# line names (pip writes an absolute path there), else $PYTHON.
dsv4_find_sglang_cli() {
  DSV4_SGLANG_CLI=""
  DSV4_SGLANG_PYTHON=$PYTHON
  local py line
  if py=$(command -v "$PYTHON" 2>/dev/null) && [[ -x $(dirname "$py")/sglang ]]; then
    DSV4_SGLANG_CLI="$(dirname "$py")/sglang"
    return 0
  fi
  DSV4_SGLANG_CLI=$(command -v sglang 2>/dev/null) || {
    DSV4_SGLANG_CLI=""
    return 0
  }
  line=""
  IFS= read -r line <"$DSV4_SGLANG_CLI" || true
  if [[ $line == '#!/'* ]]; then
    line=${line#'#!'}
    if [[ $line != *[[:space:]]* && -x $line ]]; then
      DSV4_SGLANG_PYTHON=$line
    fi
  fi
}

# serve.sh runs DSV4_SGLANG_CLI (dsv4_find_sglang_cli first).
dsv4_check_sglang_cli() {
  [[ -n ${DSV4_SGLANG_CLI:-} ]] ||
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "SGLang is not installed: no 'sglang' next to $PYTHON nor on PATH; install SGLang 0.5.23 in that environment ($PYTHON -m pip install '${DSV4_REPO_ROOT}[sglang]' installs it with this package) or set PYTHON=/path/to/its/bin/python"
}

# dsv4_check_import PYTHON MODULE: PYTHON imports MODULE.  When it does not,
# the error says why in one line: the module that is missing (the usual case:
# SGLang is there but one of its own dependencies is not) or the exception.
# The import's own output is dropped.
dsv4_check_import() {
  local py=$1 module=$2 why
  command -v "$py" >/dev/null 2>&1 ||
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "Python interpreter '$py' not found; set PYTHON=/path/to/python"
  if ! why=$("$py" - "$module" 2>/dev/null <<'PY'
import importlib
import os
import sys

report = os.dup(1)
quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(quiet, 1)
os.dup2(quiet, 2)
try:
    importlib.import_module(sys.argv[1])
except BaseException as exc:
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    text = f"{type(exc).__name__}: {exc}"
    if missing:
        text = f"module '{missing}' is missing ({text})"
    os.write(report, (" ".join(text.split()) + "\n").encode())
    os._exit(1)
os._exit(0)
PY
  ); then
    why=${why:-"no reason given"}
    local hint
    case $why in
      "module 'sglang' is missing"*)
        hint="install SGLang 0.5.23 in that environment ($py -m pip install '${DSV4_REPO_ROOT}[sglang]') or set PYTHON=/path/to/its/python" ;;
      "module 'sglang."*)
        hint="this package needs SGLang 0.5.23 ($py -m pip show sglang names the version installed)" ;;
      "module '"*)
        hint="install that module in the same environment" ;;
      *)
        hint="run $py -c 'import $module' to see the traceback" ;;
    esac
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "'$py' cannot import $module: $why; $hint"
  fi
}

# `$PYTHON -m sglang.test...` needs SGLang importable by $PYTHON.
dsv4_check_sglang_module() {
  dsv4_check_import "$PYTHON" sglang
}

# dsv4_check_gpu [NEEDED]: at least NEEDED (default 1) visible NVIDIA GPUs.
dsv4_check_gpu() {
  local needed=${1:-1}
  [[ ${DSV4_SKIP_GPU_CHECK:-0} == 1 ]] && return 0
  local hint="(set DSV4_SKIP_GPU_CHECK=1 to skip this check)"
  # NVIDIA_SMI names another binary (tests point it at a stub or at nothing).
  local smi="${NVIDIA_SMI:-nvidia-smi}"
  command -v "$smi" >/dev/null 2>&1 ||
    dsv4_die "$DSV4_EXIT_NO_GPU" "no GPU visible: nvidia-smi not found $hint"
  local count
  count=$("$smi" -L 2>/dev/null | grep -c '^GPU ' || true)
  # nvidia-smi lists every GPU; CUDA_VISIBLE_DEVICES narrows what SGLang sees.
  if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
    local visible=0 dev
    local IFS=,
    for dev in $CUDA_VISIBLE_DEVICES; do
      [[ -n $dev ]] && visible=$((visible + 1))
    done
    ((visible < count)) && count=$visible
  fi
  ((count > 0)) ||
    dsv4_die "$DSV4_EXIT_NO_GPU" "no GPU visible: nvidia-smi lists none (check the driver and CUDA_VISIBLE_DEVICES) $hint"
  ((count >= needed)) ||
    dsv4_die "$DSV4_EXIT_NO_GPU" "--tp $needed needs $needed GPUs but only $count are visible $hint"
}

# A running server answers /model_info (cheap, no generation); /health is
# the fallback for builds without it.  Proxies are bypassed: the server is
# normally local and http_proxy would otherwise swallow the request.
dsv4_check_server() {
  local host=$1 port=$2
  local url="http://${host}:${port}"
  local why
  if ! why=$("$PYTHON" - "$url" "${DSV4_SERVER_TIMEOUT:-5}" 2>&1 <<'PY'
import sys
import urllib.error
import urllib.request

base, timeout = sys.argv[1], float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
last = "no answer"
for path in ("/model_info", "/health"):
    try:
        with opener.open(base + path, timeout=timeout) as resp:
            if resp.status == 200:
                sys.exit(0)
            last = f"{path}: HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        last = f"{path}: HTTP {exc.code}"
    except Exception as exc:  # refused, timeout, DNS: all mean "not there"
        last = f"{path}: {getattr(exc, 'reason', exc)}"
        break
print(last)
sys.exit(1)
PY
  ); then
    dsv4_die "$DSV4_EXIT_NO_SERVER" "no SGLang server reachable at $url (${why:-no answer}); start one with scripts/serve.sh or pass --host/--port"
  fi
}
