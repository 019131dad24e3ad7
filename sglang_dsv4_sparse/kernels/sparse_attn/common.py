"""``@triton.jit`` pieces shared by the sparse attention kernels.

``sparse_mla_fwd`` (``prefill.py``) and ``sparse_mla_decode_paged``
(``decode_paged.py``) differ in where a key tile comes from (a bf16 buffer, or
fp8 pages dequantized in registers); what they do with it is the same and
lives here: the query block load, a row's length, one online-softmax step
(heads-major, optionally with the score dot split across warpgroups, or
keys-major) and the final normalization with the sink.  ``kv_ids`` is the
prefill kernel's step over index columns, which the benchmark's row floor
(``benchmarks/row_gather_floor.py``) reuses so that it reads the same rows.

Softmax state is kept in base 2: ``m`` in ``log2`` units and the scores scaled
by ``sm_scale * log2(e)``; ``normalize`` returns the natural-log ``lse``.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

LOG2E = math.log2(math.e)
LN2 = math.log(2.0)
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(LN2)


@triton.jit
def load_q_block(q_row, heads, head_ok, stride_q_h, D: tl.constexpr, DOT_FP32: tl.constexpr):
    """One query row's ``[BLOCK_H, D]`` block (masked heads read 0), upcast under the interpreter."""
    d = tl.arange(0, D)
    q = tl.load(q_row + heads[:, None].to(tl.int64) * stride_q_h + d[None, :], mask=head_ok[:, None], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    return q


@triton.jit
def row_length(len_ptr, index, limit, HAS_LEN: tl.constexpr):
    """``len_ptr[index]`` clamped to ``[0, limit]``; ``limit`` when there are no lengths."""
    n = limit
    if HAS_LEN:
        n = tl.minimum(tl.maximum(tl.load(len_ptr + index), 0), limit)
    return n


@triton.jit
def _mma(a, b, acc, DOT_FP32: tl.constexpr):
    """``a @ b + acc`` (``acc`` None: ``a @ b``); operands already fp32 and the
    product exact under the interpreter (see ``load_q_block``)."""
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
    """:func:`masked_softmax_step` with one mask for every head: ``live [BLOCK_N]``."""
    return masked_softmax_step(q, k, live[None, :], m_i, l_i, acc, scale_log2, SPLIT_SCORES, DOT_FP32)


@triton.jit
def masked_softmax_step(q, k, mask, m_i, l_i, acc, scale_log2, SPLIT_SCORES: tl.constexpr, DOT_FP32: tl.constexpr):
    """Fold one ``[BLOCK_N, D]`` key tile into the running (max, sum, acc) of each q row.

    ``m_i`` is in base-2 logit units.  ``mask`` (``[BLOCK_M, BLOCK_N]``, or
    ``[1, BLOCK_N]`` when every row reads the same keys) marks the scores that
    count; the others (skipped keys, loaded as zeros, or keys a row may not
    see) are forced to -inf here.

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
    s = tl.where(mask, s * scale_log2, float("-inf"))
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
def softmax_step(
    q, k, live, m_i, l_i, acc, scale_log2, KEYS_MAJOR: tl.constexpr, DOT_FP32: tl.constexpr, SPLIT_SCORES: tl.constexpr
):
    """One key tile folded in: keys-major, or heads-major with or without the split score dot (same result)."""
    if KEYS_MAJOR:
        m_i, l_i, acc = _online_softmax_step_keys_major(q, k, live, m_i, l_i, acc, scale_log2, DOT_FP32)
    else:
        m_i, l_i, acc = _online_softmax_step(q, k, live, m_i, l_i, acc, scale_log2, SPLIT_SCORES, DOT_FP32)
    return m_i, l_i, acc


@triton.jit
def normalize(acc, m_i, l_i, sink_ptr, heads, head_ok, HAS_SINK: tl.constexpr):
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
def kv_ids(idx_row, start, n_keys, s_kv, BLOCK_N: tl.constexpr):
    """Row ids of index columns ``start ..``: ``(id int64, live)``; skipped ids read as row 0, not live."""
    cols = start + tl.arange(0, BLOCK_N)
    kid = tl.load(idx_row + cols, mask=cols < n_keys, other=-1)
    live = (kid >= 0) & (kid < s_kv)
    return tl.where(live, kid, 0).to(tl.int64), live
