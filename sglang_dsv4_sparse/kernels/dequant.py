"""Gather + dequantize rows of a paged V4 fp8 cache into bf16.

Drop-in for SGLang 0.5.23's ``dequantize_k_cache_paged_dsv4`` on the V4
layout (same arguments, same result), with every address in int64 so caches
past 2**31 bytes are read correctly, and an id outside ``[0, capacity)``
(``capacity = num_pages * page_size``: a -1 hole, any other negative id, an id
past the cache) giving a zero row instead of a read outside the cache.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import layout as L
from ..validation import INDEX_DTYPES, bounds_check_enabled, check_ids_in_range, check_int, check_tensor
from .paged_rows import row_byte_offsets
from .triton_utils import check_launch_device

# Rows per program and warps: the best of a 20-point sweep at 262k random
# rows on an H200 (``bench_kernels.py --sweep``; docs/design-notes.md,
# "Dequant"). Small one-warp programs let many rows' loads be in flight per SM.
DEQUANT_BLOCK_TOKENS = 4
DEQUANT_NUM_WARPS = 1
# L2 policy of the cache reads.  Neighbouring rows share L2 lines (a row is
# 576 bytes, 4.5 lines of 128; four rows' scales fill one 32-byte sector), and
# keeping those lines measured faster on an H200: evict_last beat evict_first
# and the default policy on random rows and on page-ordered ones alike
# (docs/design-notes.md, "Dequant").
DEQUANT_EVICTION = "evict_last"


@triton.jit
def _dequantize_paged_kernel(
    cache_u8_ptr,
    cache_fp8_ptr,
    cache_bf16_ptr,
    ids_ptr,
    ids_stride,
    out_ptr,
    out_row_stride,
    num_tokens,
    capacity,
    PAGE_SIZE: tl.constexpr,
    PAGE_BYTES: tl.constexpr,
    NOPE_DIM: tl.constexpr,
    ROPE_DIM: tl.constexpr,
    QUANT_TILE: tl.constexpr,
    NUM_SCALES: tl.constexpr,
    UE8M0_BIAS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    EVICTION: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < num_tokens
    loc = tl.load(ids_ptr + rows * ids_stride, mask=row_ok, other=-1).to(tl.int64)
    live = row_ok & (loc >= 0) & (loc < capacity)
    loc = tl.where(live, loc, 0)
    data, scales = row_byte_offsets(loc, PAGE_SIZE, PAGE_BYTES)
    # Pages are multiples of 576 bytes and data rows 576 bytes apart, so every
    # data row starts 64-byte aligned: the hint lets the fp8 loads go 16 bytes wide.
    data = tl.multiple_of(data, 64)

    # The output row is [7 nope tiles | 1 rope tile] of 64 values each; the
    # 8-tile shape keeps arange a power of two, and the rope tile is masked off
    # here and copied as raw bf16 below (bit-exact, denormals included).
    tile = tl.arange(0, NUM_SCALES + 1)
    inner = tl.arange(0, QUANT_TILE)
    is_nope = tile < NUM_SCALES
    nope = tl.load(
        cache_fp8_ptr + data[:, None, None] + (tile * QUANT_TILE)[None, :, None] + inner[None, None, :],
        mask=live[:, None, None] & is_nope[None, :, None],
        other=0.0,
        eviction_policy=EVICTION,
    ).to(tl.float32)
    scale_byte = tl.load(
        cache_u8_ptr + scales[:, None] + tile[None, :],
        mask=live[:, None] & is_nope[None, :],
        other=UE8M0_BIAS,
        eviction_policy=EVICTION,
    ).to(tl.int32)
    # 2 ** (byte - 127) built from its exponent bits: exact, and byte 0 is the
    # fp32 denormal 2 ** -127 as in torch's float8_e8m0fnu.
    scale = tl.where(
        scale_byte == 0,
        tl.full(scale_byte.shape, 0x00400000, tl.int32).to(tl.float32, bitcast=True),
        (scale_byte << 23).to(tl.float32, bitcast=True),
    )
    out_row = out_ptr + rows * out_row_stride
    tl.store(
        out_row[:, None, None] + (tile * QUANT_TILE)[None, :, None] + inner[None, None, :],
        (nope * scale[:, :, None]).to(tl.bfloat16),
        mask=row_ok[:, None, None] & is_nope[None, :, None],
    )
    rope_col = tl.arange(0, ROPE_DIM)
    rope = tl.load(
        cache_bf16_ptr + ((data + NOPE_DIM) // 2)[:, None] + rope_col[None, :],
        mask=live[:, None],
        other=0.0,
        eviction_policy=EVICTION,
    )
    tl.store(out_row[:, None] + NOPE_DIM + rope_col[None, :], rope, mask=row_ok[:, None])


def dequantize_k_cache_paged(
    quant_k_cache: torch.Tensor,
    token_ids: torch.Tensor,
    page_size: int,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Dequantize the rows ``token_ids`` of a paged V4 cache to ``(n, 1, 512)`` bf16.

    Args:
        quant_k_cache: ``(num_pages, page_bytes(page_size))`` cache in any dtype
            (its bytes are read), or FlashMLA's ``(num_pages, P, 1, 584)`` uint8 view.
        token_ids: 1-D int32/int64 token ids. An id outside ``[0, num_pages *
            page_size)`` gives a zero row and reads nothing; with
            ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` only -1 (a hole) may lie
            outside, any other such id raises ``ValueError``.
        page_size: tokens per page (256 SWA, 64 C4, 2 C128 in SGLang).
        out: optional bf16 ``(n, 1, 512)`` destination with unit inner stride,
            e.g. a row slice of a larger workspace.
    """
    check_int("page_size", page_size, minimum=1)
    cache_u8 = L.as_byte_cache(quant_k_cache, page_size, "quant_k_cache")
    check_launch_device("quant_k_cache", cache_u8)
    check_tensor("token_ids", token_ids, dtypes=INDEX_DTYPES, ndim=1, device=cache_u8.device)
    num_tokens = token_ids.shape[0]
    if out is None:
        out = torch.empty((num_tokens, 1, L.HEAD_DIM), dtype=torch.bfloat16, device=cache_u8.device)
    else:
        check_tensor("out", out, dtypes=(torch.bfloat16,), shape=(num_tokens, 1, L.HEAD_DIM), device=cache_u8.device)
        if out.stride(2) != 1:
            raise ValueError(f"out must have unit stride in its last dim, got strides {out.stride()}")
    return dequantize_k_cache_paged_unchecked(cache_u8, token_ids, page_size, out)


