"""Test-only helpers (imported as ``testing``: tests/conftest.py puts this
folder on ``sys.path``): caches past 2**31 bytes, the attention-output
assertion and the FlashMLA skip.  The random inputs the package's own check
and the scripts use too are :mod:`sglang_dsv4_sparse.random_inputs`.
"""

from __future__ import annotations

import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.reference import attention_tolerance


def huge_cache(min_bytes: int, page_size: int, device="cpu") -> torch.Tensor:
    """An uninitialised cache of at least ``min_bytes`` bytes; only touched rows cost memory."""
    num_pages = -(-min_bytes // L.page_bytes(page_size)) + 4
    return L.new_cache(num_pages, page_size, device=device)


def ids_past_offset(cache: torch.Tensor, page_size: int, byte_offset: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct token ids whose data rows start past ``byte_offset``, spanning pages."""
    first_page = byte_offset // L.page_bytes(page_size) + 1
    last_page = cache.shape[0]
    if first_page >= last_page:
        raise ValueError("cache is not larger than byte_offset")
    capacity = (last_page - first_page) * page_size
    pick = torch.randperm(capacity, generator=generator)[:n]
    return first_page * page_size + pick


def assert_attention_close(out: torch.Tensor, ref: torch.Tensor, what: str = "out") -> None:
    """Attention outputs agree within :func:`~sglang_dsv4_sparse.reference.attention_tolerance`
    element by element, and within 1e-2 in relative norm."""
    out, ref = out.float().cpu(), ref.float().cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise AssertionError(f"{what}: non-finite values")
    err = (out - ref).abs()
    bad = err > attention_tolerance(ref)
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} / {bad.numel()} elements out of tolerance; first at flat index {i}: "
            f"got {out.flatten()[i].item():.6g}, expected {ref.flatten()[i].item():.6g}"
        )
    rel = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    if rel > 1e-2:
        raise AssertionError(f"{what}: relative norm error {rel:.3g} > 1e-2")


def flashmla_or_skip():
    """``(flash_mla module, SM major)`` for GPU tests that compare with FlashMLA; skips where it cannot run."""
    from sglang_dsv4_sparse.dispatch import flashmla_status

    usable, why = flashmla_status(torch.cuda.current_device())
    if not usable:
        pytest.skip(f"FlashMLA cannot run here: {why}")
    import flash_mla

    return flash_mla, torch.cuda.get_device_capability()[0]


def shared_prompt_inputs(stack, spans):
    """``(StepInputs, positions)`` of several requests over one stack's cached prompt (one pool row),
    request ``i`` extending positions ``spans[i] = (start, end)``: ragged chunks in one step."""
    from sglang_dsv4_sparse.core.plan import StepInputs
    from sglang_dsv4_sparse.stack_check import step_inputs

    one = step_inputs(stack, 0, 1)
    dev = stack.device
    positions = torch.cat([torch.arange(s, e, device=dev) for s, e in spans])
    return StepInputs(
        seq_lens=torch.tensor([e for _, e in spans], dtype=torch.int32, device=dev),
        extend_lens=torch.tensor([e - s for s, e in spans], dtype=torch.int32, device=dev),
        req_pool_indices=torch.tensor([stack.pool_row] * len(spans), dtype=torch.int32, device=dev),
        req_to_token=one.req_to_token, full_to_swa=one.full_to_swa,
        compressed_page_tables={r: t.expand(len(spans), -1).contiguous() for r, t in one.compressed_page_tables.items()},
        seq_lens_cpu=[e for _, e in spans], extend_lens_cpu=[e - s for s, e in spans], window=one.window,
    ), positions
