"""The DeepSeek-V4 ("V4") fp8 KV-cache layout: the one home of its constants.

One token is 584 bytes:

    [448 float8_e4m3fn "nope" values][64 bf16 RoPE values]  -> 576 data bytes
    [7 UE8M0 scale bytes, one per 64 nope values][1 pad]     -> 8 scale bytes

A page of ``P`` tokens stores all data rows first, then all scale rows, and is
padded up to a multiple of 576 bytes:

    page = [P x 576 data bytes][P x 8 scale bytes][pad]

A token id ``loc`` (an id, not a byte offset) lives at ``page = loc // P`` and
``slot = loc % P``.  Byte offsets pass 2**31 quickly (a C4 cache of 57k pages),
so every address computed here is int64.

Besides the constants this module holds the pure-torch quantizer that writes
bf16 rows into a paged cache with the production recipe, and the pure-torch
dequantizer.  Both are the oracle every kernel test compares against.
"""

from __future__ import annotations

import torch

# --- Per-token geometry -----------------------------------------------------
HEAD_DIM = 512  # q, k and v head dim of DSv4's MQA latent; K is V.
NOPE_DIM = 448  # fp8 part of a row
ROPE_DIM = HEAD_DIM - NOPE_DIM  # 64 bf16 values kept exact
QUANT_TILE = 64  # nope values sharing one UE8M0 scale byte
NUM_SCALES = NOPE_DIM // QUANT_TILE  # 7 scale bytes per token
ROPE_BYTES = ROPE_DIM * 2  # bf16
DATA_BYTES = NOPE_DIM + ROPE_BYTES  # 576: one token's data row
SCALE_BYTES = NUM_SCALES + 1  # 8: seven scales and one pad byte
TOKEN_BYTES = DATA_BYTES + SCALE_BYTES  # 584
PAGE_ALIGN = DATA_BYTES  # pages are padded up to a multiple of 576 bytes

# --- Quantization recipe ----------------------------------------------------
FP8_MAX = 448.0  # largest finite float8_e4m3fn
AMAX_FLOOR = 1e-4  # keeps an all-zero tile's scale finite
UE8M0_BIAS = 127  # scale byte = exponent + 127

# --- Attention geometry shared by SGLang, FlashMLA and this package ----------
SWA_WINDOW = 128  # every layer attends to the last 128 tokens
# A layer's compress ratio: 0 (window only), 4 (C4: an indexer's top-k of the
# compressed rows) or 128 (C128: every compressed row so far).
COMPRESS_RATIOS = (4, 128)
LAYER_RATIOS = (0,) + COMPRESS_RATIOS
SOFTMAX_SCALE = HEAD_DIM**-0.5
# FlashMLA's sparse prefill wants topk % B_TOPK == 0 with B_TOPK 64 (h_q 64) or
# 128 (h_q 128); padding combined index rows to 128 satisfies both.
INDEX_ROW_ALIGN = 128

# Page sizes SGLang 0.5.23 gives each cache kind.
SWA_PAGE_SIZE = 256
C4_PAGE_SIZE = 64
C128_PAGE_SIZE = 2


