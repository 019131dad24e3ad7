"""One combined sparse-attention index row per query: [top-k | window | -1 pad].

Same positional arguments and outputs as SGLang 0.5.23's
``combine_topk_swa_indices``; int32 or int64 inputs, int64 row offsets, and
the top-k row read with loads that stay 16 bytes wide.

For query ``t`` of request ``r`` at absolute position ``pos``:

* ``topk_len = min((pos + 1) // compress_ratio, topk)`` entries of its top-k
  row, each ``+ compressed_base[r]`` (a -1 stays -1);
* ``swa_len = min(pos + 1, window_size)`` window rows, the workspace rows
  ``swa_base[r] + (pos - swa_len + 1 - (seq_len[r] - gather_len[r])) + j``,
  or, with explicit ``swa_indices``, ``swa_base[r] + swa_indices[t, j]``
  (a -1 stays -1) for ``j < swa_lengths[t]``;
* -1 up to ``ceil(topk + window_size, 128)`` columns.

Rows past the last request's queries are all -1 with length 0.

Whatever the values, nothing is read outside the inputs and every entry is -1
or a row of the workspace the caller describes: negative lengths count as 0,
``swa_lengths`` is clamped to ``window_size`` (the width of ``swa_indices``),
a top-k entry at or past the request's ``compressed_lens`` is -1, a window row
outside the request's window union (a position past ``seq_len``) is -1, and
so is any entry outside ``[0, kv_rows)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import layout as L
from ...validation import INDEX_DTYPES, bounds_check_enabled, check_int, check_tensor
from ..triton_utils import check_launch_device
from .bounds import check_combine_bounds
from .request_search import find_request

# Queries per program and warps: among the best of a 20-point sweep at 32k
# queries on an H200 (``bench_kernels.py --sweep``; docs/design-notes.md);
# rows are written in 128-column chunks, so two queries per program already
# issue wide stores.
COMBINE_BLOCK_QUERIES = 2
COMBINE_NUM_WARPS = 2
# Columns per inner step: the combined width is a multiple of it.
COLUMN_CHUNK = L.INDEX_ROW_ALIGN


def combined_index_width(topk: int, window_size: int) -> int:
    """Columns of a combined row: ``topk + window_size`` rounded up to 128."""
    return triton.cdiv(topk + window_size, L.INDEX_ROW_ALIGN) * L.INDEX_ROW_ALIGN


@triton.jit(do_not_specialize=["num_tokens", "num_reqs", "topk"])
def _combine_kernel(
    out_ptr,
    out_stride,
    out_lens_ptr,
    topk_ptr,
    topk_stride,
    topk_cols,
    query_start_loc_ptr,
    query_pos_ptr,
    seq_lens_ptr,
    gather_lens_ptr,
    compressed_base_ptr,
    swa_base_ptr,
    swa_ids_ptr,
    swa_ids_stride,
    swa_lengths_ptr,
    compressed_lens_ptr,
    kv_rows,
    num_tokens,
    num_reqs,
    topk,
    COMPRESS_RATIO: tl.constexpr,
    WINDOW: tl.constexpr,
    WIDTH: tl.constexpr,
    CHUNK: tl.constexpr,
    TOPK_VEC: tl.constexpr,
    EXPLICIT_SWA: tl.constexpr,
    HAS_COMPRESSED_LENS: tl.constexpr,
    SEARCH_STEPS: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    valid = token < num_tokens
    # query_start_loc may carry the offset of an earlier chunk: rebase to 0.
    base = tl.load(query_start_loc_ptr).to(tl.int64)
    req = find_request(query_start_loc_ptr, token, num_reqs, base, SEARCH_STEPS)
    owned = valid & (token < tl.load(query_start_loc_ptr + num_reqs).to(tl.int64) - base)

    pos = tl.load(query_pos_ptr + token, mask=owned, other=0).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr + req, mask=owned, other=0).to(tl.int64)
    gather_len = tl.load(gather_lens_ptr + req, mask=owned, other=0).to(tl.int64)
    compressed_base = tl.load(compressed_base_ptr + req, mask=owned, other=0).to(tl.int64)
    swa_base = tl.load(swa_base_ptr + req, mask=owned, other=0).to(tl.int64)

    # Lengths clamped to [0, width]: a negative position or a wild
    # swa_lengths entry must not widen a row past its inputs.
    topk_len = tl.where(owned, tl.maximum(tl.minimum((pos + 1) // COMPRESS_RATIO, topk), 0), 0)
    if EXPLICIT_SWA:
        swa_len = tl.load(swa_lengths_ptr + token, mask=owned, other=0).to(tl.int64)
        swa_len = tl.maximum(tl.minimum(swa_len, WINDOW), 0)
    else:
        swa_len = tl.where(owned, tl.maximum(tl.minimum(pos + 1, WINDOW), 0), 0)
    total_len = topk_len + swa_len
    if HAS_COMPRESSED_LENS:
        topk_limit = tl.load(compressed_lens_ptr + req, mask=owned, other=0).to(tl.int64)
    else:
        topk_limit = tl.full(token.shape, 2**62, tl.int64)
    # Every mask is a per-query range, folded here once, so the per-entry
    # work stays two compares a side (the kernel is bound by its stores).
    # A pick is kept if it is one of its request's rows and its workspace row
    # compressed_base + pick lies in [0, kv_rows).
    pick_lo = tl.maximum(-compressed_base, 0)
    pick_hi = tl.minimum(topk_limit, kv_rows - compressed_base)
    # Window rows: rel (a row of the request's window union, which starts at
    # position seq_len - gather_len) must lie in [0, gather_len), a position
    # past seq_len falls outside it, and the row swa_base + rel in [0, kv_rows).
    rel_lo = tl.maximum(-swa_base, 0)
    rel_hi = tl.minimum(gather_len, kv_rows - swa_base)
    window_first = pos - swa_len + 1 - (seq_len - gather_len)  # rel of the first window column
    # The same as columns: window column c (c >= topk_len) is rel window_first + c - topk_len.
    win_lo = topk_len + tl.maximum(rel_lo - window_first, 0)
    win_hi = topk_len + tl.minimum(rel_hi - window_first, swa_len)
    window_row0 = swa_base + window_first - topk_len  # workspace row of window column 0
    # Read the top-k row up to topk_len rounded up to TOPK_VEC (<= topk_cols,
    # which TOPK_VEC divides): the mask then changes only every TOPK_VEC
    # columns and the loads stay 16 bytes wide; the extra entries are dropped.
    topk_read = tl.multiple_of(tl.minimum(tl.cdiv(topk_len, TOPK_VEC) * TOPK_VEC, topk_cols), TOPK_VEC)

    out_row = token * out_stride
    topk_row = token * topk_stride
    for chunk in tl.static_range(WIDTH // CHUNK):
        col = chunk * CHUNK + tl.arange(0, CHUNK).to(tl.int64)
        in_topk = col[None, :] < topk_len[:, None]
        picked = tl.load(
            topk_ptr + topk_row[:, None] + col[None, :],
            mask=owned[:, None] & (col[None, :] < topk_read[:, None]),
            other=-1,
            eviction_policy="evict_first",  # each top-k row is read once
        ).to(tl.int64)
        kept = (picked >= pick_lo[:, None]) & (picked < pick_hi[:, None])
        from_topk = tl.where(kept, picked + compressed_base[:, None], -1)
        if EXPLICIT_SWA:
            window_col = col[None, :] - topk_len[:, None]
            in_window = ~in_topk & (col[None, :] < total_len[:, None])
            explicit = tl.load(
                swa_ids_ptr + (token * swa_ids_stride)[:, None] + window_col,
                mask=owned[:, None] & in_window,
                other=-1,
            ).to(tl.int64)
            row_ok = (explicit >= rel_lo[:, None]) & (explicit < (kv_rows - swa_base)[:, None])
            from_window = tl.where(row_ok, swa_base[:, None] + explicit, -1)
        else:
            in_window = (col[None, :] >= win_lo[:, None]) & (col[None, :] < win_hi[:, None])
            from_window = window_row0[:, None] + col[None, :]
        value = tl.where(in_topk, from_topk, tl.where(in_window, from_window, -1))
        tl.store(out_ptr + out_row[:, None] + col[None, :], value.to(out_ptr.dtype.element_ty), mask=valid[:, None])
    tl.store(out_lens_ptr + token, total_len.to(out_lens_ptr.dtype.element_ty), mask=valid)


def _largest_row(dtype: torch.dtype) -> int:
    """Without ``kv_rows``, entries are bounded by what ``out_indices`` holds: none wraps around."""
    return 2**31 if dtype == torch.int32 else 2**62


def combine_topk_swa_indices(
    topk_indices: torch.Tensor,
    query_start_loc: torch.Tensor,
    query_pos: torch.Tensor,
    seq_lens: torch.Tensor,
    gather_lens: torch.Tensor,
    compressed_base: torch.Tensor,
    swa_base: torch.Tensor,
    window_size: int,
    compress_ratio: int,
    topk: int,
    out_indices: Optional[torch.Tensor] = None,
    out_lens: Optional[torch.Tensor] = None,
    swa_indices: Optional[torch.Tensor] = None,
    swa_lengths: Optional[torch.Tensor] = None,
    *,
    compressed_lens: Optional[torch.Tensor] = None,
    kv_rows: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the combined index rows and lengths for ``flash_mla_sparse_fwd``.

    Args:
        topk_indices: ``(T, >= topk)`` int32/int64 top-k rows in each request's
            compressed region (-1 = hole); entries past ``topk_len`` are ignored.
        query_start_loc: ``(R + 1,)`` query offsets; may start at a chunk offset.
        query_pos: ``(T,)`` absolute positions.
        seq_lens, gather_lens, compressed_base, swa_base: ``(R,)`` per request;
            ``gather_lens`` from :func:`build_swa_token_ids`, bases are workspace rows.
        window_size, compress_ratio (>= 1), topk (>= 0; 0 for SWA-only layers).
        out_indices: optional ``(T, combined_index_width(topk, window_size))``
            int32/int64 destination, overwritten whole (rows -1 padded).
        out_lens: optional ``(T,)`` int32/int64 destination.
        swa_indices, swa_lengths: optional explicit window rows ``(T, window_size)``
            relative to ``swa_base`` and their lengths ``(T,)`` (clamped to
            ``[0, window_size]``).
        compressed_lens: keyword-only ``(R,)`` compressed rows of each request:
            a top-k entry at or past its request's count becomes -1.
        kv_rows: keyword-only rows of the workspace the indices address: an
            entry outside ``[0, kv_rows)`` becomes -1 (without it, an entry
            ``out_indices`` cannot hold, past 2**31 - 1 for int32).

    Returns ``(indices, lens)``: int32 unless int64 destinations were passed.
    With ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` inputs that would be masked
    raise ``ValueError`` naming the argument instead.
    """
    check_tensor("topk_indices", topk_indices, dtypes=INDEX_DTYPES, ndim=2, last_dim_contiguous=True)
    device = topk_indices.device
    check_launch_device("topk_indices", topk_indices)
    num_tokens = topk_indices.shape[0]
    check_tensor("seq_lens", seq_lens, dtypes=INDEX_DTYPES, ndim=1, device=device, contiguous=True)
    num_reqs = seq_lens.shape[0]
    check_tensor("query_start_loc", query_start_loc, dtypes=INDEX_DTYPES, shape=(num_reqs + 1,), device=device, contiguous=True)
    check_tensor("query_pos", query_pos, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device, contiguous=True)
    for name, t in (("gather_lens", gather_lens), ("compressed_base", compressed_base), ("swa_base", swa_base)):
        check_tensor(name, t, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device, contiguous=True)
    check_int("window_size", window_size, minimum=0)
    check_int("compress_ratio", compress_ratio, minimum=1)
    check_int("topk", topk, minimum=0)
    if topk_indices.shape[1] < topk:
        raise ValueError(f"topk_indices has {topk_indices.shape[1]} columns, fewer than topk={topk}")
    if (swa_indices is None) != (swa_lengths is None):
        raise ValueError("swa_indices and swa_lengths must be given together")
    if swa_indices is not None:
        check_tensor("swa_indices", swa_indices, dtypes=INDEX_DTYPES, shape=(num_tokens, window_size), device=device, last_dim_contiguous=True)
        check_tensor("swa_lengths", swa_lengths, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device, contiguous=True)
    if compressed_lens is not None:
        check_tensor("compressed_lens", compressed_lens, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device, contiguous=True)
    if kv_rows is not None:
        check_int("kv_rows", kv_rows, minimum=0)

    width = combined_index_width(topk, window_size)
    if out_indices is not None:
        check_tensor("out_indices", out_indices, dtypes=INDEX_DTYPES, shape=(num_tokens, width), device=device, last_dim_contiguous=True)
    if out_lens is not None:
        check_tensor("out_lens", out_lens, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device, contiguous=True)
    return combine_topk_swa_indices_unchecked(
        topk_indices, query_start_loc, query_pos, seq_lens, gather_lens, compressed_base, swa_base, window_size,
        compress_ratio, topk, out_indices, out_lens, swa_indices, swa_lengths,
        compressed_lens=compressed_lens, kv_rows=kv_rows,
    )


