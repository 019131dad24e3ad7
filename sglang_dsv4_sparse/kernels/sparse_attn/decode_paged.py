"""Sparse MLA decode straight from paged V4 fp8 caches, with the keyword contract
of the sparse fp8 subset of FlashMLA's ``flash_mla_with_kvcache``.

Work per query row (``n = topk + extra_topk`` keys, ``h`` heads, ``d = 512``):

* FLOPs: ``4*h*n*512`` (Q K^T and P V; K is V).
* Key bytes: ``n * 584`` (448 fp8 + 128 RoPE bytes + 8 scale bytes per row), or
  2*h*1024/584 = 3.5*h FLOPs per byte read: 224 at h = 64.  A decode batch is
  small, though: SWA 128 + C4 512 at h = 64 is 374 KB and 21 MFLOP per row, so
  at b = 1 the time is latency (one row's keys on one SM would take
  microseconds), and from b ~ 64 on it is the tensor cores plus the dequant.

Design:

* One program per (query row, block of ``BLOCK_H`` heads, key split); heads
  share the row's index list (MQA), so each key row is gathered and dequantized
  once per program and used by every head, for Q K^T and P V alike.
  ``BLOCK_H`` is 16 (fewer heads are masked rows) up to 16 heads.
  Above that it is 64 (wgmma) once the batch has a 64-head program per SM,
  and 16 for smaller batches, where more, shorter programs finish sooner
  (``configs.decode_block_h``).  The head blocks of a row are adjacent in the
  grid and read the same rows, the later ones through L2.
* The key loop reads ``BLOCK_N`` index columns, resolves page and slot in
  int64, loads the fp8 bytes, scale bytes and RoPE values of those rows,
  dequantizes them in registers (``e4m3 * 2**(byte - 127)``, exact in bf16) and
  feeds the bf16 tile to the dots and the fp32 online softmax directly: there
  is no staging buffer in global memory.  One loop walks the primary (SWA)
  blocks, then the extra (C4/C128) ones, on the same softmax state; a scalar
  select picks the cache, whose page geometries are both compile-time
  constants.
* The softmax step is the prefill kernel's (``common.py``): with 64-head
  blocks its score dot is split across the two warpgroups (each scores half
  of the keys), see ``common._online_softmax_step``; configs may also ask for
  the keys-major score dot.
* Gathers are issued ahead of their use: in the ``prefetch`` configs by the
  kernel itself into registers (ids two blocks ahead, row bytes one block
  ahead), in the pipelined ones by Triton's pipeliner.  Grids split into
  programs of 1-3 blocks are not pipelined: there the copies and waits cost
  more than they hide (``configs.decode_configs``).
* Split-KV rule, from shapes only (so a CUDA graph can capture it): when
  ``rows * head_blocks`` fills less than half of the SMs' program slots, the
  key blocks of a row (primary then extra, in order) are cut into up to
  ``slots / (rows * head_blocks)`` contiguous ranges of at least 64 keys
  (``configs.plan_splits``).
  Each split writes its normalized fp32 partial output and base-2 lse; a
  second small kernel merges them by lse and applies the sink.  The partials
  are the only temporary memory.
* The grid is one-dimensional (up to 2**31 - 1 programs): no limit on the
  number of query rows.

Index semantics: an id < 0 (FlashMLA uses -1) or >= ``num_pages * page_size``
is skipped (FlashMLA reads out of bounds for the latter); only the first
``topk_length[b]`` columns of a row count.  A row with no valid key gives
``out = 0`` and ``lse = +inf``, as FlashMLA does; a head whose q holds NaN or
inf gives NaN ``out`` and ``lse``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ... import layout as L
from ...validation import (
    INDEX_DTYPES,
    bounds_check_enabled,
    check_ids_in_range,
    check_int,
    counted_ids,
    check_tensor,
)
from ..paged_rows import row_byte_offsets
from ..triton_utils import check_launch_device, interpreting
from .common import LOG2E, load_q_block, normalize, row_length, softmax_step
from .configs import (
    MAX_BLOCK_H,
    MERGE_BLOCK_D,
    MERGE_BLOCK_H,
    MERGE_NUM_WARPS,
    MIN_BLOCK_H,
    MIN_KEYS_PER_SPLIT,
    KernelConfig,
    decode_block_h,
    decode_configs,
    decode_program_slots,
    launch_with_fallback,
    plan_splits,
)

# Layout constants as compile-time globals of the jitted helpers.
_NOPE_DIM = tl.constexpr(L.NOPE_DIM)
_QUANT_TILE = tl.constexpr(L.QUANT_TILE)
_NUM_SCALES = tl.constexpr(L.NUM_SCALES)
_HEAD_DIM = tl.constexpr(L.HEAD_DIM)


@triton.jit
def _block_ids(
    t,
    n_total,
    n_primary,
    blk_lo,
    x_first,
    idx_row,
    x_row,
    n_keys,
    x_keys,
    k_capacity,
    x_capacity,
    BLOCK_N: tl.constexpr,
):
    """Token ids of the program's ``t``-th key block: ``(loc int64, live, is_extra)``.

    Blocks ``t < n_primary`` are primary-cache blocks from ``blk_lo`` on, the
    rest extra-cache blocks from ``x_first`` on.  Ids that are skipped (holes,
    past the cache, past the row's length, or ``t >= n_total``) come back as
    0 with ``live`` False.
    """
    is_extra = t >= n_primary
    start = tl.where(is_extra, x_first + t - n_primary, blk_lo + t) * BLOCK_N
    cols = start + tl.arange(0, BLOCK_N)
    limit = tl.where(is_extra, x_keys, n_keys)
    loc = tl.load(tl.where(is_extra, x_row, idx_row) + cols, mask=(cols < limit) & (t < n_total), other=-1)
    loc = loc.to(tl.int64)
    live = (loc >= 0) & (loc < tl.where(is_extra, x_capacity, k_capacity))
    return tl.where(live, loc, 0), live, is_extra


@triton.jit
def _gather_rows(
    loc,
    live,
    is_extra,
    u64_ptr,
    fp8_ptr,
    bf16_ptr,
    x_u64_ptr,
    x_fp8_ptr,
    x_bf16_ptr,
    PAGE_SIZE: tl.constexpr,
    PAGE_BYTES: tl.constexpr,
    X_PAGE_SIZE: tl.constexpr,
    X_PAGE_BYTES: tl.constexpr,
):
    """Raw bytes of rows ``loc`` of one of the two caches: ``(fp8 [N, 8, 64], scale words [N], rope [N, 64])``.

    ``is_extra`` (a scalar) picks the cache; both page geometries are
    compile-time constants, so both offset computations are shifts and
    multiplies and a select picks one.  Rows not ``live`` are not read.
    """
    p_data, p_scales = row_byte_offsets(loc, PAGE_SIZE, PAGE_BYTES)
    x_data, x_scales = row_byte_offsets(loc, X_PAGE_SIZE, X_PAGE_BYTES)
    # Pages are multiples of 576 bytes and data rows 576 bytes apart: every data
    # row starts 64 bytes and every scale row 8 bytes past the cache base, so
    # with the 16-byte-aligned base the wrapper checks (and Triton specializes
    # on) the loads below go 16 (fp8) and 8 (scales) bytes wide.
    data = tl.multiple_of(tl.where(is_extra, x_data, p_data), 64)
    scales = tl.multiple_of(tl.where(is_extra, x_scales, p_scales), 8)
    # The row as [8 tiles x 64]: tiles 0..6 are fp8 nope values, tile 7 the
    # RoPE part.  All 512 fp8-typed bytes are loaded unmasked along the row
    # (tile 7 reads the first RoPE bytes, inside the row) so the load stays
    # contiguous; tile 7 is replaced by the bf16 RoPE values on dequant.
    tile = tl.arange(0, _NUM_SCALES + 1)
    inner = tl.arange(0, _QUANT_TILE)
    raw = tl.load(
        tl.where(is_extra, x_fp8_ptr, fp8_ptr)
        + data[:, None, None] + (tile * _QUANT_TILE)[None, :, None] + inner[None, None, :],
        mask=live[:, None, None],
        other=0.0,
    )
    # A row's 8 scale bytes (7 scales, 1 pad) as one 8-byte word: one load per
    # row, wide enough for asynchronous copies.
    words = tl.load(tl.where(is_extra, x_u64_ptr, u64_ptr) + scales // 8, mask=live, other=0)
    rope = tl.load(
        tl.where(is_extra, x_bf16_ptr, bf16_ptr) + tl.multiple_of((data + _NOPE_DIM) // 2, 32)[:, None]
        + inner[None, :],
        mask=live[:, None],
        other=0.0,
    )
    return raw, words, rope


@triton.jit
def _dequant_rows(raw, words, rope, BLOCK_N: tl.constexpr):
    """bf16 ``[BLOCK_N, 512]`` key tile: ``e4m3 * 2**(byte - 127)`` per 64-value tile, then RoPE.

    Exact in bf16: e4m3 has 3 mantissa bits and bf16 has fp32's exponent range.
    """
    tile = tl.arange(0, _NUM_SCALES + 1)
    scale_byte = ((words[:, None] >> (tile * 8).to(tl.int64)[None, :]) & 0xFF).to(tl.int32)
    # 2 ** (byte - 127) from its exponent bits: exact; byte 0 is the fp32
    # denormal 2 ** -127, as in the dequant kernel and torch's e8m0.
    scale = tl.where(
        scale_byte == 0,
        tl.full(scale_byte.shape, 0x00400000, tl.int32).to(tl.float32, bitcast=True),
        (scale_byte << 23).to(tl.float32, bitcast=True),
    )
    # The where also discards tile 7's fp8 reading of RoPE bytes (possibly NaN).
    rows3 = tl.where(
        (tile < _NUM_SCALES)[None, :, None], raw.to(tl.float32) * scale[:, :, None], rope.to(tl.float32)[:, None, :]
    )
    return tl.reshape(rows3.to(tl.bfloat16), (BLOCK_N, _HEAD_DIM))


@triton.jit
def _sparse_decode_paged_kernel(
    q_ptr,
    out_ptr,
    lse_ptr,
    part_o_ptr,
    part_lse_ptr,
    sink_ptr,
    k_u64_ptr,
    k_fp8_ptr,
    k_bf16_ptr,
    k_capacity,
    idx_ptr,
    len_ptr,
    x_u64_ptr,
    x_fp8_ptr,
    x_bf16_ptr,
    x_capacity,
    x_idx_ptr,
    x_len_ptr,
    rows,
    s_q,
    h_q,
    topk,
    x_topk,
    num_splits,
    blocks_per_split,
    stride_q_b,
    stride_q_s,
    stride_q_h,
    stride_idx_b,
    stride_idx_s,
    stride_x_idx_b,
    stride_x_idx_s,
    scale_log2,
    PAGE_SIZE: tl.constexpr,
    PAGE_BYTES: tl.constexpr,
    X_PAGE_SIZE: tl.constexpr,
    X_PAGE_BYTES: tl.constexpr,
    head_blocks,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LEN: tl.constexpr,
    HAS_X_LEN: tl.constexpr,
    HAS_SINK: tl.constexpr,
    WRITE_PARTIAL: tl.constexpr,
    PREFETCH: tl.constexpr,
    DOT_FP32: tl.constexpr,
    KEYS_MAJOR: tl.constexpr,
    SPLIT_SCORES: tl.constexpr,
):
    pid = tl.program_id(0)
    # Head blocks of a row are adjacent (they read the same key rows), then splits.
    head_block = pid % head_blocks
    rest = pid // head_blocks
    split = rest % num_splits
    row = (rest // num_splits).to(tl.int64)
    batch = row // s_q
    pos = row - batch * s_q
    heads = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < h_q

    d = tl.arange(0, _HEAD_DIM)
    q = load_q_block(q_ptr + batch * stride_q_b + pos * stride_q_s, heads, head_ok, stride_q_h, _HEAD_DIM, DOT_FP32)
    n_keys = row_length(len_ptr, batch, topk, HAS_LEN)
    x_keys = row_length(x_len_ptr, batch, x_topk, HAS_X_LEN)  # x_topk is 0 without an extra cache
    idx_row = idx_ptr + batch * stride_idx_b + pos * stride_idx_s
    x_row = x_idx_ptr + batch * stride_x_idx_b + pos * stride_x_idx_s

    # Key blocks are numbered [primary blocks | extra blocks] by the static
    # topk (the split ranges depend on shapes only); this split owns
    # [blk_lo, blk_hi).  Blocks past a row's lengths are dropped by walking
    # only the two live intervals, primary then extra, with one loop: one copy
    # of the loop body keeps register pressure and compile time down.
    primary_blocks = tl.cdiv(topk, BLOCK_N)
    blk_lo = split * blocks_per_split
    blk_hi = blk_lo + blocks_per_split
    n_primary = tl.maximum(tl.minimum(blk_hi, tl.cdiv(n_keys, BLOCK_N)) - blk_lo, 0)
    x_lo = tl.maximum(blk_lo, primary_blocks)
    n_extra = tl.maximum(tl.minimum(blk_hi, primary_blocks + tl.cdiv(x_keys, BLOCK_N)) - x_lo, 0)
    n_total = n_primary + n_extra
    x_first = x_lo - primary_blocks

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, _HEAD_DIM], tl.float32)
    if PREFETCH:
        # Software pipeline by hand (the launch uses num_stages=1): ids two
        # blocks ahead and row bytes one block ahead are loaded into registers
        # before the current block's dequant and dots, so each gather's
        # latency hides behind a block of compute.  Triton's own pipeliner
        # prefetches an indirect gather only one step ahead and waits on it at
        # the top of the next iteration.
        loc, live, is_extra = _block_ids(
            0, n_total, n_primary, blk_lo, x_first, idx_row, x_row, n_keys, x_keys, k_capacity, x_capacity, BLOCK_N
        )
        raw, words, rope = _gather_rows(
            loc, live, is_extra, k_u64_ptr, k_fp8_ptr, k_bf16_ptr, x_u64_ptr, x_fp8_ptr, x_bf16_ptr,
            PAGE_SIZE, PAGE_BYTES, X_PAGE_SIZE, X_PAGE_BYTES,
        )
        next_loc, next_live, next_extra = _block_ids(
            1, n_total, n_primary, blk_lo, x_first, idx_row, x_row, n_keys, x_keys, k_capacity, x_capacity, BLOCK_N
        )
        for t in range(0, n_total):
            after_loc, after_live, after_extra = _block_ids(
                t + 2, n_total, n_primary, blk_lo, x_first, idx_row, x_row, n_keys, x_keys, k_capacity, x_capacity,
                BLOCK_N,
            )
            next_raw, next_words, next_rope = _gather_rows(
                next_loc, next_live, next_extra, k_u64_ptr, k_fp8_ptr, k_bf16_ptr, x_u64_ptr, x_fp8_ptr, x_bf16_ptr,
                PAGE_SIZE, PAGE_BYTES, X_PAGE_SIZE, X_PAGE_BYTES,
            )
            k = _dequant_rows(raw, words, rope, BLOCK_N)
            m_i, l_i, acc = softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)
            raw, words, rope, live = next_raw, next_words, next_rope, next_live
            next_loc, next_live, next_extra = after_loc, after_live, after_extra
    else:
        for t in range(0, n_total):
            loc, live, is_extra = _block_ids(
                t, n_total, n_primary, blk_lo, x_first, idx_row, x_row, n_keys, x_keys, k_capacity, x_capacity,
                BLOCK_N,
            )
            raw, words, rope = _gather_rows(
                loc, live, is_extra, k_u64_ptr, k_fp8_ptr, k_bf16_ptr, x_u64_ptr, x_fp8_ptr, x_bf16_ptr,
                PAGE_SIZE, PAGE_BYTES, X_PAGE_SIZE, X_PAGE_BYTES,
            )
            k = _dequant_rows(raw, words, rope, BLOCK_N)
            m_i, l_i, acc = softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)

    if WRITE_PARTIAL:
        has_keys = l_i != 0  # a NaN sum (NaN in q) stays NaN, as in normalize
        l_ref = tl.where(has_keys, l_i, 1.0)
        part = (split * rows + row) * h_q + heads
        tl.store(part_o_ptr + part[:, None] * _HEAD_DIM + d[None, :], acc / l_ref[:, None], mask=head_ok[:, None])
        tl.store(part_lse_ptr + part, tl.where(has_keys, m_i + tl.log2(l_ref), float("-inf")), mask=head_ok)
    else:
        out, lse = normalize(acc, m_i, l_i, sink_ptr, heads, head_ok, HAS_SINK)
        stat = row * h_q + heads
        tl.store(out_ptr + stat[:, None] * _HEAD_DIM + d[None, :], out.to(tl.bfloat16), mask=head_ok[:, None])
        tl.store(lse_ptr + stat, lse, mask=head_ok)


@triton.jit
def _merge_splits_kernel(
    part_o_ptr,
    part_lse_ptr,
    sink_ptr,
    out_ptr,
    lse_ptr,
    rows,
    h_q,
    num_splits,
    HEAD_BLOCKS: tl.constexpr,
    D_BLOCKS: tl.constexpr,
    SPLITS_P2: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_SINK: tl.constexpr,
):
    pid = tl.program_id(0)
    d_block = pid % D_BLOCKS
    rest = pid // D_BLOCKS
    head_block = rest % HEAD_BLOCKS
    row = (rest // HEAD_BLOCKS).to(tl.int64)
    heads = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < h_q
    cols = d_block * BLOCK_D + tl.arange(0, BLOCK_D)

    # Partials are normalized with base-2 lse; weight each by 2**(lse_s - max).
    splits = tl.arange(0, SPLITS_P2)
    lse_all = tl.load(
        part_lse_ptr + (splits[:, None] * rows + row) * h_q + heads[None, :],
        mask=(splits[:, None] < num_splits) & head_ok[None, :],
        other=float("-inf"),
    )
    m = tl.max(lse_all, 0)
    m_ref = tl.where(m == float("-inf"), 0.0, m)
    total = tl.sum(tl.exp2(lse_all - m_ref[None, :]), 0)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for s in range(num_splits):
        part = (s * rows + row) * h_q + heads
        w = tl.exp2(tl.load(part_lse_ptr + part, mask=head_ok, other=float("-inf")) - m_ref)
        o = tl.load(part_o_ptr + part[:, None] * _HEAD_DIM + cols[None, :], mask=head_ok[:, None], other=0.0)
        acc += w[:, None] * o
    # acc and total are the row's sums scaled by 2**-m: exactly the (acc, l)
    # of the single-pass kernel with running max m.
    out, lse = normalize(acc, m, total, sink_ptr, heads, head_ok, HAS_SINK)
    stat = row * h_q + heads
    tl.store(out_ptr + stat[:, None] * _HEAD_DIM + cols[None, :], out.to(tl.bfloat16), mask=head_ok[:, None])
    tl.store(lse_ptr + stat, lse, mask=head_ok & (d_block == 0))


def split_keys(groups: int, head_blocks: int, total_blocks: int, slots: int, block_n: int,
               num_splits: Optional[int], rows: int, h_q: int, out: torch.Tensor, lse: torch.Tensor) -> tuple:
    """One launch's split-KV plan and partial buffers: ``(splits, key blocks a split, part_o, part_lse)``.

    Before splitting, the grid is ``groups x head_blocks`` programs (decode: one
    group a query row; verify: one a request), each walking ``total_blocks``
    key blocks; ``num_splits`` overrides the shape rule (``configs.plan_splits``).
    The partials hold ``rows x h_q`` query heads; with one split they are
    ``out`` / ``lse`` themselves (never written)."""
    if num_splits is None:
        min_blocks = max(1, MIN_KEYS_PER_SPLIT // block_n)
        splits, per_split = plan_splits(groups, head_blocks, total_blocks, slots, min_blocks)
    else:
        per_split = triton.cdiv(max(total_blocks, 1), min(num_splits, max(total_blocks, 1)))
        splits = triton.cdiv(max(total_blocks, 1), per_split)
    if splits == 1:
        return splits, per_split, out, lse
    part_o = torch.empty((splits, rows, h_q, L.HEAD_DIM), dtype=torch.float32, device=out.device)
    part_lse = torch.empty((splits, rows, h_q), dtype=torch.float32, device=out.device)
    return splits, per_split, part_o, part_lse


def merge_splits(part_o, part_lse, attn_sink, out, lse, rows: int, h_q: int, splits: int) -> None:
    """Launch :func:`_merge_splits_kernel`: the ``splits`` partials of ``rows x h_q`` query heads merged by
    lse into ``out`` / ``lse``, the sink applied (shared by the decode and verify kernels)."""
    merge_head_blocks = triton.cdiv(h_q, MERGE_BLOCK_H)
    d_blocks = L.HEAD_DIM // MERGE_BLOCK_D
    _merge_splits_kernel[(rows * merge_head_blocks * d_blocks,)](
        part_o,
        part_lse,
        attn_sink if attn_sink is not None else lse,  # any tensor: unread without a sink
        out,
        lse,
        rows,
        h_q,
        splits,
        HEAD_BLOCKS=merge_head_blocks,
        D_BLOCKS=d_blocks,
        SPLITS_P2=triton.next_power_of_2(splits),
        BLOCK_H=MERGE_BLOCK_H,
        BLOCK_D=MERGE_BLOCK_D,
        HAS_SINK=attn_sink is not None,
        num_warps=MERGE_NUM_WARPS,
    )


def byte_cache_arg(name: str, cache, page_size: Optional[int], page_name: str) -> tuple[torch.Tensor, int]:
    """A cache argument as its ``(num_pages, page_bytes)`` uint8 view, and its page size.

    A 4-D FlashMLA view ``(num_pages, P, 1, 584)`` (uint8, int8 or fp8) carries P;
    a 2-D ``(num_pages, page_bytes)`` cache needs ``page_size`` spelled out.
    """
    if not isinstance(cache, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cache).__name__}")
    if cache.dim() == 4:
        if cache.dtype in (torch.int8, torch.float8_e4m3fn):
            cache = cache.view(torch.uint8)
        view_page = cache.shape[1]
        if page_size is not None and page_size != view_page:
            raise ValueError(f"{page_name}={page_size} disagrees with {name}, whose pages hold {view_page} tokens")
        page_size = view_page
    elif page_size is None:
        raise ValueError(f"{page_name} is required when {name} is a 2-D (num_pages, page_bytes) cache")
    check_int(page_name, page_size, minimum=1)
    try:
        cache_u8 = L.as_byte_cache(cache, page_size, name)
    except ValueError as err:
        raise ValueError(f"{err} ({page_name}={page_size})") from None
    check_launch_device(name, cache_u8)
    check_cache_aligned(name, cache_u8)
    return cache_u8, page_size


def check_cache_aligned(name: str, cache: torch.Tensor) -> None:
    """The kernel reads scale rows as 8-byte words and fp8 rows 16 bytes wide: the cache must start 16-byte aligned."""
    if cache.data_ptr() % 16:
        raise ValueError(f"{name} must start at a 16-byte aligned address (slice it at page boundaries)")


def sparse_mla_decode_paged(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices_in_kvcache: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    head_dim_v: int = L.HEAD_DIM,
    page_size: Optional[int] = None,
    extra_page_size: Optional[int] = None,
    *,
    num_splits: Optional[int] = None,
    config: Optional[KernelConfig] = None,
    block_h: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse attention of bf16 queries over paged V4 fp8 caches, dequantized on the fly.

    Keyword-compatible with the sparse fp8 subset of FlashMLA's
    ``flash_mla_with_kvcache`` (without its scheduler metadata), for any ``h_q``
    and any number of query rows.

    Args:
        q: ``[b, s_q, h_q, 512]`` bf16, unit stride in the last dim; ``h_q`` 1..128.
        k_cache: the primary (SWA) cache: FlashMLA's ``(num_pages, P, 1, 584)``
            uint8/int8/fp8 view (P read from its shape), or the
            ``(num_pages, page_bytes(P))`` cache with ``page_size=P``.
        indices: ``[b, s_q, topk]`` int32 (or int64) token ids into ``k_cache``
            (``page = id // P``, ``slot = id % P``); an id < 0 or past the cache is
            skipped (with ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` only -1 may be,
            among the columns ``topk_length`` counts; others raise ``ValueError``).
        topk_length: optional ``[b]`` int32/int64: only the first ``topk_length[i]``
            columns of batch ``i``'s rows count.
        attn_sink: optional ``[h_q]`` fp32: output scaled by ``1 / (1 + exp(sink - lse))``.
        extra_k_cache, extra_indices_in_kvcache, extra_topk_length: an optional
            second cache (C4/C128, its own page size), its ``[b, s_q, extra_topk]``
            ids and ``[b]`` lengths, attended in the same softmax.
        softmax_scale: defaults to ``512 ** -0.5``.
        head_dim_v: only 512 (K is V).
        page_size, extra_page_size: tokens per page; needed for 2-D caches.
        num_splits: keyword-only override of the split-KV count (tests, benchmarks);
            by default it follows from the shapes (see the module docstring).
        config: keyword-only launch configuration (benchmark sweeps).
        block_h: keyword-only heads per program, 16 or 64 (benchmark sweeps);
            by default :func:`decode_block_h`.

    Returns:
        ``(out [b, s_q, h_q, 512] bf16, lse [b, h_q, s_q] fp32)``: lse in natural log
        and FlashMLA's layout (a transposed view of a contiguous ``[b, s_q, h_q]``).
        A row with no valid key gives ``out = 0`` and ``lse = +inf``; a head
        whose q holds NaN or inf gives NaN ``out`` and ``lse``.
    """
    check_tensor("q", q, dtypes=(torch.bfloat16,), ndim=4, last_dim_contiguous=True)
    check_launch_device("q", q)
    b, s_q, h_q, d_qk = q.shape
    device = q.device
    if d_qk != L.HEAD_DIM:
        raise ValueError(f"q must have head dim {L.HEAD_DIM}, got shape {tuple(q.shape)}")
    if not 1 <= h_q <= 2 * MAX_BLOCK_H:
        raise ValueError(f"q must have 1..{2 * MAX_BLOCK_H} heads, got h_q={h_q}")
    check_int("head_dim_v", head_dim_v, allowed=(L.HEAD_DIM,))
    if softmax_scale is None:
        softmax_scale = d_qk**-0.5
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)) or not math.isfinite(softmax_scale):
        raise TypeError(f"softmax_scale must be a finite float, got {softmax_scale!r}")

    k_u8, page_size = byte_cache_arg("k_cache", k_cache, page_size, "page_size")
    if k_u8.device != device:
        raise ValueError(f"k_cache must be on {device}, got {k_u8.device}")
    check_tensor("indices", indices, dtypes=INDEX_DTYPES, ndim=3, device=device, last_dim_contiguous=True)
    if tuple(indices.shape[:2]) != (b, s_q):
        raise ValueError(f"indices must have shape ({b}, {s_q}, topk), got {tuple(indices.shape)}")
    if topk_length is not None:
        check_tensor("topk_length", topk_length, dtypes=INDEX_DTYPES, shape=(b,), device=device, contiguous=True)
    if attn_sink is not None:
        check_tensor("attn_sink", attn_sink, dtypes=(torch.float32,), shape=(h_q,), device=device, contiguous=True)

    has_extra = extra_k_cache is not None
    if has_extra:
        x_u8, extra_page_size = byte_cache_arg("extra_k_cache", extra_k_cache, extra_page_size, "extra_page_size")
        if x_u8.device != device:
            raise ValueError(f"extra_k_cache must be on {device}, got {x_u8.device}")
        if extra_indices_in_kvcache is None:
            raise ValueError("extra_indices_in_kvcache is required with extra_k_cache")
        check_tensor(
            "extra_indices_in_kvcache", extra_indices_in_kvcache, dtypes=INDEX_DTYPES, ndim=3, device=device,
            last_dim_contiguous=True,
        )
        if tuple(extra_indices_in_kvcache.shape[:2]) != (b, s_q):
            raise ValueError(
                f"extra_indices_in_kvcache must have shape ({b}, {s_q}, extra_topk), "
                f"got {tuple(extra_indices_in_kvcache.shape)}"
            )
        if extra_topk_length is not None:
            check_tensor(
                "extra_topk_length", extra_topk_length, dtypes=INDEX_DTYPES, shape=(b,), device=device, contiguous=True
            )
    else:
        if extra_indices_in_kvcache is not None:
            raise ValueError("extra_indices_in_kvcache was given without extra_k_cache")
        if extra_topk_length is not None:
            raise ValueError("extra_topk_length was given without extra_k_cache")
        x_u8 = None
    if num_splits is not None:
        check_int("num_splits", num_splits, minimum=1)
    if block_h is not None:
        check_int("block_h", block_h, allowed=(MIN_BLOCK_H, MAX_BLOCK_H))
    return sparse_mla_decode_paged_unchecked(
        q, k_u8, page_size, indices, topk_length, attn_sink, x_u8, extra_page_size, extra_indices_in_kvcache,
        extra_topk_length, softmax_scale, num_splits=num_splits, config=config, block_h=block_h,
    )