def page_bytes(page_size: int) -> int:
    """Bytes of one page of ``page_size`` tokens: ``ceil(P * 584 / 576) * 576``."""
    if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size <= 0:
        raise ValueError(f"page_size must be a positive int, got {page_size!r}")
    return -(-page_size * TOKEN_BYTES // PAGE_ALIGN) * PAGE_ALIGN


def scale_region_offset(page_size: int) -> int:
    """Byte offset of the scale rows inside a page (after the P data rows)."""
    return page_size * DATA_BYTES


def flashmla_cache_view(cache: torch.Tensor, page_size: int) -> torch.Tensor:
    """The ``(num_pages, P, 1, 584)`` view FlashMLA's fp8 decode reads.

    The view only carries the shape; kernels address pages through the page
    stride (``page_bytes(P)``), so the scale rows past ``P * 576`` are reached.
    """
    cache_u8 = as_byte_cache(cache, page_size, "cache")
    return cache_u8[:, : page_size * TOKEN_BYTES].view(cache_u8.shape[0], page_size, 1, TOKEN_BYTES)


def as_byte_cache(cache: torch.Tensor, page_size: int, name: str = "quant_k_cache") -> torch.Tensor:
    """Return ``cache`` as a ``(num_pages, page_bytes)`` uint8 view, checking its shape.

    SGLang's pool may expose the cache in another dtype (often bf16); the bytes
    are what matter.  Also accepts FlashMLA's ``(num_pages, P, 1, 584)`` view of a
    cache, whose page stride gives the true page size.
    """
    if not isinstance(cache, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cache).__name__}")
    expected = page_bytes(page_size)
    if cache.dim() == 4:
        if cache.dtype != torch.uint8 or tuple(cache.shape[1:]) != (page_size, 1, TOKEN_BYTES):
            raise ValueError(
                f"{name}: a 4-D cache must be the uint8 (num_pages, {page_size}, 1, {TOKEN_BYTES}) "
                f"FlashMLA view, got {tuple(cache.shape)} {cache.dtype}"
            )
        num_pages = cache.shape[0]
        # A one-page view may report any page stride; only the bytes behind it matter.
        page_stride_ok = num_pages == 1 or cache.stride(0) == expected
        if not page_stride_ok or (page_size > 1 and cache.stride(1) != TOKEN_BYTES) or cache.stride(3) != 1:
            raise ValueError(
                f"{name}: the FlashMLA view must have page stride {expected} bytes for "
                f"page_size={page_size}, got strides {cache.stride()}"
            )
        if cache.untyped_storage().nbytes() - cache.storage_offset() < num_pages * expected:
            raise ValueError(f"{name}: the storage behind the view is smaller than {num_pages} pages of {expected} bytes")
        return torch.as_strided(cache, (num_pages, expected), (expected, 1))
    if cache.dim() != 2:
        raise ValueError(f"{name} must be 2-D (num_pages, page_bytes), got shape {tuple(cache.shape)}")
    if not cache.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    row_bytes = cache.shape[1] * cache.element_size()
    if row_bytes != expected:
        raise ValueError(
            f"{name} has {row_bytes} bytes per page, but page_size={page_size} needs "
            f"page_bytes({page_size}) = {expected}: wrong page_size or not a V4 cache"
        )
    return cache.view(torch.uint8)


