"""SWA-cache token ids of each request's window union, for the sparse prefill gather.

Same positional arguments and outputs as SGLang 0.5.23's ``build_swa_token_ids``.
Differences: int32 or int64 inputs, int64 address math throughout (a
``req_to_token`` table of many requests times long contexts passes 2**31
entries), one program per block of output ids rather than per request (the
grid follows the work, not the batch), stores masked to ``total_swa`` so a
wrong ``total_swa`` cannot write past the output, and every lookup masked to
its table: a pool row or position outside ``req_to_token``, or a full-cache id
outside ``full_to_swa``, gives -1 instead of a read outside the table.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...validation import INDEX_DTYPES, bounds_check_enabled, check_int, check_tensor
from ..triton_utils import check_launch_device
from .bounds import check_swa_token_ids_bounds
from .request_search import find_request

# Output ids per program and warps. Each id costs two dependent gathers
# (req_to_token, full_to_swa); the sweep on an H200 (``bench_kernels.py
# --sweep``; docs/design-notes.md) found blocks of 128-512 within noise of each
# other for a 32k chunk and larger ones slower, so 512 keeps the grid above the
# SM count from ~70k ids on.
SWA_IDS_BLOCK = 512
SWA_IDS_NUM_WARPS = 4


@triton.jit
def _swa_token_ids_kernel(
    out_ptr,
    total_swa,
    offsets_ptr,
    first_pos_ptr,
    req_pool_indices_ptr,
    req_to_token_ptr,
    req_to_token_stride,
    pool_rows,
    max_len,
    full_to_swa_ptr,
    full_size,
    num_reqs,
    SEARCH_STEPS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    flat = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = flat < total_swa
    req = find_request(offsets_ptr, flat, num_reqs, 0, SEARCH_STEPS)
    start = tl.load(offsets_ptr + req, mask=ok, other=0).to(tl.int64)
    pos = tl.load(first_pos_ptr + req, mask=ok, other=0).to(tl.int64) + (flat - start)
    pool_row = tl.load(req_pool_indices_ptr + req, mask=ok, other=0).to(tl.int64)
    in_table = ok & (pool_row >= 0) & (pool_row < pool_rows) & (pos >= 0) & (pos < max_len)
    full_id = tl.load(
        req_to_token_ptr + pool_row * req_to_token_stride + pos, mask=in_table, other=-1
    ).to(tl.int64)
    mapped = in_table & (full_id >= 0) & (full_id < full_size)
    swa_id = tl.load(full_to_swa_ptr + full_id, mask=mapped, other=-1)
    tl.store(out_ptr + flat, tl.where(mapped, swa_id, -1).to(tl.int32), mask=ok)


def build_swa_token_ids(
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    full_to_swa: torch.Tensor,
    swa_window: int,
    total_swa: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SWA token ids covering each request's union of query windows.

    Request ``r`` gathers positions ``[seq_len - g, seq_len)`` with
    ``g = min(seq_len, extend_len + swa_window - 1)``, mapped through
    ``req_to_token[req_pool_indices[r]]`` (full-cache ids) and ``full_to_swa``.
    A pool row or position outside ``req_to_token``, or a full-cache id
    outside ``full_to_swa``, gives the id -1 (``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``
    raises ``ValueError`` instead).

    Args:
        seq_lens, extend_seq_lens, req_pool_indices: ``(R,)`` int32/int64
            (``req_pool_indices`` contiguous: the kernel reads it).
        req_to_token: ``(pool_rows, max_len)`` int32/int64, unit inner stride.
        full_to_swa: 1-D int32/int64 map from full-cache id to SWA-cache id.
        swa_window: window size (128 for DSv4).
        total_swa: ``sum(g)``, computed by the caller from host-side lengths.

    Returns ``(swa_token_ids (total_swa,) int32, swa_first_pos (R,) int32,
    swa_gather_lens (R,) int32, swa_offsets (R + 1,) int32)``.
    """
    check_tensor("seq_lens", seq_lens, dtypes=INDEX_DTYPES, ndim=1)
    device = seq_lens.device
    check_launch_device("seq_lens", seq_lens)
    num_reqs = seq_lens.shape[0]
    check_tensor("extend_seq_lens", extend_seq_lens, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device)
    check_tensor("req_pool_indices", req_pool_indices, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device, contiguous=True)
    check_tensor("req_to_token", req_to_token, dtypes=INDEX_DTYPES, ndim=2, device=device, last_dim_contiguous=True)
    check_tensor("full_to_swa", full_to_swa, dtypes=INDEX_DTYPES, ndim=1, device=device, contiguous=True)
    check_int("swa_window", swa_window, minimum=1)
    check_int("total_swa", total_swa, minimum=0)
    if total_swa >= 2**31:
        raise ValueError(f"total_swa={total_swa} does not fit the int32 outputs SGLang expects")

    gather_lens = torch.minimum(seq_lens, extend_seq_lens + (swa_window - 1)).to(torch.int32)
    first_pos = (seq_lens - gather_lens).to(torch.int32)
    offsets = torch.zeros(num_reqs + 1, dtype=torch.int32, device=device)
    torch.cumsum(gather_lens, dim=0, out=offsets[1:])
    out = torch.empty(total_swa, dtype=torch.int32, device=device)
    if bounds_check_enabled():
        check_swa_token_ids_bounds(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, full_to_swa, first_pos, offsets, total_swa)
    if total_swa == 0 or num_reqs == 0:
        return out, first_pos, gather_lens, offsets
    _swa_token_ids_kernel[(triton.cdiv(total_swa, SWA_IDS_BLOCK),)](
        out,
        total_swa,
        offsets,
        first_pos,
        req_pool_indices,
        req_to_token,
        req_to_token.stride(0),
        req_to_token.shape[0],
        req_to_token.shape[1],
        full_to_swa,
        full_to_swa.shape[0],
        num_reqs,
        SEARCH_STEPS=max(num_reqs, 1).bit_length(),
        BLOCK=SWA_IDS_BLOCK,
        num_warps=SWA_IDS_NUM_WARPS,
    )
    return out, first_pos, gather_lens, offsets

