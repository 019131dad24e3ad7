"""Sparse MLA attention over a bf16 key buffer, with the contract of FlashMLA's
``flash_mla_sparse_fwd`` but any ``h_q`` (1..128) and any ``topk``.

Work per query row (``topk`` keys, ``h`` heads, ``d = 512``; K is V):

* FLOPs: ``2*h*topk*d`` for Q K^T plus ``2*h*topk*d`` for P V = ``4*h*topk*512``.
* Key bytes: ``topk * 1024`` (bf16 rows), the same rows for every head (MQA).

That is ``2*h`` FLOPs per gathered key byte: 128 at h = 64, above the H100's
ridge against L2 (~100), so h >= 64 is bound by the tensor cores; at h = 16 it is
32 FLOP/B and the row gather bounds it.  Hence the tiling:

* One program per (query, block of ``BLOCK_H`` heads).  Each program gathers a
  key row once and uses it for every head of the block, for both Q K^T and P V,
  so a query's keys are read once per head block rather than once per head.
* ``BLOCK_H`` is the head count rounded up to a power of two in [16, 64]: 16 is
  the smallest M a ``tl.dot`` takes (fewer heads are padded inside the kernel
  with masked rows, never by copying q); 64 is the largest whose fp32
  ``[BLOCK_H, 512]`` accumulator fits the registers (128 per thread at 8 warps)
  next to the score tile.  h = 128 runs two programs per query, adjacent in the
  grid, so the second finds the rows in L2.
* At 64 heads the score dot is split across the two warpgroups, each scoring
  half of a block's keys for all 64 heads, and the P V dot across ``d_v``
  (``common._online_softmax_step`` says how Triton is led there); at 16
  heads the score dot is computed keys-major (``S^T = K Q^T``) so that it is
  a warpgroup MMA.
* The key loop walks ``BLOCK_N`` index columns at a time with an fp32 online
  softmax in base 2 (``sm_scale * log2(e)`` folded into one multiply); operands of
  both dots stay bf16 on the GPU (fp32 accumulation).  Under the interpreter the
  operands are upcast to fp32, because its bf16 ``tl.dot`` is wrong (Triton
  issue 11584).
* Gathers are issued a step ahead of their use: by Triton's pipeliner
  (asynchronous copies into a shared-memory ring, ``num_stages >= 2``) or, in
  the ``prefetch`` configs, by the kernel itself into registers (ids two steps
  ahead, rows one step ahead).
* ``topk_length`` shortens the loop itself, so a short row costs only its keys.
* The launch configurations tried, per head block, are ``configs.py``'s
  ``PREFILL_CONFIGS_*``; the shared steps (q load, softmax step,
  normalization) are ``common.py``'s.

A query row with no valid key (all indices skipped) gives ``out = 0``,
``max_logits = -inf`` and ``lse = +inf``: FlashMLA's convention (its reference
turns the ``-inf`` log-sum-exp of an empty row into ``+inf`` so that any
``exp(x - lse)`` of it is 0).  A head whose q holds NaN (or inf) gives NaN
``out``, ``max_logits`` and ``lse``, never the empty-row markers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ... import layout as L
from ...validation import INDEX_DTYPES, bounds_check_enabled, check_ids_in_range, check_int, check_tensor, counted_ids
from ..triton_utils import check_launch_device, interpreting
from .common import LN2, LOG2E, kv_ids, load_q_block, normalize, row_length, softmax_step
from .configs import MAX_BLOCK_H, KernelConfig, block_h_for, launch_with_fallback, prefill_configs

_LN2 = tl.constexpr(LN2)


@triton.jit
def _sparse_mla_fwd_kernel(
    q_ptr,
    kv_ptr,
    idx_ptr,
    len_ptr,
    sink_ptr,
    out_ptr,
    max_logits_ptr,
    lse_ptr,
    s_kv,
    topk,
    h_q,
    stride_q_s,
    stride_q_h,
    stride_kv_s,
    stride_idx_s,
    stride_o_s,
    stride_o_h,
    scale_log2,
    HEAD_BLOCKS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D: tl.constexpr,
    HAS_LEN: tl.constexpr,
    HAS_SINK: tl.constexpr,
    PREFETCH: tl.constexpr,
    KEYS_MAJOR: tl.constexpr,
    DOT_FP32: tl.constexpr,
    SPLIT_SCORES: tl.constexpr,
):
    pid = tl.program_id(0)
    # Head blocks of one query are adjacent in the grid: they run together and
    # share the gathered rows through L2.
    head_block = pid % HEAD_BLOCKS
    row = (pid // HEAD_BLOCKS).to(tl.int64)
    heads = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < h_q
    d = tl.arange(0, D)
    q = load_q_block(q_ptr + row * stride_q_s, heads, head_ok, stride_q_h, D, DOT_FP32)
    n_keys = row_length(len_ptr, row, topk, HAS_LEN)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, D], tl.float32)
    idx_row = idx_ptr + row * stride_idx_s
    if PREFETCH:
        # Software pipeline by hand (launched with num_stages=1): ids two
        # blocks ahead and rows one block ahead are loaded into registers
        # before the current block's dots, so each gather's latency hides
        # behind a block of compute.
        kid, live = kv_ids(idx_row, 0, n_keys, s_kv, BLOCK_N)
        k = tl.load(kv_ptr + kid[:, None] * stride_kv_s + d[None, :], mask=live[:, None], other=0.0)
        next_kid, next_live = kv_ids(idx_row, BLOCK_N, n_keys, s_kv, BLOCK_N)
        for start in range(0, n_keys, BLOCK_N):
            after_kid, after_live = kv_ids(idx_row, start + 2 * BLOCK_N, n_keys, s_kv, BLOCK_N)
            next_k = tl.load(
                kv_ptr + next_kid[:, None] * stride_kv_s + d[None, :], mask=next_live[:, None], other=0.0
            )
            m_i, l_i, acc = softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)
            k, live = next_k, next_live
            next_kid, next_live = after_kid, after_live
    else:
        # Triton's pipeliner (num_stages >= 2) turns the gather into
        # asynchronous copies into shared memory, one step ahead.  The ids
        # are loaded a block ahead by hand: in the sm_90 TTGIR the pipeliner
        # issues the next block's ids load and row copies after the current
        # block's dots, so the copies waited for the ids as well (faster at
        # 16 and 64 heads on an H200; docs/design-notes.md).
        kid, live = kv_ids(idx_row, 0, n_keys, s_kv, BLOCK_N)
        for start in range(0, n_keys, BLOCK_N):
            next_kid, next_live = kv_ids(idx_row, start + BLOCK_N, n_keys, s_kv, BLOCK_N)
            k = tl.load(kv_ptr + kid[:, None] * stride_kv_s + d[None, :], mask=live[:, None], other=0.0)
            m_i, l_i, acc = softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)
            kid, live = next_kid, next_live

    out, lse = normalize(acc, m_i, l_i, sink_ptr, heads, head_ok, HAS_SINK)
    tl.store(
        out_ptr + row * stride_o_s + heads[:, None].to(tl.int64) * stride_o_h + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=head_ok[:, None],
    )
    stat = row * h_q + heads
    # The GPU's max drops NaN operands (the interpreter's keeps them): a NaN
    # sum marks the head whose logits were NaN, so both report NaN.
    max_logits = tl.where(l_i == l_i, m_i * _LN2, float("nan"))
    tl.store(max_logits_ptr + stat, max_logits, mask=head_ok)
    tl.store(lse_ptr + stat, lse, mask=head_ok)


def sparse_mla_fwd(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: float,
    d_v: int = L.HEAD_DIM,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
    *,
    config: Optional[KernelConfig] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse MLA attention: FlashMLA's ``flash_mla_sparse_fwd`` for any ``h_q`` and ``topk``.

    Args:
        q: ``[s_q, h_q, 512]`` bf16, unit stride in the last dim; ``h_q`` in 1..128 (any).
        kv: ``[s_kv, 1, 512]`` bf16 rows (K is V), unit stride in the last dim.
        indices: ``[s_q, 1, topk]`` int32 (or int64) rows of ``kv``, unit stride in
            the last dim.  An index < 0 or >= ``s_kv`` is skipped (with
            ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` only -1 may be, among the
            columns ``topk_length`` counts; others raise ``ValueError``).
        sm_scale: softmax scale applied to ``q . k``.
        d_v: value dim; only 512 (K is V).
        attn_sink: optional ``[h_q]`` fp32; the output of head ``h`` is scaled by
            ``1 / (1 + exp(attn_sink[h] - lse))`` (``-inf``: no effect, ``+inf``:
            zero output); ``lse`` and ``max_logits`` are unchanged.
        topk_length: optional ``[s_q]`` int32/int64: only the first
            ``topk_length[s]`` index columns of query ``s`` count (clamped to
            ``[0, topk]``).
        config: keyword-only launch configuration (benchmark sweeps); by default
            the first of the built-in configs that fits the device.

    Returns:
        ``(out [s_q, h_q, 512] bf16, max_logits [s_q, h_q] fp32, lse [s_q, h_q] fp32)``,
        natural-log units.  A query with no valid key gives ``out = 0``,
        ``max_logits = -inf`` and ``lse = +inf``, as FlashMLA does; a head
        whose q holds NaN or inf gives NaN in all three.
    """
    check_tensor("q", q, dtypes=(torch.bfloat16,), ndim=3, last_dim_contiguous=True)
    check_launch_device("q", q)
    s_q, h_q, d_qk = q.shape
    if d_qk != L.HEAD_DIM:
        raise ValueError(f"q must have head dim {L.HEAD_DIM}, got shape {tuple(q.shape)}")
    if not 1 <= h_q <= 2 * MAX_BLOCK_H:
        raise ValueError(f"q must have 1..{2 * MAX_BLOCK_H} heads, got h_q={h_q}")
    check_tensor("kv", kv, dtypes=(torch.bfloat16,), ndim=3, device=q.device, last_dim_contiguous=True)
    if kv.shape[1] != 1 or kv.shape[2] != L.HEAD_DIM:
        raise ValueError(f"kv must have shape (s_kv, 1, {L.HEAD_DIM}) (one MQA head), got {tuple(kv.shape)}")
    check_tensor("indices", indices, dtypes=INDEX_DTYPES, ndim=3, device=q.device, last_dim_contiguous=True)
    if indices.shape[0] != s_q or indices.shape[1] != 1:
        raise ValueError(f"indices must have shape ({s_q}, 1, topk), got {tuple(indices.shape)}")
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
        raise TypeError(f"sm_scale must be a finite float, got {sm_scale!r}")
    check_int("d_v", d_v, allowed=(L.HEAD_DIM,))
    if attn_sink is not None:
        check_tensor("attn_sink", attn_sink, dtypes=(torch.float32,), shape=(h_q,), device=q.device, contiguous=True)
    if topk_length is not None:
        check_tensor("topk_length", topk_length, dtypes=INDEX_DTYPES, shape=(s_q,), device=q.device, contiguous=True)

    if kv.shape[0] >= 2**31:
        raise ValueError(f"kv has {kv.shape[0]} rows; indices address at most 2**31 - 1")
    return sparse_mla_fwd_unchecked(q, kv, indices, sm_scale, attn_sink, topk_length, config=config)