def sparse_mla_decode_paged_unchecked(
    q: torch.Tensor,
    k_u8: torch.Tensor,
    page_size: int,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor],
    attn_sink: Optional[torch.Tensor] = None,
    x_u8: Optional[torch.Tensor] = None,
    extra_page_size: Optional[int] = None,
    extra_indices_in_kvcache: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    softmax_scale: float = L.SOFTMAX_SCALE,
    *,
    num_splits: Optional[int] = None,
    config: Optional[KernelConfig] = None,
    block_h: Optional[int] = None,
    check_bounds: Optional[bool] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparse_mla_decode_paged` without its argument checks, for a caller that made them (the core, once a layer).

    The caches come as the ``(num_pages, page_bytes)`` uint8 views
    ``layout.as_byte_cache`` returns, 16-byte aligned, with their page sizes;
    ``x_u8`` None means no extra cache. Ids are still range-checked under
    ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``, as there.
    """
    b, s_q, h_q, _ = q.shape
    device = q.device
    has_extra = x_u8 is not None
    if not has_extra:
        x_u8, extra_page_size = k_u8, page_size
    k_capacity = k_u8.shape[0] * page_size
    x_capacity = x_u8.shape[0] * extra_page_size
    if bounds_check_enabled() if check_bounds is None else check_bounds:
        check_ids_in_range("indices", counted_ids(indices, topk_length), k_capacity, allow_negative=True)
        if has_extra:
            check_ids_in_range(
                "extra_indices_in_kvcache", counted_ids(extra_indices_in_kvcache, extra_topk_length), x_capacity,
                allow_negative=True,
            )

    out = torch.empty((b, s_q, h_q, L.HEAD_DIM), dtype=torch.bfloat16, device=device)
    lse = torch.empty((b, s_q, h_q), dtype=torch.float32, device=device)
    rows = b * s_q
    if rows == 0:
        return out, lse.transpose(1, 2)

    topk = indices.shape[2]
    x_idx = extra_indices_in_kvcache if has_extra else indices
    if x_idx.dtype != indices.dtype:
        # The kernel selects between the two index rows: one element type (rare; a copy).
        indices, x_idx = indices.to(torch.int64), x_idx.to(torch.int64)
    x_topk = x_idx.shape[2] if has_extra else 0
    if block_h is None:
        block_h = decode_block_h(h_q, rows)
    head_blocks = triton.cdiv(h_q, block_h)
    dot_fp32 = interpreting()
    slots = decode_program_slots(device, block_h)

    def launch(cfg: KernelConfig) -> None:
        total_blocks = triton.cdiv(topk, cfg.block_n) + triton.cdiv(x_topk, cfg.block_n)
        splits, per_split, part_o, part_lse = split_keys(
            rows, head_blocks, total_blocks, slots, cfg.block_n, num_splits, rows, h_q, out, lse
        )
        partial = splits > 1
        _sparse_decode_paged_kernel[(rows * head_blocks * splits,)](
            q,
            out,
            lse,
            part_o,
            part_lse,
            attn_sink if attn_sink is not None else lse,
            k_u8.view(torch.int64),  # page_bytes is a multiple of 576: 8-byte words fit
            k_u8.view(torch.float8_e4m3fn),
            k_u8.view(torch.bfloat16),
            k_capacity,
            indices,
            topk_length if topk_length is not None else indices,
            x_u8.view(torch.int64),
            x_u8.view(torch.float8_e4m3fn),
            x_u8.view(torch.bfloat16),
            x_capacity,
            x_idx,
            extra_topk_length if extra_topk_length is not None else x_idx,
            rows,
            s_q,
            h_q,
            topk,
            x_topk,
            splits,
            per_split,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            indices.stride(0),
            indices.stride(1),
            x_idx.stride(0),
            x_idx.stride(1),
            float(softmax_scale) * LOG2E,
            PAGE_SIZE=page_size,
            PAGE_BYTES=k_u8.shape[1],
            X_PAGE_SIZE=extra_page_size,
            X_PAGE_BYTES=x_u8.shape[1],
            head_blocks=head_blocks,
            BLOCK_H=block_h,
            BLOCK_N=cfg.block_n,
            HAS_LEN=topk_length is not None,
            HAS_X_LEN=has_extra and extra_topk_length is not None,
            HAS_SINK=attn_sink is not None,
            WRITE_PARTIAL=partial,
            PREFETCH=cfg.prefetch,
            DOT_FP32=dot_fp32,
            KEYS_MAJOR=cfg.keys_major,
            SPLIT_SCORES=cfg.split_scores,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        if partial:
            merge_splits(part_o, part_lse, attn_sink, out, lse, rows, h_q, splits)

    if config is not None:
        launch(config)
    else:
        config_list, configs = decode_configs(h_q, block_h, rows)
        key = ("decode_paged", device, config_list, page_size, extra_page_size if has_extra else None, dot_fp32)
        launch_with_fallback(key, configs, launch)
    return out, lse.transpose(1, 2)
