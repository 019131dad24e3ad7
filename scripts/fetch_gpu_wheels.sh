#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels the GPU machine lacks for
# the SGLang integration run (scripts/gpu_sglang_check.sh) and the FlashMLA
# comparisons (scripts/gpu_check.sh), into .whl/ (git-ignored).
#
#   bash scripts/fetch_gpu_wheels.sh [--flashmla-only] [DEST]
#
# The GPU machine runs CPython 3.12 with torch 2.11 and triton 3.6 and has no
# network: everything is fetched here, for that interpreter, without
# dependencies (SGLang pins torch 2.14; only its DSv4 attention path is used,
# which runs on torch 2.11). About 61 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
FLASHMLA_ONLY=0
DEST=.whl
for a in "$@"; do
  case "$a" in
    --flashmla-only) FLASHMLA_ONLY=1 ;;
    -h|--help) sed -n 2,11p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fetch_gpu_wheels.sh: unknown option '$a'" >&2; exit 2 ;;
    *) DEST=$a ;;
  esac
done
FLASHMLA=(sgl-flash-mla==1.0.0)
# pytest-xdist spreads gpu_check.sh's test suite over worker processes (its time is mostly
# Triton compiling kernels, one process at a time without it).
TESTING=(pytest-xdist execnet)
# SGLang and the pure-Python packages that its DSv4 attention and test kit
# (the CUDA-graph runner imports the model runner, hence uvicorn and fastapi;
# the speculative runners import the scheduler, hence setproctitle) need and the
# GPU machine's image does not have.
SGLANG=(
  sglang==0.5.23 orjson pybase64 starlette msgspec pydantic pydantic-core annotated-types
  typing-inspection pyzmq dill apache-tvm-ffi==0.1.11 compressed-tensors==0.18.0 gguf zstandard
  sniffio loguru traitlets openai==2.8.0 distro jiter partial-json-parser typing-extensions
  uvicorn h11 click fastapi annotated-doc opentelemetry-api importlib-metadata zipp anyio idna
  setproctitle
)
WANT=("${FLASHMLA[@]}" "${TESTING[@]}")
[ "$FLASHMLA_ONLY" = 1 ] || WANT+=("${SGLANG[@]}")
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
echo "fetch_gpu_wheels.sh: ${#WANT[@]} packages for CPython 3.12 x86_64 into $DEST/"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$DEST" "${WANT[@]}"
# pip keeps every version it ever put here: two versions of one package stop
# the install on the GPU machine, so keep only the newest of each.
"$PY" - "$DEST" <<'PYEOF'
import os, re, sys
from collections import defaultdict
dest = sys.argv[1]
by_name = defaultdict(list)
for f in os.listdir(dest):
    if f.endswith(".whl"):
        by_name[re.sub(r"[-_.]+", "_", f.split("-")[0]).lower()].append(f)
for name, files in by_name.items():
    if len(files) > 1:
        files.sort(key=lambda f: os.path.getmtime(os.path.join(dest, f)))
        for old in files[:-1]:
            os.remove(os.path.join(dest, old))
            print(f"fetch_gpu_wheels.sh: removed older {old}")
PYEOF
du -sh "$DEST" | awk '{print "fetch_gpu_wheels.sh: " $1 " in " $2 "/"}'
