"""Random inputs shared by the tests, the benchmarks and the end-to-end check.

Caches are filled with random bytes first (so an unwritten or misaddressed
row never reads as zeros) and then the rows in use are written through the
layout quantizer.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import layout as L


def random_rows(n: int, generator: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    """bf16 ``[n, 512]`` rows with per-tile magnitudes spread over a few octaves."""
    tile_gain = torch.exp2(torch.randint(-4, 5, (n, L.HEAD_DIM // L.QUANT_TILE), generator=generator).float())
    rows = torch.randn(n, L.HEAD_DIM, generator=generator) * scale
    return (rows.view(n, -1, L.QUANT_TILE) * tile_gain[..., None]).view(n, L.HEAD_DIM).to(torch.bfloat16)


def random_byte_cache(num_pages: int, page_size: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """A cache of random bytes (scale bytes kept in a sane exponent range)."""
    cache = torch.randint(0, 256, (num_pages, L.page_bytes(page_size)), dtype=torch.uint8, generator=generator)
    # Keep the bytes inside what the quantizer can produce: no fp8 NaN
    # encodings (0x7f, 0xff) and scale exponents in a normal range, so kernel and
    # reference agree bit for bit without depending on NaN/denormal handling.
    cache[cache == 0x7F] = 0x7E
    cache[cache == 0xFF] = 0xFE
    region = L.scale_region_offset(page_size)
    scales = cache[:, region : region + page_size * L.SCALE_BYTES]
    scales.copy_(torch.randint(L.UE8M0_BIAS - 24, L.UE8M0_BIAS + 8, scales.shape, dtype=torch.uint8, generator=generator))
    return cache.to(device)


def written_cache(
    num_pages: int,
    page_size: int,
    token_ids: torch.Tensor,
    generator: torch.Generator,
    device="cpu",
    rows: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random-byte cache with ``token_ids`` written from random (or given) rows."""
    cache = random_byte_cache(num_pages, page_size, generator, device)
    if rows is None:
        rows = random_rows(token_ids.numel(), generator)
    L.quantize_into_paged_cache(cache, token_ids.to(device), rows.to(device), page_size)
    return cache, rows


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


# FlashMLA's own output tolerance (abs 1e-3, rel 2.01/128) holds element by
# element only where an output element is not much smaller than its row: the
# kernels (FlashMLA's and ours) round the softmax weights P to bf16 before
# P @ V, so an element's error follows the row's magnitude (2**-8 of the
# largest |value| in the head's output row), not its own. Outputs are compared
# with that extra term, and with a relative norm error of at most 1e-2.
OUT_ATOL, OUT_RTOL, OUT_ROW_RTOL = 1e-3, 2.01 / 128, 2.0**-8


def assert_attention_close(out: torch.Tensor, ref: torch.Tensor, what: str = "out") -> None:
    """Attention outputs agree within FlashMLA's tolerance plus the bf16-P row term."""
    out, ref = out.float().cpu(), ref.float().cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise AssertionError(f"{what}: non-finite values")
    row_max = ref.abs().amax(dim=-1, keepdim=True)
    tol = OUT_ATOL + OUT_RTOL * ref.abs() + OUT_ROW_RTOL * row_max
    err = (out - ref).abs()
    bad = err > tol
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
    import pytest

    from .dispatch import flashmla_status

    usable, why = flashmla_status(torch.cuda.current_device())
    if not usable:
        pytest.skip(f"FlashMLA cannot run here: {why}")
    import flash_mla

    return flash_mla, torch.cuda.get_device_capability()[0]
