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
  (``_online_softmax_step`` says how Triton is led there); at 16
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

A query row with no valid key (all indices skipped) gives ``out = 0``,
``max_logits = -inf`` and ``lse = +inf``: FlashMLA's convention (its reference
turns the ``-inf`` log-sum-exp of an empty row into ``+inf`` so that any
``exp(x - lse)`` of it is 0).  A head whose q holds NaN (or inf) gives NaN
``out``, ``max_logits`` and ``lse``, never the empty-row markers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from ... import layout as L
from ...validation import INDEX_DTYPES, bounds_check_enabled, check_ids_in_range, check_int, check_tensor, counted_ids
from ..triton_utils import check_launch_device, interpreting

LOG2E = math.log2(math.e)
LN2 = math.log(2.0)
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(LN2)

# A tl.dot needs every dim >= 16: the smallest head block, whatever h_q is.
MIN_BLOCK_H = 16
# Largest head block whose [BLOCK_H, 512] fp32 accumulator fits one SM's registers.
MAX_BLOCK_H = 64


@dataclass(frozen=True)
class KernelConfig:
    """One launch configuration: keys per loop step, warps, Triton pipeline depth,
    whether the kernel prefetches the next block into registers itself (then
    ``num_stages`` should be 1), whether scores are computed keys-major
    (``S^T = K Q^T``, see ``_online_softmax_step_keys_major``), and whether the
    score dot is split across warpgroups (``SPLIT_SCORES`` in
    ``_online_softmax_step``; heads-major only)."""

    block_n: int
    num_warps: int
    num_stages: int
    prefetch: bool = False
    keys_major: bool = False
    split_scores: bool = False

    def __post_init__(self) -> None:
        if self.keys_major and self.split_scores:
            raise ValueError("KernelConfig: split_scores applies to the heads-major score dot, not keys_major")

    def __str__(self) -> str:
        flags = ("p" if self.prefetch else "") + ("k" if self.keys_major else "") + ("x" if self.split_scores else "")
        return f"n{self.block_n}w{self.num_warps}s{self.num_stages}{flags}"


# Tried in order; the first that compiles within the SM's shared memory is
# cached per shape class (see ``launch_with_fallback``).  Resource figures are
# from compiling for sm_90 with Triton 3.7 (ptxas -v), not from timings.
# h > 32 (BLOCK_H 64): 8 warps (two warpgroups) hold the [64, 512] fp32
# accumulator at 128 registers a thread.  64 keys a step make both dots
# 64x64x512 wgmmas; the pipeliner copies each gathered [64, 512] bf16 tile
# (64 KB) asynchronously into a 2-deep shared ring that both dots read (K is
# V), next to the 64 KB q tile.  Splitting the score dot across the
# warpgroups adds P's exchange: 208 KB of shared memory, 255 registers, no
# spills.  At 64 and 128 heads it measured faster than the unsplit dot and the
# other configs timed (H200; docs/design-notes.md, "Sparse prefill kernel").
# The next entries need less shared memory.
PREFILL_CONFIGS_WIDE = (
    KernelConfig(64, 8, 2, split_scores=True),
    KernelConfig(64, 8, 2),
    KernelConfig(32, 8, 3),
    KernelConfig(16, 8, 1, prefetch=True),
    KernelConfig(16, 4, 1),
)
# h <= 32 (BLOCK_H 16 or 32): 32-64 FLOPs per gathered key byte, so the row
# gather matters as much as the dots; 4 warps keep two programs on an SM.
PREFILL_CONFIGS_NARROW = (
    KernelConfig(64, 4, 2),
    KernelConfig(32, 4, 3),
    KernelConfig(32, 8, 1, prefetch=True),
    KernelConfig(16, 4, 1),
)
# BLOCK_H 16 puts the keys-major score dot first: at 16 heads it measured
# faster than the heads-major configs; more stages or warps keep one program an
# SM and were slower (H200; docs/design-notes.md, "Sparse prefill kernel").
# At BLOCK_H 32 (not measured) the keys-major tile spills more (920 bytes of
# stack in the sm_90 compile), so that width keeps the heads-major list.
PREFILL_CONFIGS_H16 = (KernelConfig(64, 4, 2, keys_major=True),) + PREFILL_CONFIGS_NARROW

