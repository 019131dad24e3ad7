"""The sparse-prefill plan's per-row tables, one launch each: what the plan adds to SGLang's chunk cache.

* :func:`request_of_rows`: the request of each of ``total`` consecutive rows,
  given each request's first row (``bounds``, R + 1 entries).
* :func:`compressed_token_ids`: each request's compressed rows, request after
  request, as ids into a paged compressed cache: row ``j`` of request ``r`` is
  ``table[r, j // P] * P + j % P``.
* :func:`fold_shared_rows`: for each group of ``g`` consecutive query rows of
  one request (the folded C128 route, core/fold.py), the compressed rows its
  first query reads, which every query of the group shares.

Built with torch ops these took some sixty launches a step, each paying the
host's per-op cost (docs/design-notes.md, "Routes by shape"). Every lookup is
masked to its table: a request, page column or page id outside its table, or
an id past the cache, gives -1 (a hole), never a read outside a tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...validation import INDEX_DTYPES, check_int, check_tensor
from ..triton_utils import check_launch_device
from .request_search import find_request

ROWS_BLOCK = 1024
FOLD_BLOCK = 512


def _search_steps(num_reqs: int) -> int:
    return max(1, int(num_reqs).bit_length())


@triton.jit
def _request_of_rows_kernel(out_ptr, total, bounds_ptr, num_reqs, SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr):
    flat = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    req = find_request(bounds_ptr, flat, num_reqs, 0, SEARCH_STEPS)
    tl.store(out_ptr + flat, req.to(tl.int64), mask=flat < total)


@triton.jit
def _compressed_ids_kernel(
    out_ptr, total, bounds_ptr, num_reqs, table_ptr, table_stride, table_rows, table_cols, page_size, capacity,
    SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr,
):
    flat = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = flat < total
    req = find_request(bounds_ptr, flat, num_reqs, 0, SEARCH_STEPS).to(tl.int64)
    local = flat - tl.load(bounds_ptr + req, mask=ok, other=0).to(tl.int64)
    col = local // page_size
    inside = ok & (req < table_rows) & (col >= 0) & (col < table_cols)
    page = tl.load(table_ptr + req * table_stride + col, mask=inside, other=-1).to(tl.int64)
    ids = page * page_size + local % page_size
    ids = tl.where(inside & (page >= 0) & (ids < capacity), ids, -1)
    tl.store(out_ptr + flat, ids, mask=ok)


@triton.jit
def _fold_rows_kernel(
    idx_ptr, lens_ptr, skip_ptr, width, groups, group_size, num_tokens, req_ptr, pos_ptr, bounds_ptr, num_reqs,
    ratio, BLOCK: tl.constexpr,
):
    group = tl.program_id(0).to(tl.int64)
    first = group * group_size
    last = tl.minimum(first + group_size - 1, num_tokens - 1)
    req = tl.load(req_ptr + first)
    same = (req == tl.load(req_ptr + last)) & (group < groups)
    req_ok = (req >= 0) & (req < num_reqs)
    base = tl.load(bounds_ptr + req, mask=req_ok, other=0).to(tl.int64)
    rows = tl.load(bounds_ptr + req + 1, mask=req_ok, other=0).to(tl.int64) - base
    # The group's first query has the smallest position: the rows it reads, every query of the group reads.
    visible = (tl.load(pos_ptr + first).to(tl.int64) + 1) // ratio
    shared = tl.where(same & req_ok, tl.minimum(tl.maximum(visible, 0), rows), 0)
    col = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(idx_ptr + group * width + col, tl.where(col < shared, base + col, -1).to(tl.int32),
             mask=(col < width) & (group < groups))
    if tl.program_id(1) == 0:
        tl.store(lens_ptr + group, shared.to(tl.int32), mask=group < groups)
        tl.store(skip_ptr + group, shared.to(tl.int32))


def _check_bounds_tensor(name: str, bounds: torch.Tensor) -> int:
    check_tensor(name, bounds, dtypes=INDEX_DTYPES, ndim=1, contiguous=True)
    check_launch_device(name, bounds)
    if bounds.shape[0] < 1:
        raise ValueError(f"{name} must hold R + 1 entries (each request's first row, then the end), got none")
    return bounds.shape[0] - 1


def _row_output(bounds: torch.Tensor, num_reqs: int, total: int) -> torch.Tensor:
    """The ``(total,)`` int64 output of a per-row table; rows with no request to own them are an error."""
    check_int("total", total, minimum=0)
    if total and num_reqs == 0:
        raise ValueError(f"bounds names no request for {total} rows")
    return torch.empty(total, dtype=torch.int64, device=bounds.device)


def request_of_rows(bounds: torch.Tensor, total: int) -> torch.Tensor:
    """``(total,)`` int64: the last ``r`` with ``bounds[r] <= row`` for each row, within ``[0, R)``.

    ``bounds``: each request's first row and the end (``query_start_loc``), ``R + 1``
    int32/int64 entries, nondecreasing. ``total`` comes from host lengths; rows past
    ``bounds[-1]`` (lengths that disagree) still get a request in range, never an error.
    """
    num_reqs = _check_bounds_tensor("bounds", bounds)
    out = _row_output(bounds, num_reqs, total)
    if total:
        _request_of_rows_kernel[(triton.cdiv(total, ROWS_BLOCK),)](
            out, total, bounds, num_reqs, SEARCH_STEPS=_search_steps(num_reqs), BLOCK=ROWS_BLOCK
        )
    return out


def compressed_token_ids(bounds: torch.Tensor, table: torch.Tensor, page_size: int, total: int,
                         capacity: int = 2**62) -> torch.Tensor:
    """``(total,)`` int64 ids of each request's compressed rows in its paged cache, request after request.

    ``bounds``: each request's first row among the ``total`` and the end (the
    cumulative row counts, ``R + 1`` entries); ``table``: ``(R, pages)`` page ids
    of each request. A page column past the table, a negative page id or an id
    at or past ``capacity`` gives -1.
    """
    num_reqs = _check_bounds_tensor("bounds", bounds)
    check_tensor("table", table, dtypes=INDEX_DTYPES, ndim=2, device=bounds.device, last_dim_contiguous=True)
    check_int("page_size", page_size, minimum=1)
    out = _row_output(bounds, num_reqs, total)
    if total:
        _compressed_ids_kernel[(triton.cdiv(total, ROWS_BLOCK),)](
            out, total, bounds, num_reqs, table, table.stride(0), table.shape[0], table.shape[1], page_size, capacity,
            SEARCH_STEPS=_search_steps(num_reqs), BLOCK=ROWS_BLOCK,
        )
    return out


def fold_shared_rows(req_of_token: torch.Tensor, query_pos: torch.Tensor, bounds: torch.Tensor, group_size: int,
                     width: int, ratio: int = 128) -> tuple:
    """Each group's shared rows as workspace rows: ``(indices (G, width) int32, lens (G,) int32, skip (cdiv(T, g),) int32)``.

    Groups are runs of ``group_size`` token rows (``G = T // group_size``); a
    group holding two requests' rows, and the last partial run, share nothing.
    ``bounds``: each request's first compressed row in the workspace and the end.
    Shared row ``c`` of a group of request ``r`` is ``bounds[r] + c`` for
    ``c < min((pos + 1) // ratio, rows of r)``, -1 after.
    """
    num_reqs = _check_bounds_tensor("bounds", bounds)
    device = bounds.device
    check_tensor("req_of_token", req_of_token, dtypes=INDEX_DTYPES, ndim=1, device=device, contiguous=True)
    num_tokens = req_of_token.shape[0]
    check_tensor("query_pos", query_pos, dtypes=INDEX_DTYPES, shape=(num_tokens,), device=device, contiguous=True)
    check_int("group_size", group_size, minimum=1)
    check_int("width", width, minimum=0)
    check_int("ratio", ratio, minimum=1)
    groups = num_tokens // group_size
    indices = torch.empty((groups, width), dtype=torch.int32, device=device)
    lens = torch.empty(groups, dtype=torch.int32, device=device)
    skip = torch.zeros(triton.cdiv(num_tokens, group_size), dtype=torch.int32, device=device)
    if groups == 0:
        return indices, lens, skip
    _fold_rows_kernel[(groups, max(1, triton.cdiv(width, FOLD_BLOCK)))](
        indices, lens, skip, width, groups, group_size, num_tokens, req_of_token, query_pos, bounds, num_reqs,
        ratio, BLOCK=FOLD_BLOCK,
    )
    return indices, lens, skip
