# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Helpers shared by serve.sh, profile.sh and eval_gsm8k.sh.  Sourced, never
# run: it only defines variables and functions.
#
# Exit statuses used by the wrappers (each --help repeats them):
#   2  bad usage
#   3  SGLang not installed (no `sglang` on PATH / `import sglang` fails)
#   4  no GPU visible (skip the check with DSV4_SKIP_GPU_CHECK=1)
#   5  no SGLang server answering on --host/--port

DSV4_DEFAULT_MODEL="deepseek-ai/DeepSeek-V4-Flash"
DSV4_DEFAULT_TP=4
DSV4_DEFAULT_CHUNKED_PREFILL=32768
DSV4_DEFAULT_HOST="127.0.0.1"
DSV4_DEFAULT_PORT=30000
DSV4_PLUGIN_NAME="dsv4_sparse"

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

DSV4_EXIT_CODES_HELP="Exit status: 0 ok; 2 bad usage; 3 SGLang not installed; 4 no GPU visible
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

# The `sglang` console script must be on PATH (serve.sh runs it).
dsv4_check_sglang_cli() {
  command -v sglang >/dev/null 2>&1 ||
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "'sglang' is not on PATH; install SGLang 0.5.23 first ($PYTHON -m pip install '${DSV4_REPO_ROOT}[sglang]' installs it with this package)"
}

# `$PYTHON -m sglang.test...` needs SGLang importable by $PYTHON.
dsv4_check_sglang_module() {
  command -v "$PYTHON" >/dev/null 2>&1 ||
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "Python interpreter '$PYTHON' not found; set PYTHON=/path/to/python"
  "$PYTHON" -c 'import sglang' >/dev/null 2>&1 ||
    dsv4_die "$DSV4_EXIT_NO_SGLANG" "'$PYTHON -c \"import sglang\"' failed; install SGLang 0.5.23 in that environment ($PYTHON -m pip install '${DSV4_REPO_ROOT}[sglang]') or set PYTHON=/path/to/its/python"
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
