"""Test set-up: run Triton kernels in the interpreter when no GPU is visible.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined,
so this happens at conftest import, before the test modules import the package.
"""

import os
import sys
import zlib
from pathlib import Path

import torch

# Test modules import the test-only helpers as ``testing`` (tests/helpers/) and
# the benchmark-only kernels as ``benchmarks.*`` from the repository root, as the
# scripts do (neither is part of the installed package).  Not tests/ itself: its
# folders would import as namespace packages (``sglang`` without SGLang).
HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE / "helpers")):
    if path not in sys.path:
        sys.path.insert(0, path)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

ON_GPU = torch.cuda.is_available()


@pytest.fixture
def device() -> str:
    return "cuda" if ON_GPU else "cpu"


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded per test (fresh inputs per test, reproducible on failure)."""
    seed = int(os.environ.get("DSV4_TEST_SEED", "0")) + zlib.crc32(request.node.nodeid.encode())
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not ON_GPU:
            item.add_marker(skip_gpu)