_CONFIG_CACHE: dict = {}


def launch_with_fallback(
    key: Hashable, configs: Sequence[KernelConfig], launch: Callable[[KernelConfig], None]
) -> KernelConfig:
    """Launch with the first config of ``configs`` that fits the device.

    Triton raises ``OutOfResources`` at the first launch of a config whose shared
    memory (or threads) exceed the SM's; the next config is then tried, and the
    one that worked is remembered under ``key`` so later calls go straight to it.
    """
    cached = _CONFIG_CACHE.get(key)
    if cached is not None:
        launch(cached)
        return cached
    failures = []
    for config in configs:
        try:
            launch(config)
        except OutOfResources as err:
            failures.append(f"{config}: {err}")
            continue
        _CONFIG_CACHE[key] = config
        return config
    raise RuntimeError("no launch configuration fits this device:\n  " + "\n  ".join(failures))


def block_h_for(h_q: int) -> int:
    """Heads per program: ``h_q`` rounded up to a power of two, clamped to [16, 64]."""
    return min(MAX_BLOCK_H, max(MIN_BLOCK_H, triton.next_power_of_2(h_q)))


@triton.jit
def _load_q_block(q_row, heads, head_ok, stride_q_h, D: tl.constexpr, DOT_FP32: tl.constexpr):
    """One query row's ``[BLOCK_H, D]`` block (masked heads read 0), upcast under the interpreter."""
    d = tl.arange(0, D)
    q = tl.load(q_row + heads[:, None].to(tl.int64) * stride_q_h + d[None, :], mask=head_ok[:, None], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    return q


@triton.jit
def _row_length(len_ptr, index, limit, HAS_LEN: tl.constexpr):
    """``len_ptr[index]`` clamped to ``[0, limit]``; ``limit`` when there are no lengths."""
    n = limit
    if HAS_LEN:
        n = tl.minimum(tl.maximum(tl.load(len_ptr + index), 0), limit)
    return n


@triton.jit
def _mma(a, b, acc, DOT_FP32: tl.constexpr):
    """``a @ b + acc`` (``acc`` None: ``a @ b``); operands already fp32 and the
    product exact under the interpreter (see ``_load_q_block``)."""
    if DOT_FP32:
        out = tl.dot(a, b, acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _softmax_update(s, m_i, l_i, p_dtype: tl.constexpr):
    """New running max and sum of each head after scores ``s`` (base 2), the
    factor ``alpha`` that rescales the old accumulator, and ``p`` for P V."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A head that has seen no live key keeps m = -inf; 0 stands in for it so
    # that exp2(-inf - m) is 0 rather than NaN.
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_ref)
    p = tl.exp2(s - m_ref[:, None])
    l_new = l_i * alpha + tl.sum(p, 1)
    return m_new, l_new, alpha, p.to(p_dtype)


@triton.jit
def _online_softmax_step(q, k, live, m_i, l_i, acc, scale_log2, SPLIT_SCORES: tl.constexpr, DOT_FP32: tl.constexpr):
    """Fold one ``[BLOCK_N, D]`` key tile into the running (max, sum, acc) of each head.

    ``m_i`` is in base-2 logit units.  ``live`` masks skipped keys (their rows
    were loaded as zeros, so their logits are forced to -inf here).

    ``SPLIT_SCORES`` splits the score dot across the warpgroups. Why: Triton
    lays out a dot whose result reaches another dot (the scores feed P V) with
    all warps along M (``warpsPerCTA = [num_warps, 1]``), so at 64 heads and 8
    warps both warpgroups compute the same ``[64, BLOCK_N]`` score tile (1.5x
    the tensor-core work of the pair of dots). That rule follows the uses of the
    scores; it stops at the ``yield`` of a branch, which has no results of its
    own. So the softmax runs inside a branch that is always taken:
    ``scale_log2 == scale_log2`` holds for every finite scale (the wrappers reject others)
    and cannot be folded, since a NaN would fail it (were a Triton version to
    fold it anyway, only the layout would change, not the result). The score dot
    then splits its keys across the warpgroups (``warpsPerCTA = [4, 2]``), and
    P's halves meet in shared memory for the P V dot, as FlashMLA does by hand.
    The skipped-key mask stays outside the branch: Triton 3.6's pipeliner fails
    on a pipelined load (``live``) used inside it. It measured faster in
    prefill and decode at 64 and 128 heads (H200; docs/design-notes.md,
    "Sparse prefill kernel" and "Paged decode kernel").
    """
    if DOT_FP32:
        k = k.to(tl.float32)
    s = _mma(q, tl.trans(k), None, DOT_FP32)
    s = tl.where(live[None, :], s * scale_log2, float("-inf"))
    if SPLIT_SCORES:
        if scale_log2 == scale_log2:
            m_new, l_new, alpha, p = _softmax_update(s, m_i, l_i, k.dtype)
        else:
            m_new, l_new = m_i, l_i
            alpha = tl.full(m_i.shape, 1.0, tl.float32)
            p = tl.zeros(s.shape, k.dtype)
    else:
        m_new, l_new, alpha, p = _softmax_update(s, m_i, l_i, k.dtype)
    acc = _mma(p, k, acc * alpha[:, None], DOT_FP32)
    return m_new, l_new, acc


@triton.jit
def _online_softmax_step_keys_major(q, k, live, m_i, l_i, acc, scale_log2, DOT_FP32: tl.constexpr):
    """``_online_softmax_step`` with the scores computed as ``S^T = K Q^T`` (``[BLOCK_N, BLOCK_H]``).

    Why: at 16 heads the heads-major score dot has M = 16, which only
    mma.sync takes; keys-major it has M = BLOCK_N = 64 and runs as a wgmma
    (warpgroup MMA) reading both operands from shared memory.  It measured
    faster at 16 heads and slower at 64, where the score tile needs 128 keys to
    split across warpgroups, which leaves no room in shared memory for a
    pipelined gather (H200; docs/design-notes.md, "Sparse prefill kernel").
    """
    if DOT_FP32:
        k = k.to(tl.float32)
    st = _mma(k, tl.trans(q), None, DOT_FP32)
    st = tl.where(live[:, None], st * scale_log2, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(st, 0))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_ref)
    pt = tl.exp2(st - m_ref[None, :])
    l_i = l_i * alpha + tl.sum(pt, 0)
    acc = acc * alpha[:, None]
    acc = _mma(tl.trans(pt.to(k.dtype)), k, acc, DOT_FP32)
    return m_new, l_i, acc


@triton.jit
def _softmax_step(
    q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR: tl.constexpr, DOT_FP32: tl.constexpr, SPLIT_SCORES: tl.constexpr
):
    """One key tile folded in: keys-major, or heads-major with or without the split score dot (same result)."""
    if KEYS_MAJOR:
        m_i, l_i, acc = _online_softmax_step_keys_major(q, k, live, m_i, l_i, acc, scale_log2, DOT_FP32)
    else:
        m_i, l_i, acc = _online_softmax_step(q, k, live, m_i, l_i, acc, scale_log2, SPLIT_SCORES, DOT_FP32)
    return m_i, l_i, acc


@triton.jit
def _normalize(acc, m_i, l_i, sink_ptr, heads, head_ok, HAS_SINK: tl.constexpr):
    """Final ``out`` (fp32) and natural-log ``lse`` of each head.

    With a sink, ``out = acc / l / (1 + exp(sink - lse))`` which is
    ``acc / (l + 2**(sink*log2e - m))``: one division, no overflow for a large
    lse.  An empty row (``l = 0``) gives ``out = 0`` and ``lse = +inf``.  A
    live key adds at least 1 to ``l``, so ``l = 0`` means empty exactly; a NaN
    ``l`` (NaN or inf in q) is not empty and gives NaN ``out`` and ``lse``.
    """
    has_keys = l_i != 0
    # Stand-ins for empty heads keep every intermediate finite (no inf - inf).
    m_ref = tl.where(has_keys, m_i, 0.0)
    l_ref = tl.where(has_keys, l_i, 1.0)
    denom = l_ref
    if HAS_SINK:
        sink = tl.load(sink_ptr + heads, mask=head_ok, other=0.0)
        denom = denom + tl.where(has_keys, tl.exp2(sink * _LOG2E - m_ref), 0.0)
    out = acc / denom[:, None]
    lse = tl.where(has_keys, (m_ref + tl.log2(l_ref)) * _LN2, float("inf"))
    return out, lse


@triton.jit
def _kv_ids(idx_row, start, n_keys, s_kv, BLOCK_N: tl.constexpr):
    """Row ids of index columns ``start ..``: ``(id int64, live)``; skipped ids read as row 0, not live."""
    cols = start + tl.arange(0, BLOCK_N)
    kid = tl.load(idx_row + cols, mask=cols < n_keys, other=-1)
    live = (kid >= 0) & (kid < s_kv)
    return tl.where(live, kid, 0).to(tl.int64), live


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
    q = _load_q_block(q_ptr + row * stride_q_s, heads, head_ok, stride_q_h, D, DOT_FP32)
    n_keys = _row_length(len_ptr, row, topk, HAS_LEN)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, D], tl.float32)
    idx_row = idx_ptr + row * stride_idx_s
    if PREFETCH:
        # Software pipeline by hand (launched with num_stages=1): ids two
        # blocks ahead and rows one block ahead are loaded into registers
        # before the current block's dots, so each gather's latency hides
        # behind a block of compute.
        kid, live = _kv_ids(idx_row, 0, n_keys, s_kv, BLOCK_N)
        k = tl.load(kv_ptr + kid[:, None] * stride_kv_s + d[None, :], mask=live[:, None], other=0.0)
        next_kid, next_live = _kv_ids(idx_row, BLOCK_N, n_keys, s_kv, BLOCK_N)
        for start in range(0, n_keys, BLOCK_N):
            after_kid, after_live = _kv_ids(idx_row, start + 2 * BLOCK_N, n_keys, s_kv, BLOCK_N)
            next_k = tl.load(
                kv_ptr + next_kid[:, None] * stride_kv_s + d[None, :], mask=next_live[:, None], other=0.0
            )
            m_i, l_i, acc = _softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)
            k, live = next_k, next_live
            next_kid, next_live = after_kid, after_live
    else:
        # Triton's pipeliner (num_stages >= 2) turns the gather into
        # asynchronous copies into shared memory, one step ahead.  The ids
        # are loaded a block ahead by hand: in the sm_90 TTGIR the pipeliner
        # issues the next block's ids load and row copies after the current
        # block's dots, so the copies waited for the ids as well (faster at
        # 16 and 64 heads on an H200; docs/design-notes.md).
        kid, live = _kv_ids(idx_row, 0, n_keys, s_kv, BLOCK_N)
        for start in range(0, n_keys, BLOCK_N):
            next_kid, next_live = _kv_ids(idx_row, start + BLOCK_N, n_keys, s_kv, BLOCK_N)
            k = tl.load(kv_ptr + kid[:, None] * stride_kv_s + d[None, :], mask=live[:, None], other=0.0)
            m_i, l_i, acc = _softmax_step(q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR, DOT_FP32, SPLIT_SCORES)
            kid, live = next_kid, next_live

    out, lse = _normalize(acc, m_i, l_i, sink_ptr, heads, head_ok, HAS_SINK)
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

    topk = indices.shape[2]
    s_kv = kv.shape[0]
    if s_kv >= 2**31:
        raise ValueError(f"kv has {s_kv} rows; indices address at most 2**31 - 1")
    if bounds_check_enabled():
        check_ids_in_range("indices", counted_ids(indices, topk_length), s_kv, allow_negative=True)
    out = torch.empty((s_q, h_q, d_v), dtype=torch.bfloat16, device=q.device)
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
        if block_h == MAX_BLOCK_H:
            configs = PREFILL_CONFIGS_WIDE
        else:
            configs = PREFILL_CONFIGS_H16 if block_h == MIN_BLOCK_H else PREFILL_CONFIGS_NARROW
        launch_with_fallback(("prefill", q.device, block_h, dot_fp32), configs, launch)
    return out, max_logits, lse