def combine_topk_swa_indices_unchecked(
    topk_indices, query_start_loc, query_pos, seq_lens, gather_lens, compressed_base, swa_base, window_size,
    compress_ratio, topk, out_indices=None, out_lens=None, swa_indices=None, swa_lengths=None, *,
    compressed_lens=None, kv_rows=None, check_bounds=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`combine_topk_swa_indices` (same arguments) without its argument checks, for a caller that made them.

    The core calls it once a C4 layer. Inputs are still range-checked under
    ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``, as there.
    """
    device = topk_indices.device
    num_tokens, num_reqs = topk_indices.shape[0], seq_lens.shape[0]
    width = combined_index_width(topk, window_size)
    if out_indices is None:
        out_indices = torch.empty((num_tokens, width), dtype=torch.int32, device=device)
    if out_lens is None:
        out_lens = torch.empty(num_tokens, dtype=torch.int32, device=device)
    if bounds_check_enabled() if check_bounds is None else check_bounds:
        check_combine_bounds(
            topk_indices, query_start_loc, query_pos, seq_lens, gather_lens, compressed_base, swa_base, window_size,
            compress_ratio, topk, out_indices, swa_indices, swa_lengths, compressed_lens, kv_rows,
        )
    if num_tokens == 0:
        return out_indices, out_lens
    if num_reqs == 0:
        out_indices.fill_(-1)
        out_lens.zero_()
        return out_indices, out_lens

    topk_cols = topk_indices.shape[1]
    # 4 int32 or 2 int64 entries make one 16-byte load.
    vec = 16 // topk_indices.element_size()
    topk_vec = vec if topk_cols % vec == 0 and topk_indices.stride(0) % vec == 0 else 1
    _combine_kernel[(triton.cdiv(num_tokens, COMBINE_BLOCK_QUERIES),)](
        out_indices,
        out_indices.stride(0),
        out_lens,
        topk_indices,
        topk_indices.stride(0),
        topk_cols,
        query_start_loc,
        query_pos,
        seq_lens,
        gather_lens,
        compressed_base,
        swa_base,
        swa_indices,
        0 if swa_indices is None else swa_indices.stride(0),
        swa_lengths,
        compressed_lens,
        kv_rows if kv_rows is not None else _largest_row(out_indices.dtype),
        num_tokens,
        num_reqs,
        topk,
        COMPRESS_RATIO=compress_ratio,
        WINDOW=window_size,
        WIDTH=width,
        CHUNK=COLUMN_CHUNK,
        TOPK_VEC=topk_vec,
        EXPLICIT_SWA=swa_indices is not None,
        HAS_COMPRESSED_LENS=compressed_lens is not None,
        SEARCH_STEPS=max(num_reqs, 1).bit_length(),
        BLOCK_T=COMBINE_BLOCK_QUERIES,
        num_warps=COMBINE_NUM_WARPS,
    )
    return out_indices, out_lens

