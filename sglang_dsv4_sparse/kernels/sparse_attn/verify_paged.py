"""Sparse MLA attention of speculative-decoding VERIFY steps, straight from the
paged V4 fp8 caches: each draft token attends exactly as a paged decode query
of its own (:func:`sparse_mla_decode_paged` on its own index rows), but the key
rows the draft tokens of a request share are read once per request.

Why: SGLang runs a verify step as a decode step with every draft token a query
row of its own, so the S draft tokens of a request read their (almost equal)
windows and C128 rows S times, at a tensor-parallel rank's 8 or 16 heads where
those row reads, not the arithmetic, set the time (DSV4_SPEC sections 3b, 4b).

Inputs, per token ``t`` (SGLang's decode layout):

* ``swa_indices[t, :swa_lens[t]]``: SWA-cache ids of the token's window.  The
  contract (SGLang's standard layout): the tokens of a request are consecutive
  positions, and token ``t`` with cached length ``L_t`` has ``n_t =
  min(L_t, 128)`` entries, the ids of positions ``L_t - 1, L_t - 2, ..,
  L_t - n_t``, newest first as SGLang's metadata lists them (-1 for a hole).
* optional compressed rows ``extra_indices[t, :extra_lens[t]]``: with
  ``extra_shared`` (C128) each token's row is a prefix of the next token's
  (a length clamped to 1 where a token has no row yet may hold a -1 of its
  own); without it (C4) each token has its own picks.

Design:

* One program per (request, block of heads, key split).  Its tile is ``rows =
  tokens x heads`` q rows (``configs.verify_tile``: up to 64, e.g. 4 tokens x
  16 heads; row ``m`` is token ``m // heads`` of the request, head ``m %
  heads`` of the block), so a gathered key block feeds one ``[rows, 512] x
  [512, BLOCK_N]`` dot for all of them, and a per-row mask says which q rows
  may see which key.  A request with more tokens than the tile takes several
  passes; tile rows past a request's tokens are masked.
* Window: the union of the tokens' windows is the first token's row and the
  first ``S - 1`` entries of the last token's row (newest first: the
  positions from ``L_f`` on).  Union key ``u`` sits at position ``L_f - n_f +
  u``, so token ``j`` of the pass sees it while ``n_f + j - n_t <= u < n_f +
  j``: positions come from the contract, no positions tensor is read.
* C128 (``extra_shared``): the last token's row is walked once; token ``t``
  sees its entries ``i < extra_lens[t]``, except entry 0 when its own entry 0
  is not a valid id (a length clamped to 1 for a token with no row yet).
* C4: each token's picks are walked in turn, the other tokens' q rows masked
  for those blocks: each pick is read once, for some wasted MMA work (at 8-16
  heads the row reads, not the MMAs, are expected to set the time).
* One online softmax per q row over its window and compressed keys; the sink
  at the end (``common.normalize``).  Gather and dequant are the paged decode
  kernel's (``decode_paged._gather_rows`` / ``_dequant_rows``, int64 offsets).
* Split-KV from shapes only (graph-capturable), as for decode
  (``configs.plan_splits``): key blocks are numbered ``[window | compressed
  (one segment, or one per token)]`` by the static widths and cut into
  contiguous ranges; the partials merge by lse in the decode kernel's merge
  kernel, which also applies the sink.

Index semantics are the paged decode kernel's: an id < 0 or >= ``num_pages *
page_size`` is skipped, only the counted columns count, a q row with no valid
key gives ``out = 0`` and ``lse = +inf``, NaN or inf in q gives NaN.  Nothing
is read or written out of bounds whatever the values; a row that breaks the
contract gives a result that may differ from its decode but stays in bounds.
With bounds checking on, the host checks the contract and raises
``ValueError`` naming the field.

Status: checked against the reference in the Triton interpreter and compiled
for sm_90 (ptxas) without a GPU; not yet run or timed on one.
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
    check_tensor,
    counted_ids,
)
from ..triton_utils import check_launch_device, interpreting
from .common import LOG2E, masked_softmax_step, normalize
from .configs import (
    MAX_BLOCK_H,
    MIN_BLOCK_H,
    VERIFY_MAX_ROWS,
    KernelConfig,
    decode_program_slots,
    launch_with_fallback,
    verify_configs,
    verify_tile,
)
from .decode_paged import _dequant_rows, _gather_rows, byte_cache_arg, merge_splits, split_keys

_HEAD_DIM = tl.constexpr(L.HEAD_DIM)


@triton.jit
def _segment_ids(
    u, n_keys, split_at, row_a, base_a, lim_a, row_b, base_b, lim_b, step, is_extra, k_capacity, x_capacity,
):
    """Token ids of keys ``u`` of one segment: ``(loc int64, live)``.

    Key ``u < split_at`` is column ``base_a + step * u`` of index row ``row_a``
    (in ``[0, lim_a)``), a later one column ``base_b + step * u`` of ``row_b``
    (in ``[0, lim_b)``): the window union's two sources, walked newest-first
    rows backwards (``step`` -1); a compressed segment has one source read
    forwards (``step`` 1). Keys past ``n_keys``, holes and ids past the cache
    come back as 0, not live.
    """
    from_a = u < split_at
    col = tl.where(from_a, base_a, base_b) + step * u
    ok = (u < n_keys) & (col >= 0) & (col < tl.where(from_a, lim_a, lim_b))
    col = tl.where(ok, col, 0)
    loc = tl.load(tl.where(from_a, row_a + col, row_b + col), mask=ok, other=-1).to(tl.int64)
    live = ok & (loc >= 0) & (loc < tl.where(is_extra, x_capacity, k_capacity))
    return tl.where(live, loc, 0), live


@triton.jit
def _sparse_verify_paged_kernel(
    q_ptr,
    out_ptr,
    lse_ptr,
    part_o_ptr,
    part_lse_ptr,
    sink_ptr,
    qsl_ptr,
    k_u64_ptr,
    k_fp8_ptr,
    k_bf16_ptr,
    k_capacity,
    w_idx_ptr,
    w_len_ptr,
    x_u64_ptr,
    x_fp8_ptr,
    x_bf16_ptr,
    x_capacity,
    x_idx_ptr,
    x_len_ptr,
    num_tokens,
    h_q,
    width,
    x_width,
    w_blocks,
    x_blocks,
    num_splits,
    blocks_per_split,
    head_blocks,
    stride_q_t,
    stride_q_h,
    stride_w_t,
    stride_x_t,
    scale_log2,
    PAGE_SIZE: tl.constexpr,
    PAGE_BYTES: tl.constexpr,
    X_PAGE_SIZE: tl.constexpr,
    X_PAGE_BYTES: tl.constexpr,
    TOKENS: tl.constexpr,
    HEADS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    X_SEGMENTS: tl.constexpr,
    X_SHARED: tl.constexpr,
    HAS_X_LEN: tl.constexpr,
    HAS_SINK: tl.constexpr,
    WRITE_PARTIAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    SPLIT_SCORES: tl.constexpr,
):
    pid = tl.program_id(0)
    # Head blocks of a request are adjacent (they read the same key rows), then splits.
    head_block = pid % head_blocks
    rest = pid // head_blocks
    split = rest % num_splits
    req = rest // num_splits
    # Clamped so that a query_start_loc breaking its contract reads and writes
    # only tokens that exist, in the offsets' own type so that int64 values
    # past 2**31 do not wrap first.
    start = tl.minimum(tl.maximum(tl.load(qsl_ptr + req), 0), num_tokens).to(tl.int32)
    end = tl.minimum(tl.maximum(tl.load(qsl_ptr + req + 1), start), num_tokens).to(tl.int32)

    m = tl.arange(0, BLOCK_M)
    j = m // HEADS
    heads = head_block * HEADS + m % HEADS
    row_in = (j < TOKENS) & (heads < h_q)
    d = tl.arange(0, _HEAD_DIM)
    blk_lo = split * blocks_per_split
    blk_hi = blk_lo + blocks_per_split

    for first in range(start, end, TOKENS):
        s = tl.minimum(end - first, TOKENS)
        last = first + s - 1
        row_ok = row_in & (j < s)
        tok = tl.where(row_ok, first + j, 0).to(tl.int64)
        q = tl.load(
            q_ptr + tok[:, None] * stride_q_t + heads[:, None].to(tl.int64) * stride_q_h + d[None, :],
            mask=row_ok[:, None],
            other=0.0,
        )
        if DOT_FP32:
            q = q.to(tl.float32)

        # Lengths clamped to the row (as decode clamps topk_length): a bad one reads nothing outside it.
        n_t = tl.minimum(tl.maximum(tl.load(w_len_ptr + tok, mask=row_ok, other=0), 0), width).to(tl.int32)
        n_f = tl.minimum(tl.maximum(tl.load(w_len_ptr + first), 0), width).to(tl.int32)
        n_l = tl.minimum(tl.maximum(tl.load(w_len_ptr + last), 0), width).to(tl.int32)
        w_row_f = w_idx_ptr + tl.cast(first, tl.int64) * stride_w_t
        w_row_l = w_idx_ptr + tl.cast(last, tl.int64) * stride_w_t
        # Token j's window ends at union key n_f + j (its own position) and
        # holds n_t keys; the union is n_f + s - 1 keys long.
        w_lo = n_f + j - n_t
        w_hi = n_f + j
        # SGLang lists a window newest first: column c of token t is position
        # L_t - 1 - c. Union key u (position L_f - n_f + u) is the first token's
        # column n_f - 1 - u, and from u = n_f on (positions L_f ..) the last
        # token's column (s - 1) + n_f - 1 - u, one of its first s - 1.
        w_base_a = n_f - 1
        w_base_b = n_f + s - 2

        x_n = tl.zeros([BLOCK_M], tl.int32)
        x_lo = tl.zeros([BLOCK_M], tl.int32)
        if X_SEGMENTS > 0:
            if HAS_X_LEN:
                x_n = tl.minimum(tl.maximum(tl.load(x_len_ptr + tok, mask=row_ok, other=0), 0), x_width).to(tl.int32)
            else:
                x_n = tl.full([BLOCK_M], 0, tl.int32) + x_width
            x_n = tl.where(row_ok, x_n, 0)
            if X_SHARED:
                # A token with no compressed row yet may carry a length
                # clamped to 1 over a -1 of its own while a later token's
                # entry 0 is real: its own entry 0 decides.
                own = tl.load(x_idx_ptr + tok * stride_x_t, mask=row_ok & (x_width > 0), other=-1).to(tl.int64)
                x_lo = tl.where((own >= 0) & (own < x_capacity), 0, 1)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, _HEAD_DIM], tl.float32)
        # Segment 0 is the window union; segments 1.. the compressed rows (the
        # last token's row once, or each token's picks).  One loop body for all
        # keeps register pressure and compile time down, as in decode.
        for seg in range(0, 1 + X_SEGMENTS):
            is_extra = seg > 0
            xj = seg - 1
            if X_SHARED:
                x_tok = last
                x_hi = x_n
            else:
                x_tok = first + xj
                x_hi = tl.where(j == xj, x_n, 0)
            x_keys = tl.max(x_hi, 0)
            x_row = x_idx_ptr + tl.cast(x_tok, tl.int64) * stride_x_t
            n_keys = tl.where(is_extra, x_keys, n_f + s - 1)
            lo = tl.where(is_extra, x_lo, w_lo)
            hi = tl.where(is_extra, x_hi, w_hi)
            seg_base = tl.where(is_extra, w_blocks + xj * x_blocks, 0)
            seg_blocks = tl.minimum(tl.cdiv(n_keys, BLOCK_N), tl.where(is_extra, x_blocks, w_blocks))
            t_lo = tl.maximum(blk_lo, seg_base)
            t_hi = tl.minimum(blk_hi, seg_base + seg_blocks)
            for t in range(t_lo, t_hi):
                u = (t - seg_base) * BLOCK_N + tl.arange(0, BLOCK_N)
                loc, live = _segment_ids(
                    u,
                    n_keys,
                    tl.where(is_extra, x_keys, n_f),
                    tl.where(is_extra, x_row, w_row_f),
                    tl.where(is_extra, 0, w_base_a),
                    tl.where(is_extra, x_width, width),
                    w_row_l,
                    w_base_b,
                    n_l,
                    tl.where(is_extra, 1, -1),
                    is_extra,
                    k_capacity,
                    x_capacity,
                )
                raw, words, rope = _gather_rows(
                    loc, live, is_extra, k_u64_ptr, k_fp8_ptr, k_bf16_ptr, x_u64_ptr, x_fp8_ptr, x_bf16_ptr,
                    PAGE_SIZE, PAGE_BYTES, X_PAGE_SIZE, X_PAGE_BYTES,
                )
                k = _dequant_rows(raw, words, rope, BLOCK_N)
                see = (
                    row_ok[:, None] & live[None, :] & (u[None, :] >= lo[:, None]) & (u[None, :] < hi[:, None])
                )
                m_i, l_i, acc = masked_softmax_step(q, k, see, m_i, l_i, acc, scale_log2, SPLIT_SCORES, DOT_FP32)

        if WRITE_PARTIAL:
            has_keys = l_i != 0  # a NaN sum (NaN in q) stays NaN, as in normalize
            l_ref = tl.where(has_keys, l_i, 1.0)
            part = (split.to(tl.int64) * num_tokens + tok) * h_q + heads
            tl.store(part_o_ptr + part[:, None] * _HEAD_DIM + d[None, :], acc / l_ref[:, None],
                     mask=row_ok[:, None])
            tl.store(part_lse_ptr + part, tl.where(has_keys, m_i + tl.log2(l_ref), float("-inf")), mask=row_ok)
        else:
            out, lse = normalize(acc, m_i, l_i, sink_ptr, heads, row_ok, HAS_SINK)
            stat = tok * h_q + heads
            tl.store(out_ptr + stat[:, None] * _HEAD_DIM + d[None, :], out.to(tl.bfloat16), mask=row_ok[:, None])
            tl.store(lse_ptr + stat, lse, mask=row_ok)


def sparse_mla_verify_paged(
    q: torch.Tensor,
    query_start_loc: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_indices: torch.Tensor,
    swa_lens: torch.Tensor,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_lens: Optional[torch.Tensor] = None,
    extra_shared: bool = False,
    sm_scale: Optional[float] = None,
    swa_page_size: Optional[int] = None,
    extra_page_size: Optional[int] = None,
    *,
    tokens_per_request: Optional[int] = None,
    num_splits: Optional[int] = None,
    config: Optional[KernelConfig] = None,
    check_bounds: Optional[bool] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of a verify step's draft tokens over paged V4 fp8 caches, each token as its own decode query.

    Args:
        q: ``[T, h, 512]`` bf16, unit stride in the last dim; ``h`` 1..128.
        query_start_loc: ``[B + 1]`` int32/int64: request ``b``'s draft tokens
            are ``query_start_loc[b] .. query_start_loc[b + 1] - 1``, consecutive
            positions in order; it starts at 0, never decreases and ends at ``T``
            (otherwise the kernel clamps it to ``[0, T]``, and tokens that no
            request covers are left unwritten).
        swa_cache: the SWA cache, FlashMLA's ``(num_pages, P, 1, 584)`` view or
            the ``(num_pages, page_bytes(P))`` cache with ``swa_page_size=P``.
        swa_indices: ``[T, W]`` int32/int64 SWA-cache ids of each token's window.
        swa_lens: ``[T]`` int32/int64: the counted entries of each row.  Together
            SGLang's layout: a token with cached length ``L`` has ``n = min(L, 128)``
            entries, the ids of positions ``L - 1, .., L - n``, newest first (-1 a hole).
        attn_sink: optional ``[h]`` fp32: output scaled by ``1 / (1 + exp(sink - lse))``.
        extra_k_cache, extra_indices, extra_lens: an optional compressed cache
            (its own page size), ``[T, K]`` ids into it and ``[T]`` counted
            entries (None: all ``K``), attended in the same softmax.
        extra_shared: True for C128 rows (each token's row a prefix of the next
            token's; a length clamped to 1 over a -1 allowed where a token has no
            row yet), False for per-token picks (C4).
        sm_scale: defaults to ``512 ** -0.5``.
        swa_page_size, extra_page_size: tokens per page; needed for 2-D caches.
        tokens_per_request: keyword-only: draft tokens a program's tile holds
            (SGLang's ``speculative_num_draft_tokens``); by default ``ceil(T / B)``
            (shapes only).  A longer request is walked in several passes.
        num_splits: keyword-only override of the split-KV count (tests, benchmarks).
        config: keyword-only launch configuration.
        check_bounds: keyword-only; None reads ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS``.
            When on, ids are range-checked and the layout contract is checked
            on the host (``ValueError`` naming the field).

    Returns:
        ``(out [T, h, 512] bf16, lse [T, h] fp32)``, natural-log lse without the
        sink: token ``t``'s is what :func:`sparse_mla_decode_paged` gives for its
        own rows (``out = 0``, ``lse = +inf`` for no valid key).
    """
    check_tensor("q", q, dtypes=(torch.bfloat16,), ndim=3, last_dim_contiguous=True)
    check_launch_device("q", q)
    num_tokens, h_q, dim = q.shape
    device = q.device
    if dim != L.HEAD_DIM:
        raise ValueError(f"q must have head dim {L.HEAD_DIM}, got shape {tuple(q.shape)}")
    if not 1 <= h_q <= 2 * MAX_BLOCK_H:
        raise ValueError(f"q must have 1..{2 * MAX_BLOCK_H} heads, got h={h_q}")
    if num_tokens >= 2**31:
        raise ValueError(f"q has {num_tokens} tokens; token numbers are int32 in the kernel")
    check_tensor("query_start_loc", query_start_loc, dtypes=INDEX_DTYPES, ndim=1, device=device, contiguous=True)
    if query_start_loc.shape[0] < 1:
        raise ValueError("query_start_loc must have B + 1 >= 1 entries, got 0")
    swa_u8, swa_page_size = byte_cache_arg("swa_cache", swa_cache, swa_page_size, "swa_page_size")
    if swa_u8.device != device:
        raise ValueError(f"swa_cache must be on {device}, got {swa_u8.device}")
    check_tensor("swa_indices", swa_indices, dtypes=INDEX_DTYPES, shape=(num_tokens, None), device=device,
                 last_dim_contiguous=True)
    check_tensor("swa_lens", swa_lens, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device, contiguous=True)
    if attn_sink is not None:
        check_tensor("attn_sink", attn_sink, dtypes=(torch.float32,), shape=(h_q,), device=device, contiguous=True)
    if not isinstance(extra_shared, bool):
        raise TypeError(f"extra_shared must be a bool, got {type(extra_shared).__name__}")
    if extra_k_cache is not None:
        x_u8, extra_page_size = byte_cache_arg("extra_k_cache", extra_k_cache, extra_page_size, "extra_page_size")
        if x_u8.device != device:
            raise ValueError(f"extra_k_cache must be on {device}, got {x_u8.device}")
        if extra_indices is None:
            raise ValueError("extra_indices is required with extra_k_cache")
        check_tensor("extra_indices", extra_indices, dtypes=INDEX_DTYPES, shape=(num_tokens, None), device=device,
                     last_dim_contiguous=True)
        if extra_lens is not None:
            check_tensor("extra_lens", extra_lens, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device,
                         contiguous=True)
    else:
        if extra_indices is not None:
            raise ValueError("extra_indices was given without extra_k_cache")
        if extra_lens is not None:
            raise ValueError("extra_lens was given without extra_k_cache")
        if extra_shared:
            raise ValueError("extra_shared=True was given without extra_k_cache")
        x_u8 = None
    if sm_scale is None:
        sm_scale = L.SOFTMAX_SCALE
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
        raise TypeError(f"sm_scale must be a finite float, got {sm_scale!r}")
    if tokens_per_request is not None:
        check_int("tokens_per_request", tokens_per_request, minimum=1)
    if num_splits is not None:
        check_int("num_splits", num_splits, minimum=1)
    return sparse_mla_verify_paged_unchecked(
        q, query_start_loc, swa_u8, swa_page_size, swa_indices, swa_lens, attn_sink, x_u8, extra_page_size,
        extra_indices, extra_lens, extra_shared, sm_scale, tokens_per_request=tokens_per_request,
        num_splits=num_splits, config=config, check_bounds=check_bounds,
    )