def token_byte_offsets(token_ids: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute int64 byte offsets of each token's data row and scale row."""
    loc = token_ids.to(torch.int64)
    page = torch.div(loc, page_size, rounding_mode="floor")
    slot = loc - page * page_size
    base = page * page_bytes(page_size)
    return base + slot * DATA_BYTES, base + scale_region_offset(page_size) + slot * SCALE_BYTES


def new_cache(num_pages: int, page_size: int, device=None) -> torch.Tensor:
    """An uninitialised ``(num_pages, page_bytes(page_size))`` uint8 cache."""
    return torch.empty((num_pages, page_bytes(page_size)), dtype=torch.uint8, device=device)


def _check_ids(token_ids: torch.Tensor, num_tokens_capacity: int, name: str) -> None:
    if token_ids.dim() != 1 or token_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be a 1-D int32/int64 tensor, got {tuple(token_ids.shape)} {token_ids.dtype}")
    if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= num_tokens_capacity):
        raise ValueError(f"{name} must lie in [0, {num_tokens_capacity}), the cache's token capacity")


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize bf16 ``[n, 512]`` rows with the production recipe.

    Returns ``(nope_fp8 [n, 448], rope_bf16 [n, 64], scale_bytes [n, 7] uint8)``.
    Per 64-value tile: ``scale = max(1e-4, amax) / 448`` rounded up to a power
    of two, ``e4m3 = clamp(x / scale, -448, 448)``, scale byte = exponent + 127.
    """
    if rows.dim() != 2 or rows.shape[1] != HEAD_DIM:
        raise ValueError(f"rows must be [n, {HEAD_DIM}], got {tuple(rows.shape)}")
    nope = rows[:, :NOPE_DIM].float().view(-1, NUM_SCALES, QUANT_TILE)
    amax = nope.abs().amax(dim=-1).clamp_min(AMAX_FLOOR)
    exponent = torch.ceil(torch.log2(amax / FP8_MAX))
    scale = torch.exp2(exponent)
    fp8 = (nope / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    scale_bytes = (exponent + UE8M0_BIAS).to(torch.uint8)
    return fp8.view(-1, NOPE_DIM), rows[:, NOPE_DIM:].to(torch.bfloat16), scale_bytes


def quantize_into_paged_cache(
    cache: torch.Tensor, token_ids: torch.Tensor, rows: torch.Tensor, page_size: int
) -> None:
    """Write bf16 ``[n, 512]`` rows into ``cache`` at ``token_ids`` (pure torch)."""
    cache_u8 = as_byte_cache(cache, page_size, "cache")
    capacity = cache_u8.shape[0] * page_size
    _check_ids(token_ids, capacity, "token_ids")
    if rows.shape[0] != token_ids.shape[0]:
        raise ValueError(f"rows has {rows.shape[0]} rows but token_ids has {token_ids.shape[0]}")
    if token_ids.numel() == 0:
        return
    fp8, rope, scale_bytes = quantize_rows(rows)
    data_off, scale_off = token_byte_offsets(token_ids.to(cache_u8.device), page_size)
    flat = cache_u8.view(-1)
    data = torch.cat([fp8.view(torch.uint8), rope.contiguous().view(torch.uint8)], dim=1)
    flat[data_off[:, None] + torch.arange(DATA_BYTES, device=flat.device)] = data.to(flat.device)
    scales = torch.cat([scale_bytes, torch.zeros_like(scale_bytes[:, :1])], dim=1)
    flat[scale_off[:, None] + torch.arange(SCALE_BYTES, device=flat.device)] = scales.to(flat.device)


def dequantize_paged_reference(cache: torch.Tensor, token_ids: torch.Tensor, page_size: int) -> torch.Tensor:
    """Pure-torch dequant: ``(n, 1, 512)`` bf16 rows for ``token_ids``.

    ``nope[i] = e4m3[i] * 2 ** (scale_byte[i // 64] - 127)``; RoPE is copied.
    An id outside ``[0, num_pages * page_size)`` (a -1 hole, any negative id,
    an id past the cache) gives a zero row, as the Triton kernel does.
    """
    cache_u8 = as_byte_cache(cache, page_size, "cache")
    flat = cache_u8.reshape(-1)
    ids = token_ids.to(device=flat.device, dtype=torch.int64)
    hole = (ids < 0) | (ids >= cache_u8.shape[0] * page_size)
    data_off, scale_off = token_byte_offsets(torch.where(hole, 0, ids), page_size)
    data = flat[data_off[:, None] + torch.arange(DATA_BYTES, device=flat.device)]
    scale_bytes = flat[scale_off[:, None] + torch.arange(NUM_SCALES, device=flat.device)]
    nope = data[:, :NOPE_DIM].contiguous().view(torch.float8_e4m3fn).float().view(-1, NUM_SCALES, QUANT_TILE)
    scale = torch.exp2(scale_bytes.float() - UE8M0_BIAS)
    nope = (nope * scale[..., None]).view(-1, NOPE_DIM)
    rope = data[:, NOPE_DIM:].contiguous().view(torch.bfloat16).float()
    out = torch.cat([nope, rope], dim=1).to(torch.bfloat16)
    out[hole] = 0
    return out.view(-1, 1, HEAD_DIM)
