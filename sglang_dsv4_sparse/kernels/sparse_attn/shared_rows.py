"""Sparse prefill over the key rows neighbouring queries share: the sliding
window and the C128 prefix, read once per tile of queries.

A query at position ``p`` of a request reads

* its window: the staged rows of positions ``[max(p - window + 1, 0), p]``;
* at a compressed ratio ``RATIO`` (128, or 0 for none): the compressed rows
  ``[0, (p + 1) // RATIO)`` of its request.

Queries ``p`` and ``p + 1`` share all of that but one window row (and at most
one compressed row).  The index-row kernel (``prefill.py``) gathers each
query's rows on its own, so at a tensor-parallel rank's 8 or 16 heads it is
bound by that per-query row traffic (docs/design-notes.md, "Shared-row
prefill").  Here one program takes ``QUERIES = 64 // h`` consecutive queries
at all ``h`` heads as one ``[64, 512]`` block of q rows (row ``m`` is query
``m // h``, head ``m % h``) and walks the union of their rows, which are
contiguous in the sparse-prefill workspace (``core.plan``: a request's
compressed rows, then its window union in position order), masking per q row
what that query may not see.  Each key row is then read once per tile instead
of once per query, and the dots have the 64 rows a wgmma wants.

Two more inputs serve the folded C128 route (``core.fold``), where a shared
pass has already attended over the compressed rows every query of a tile
sees: ``skip_rows`` (per tile) makes this pass start after them, and
``prior = (out, lse)`` seeds each q row's softmax state with that partial
result, so the two merge exactly and the sink is applied once, here.

A q row with no key gives ``out = 0`` and ``lse = +inf`` (FlashMLA's
convention); NaN or inf in q gives NaN.  A request id, position or workspace
row outside its range reads nothing.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ... import layout as L
from ...validation import INDEX_DTYPES, check_int, check_tensor
from ..triton_utils import check_launch_device, interpreting
from .common import LOG2E, masked_softmax_step, normalize
from .configs import MAX_BLOCK_H, KernelConfig, launch_with_fallback, shared_rows_configs

_LOG2E = tl.constexpr(LOG2E)
# q rows of one program: the tile of queries times their heads.
BLOCK_M = MAX_BLOCK_H


def queries_per_tile(num_heads: int) -> int:
    """Consecutive queries one program takes at ``num_heads`` heads: ``64 // num_heads`` (at least 1)."""
    return max(1, BLOCK_M // num_heads)


@triton.jit
def _seed_from_prior(prior_out_ptr, prior_lse_ptr, tok, head, has_prior, stride_po_s, stride_po_h, h_q,
                     BLOCK_M: tl.constexpr, D: tl.constexpr):
    """Softmax state ``(m, l, acc)`` equal to a finished partial ``(out, lse)``: ``m = lse`` (base 2), ``l = 1``."""
    d = tl.arange(0, D)
    lse = tl.load(prior_lse_ptr + tok * h_q + head, mask=has_prior, other=float("inf"))
    # An empty partial (+inf, FlashMLA's marker; -inf also read as empty) seeds nothing.
    seeded = has_prior & (lse != float("inf")) & (lse != float("-inf"))
    m_i = tl.where(seeded, lse * _LOG2E, float("-inf"))
    l_i = tl.where(seeded, 1.0, 0.0)
    acc = tl.load(
        prior_out_ptr + tok[:, None] * stride_po_s + head[:, None].to(tl.int64) * stride_po_h + d[None, :],
        mask=seeded[:, None], other=0.0,
    ).to(tl.float32)
    return m_i, l_i, acc


@triton.jit
def _attend_block(q, kv_ptr, row0, x0, x_end, lo, hi, seg, m_i, l_i, acc, s_kv, stride_kv_s, scale_log2,
                  BLOCK: tl.constexpr, D: tl.constexpr, DOT_FP32: tl.constexpr, SPLIT_SCORES: tl.constexpr):
    """Keys ``x0 .. x0 + BLOCK`` (below ``x_end``) at workspace rows ``row0 + x``; q row ``m`` sees
    key ``x`` when it is in ``seg`` and ``lo[m] <= x < hi[m]``."""
    d = tl.arange(0, D)
    x = x0 + tl.arange(0, BLOCK)
    kid = row0 + x
    live = (x < x_end) & (kid >= 0) & (kid < s_kv)
    k = tl.load(kv_ptr + kid[:, None] * stride_kv_s + d[None, :], mask=live[:, None], other=0.0)
    see = seg[:, None] & live[None, :] & (x[None, :] >= lo[:, None]) & (x[None, :] < hi[:, None])
    return masked_softmax_step(q, k, see, m_i, l_i, acc, scale_log2, SPLIT_SCORES, DOT_FP32)


@triton.jit
def _attend_range(q, kv_ptr, row0, x_start, x_end, lo, hi, seg, m_i, l_i, acc, s_kv, stride_kv_s, scale_log2,
                  BLOCK_N: tl.constexpr, D: tl.constexpr, DOT_FP32: tl.constexpr, SPLIT_SCORES: tl.constexpr):
    """Keys ``[x_start, x_end)`` in blocks of ``BLOCK_N``.

    Whole blocks even where a range ends with a few keys (a 16-head tile's
    window is 131): finishing ranges in 16-key blocks measured slower, since
    the second loop's shapes cost the first loop its pipelining
    (docs/design-notes.md, "Shared-row prefill").
    """
    for x0 in range(x_start, x_end, BLOCK_N):
        m_i, l_i, acc = _attend_block(q, kv_ptr, row0, x0, x_end, lo, hi, seg, m_i, l_i, acc, s_kv, stride_kv_s,
                                      scale_log2, BLOCK_N, D, DOT_FP32, SPLIT_SCORES)
    return m_i, l_i, acc


@triton.jit
def _shared_rows_kernel(
    q_ptr, kv_ptr, req_ptr, pos_ptr, seq_len_ptr, gather_len_ptr, swa_base_ptr, c_base_ptr, skip_ptr,
    prior_out_ptr, prior_lse_ptr, sink_ptr, out_ptr, lse_ptr,
    num_tokens, num_reqs, s_kv, h_q, window, prior_rows,
    stride_q_s, stride_q_h, stride_kv_s, stride_o_s, stride_o_h, stride_po_s, stride_po_h,
    scale_log2,
    QUERIES: tl.constexpr,
    RATIO: tl.constexpr,
    HAS_SKIP: tl.constexpr,
    HAS_PRIOR: tl.constexpr,
    HAS_SINK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D: tl.constexpr,
    DOT_FP32: tl.constexpr,
    SPLIT_SCORES: tl.constexpr,
):
    tile = tl.program_id(0)
    m = tl.arange(0, BLOCK_M)
    d = tl.arange(0, D)
    qi = m // h_q
    head = m % h_q
    tok = tile.to(tl.int64) * QUERIES + qi
    exists = (qi < QUERIES) & (tok < num_tokens)
    tok = tl.where(exists, tok, 0)
    req = tl.load(req_ptr + tok, mask=exists, other=-1).to(tl.int32)
    pos = tl.load(pos_ptr + tok, mask=exists, other=-1).to(tl.int32)
    row_ok = exists & (req >= 0) & (req < num_reqs)

    q = tl.load(q_ptr + tok[:, None] * stride_q_s + head[:, None].to(tl.int64) * stride_q_h + d[None, :],
                mask=exists[:, None], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    if HAS_PRIOR:
        m_i, l_i, acc = _seed_from_prior(prior_out_ptr, prior_lse_ptr, tok, head, exists & (tok < prior_rows),
                                         stride_po_s, stride_po_h, h_q, BLOCK_M, D)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
    skip = 0
    if HAS_SKIP:
        skip = tl.maximum(tl.load(skip_ptr + tile), 0)

    # A tile may hold the end of one request and the start of the next: each
    # request's rows are walked with the other request's q rows masked.
    first_req = tl.min(tl.where(row_ok, req, num_reqs))
    last_req = tl.max(tl.where(row_ok, req, -1))
    for r in range(first_req, last_req + 1):
        seg = row_ok & (req == r)
        seq_len = tl.load(seq_len_ptr + r)
        gather_start = seq_len - tl.load(gather_len_ptr + r)
        # Positions past the request (bad input) see no more than its last token does.
        p = tl.where(seg, tl.minimum(pos, seq_len - 1), -1)
        if RATIO > 0:
            # Compressed row j (workspace row c_base + j) is seen by a q row while j < (p + 1) // RATIO.
            visible = tl.maximum((p + 1) // RATIO, 0)
            m_i, l_i, acc = _attend_range(
                q, kv_ptr, tl.load(c_base_ptr + r).to(tl.int64), skip, tl.max(visible), visible * 0, visible, seg,
                m_i, l_i, acc, s_kv, stride_kv_s, scale_log2, BLOCK_N, D, DOT_FP32, SPLIT_SCORES)
        # Window position x (workspace row swa_base + x - gather_start) is seen while p - window < x <= p.
        p_last = tl.max(p)
        w_start = tl.maximum(tl.min(tl.where(seg, p, p_last)) - window + 1, tl.maximum(gather_start, 0))
        m_i, l_i, acc = _attend_range(
            q, kv_ptr, tl.load(swa_base_ptr + r).to(tl.int64) - gather_start, w_start, p_last + 1,
            p - window + 1, p + 1, seg, m_i, l_i, acc, s_kv, stride_kv_s, scale_log2, BLOCK_N, D, DOT_FP32,
            SPLIT_SCORES)

    out, lse = normalize(acc, m_i, l_i, sink_ptr, head, exists, HAS_SINK)
    tl.store(out_ptr + tok[:, None] * stride_o_s + head[:, None].to(tl.int64) * stride_o_h + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=exists[:, None])
    tl.store(lse_ptr + tok * h_q + head, lse, mask=exists)


def shared_rows_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    req_of_token: torch.Tensor,
    query_pos: torch.Tensor,
    seq_lens: torch.Tensor,
    gather_lens: torch.Tensor,
    swa_base: torch.Tensor,
    window: int,
    compress_ratio: int = 0,
    compressed_base: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    skip_rows: Optional[torch.Tensor] = None,
    prior: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    sm_scale: float = L.SOFTMAX_SCALE,
    *,
    config: Optional[KernelConfig] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each query over its window (and C128 prefix) in the staged workspace.

    Args:
        q: ``[T, h, 512]`` bf16, unit stride in the last dim; ``h`` in 1..64.
        kv: ``[rows, 1, 512]`` bf16 workspace (K is V).
        req_of_token: ``[T]`` request of each query; a request's queries are consecutive.
        query_pos: ``[T]`` absolute position of each query.
        seq_lens, gather_lens, swa_base: ``[R]`` tokens of each request after the
            step, its window union's length (the positions ``[seq_len -
            gather_len, seq_len)``) and the workspace row of the union's first.
        window: sliding-window length.
        compress_ratio: 0 (window only) or 128 (also the compressed rows
            ``[0, (p + 1) // 128)`` at workspace rows ``compressed_base[r] + j``).
        attn_sink: optional ``[h]`` fp32, applied once to the final result.
        skip_rows: optional ``[cdiv(T, 64 // h)]`` int32: compressed rows a
            tile's queries skip (another pass read them).
        prior: optional ``(out [T', h, 512] bf16, lse [T', h] fp32)``, a partial
            result of the first ``T'`` queries (natural-log lse, +inf = empty)
            merged into this one.

    Returns:
        ``(out [T, h, 512] bf16, lse [T, h] fp32)`` (lse without the sink).
    """
    check_tensor("q", q, dtypes=(torch.bfloat16,), ndim=3, last_dim_contiguous=True)
    check_launch_device("q", q)
    num_tokens, h_q, dim = q.shape
    if dim != L.HEAD_DIM or not 1 <= h_q <= BLOCK_M:
        raise ValueError(f"q must have shape (T, 1..{BLOCK_M}, {L.HEAD_DIM}), got {tuple(q.shape)}")
    check_tensor("kv", kv, dtypes=(torch.bfloat16,), shape=(None, 1, L.HEAD_DIM), device=q.device,
                 last_dim_contiguous=True)
    check_tensor("req_of_token", req_of_token, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=q.device, contiguous=True)
    check_tensor("query_pos", query_pos, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=q.device, contiguous=True)
    check_tensor("seq_lens", seq_lens, dtypes=INDEX_DTYPES, ndim=1, device=q.device, contiguous=True)
    num_reqs = seq_lens.shape[0]
    for name, t in (("gather_lens", gather_lens), ("swa_base", swa_base)):
        check_tensor(name, t, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=q.device, contiguous=True)
    check_int("window", window, minimum=1)
    check_int("compress_ratio", compress_ratio, allowed=(0, 128))
    if compress_ratio:
        if compressed_base is None:
            raise ValueError("compress_ratio=128 needs compressed_base ([R] workspace row of each request's first compressed row)")
        check_tensor("compressed_base", compressed_base, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=q.device, contiguous=True)
    queries = queries_per_tile(h_q)
    tiles = triton.cdiv(num_tokens, queries)
    if skip_rows is not None:
        if not compress_ratio:
            raise ValueError("skip_rows counts compressed rows: it needs compress_ratio=128")
        check_tensor("skip_rows", skip_rows, dtypes=INDEX_DTYPES, shape=(tiles,), device=q.device, contiguous=True)
    prior_rows = 0
    if prior is not None:
        prior_out, prior_lse = prior
        check_tensor("prior out", prior_out, dtypes=(torch.bfloat16,), ndim=3, device=q.device, last_dim_contiguous=True)
        prior_rows = prior_out.shape[0]
        if prior_rows > num_tokens or prior_out.shape[1:] != q.shape[1:]:
            raise ValueError(f"prior out must have shape (T' <= {num_tokens}, {h_q}, {dim}), got {tuple(prior_out.shape)}")
        check_tensor("prior lse", prior_lse, dtypes=(torch.float32,), shape=(prior_rows, h_q), device=q.device, contiguous=True)
    if attn_sink is not None:
        check_tensor("attn_sink", attn_sink, dtypes=(torch.float32,), shape=(h_q,), device=q.device, contiguous=True)
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
        raise TypeError(f"sm_scale must be a finite float, got {sm_scale!r}")
    if kv.shape[0] >= 2**31:
        raise ValueError(f"kv has {kv.shape[0]} rows; workspace rows are addressed with int32 bases")
    return shared_rows_attention_unchecked(q, kv, req_of_token, query_pos, seq_lens, gather_lens, swa_base, window,
                                  compress_ratio, compressed_base, attn_sink, skip_rows, prior, sm_scale, config=config)


def shared_rows_attention_unchecked(q, kv, req_of_token, query_pos, seq_lens, gather_lens, swa_base, window, compress_ratio=0,
                           compressed_base=None, attn_sink=None, skip_rows=None, prior=None,
                           sm_scale: float = L.SOFTMAX_SCALE, *, config: Optional[KernelConfig] = None, out=None):
    """:func:`shared_rows_attention` without its argument checks, for a caller that made them (the core).

    ``out``: a ``[T, h, 512]`` bf16 tensor (any strides but a unit last one) to write the result into.
    """
    num_tokens, h_q, _ = q.shape
    num_reqs = seq_lens.shape[0]
    queries = queries_per_tile(h_q)
    tiles = triton.cdiv(num_tokens, queries)
    prior_rows = 0 if prior is None else prior[0].shape[0]
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty((num_tokens, h_q), dtype=torch.float32, device=q.device)
    if num_tokens == 0:
        return out, lse
    dot_fp32 = interpreting()
    prior_out, prior_lse = prior if prior is not None else (q, lse)

    def launch(cfg: KernelConfig) -> None:
        _shared_rows_kernel[(tiles,)](
            q, kv, req_of_token, query_pos, seq_lens, gather_lens, swa_base,
            compressed_base if compressed_base is not None else seq_lens,
            skip_rows if skip_rows is not None else seq_lens,
            prior_out, prior_lse,
            attn_sink if attn_sink is not None else lse,
            out, lse,
            num_tokens, num_reqs, kv.shape[0], h_q, window, prior_rows,
            q.stride(0), q.stride(1), kv.stride(0), out.stride(0), out.stride(1),
            prior_out.stride(0), prior_out.stride(1),
            float(sm_scale) * LOG2E,
            QUERIES=queries, RATIO=compress_ratio, HAS_SKIP=skip_rows is not None,
            HAS_PRIOR=prior is not None, HAS_SINK=attn_sink is not None,
            BLOCK_M=BLOCK_M, BLOCK_N=cfg.block_n, D=L.HEAD_DIM, DOT_FP32=dot_fp32,
            SPLIT_SCORES=cfg.split_scores, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )

    if config is not None:
        launch(config)
    else:
        launch_with_fallback(("shared_rows", q.device, dot_fp32), shared_rows_configs(), launch)
    return out, lse