def dequantize_k_cache_paged_unchecked(
    cache_u8: torch.Tensor, token_ids: torch.Tensor, page_size: int, out: torch.Tensor, *,
    check_bounds: Optional[bool] = None,
) -> torch.Tensor:
    """:func:`dequantize_k_cache_paged` without its argument checks, for a caller that made them (the core).

    ``cache_u8`` is the ``(num_pages, page_bytes)`` uint8 view ``layout.as_byte_cache``
    returns. Ids are still range-checked with ``check_bounds`` (None: ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS``
    as the environment has it now; the core passes the value its kernel choice read once).
    """
    num_tokens = token_ids.shape[0]
    capacity = cache_u8.shape[0] * page_size
    if bounds_check_enabled() if check_bounds is None else check_bounds:
        check_ids_in_range("token_ids", token_ids, capacity, allow_negative=True)
    if num_tokens == 0:
        return out
    _dequantize_paged_kernel[(triton.cdiv(num_tokens, DEQUANT_BLOCK_TOKENS),)](
        cache_u8,
        cache_u8.view(torch.float8_e4m3fn),
        cache_u8.view(torch.bfloat16),  # page_bytes is a multiple of 576, so even
        token_ids,
        token_ids.stride(0),
        out,
        out.stride(0),
        num_tokens,
        capacity,
        PAGE_SIZE=page_size,
        PAGE_BYTES=cache_u8.shape[1],
        NOPE_DIM=L.NOPE_DIM,
        ROPE_DIM=L.ROPE_DIM,
        QUANT_TILE=L.QUANT_TILE,
        NUM_SCALES=L.NUM_SCALES,
        UE8M0_BIAS=L.UE8M0_BIAS,
        BLOCK_T=DEQUANT_BLOCK_TOKENS,
        EVICTION=DEQUANT_EVICTION,
        num_warps=DEQUANT_NUM_WARPS,
    )
    return out