def sparse_mla_verify_paged_unchecked(
    q: torch.Tensor,
    query_start_loc: torch.Tensor,
    swa_u8: torch.Tensor,
    swa_page_size: int,
    swa_indices: torch.Tensor,
    swa_lens: torch.Tensor,
    attn_sink: Optional[torch.Tensor] = None,
    x_u8: Optional[torch.Tensor] = None,
    extra_page_size: Optional[int] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_lens: Optional[torch.Tensor] = None,
    extra_shared: bool = False,
    sm_scale: float = L.SOFTMAX_SCALE,
    *,
    tokens_per_request: Optional[int] = None,
    num_splits: Optional[int] = None,
    config: Optional[KernelConfig] = None,
    check_bounds: Optional[bool] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparse_mla_verify_paged` without its argument checks, for a caller that made them.

    The caches come as the 16-byte aligned ``(num_pages, page_bytes)`` uint8
    views ``layout.as_byte_cache`` returns, with their page sizes; ``x_u8``
    None means no compressed cache.  Under ``check_bounds`` (None: the
    environment flag) the ids and the layout contract are still checked.
    """
    num_tokens, h_q, _ = q.shape
    device = q.device
    num_reqs = query_start_loc.shape[0] - 1
    has_extra = x_u8 is not None
    if not has_extra:
        x_u8, extra_page_size = swa_u8, swa_page_size
    k_capacity = swa_u8.shape[0] * swa_page_size
    x_capacity = x_u8.shape[0] * extra_page_size
    if bounds_check_enabled() if check_bounds is None else check_bounds:
        check_ids_in_range("swa_indices", counted_ids(swa_indices, swa_lens), k_capacity, allow_negative=True)
        if has_extra:
            check_ids_in_range("extra_indices", counted_ids(extra_indices, extra_lens), x_capacity,
                               allow_negative=True)
        _check_verify_contract(query_start_loc, num_tokens, swa_indices, swa_lens,
                               extra_indices if has_extra else None, extra_lens, extra_shared)

    out = torch.empty((num_tokens, h_q, L.HEAD_DIM), dtype=torch.bfloat16, device=device)
    lse = torch.empty((num_tokens, h_q), dtype=torch.float32, device=device)
    if num_tokens == 0 or num_reqs <= 0:
        return out, lse

    x_idx = extra_indices if has_extra else swa_indices
    if x_idx.dtype != swa_indices.dtype:
        # The kernel selects between the two index rows: one element type (rare; a copy).
        swa_indices, x_idx = swa_indices.to(torch.int64), x_idx.to(torch.int64)
    width = swa_indices.shape[1]
    x_width = x_idx.shape[1] if has_extra else 0
    if tokens_per_request is None:
        tokens_per_request = triton.cdiv(num_tokens, num_reqs)
    tokens, heads, block_m = verify_tile(h_q, tokens_per_request)
    head_blocks = triton.cdiv(h_q, heads)
    x_segments = (1 if extra_shared else tokens) if has_extra else 0
    dot_fp32 = interpreting()
    slots = decode_program_slots(device, MAX_BLOCK_H if block_m == VERIFY_MAX_ROWS else MIN_BLOCK_H)
    x_lens = extra_lens if has_extra and extra_lens is not None else None

    def launch(cfg: KernelConfig) -> None:
        # Static block numbering: the window union (at most W + tokens - 1
        # keys), then each compressed segment's K columns.
        w_blocks = triton.cdiv(width + tokens - 1, cfg.block_n)
        x_blocks = triton.cdiv(x_width, cfg.block_n)
        total_blocks = w_blocks + x_segments * x_blocks
        splits, per_split, part_o, part_lse = split_keys(
            num_reqs, head_blocks, total_blocks, slots, cfg.block_n, num_splits, num_tokens, h_q, out, lse
        )
        partial = splits > 1
        sink = attn_sink if attn_sink is not None else lse
        _sparse_verify_paged_kernel[(num_reqs * head_blocks * splits,)](
            q,
            out,
            lse,
            part_o,
            part_lse,
            sink,
            query_start_loc,
            swa_u8.view(torch.int64),  # page_bytes is a multiple of 576: 8-byte words fit
            swa_u8.view(torch.float8_e4m3fn),
            swa_u8.view(torch.bfloat16),
            k_capacity,
            swa_indices,
            swa_lens,
            x_u8.view(torch.int64),
            x_u8.view(torch.float8_e4m3fn),
            x_u8.view(torch.bfloat16),
            x_capacity,
            x_idx,
            x_lens if x_lens is not None else swa_lens,
            num_tokens,
            h_q,
            width,
            x_width,
            w_blocks,
            x_blocks,
            splits,
            per_split,
            head_blocks,
            q.stride(0),
            q.stride(1),
            swa_indices.stride(0),
            x_idx.stride(0),
            float(sm_scale) * LOG2E,
            PAGE_SIZE=swa_page_size,
            PAGE_BYTES=swa_u8.shape[1],
            X_PAGE_SIZE=extra_page_size,
            X_PAGE_BYTES=x_u8.shape[1],
            TOKENS=tokens,
            HEADS=heads,
            BLOCK_M=block_m,
            BLOCK_N=cfg.block_n,
            X_SEGMENTS=x_segments,
            X_SHARED=has_extra and extra_shared,
            HAS_X_LEN=x_lens is not None,
            HAS_SINK=attn_sink is not None,
            WRITE_PARTIAL=partial,
            DOT_FP32=dot_fp32,
            SPLIT_SCORES=cfg.split_scores,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        if partial:
            merge_splits(part_o, part_lse, attn_sink, out, lse, num_tokens, h_q, splits)

    if config is not None:
        launch(config)
    else:
        key = ("verify_paged", device, block_m, swa_page_size, extra_page_size if has_extra else None, dot_fp32)
        launch_with_fallback(key, verify_configs(block_m), launch)
    return out, lse


def _check_verify_contract(
    query_start_loc: torch.Tensor,
    num_tokens: int,
    swa_indices: torch.Tensor,
    swa_lens: torch.Tensor,
    extra_indices: Optional[torch.Tensor],
    extra_lens: Optional[torch.Tensor],
    extra_shared: bool,
) -> None:
    """The layout the kernel trusts, checked on the host (a sync: only under bounds checking).

    ``query_start_loc`` starts at 0, never decreases and ends at ``T``; within
    a request the window lengths follow ``n_next = min(n + 1, 128)`` from a
    first ``n`` in ``[1, W]``, and every row names the same id for the same
    position; with ``extra_shared`` each row's counted entries are a prefix of
    the next row's (a row of length 1 holding -1, a token with no compressed
    row yet, excepted).
    """
    starts = [int(v) for v in query_start_loc.tolist()]
    if starts[0] != 0:
        raise ValueError(f"query_start_loc must start at 0, got {starts[0]}")
    for b in range(len(starts) - 1):
        if starts[b + 1] < starts[b]:
            raise ValueError(
                f"query_start_loc must not decrease; entry {b + 1} ({starts[b + 1]}) < entry {b} ({starts[b]})"
            )
    if starts[-1] != num_tokens:
        raise ValueError(f"query_start_loc must end at the number of tokens T={num_tokens}, got {starts[-1]}")

    ids = swa_indices.detach().to("cpu", torch.int64)
    lens = [int(v) for v in swa_lens.tolist()]
    width = ids.shape[1]
    unset = torch.iinfo(torch.int64).min
    for b in range(len(starts) - 1):
        first, end = starts[b], starts[b + 1]
        if first == end:
            continue
        if not 1 <= lens[first] <= width:
            raise ValueError(
                f"swa_lens[{first}]={lens[first]} must be in [1, {width}] (the first token of request {b})"
            )
        # Slot p holds the id of position L_f - n_f + p: the request's union from its first token's window on.
        span = torch.full((lens[first] + end - first - 1,), unset, dtype=torch.int64)
        for t in range(first, end):
            n = lens[t]
            if t > first and n != min(lens[t - 1] + 1, L.SWA_WINDOW):
                raise ValueError(
                    f"swa_lens row {t} does not continue request {b}'s window: {n} after {lens[t - 1]} "
                    f"(a token's window holds min(L, {L.SWA_WINDOW}) positions)"
                )
            if n > width:
                raise ValueError(f"swa_lens[{t}]={n} exceeds the {width} columns of swa_indices")
            # Newest first: column c is position L_t - 1 - c, slot lens[first] + (t - first) - 1 - c.
            pos = (lens[first] + t - first - 1) - torch.arange(n)
            have = span[pos]
            row = ids[t, :n]
            clash = (have != unset) & (have != row)
            if bool(clash.any()):
                col = int(clash.nonzero()[0])
                raise ValueError(
                    f"swa_indices row {t} does not continue request {b}'s window: column {col} holds "
                    f"{int(row[col])}, an earlier row holds {int(have[col])} for that position"
                )
            span[pos] = row

    if extra_indices is None or not extra_shared:
        return
    x_ids = extra_indices.detach().to("cpu", torch.int64)
    x_width = x_ids.shape[1]
    if extra_lens is None:
        x_lens = [x_width] * num_tokens
    else:
        x_lens = [min(max(int(v), 0), x_width) for v in extra_lens.tolist()]
    for b in range(len(starts) - 1):
        for t in range(starts[b], starts[b + 1] - 1):
            n, n_next = x_lens[t], x_lens[t + 1]
            if n > n_next:
                raise ValueError(
                    f"extra_lens[{t}]={n} exceeds the next token's {n_next}: with extra_shared=True "
                    f"a request's compressed rows only grow (request {b})"
                )
            no_row_yet = n == 1 and int(x_ids[t, 0]) == -1
            if not no_row_yet and not torch.equal(x_ids[t, :n], x_ids[t + 1, :n]):
                raise ValueError(
                    f"extra_indices row {t} is not a prefix of row {t + 1} (request {b}); "
                    "extra_shared=True needs prefix-consistent rows"
                )
