#!/usr/bin/env bash
# Set everything up: a virtual environment in .venv with this package (editable)
# and its test dependencies.
#
#   bash scripts/setup.sh [--with-sglang]
#
# Without a visible NVIDIA GPU it installs torch 2.13.0 and triton 3.7.1, and
# the kernels run in Triton's interpreter. TORCH_INDEX_URL=URL takes torch
# from that index: PyTorch's CPU wheel index gives the CPU build (without it,
# pip's configured index decides; on plain PyPI that is the CUDA build).
# --with-sglang adds SGLang 0.5.23 (no CUDA extras) and the pure-Python
# packages its imports need, for the integration tests. VENV=path picks
# another location.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
WITH_SGLANG=0
for a in "$@"; do
  case "$a" in
    --with-sglang) WITH_SGLANG=1 ;;
    -h|--help) sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup.sh: GPU found: installing torch and triton with CUDA"
  "${PIP[@]}" torch triton
else
  echo "setup.sh: no GPU: installing torch 2.13.0 and triton 3.7.1 (kernels run under TRITON_INTERPRET=1)"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" --index-url "$TORCH_INDEX_URL" torch==2.13.0
  fi
  "${PIP[@]}" torch==2.13.0 triton==3.7.1
fi
"${PIP[@]}" -e ".[test]"
if [ "$WITH_SGLANG" = 1 ]; then
  echo "setup.sh: installing SGLang 0.5.23 (--no-deps) and the packages its imports need"
  "${PIP[@]}" --no-deps sglang==0.5.23
  echo "setup.sh: pip's resolver will list SGLang's pins as conflicts (torch 2.14, CUDA kernels, serving deps): expected, SGLang goes in --no-deps next to this torch, and the integration tests only import its DSv4 backend"
  "${PIP[@]}" orjson psutil pybase64 requests pillow starlette msgspec pydantic pyzmq tqdm ipython aiohttp \
    transformers==5.19.0 tokenizers==0.23.2 dill sentencepiece==0.2.1 apache-tvm-ffi==0.1.11 \
    compressed-tensors==0.18.0 gguf einops openai==2.8.0 partial-json-parser \
    uvicorn fastapi setproctitle  # the kit's speculative-decoding runners import SGLang's scheduler
fi
echo "setup.sh: done. Tests: $VENV/bin/python -m pytest -q -n auto --dist load"
