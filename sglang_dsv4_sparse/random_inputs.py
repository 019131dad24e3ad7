"""Random inputs shared by the tests, the benchmarks and the end-to-end check
(``stack_check``); plain torch, no test framework.

Caches are filled with random bytes first (so an unwritten or misaddressed
row never reads as zeros) and then the rows in use are written through the
layout quantizer.  The test-only helpers (huge caches, tolerance assertions,
the FlashMLA skip) are in ``tests/helpers/testing.py``.
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
