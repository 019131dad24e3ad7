"""SGLang 0.5.23 integration tests: every module skips when SGLang is not installed.

SGLang's DeepSeek-V4 backend is built here on the CPU around the mock model
runner SGLang ships (``sglang.test.kits.attention_unittest``), with four
test-only adjustments, all undone after each test:

* import-time stand-ins (``stand_ins.py``): ``torchvision`` where its wheel
  does not import beside the CPU torch, and on the GPU machine, which runs
  SGLang from carried wheels, ``sgl_kernel`` and ``IPython.display``.
* ``SGLANG_FP8_PAGED_MQA_LOGITS_TORCH=1`` and ``SGLANG_OPT_USE_TOPK_V2=0``:
  the C4 indexer metadata then needs neither DeepGEMM nor a JIT CUDA planner.
* ``deepseek_v4_backend._create_flashmla_metadata`` returns None (``flash_mla``
  is CUDA-only) and ``create_paged_compressor_data`` returns None (a JIT CUDA
  planner; the compressors do not run in these tests).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pytest
import torch

# Without SGLang every module here skips itself (pytest.importorskip("sglang"));
# this file then imports nothing from SGLang.
HAVE_SGLANG = importlib.util.find_spec("sglang") is not None


if HAVE_SGLANG:
    sys.path.insert(0, os.path.dirname(__file__))
    import stand_ins

    stand_ins.install()


@pytest.fixture
def sglang_cpu(monkeypatch):
    """Make SGLang's DeepseekV4AttnBackend constructible and its metadata buildable on the CPU."""
    monkeypatch.setenv("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH", "1")
    monkeypatch.setenv("SGLANG_OPT_USE_TOPK_V2", "0")
    # These tests check this package's kernels: ours on every layer and step (under ``auto`` a GPU
    # hands shapes where SGLang is as fast to SGLang's attention; test_routes.py covers that).
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "ours")
    import sglang.srt.layers.attention.deepseek_v4_backend as parent

    monkeypatch.setattr(parent, "_create_flashmla_metadata", lambda: None)
    monkeypatch.setattr(parent, "create_paged_compressor_data", lambda **_: None)
    return parent


# ---------------------------------------------------------------------------
# A tiny DSv4 deployment: mock runner, real pool, our backend
# ---------------------------------------------------------------------------

PAGE = 256  # SGLang's full-cache (and SWA) page size
SWA_SIZE = 1024  # full-cache locations (4 pages); the SWA pool holds as many
MAX_CONTEXT = 512  # req_to_token width: 2 pages per request
# Full-cache pages of each req_to_token row, as SGLang's page allocator hands them out.
PAGES_OF_ROW = {0: (3, 0), 1: (1, 2), 2: (2, 3)}
RATIOS = (0, 4, 128)  # layer i has compress ratio RATIOS[i]