def sparse_mla_fwd_unchecked(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: float,
    attn_sink: Optional[torch.Tensor],
    topk_length: Optional[torch.Tensor],
    *,
    config: Optional[KernelConfig] = None,
    out: Optional[torch.Tensor] = None,
    check_bounds: Optional[bool] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sparse_mla_fwd` without its argument checks, for a caller that made them (the core, once a layer).

    Ids are still range-checked under ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``, as there.
    ``out``: a ``[s_q, h_q, 512]`` bf16 tensor (any strides but a unit last one) to write the result into.
    """
    s_q, h_q, _ = q.shape
    topk = indices.shape[2]
    s_kv = kv.shape[0]
    if bounds_check_enabled() if check_bounds is None else check_bounds:
        check_ids_in_range("indices", counted_ids(indices, topk_length), s_kv, allow_negative=True)
    out = torch.empty((s_q, h_q, L.HEAD_DIM), dtype=torch.bfloat16, device=q.device) if out is None else out
    max_logits = torch.empty((s_q, h_q), dtype=torch.float32, device=q.device)
    lse = torch.empty((s_q, h_q), dtype=torch.float32, device=q.device)
    if s_q == 0:
        return out, max_logits, lse

    block_h = block_h_for(h_q)
    head_blocks = triton.cdiv(h_q, block_h)
    dot_fp32 = interpreting()
    grid = (s_q * head_blocks,)

    def launch(cfg: KernelConfig) -> None:
        _sparse_mla_fwd_kernel[grid](
            q,
            kv,
            indices,
            topk_length if topk_length is not None else indices,
            attn_sink if attn_sink is not None else max_logits,
            out,
            max_logits,
            lse,
            s_kv,
            topk,
            h_q,
            q.stride(0),
            q.stride(1),
            kv.stride(0),
            indices.stride(0),
            out.stride(0),
            out.stride(1),
            float(sm_scale) * LOG2E,
            HEAD_BLOCKS=head_blocks,
            BLOCK_H=block_h,
            BLOCK_N=cfg.block_n,
            D=L.HEAD_DIM,
            HAS_LEN=topk_length is not None,
            HAS_SINK=attn_sink is not None,
            PREFETCH=cfg.prefetch,
            KEYS_MAJOR=cfg.keys_major,
            SPLIT_SCORES=cfg.split_scores,
            DOT_FP32=dot_fp32,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )

    if config is not None:
        launch(config)
    else:
        launch_with_fallback(("prefill", q.device, block_h, dot_fp32), prefill_configs(block_h), launch)
    return out, max_logits, lse
