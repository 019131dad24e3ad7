"""Test set-up: run Triton kernels in the interpreter when no GPU is visible.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined,
so this happens at conftest import, before the test modules import the package.
"""

import os
import sys
import zlib
from pathlib import Path

import torch

# The benchmark-only kernels (benchmarks/, not part of the installed package)
# import as ``benchmarks.*`` from the repository root, as the scripts do.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

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