def loc(row: int, pos: int) -> int:
    """Full-cache id of position ``pos`` of req_to_token row ``row``."""
    return PAGES_OF_ROW[row][pos // PAGE] * PAGE + pos % PAGE


def f2s(full_loc: int) -> int:
    """The full-to-SWA mapping registered on the pool (a bijection of 0..1023)."""
    return (full_loc * 7 + 3) % SWA_SIZE


@dataclass
class Dsv4Env:
    runner: object
    backend: object
    heads: int
    device: str = "cpu"

    @property
    def pool(self):
        return self.runner.token_to_kv_pool

    def batch(self, mode: str, rows: Sequence[int], prefix: Sequence[int], ext: Optional[Sequence[int]] = None):
        """A real ForwardBatch: EXTEND / MIXED (``ext`` rows per request after ``prefix``) or DECODE."""
        import kit_runner

        if mode == "DECODE":
            ext = [1] * len(rows)
        locs = [loc(r, p + i) for r, p, e in zip(rows, prefix, ext) for i in range(e)]
        return kit_runner.forward_batch(self.runner, mode, rows, prefix, ext, locs, self.device)

    def layer(self, layer_id: int):
        from sglang.srt.layers.radix_attention import RadixAttention

        return RadixAttention(
            num_heads=self.heads, head_dim=512, scaling=512**-0.5, num_kv_heads=1, layer_id=layer_id, v_head_dim=512
        )

    def fill_caches(self, rows: Sequence[int], seq: Sequence[int], gen: torch.Generator) -> None:
        """Write random rows at every position each request has, in every layer's caches."""
        from sglang_dsv4_sparse import layout as L
        from sglang_dsv4_sparse.random_inputs import random_rows

        dev = self.device
        for layer, ratio in enumerate(RATIOS):
            swa_ids = torch.tensor([f2s(loc(r, p)) for r, s in zip(rows, seq) for p in range(s)], device=dev)
            L.quantize_into_paged_cache(
                self.pool.get_swa_key_buffer_radix(layer), swa_ids, random_rows(swa_ids.numel(), gen).to(dev), PAGE
            )
            if ratio:
                per_page = PAGE // ratio
                ids = torch.tensor(
                    [PAGES_OF_ROW[r][j // per_page] * per_page + j % per_page for r, s in zip(rows, seq) for j in range(s // ratio)],
                    dtype=torch.int64, device=dev,
                )
                if ids.numel():
                    L.quantize_into_paged_cache(
                        self.pool.get_extra_key_buffer(layer), ids, random_rows(ids.numel(), gen).to(dev), per_page
                    )


@pytest.fixture
def dsv4_env(sglang_cpu, device):
    """Build a :class:`Dsv4Env`: ``dsv4_env(heads=2, backend_cls=None)``."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.test.kits.attention_unittest.attention_methods import dsv4_attention as kit

    from sglang_dsv4_sparse.sglang_backend import backend_class

    def make(heads: int = 2, backend_cls=None) -> Dsv4Env:
        case = kit.DSV4AttentionCase(
            name="dsv4_sparse", backend="dsv4", forward_mode=ForwardMode.EXTEND, num_heads=heads,
            page_size=PAGE, prefix_lens=(0,), extend_lens=(1,),
        )
        config = kit.TinyDSV4ModelConfig(num_heads=heads, context_len=MAX_CONTEXT, compression_ratios=list(RATIOS))
        runner = kit.MockDSV4ModelRunner(
            case=case, model_config=config, dtype=torch.bfloat16, device=device, max_context_len=MAX_CONTEXT,
            swa_size=SWA_SIZE, runner_batch_size=len(PAGES_OF_ROW), compression_ratios=list(RATIOS),
        )
        runner.token_to_kv_pool.register_mapping(
            torch.tensor([f2s(i) for i in range(SWA_SIZE)], dtype=torch.int64, device=device)
        )
        req_to_token = runner.req_to_token_pool.req_to_token
        for row in PAGES_OF_ROW:
            req_to_token[row] = torch.tensor([loc(row, p) for p in range(MAX_CONTEXT)], dtype=req_to_token.dtype)
        backend = (backend_cls or backend_class())(runner)
        return Dsv4Env(runner, backend, heads, device)

    return make


def valid_rows(indices: torch.Tensor, lens: torch.Tensor) -> List[List[int]]:
    """Each row's first ``lens[i]`` entries (drops a singleton middle dim)."""
    if indices.dim() == 3:
        indices = indices[:, 0]
    return [row[: int(n)].tolist() for row, n in zip(indices, lens)]


def c4_picks(positions: Sequence[int], width: int, gen: torch.Generator) -> torch.Tensor:
    """What a C4 indexer writes: request-local rows < (pos + 1) // 4 in random order, a few -1 holes."""
    out = torch.full((len(positions), width), -1, dtype=torch.int32)
    for t, pos in enumerate(positions):
        n = min((pos + 1) // 4, width)
        picks = torch.randperm(max((pos + 1) // 4, 1), generator=gen)[:n].to(torch.int32)
        picks[torch.rand(n, generator=gen) < 0.1] = -1
        out[t, :n] = picks
    return out


def write_c4_topk(core, picks: torch.Tensor, rows: Sequence[int], ext: Sequence[int]) -> None:
    """Write request-local C4 picks where SGLang's indexer writes them, as it does.

    ``c4_sparse_page_indices`` gets them as C4-cache ids (pool row ``r``'s row
    ``j`` sits on its full page ``j // 64``), ``c4_sparse_raw_indices`` (when
    SGLang allocated it: extends) as they are; ``c4_sparse_topk_lengths`` is
    SGLang's own, set at metadata time.
    """
    per_page = PAGE // 4
    token_rows = [r for r, e in zip(rows, ext) for _ in range(e)]
    local = picks.to(core.c4_sparse_page_indices.device, torch.int64)
    pages = torch.tensor([PAGES_OF_ROW[r] for r in token_rows], dtype=torch.int64, device=local.device)
    pages = pages.view(len(token_rows), -1)
    page = pages.gather(1, (local.clamp_min(0) // per_page).clamp(max=pages.shape[1] - 1))
    ids = torch.where(local >= 0, page * per_page + local.clamp_min(0) % per_page, -1)
    n = picks.shape[0]
    core.c4_sparse_page_indices[:n] = ids.to(core.c4_sparse_page_indices.dtype)
    if core.c4_sparse_raw_indices is not None:
        core.c4_sparse_raw_indices[:n] = local.to(core.c4_sparse_raw_indices.dtype)


@pytest.fixture
def helpers():
    """The module-level helpers above, for test modules (conftest is not importable under importlib mode)."""
    return types.SimpleNamespace(
        PAGE=PAGE, PAGES_OF_ROW=PAGES_OF_ROW, RATIOS=RATIOS, loc=loc, f2s=f2s, valid_rows=valid_rows, c4_picks=c4_picks,
        write_c4_topk=write_c4_topk,
    )
