"""Per-layer attention forward on top of a step plan.

``prefill_layer`` runs the sparse prefill route: the layer dequantizes its own
caches (a C4 layer's cache and top-k are its own, so no layer reuses another's
rows) into the shared workspace, then attends through FlashMLA or Triton.
``decode_layer`` runs the paged route, reading the fp8 caches directly; it
allocates nothing on the host side and never syncs, so it can be captured in
a CUDA graph. Its C4 top-k is given as C4-cache ids with lengths, as SGLang's
indexer writes them for its own paged attention.

Both check their arguments once, at the top (``_check_layer``,
``_check_caches``, ``_check_placement``), and then call the kernels' unchecked
bodies; the public kernel functions keep their own checks for other callers.
Which kernels run comes from a :class:`~sglang_dsv4_sparse.dispatch.KernelChoice`
(``choice=``; None: the default one of q's device, read from the environment once).
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import layout as L
from ..dispatch import (
    SHARED_ROW_MAX_HEADS, KernelChoice, choice_for_call, paged_decode_attention, sparse_prefill_attention,
    sparse_prefill_attention_lse,
)
from ..kernels.dequant import dequantize_k_cache_paged_unchecked
from ..kernels.indices import combined_index_width
from ..kernels.indices.combine import combine_topk_swa_indices_unchecked
from ..kernels.sparse_attn.configs import MAX_BLOCK_H
from ..kernels.sparse_attn.decode_paged import sparse_mla_decode_paged_unchecked, check_cache_aligned
from ..kernels.sparse_attn.shared_rows import shared_rows_attention_unchecked
from ..kernels.triton_utils import check_launch_device
from ..validation import INDEX_DTYPES, check_int, check_tensor
from .fold import build_c128_fold, c128_folded_attention, check_fold
from .lookup import take
from .bounds import check_decode_layer_bounds, check_prefill_layer_bounds
from .plan import PagedPlan, PrefillPlan, readable_topk_lengths

# C4 layers dequantize either every compressed row a query may read ("all") or
# only the rows this layer's top-k selects ("selected"). The mark / compact /
# remap launches of "selected" cost more than streaming every readable row at
# every context measured, up to one query over 1M tokens (H200; BENCHMARKS.md
# section 3, docs/design-notes.md, "C4 layers"). "auto" therefore picks
# "selected" only past ~2M readable rows (8M tokens of context), and only when
# the top-k picks fewer than half of them.
C4_SELECT_MIN_ROWS = 1 << 21
C4_SELECT_WHEN_ROWS_OVER_PICKS = 2.0


def choose_c4_rows(readable_rows: int, num_tokens: int, topk: int) -> str:
    """``"auto"``'s choice for a C4 layer: ``"selected"`` only for huge, sparsely picked contexts."""
    few_picks = readable_rows > C4_SELECT_WHEN_ROWS_OVER_PICKS * num_tokens * topk
    return "selected" if few_picks and readable_rows >= C4_SELECT_MIN_ROWS else "all"


class Workspace:
    """A bf16 ``[rows, 1, 512]`` buffer reused across layers and steps."""

    def __init__(self, device: torch.device):
        self._buf = torch.empty((0, 1, L.HEAD_DIM), dtype=torch.bfloat16, device=device)
        self.device = self._buf.device  # with its index ("cuda" -> "cuda:N"), as q.device has it

    def get(self, rows: int) -> torch.Tensor:
        if rows > self._buf.shape[0]:
            # Grow by 1/8 at least, so a slowly growing context does not reallocate every step.
            self._buf = torch.empty((max(rows, self._buf.shape[0] * 9 // 8), 1, L.HEAD_DIM), dtype=torch.bfloat16, device=self.device)
        return self._buf[:rows]


# The kernels take 1..128 query heads (FlashMLA's and Triton's alike).
MAX_HEADS = 2 * MAX_BLOCK_H


def _check_layer(q, swa_cache, compress_ratio, compressed_cache, topk_indices, num_tokens, attn_sink):
    check_tensor("q", q, dtypes=(torch.bfloat16,), shape=(num_tokens, None, L.HEAD_DIM), last_dim_contiguous=True)
    check_launch_device("q", q)
    if not 1 <= q.shape[1] <= MAX_HEADS:
        raise ValueError(f"q must have 1..{MAX_HEADS} heads, got {q.shape[1]}")
    check_int("compress_ratio", compress_ratio, allowed=L.LAYER_RATIOS)
    if not isinstance(swa_cache, torch.Tensor):
        raise TypeError("swa_cache must be a torch.Tensor (the layer's SWA V4 cache)")
    if compress_ratio and compressed_cache is None:
        raise ValueError(f"compress_ratio={compress_ratio} needs compressed_cache")
    if compress_ratio == 4:
        if topk_indices is None:
            raise ValueError("a C4 layer needs topk_indices (request-local compressed rows, -1 = hole)")
        check_tensor("topk_indices", topk_indices, dtypes=INDEX_DTYPES, ndim=2, device=q.device, last_dim_contiguous=True)
        if topk_indices.shape[0] != num_tokens:
            raise ValueError(f"topk_indices must have {num_tokens} rows, got {topk_indices.shape[0]}")
    if attn_sink is not None:
        check_tensor("attn_sink", attn_sink, dtypes=(torch.float32,), shape=(q.shape[1],), device=q.device, contiguous=True)


def _check_caches(swa_cache, swa_page_size, compress_ratio, compressed_cache, compressed_page_sizes, device,
                  aligned=False) -> tuple:
    """The layer's caches fit the plan's page sizes and sit on ``device`` (16-byte aligned if ``aligned``).

    Checked here so the error names the layer's argument. Returns both as the
    ``(num_pages, page_bytes)`` uint8 views the kernels read (None for no compressed cache).
    """
    swa = _check_cache("swa_cache", swa_cache, swa_page_size, device, aligned)
    if not compress_ratio:
        return swa, None
    if compress_ratio not in compressed_page_sizes:
        raise ValueError(
            f"compress_ratio={compress_ratio} but the plan was built without compressed_page_tables[{compress_ratio}]"
        )
    return swa, _check_cache("compressed_cache", compressed_cache, compressed_page_sizes[compress_ratio], device, aligned)


def _check_cache(name: str, cache: torch.Tensor, page_size: int, device: torch.device, aligned: bool) -> torch.Tensor:
    """A ``(num_pages, page_bytes)`` V4 cache, or FlashMLA's 4-D view of one (any 1-byte dtype), as its byte view."""
    if isinstance(cache, torch.Tensor) and cache.dim() == 4 and cache.element_size() == 1:
        cache = cache.view(torch.uint8)
    cache = L.as_byte_cache(cache, page_size, name)
    if cache.device != device:
        raise ValueError(f"{name} must be on {device} (q's device), got {cache.device}")
    if aligned:
        check_cache_aligned(name, cache)
    return cache


def _check_placement(q: torch.Tensor, plan_tensor: torch.Tensor, workspace: Optional[Workspace] = None) -> None:
    """The plan (one of its tensors) and the workspace sit on q's device: the kernels read all of them."""
    if plan_tensor.device != q.device:
        raise ValueError(f"the plan is on {plan_tensor.device}, q on {q.device}: build it from StepInputs on q's device")
    if workspace is not None and workspace.device != q.device:
        raise ValueError(f"workspace is on {workspace.device}, q on {q.device}")


def _choice_for(q: torch.Tensor, choice: Optional[KernelChoice]) -> KernelChoice:
    """``choice``, made for q's device, or (None) the default choice of q's device (bounds flag read now)."""
    if choice is None:
        return choice_for_call(q.device)
    if choice.device != q.device:
        raise ValueError(f"choice was made for {choice.device}, q is on {q.device}")
    return choice


def _check_prefill(plan, workspace, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, choice):
    """A sparse-prefill layer's checks, made once: returns ``(swa bytes, compressed bytes, kernel choice)``."""
    _check_layer(q, swa_cache, compress_ratio, compressed_cache, topk_indices, plan.num_tokens, attn_sink)
    sizes = {ratio: rows.page_size for ratio, rows in plan.compressed.items()}
    caches = _check_caches(swa_cache, plan.swa_page_size, compress_ratio, compressed_cache, sizes, q.device)
    _check_placement(q, plan.query_pos, workspace)
    return caches + (_choice_for(q, choice),)


# How a layer's keys reach the attention on the sparse prefill route, by compress ratio:
# "index": one combined index row per query over the staged rows (FlashMLA's
#   flash_mla_sparse_fwd, or its Triton twin, as the kernel choice says);
# "native": the same index rows through the Triton kernel at the real heads
#   (FlashMLA would pad a rank's 8 or 16 heads to 64);
# "shared": the shared-row kernel reads the window (and the C128 prefix) once per
#   tile of 64 // h neighbouring queries (kernels/sparse_attn/shared_rows.py);
# "split" (C4): the top-k through index rows, the window through the shared-row
#   kernel, merged there;
# "paged" (C4): the top-k read straight from the paged fp8 cache by the paged
#   kernel at the real heads (no compressed row staged: 584 bytes a row read
#   instead of 1024 written and read back), the window as in "split";
# "folded" (C128): the rows a group of queries shares through FlashMLA at full
#   width, the rest through the shared-row kernel (core/fold.py).
PREFILL_ROUTES = {
    0: ("index", "native", "shared"),
    4: ("index", "native", "split", "paged"),
    128: ("index", "native", "shared", "folded"),
}
# The routes that read the plan's combined index rows (the others build none).
INDEX_ROW_ROUTES = ("index", "native")


def prefill_layer(
    plan: PrefillPlan,
    workspace: Workspace,
    q: torch.Tensor,
    swa_cache: torch.Tensor,
    compress_ratio: int,
    compressed_cache: Optional[torch.Tensor] = None,
    topk_indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    c4_rows: str = "auto",
    route: str = "auto",
    fold=None,
    *,
    choice: Optional[KernelChoice] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One layer of sparse prefill: ``q [T, h, 512]`` -> ``[T, h, 512]`` bf16.

    ``c4_rows``: ``"all"``, ``"selected"`` or ``"auto"`` (pick by the ratio of
    readable rows to top-k picks).  ``route``: ``"auto"`` (the choice's ``prefill_route``)
    or one of ``PREFILL_ROUTES[compress_ratio]`` (the shared-row routes, all
    but ``"index"`` and ``"native"``, take at most 64 heads); ``fold``: the
    step's :class:`~sglang_dsv4_sparse.core.fold.C128Fold` for the ``"folded"``
    route (built here when not given).

    A top-k entry outside its request's compressed rows (other than -1) and
    ids the plan could not map are holes; with ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``
    they raise ``ValueError`` naming the argument.  A head whose q holds NaN
    or inf gives NaN. ``choice``: the kernels (None: the default of q's device).
    ``out``: a ``[T, h, 512]`` bf16 tensor to write the result into (a slice of
    a wider buffer is fine; the Triton kernels write it in place, FlashMLA's
    result is copied there) and return.
    """
    swa_cache, compressed_cache, choice = _check_prefill(
        plan, workspace, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, choice
    )
    if c4_rows not in ("auto", "all", "selected"):
        raise ValueError(f"c4_rows must be 'auto', 'all' or 'selected', got {c4_rows!r}")
    if route == "auto":
        route = choice.prefill_route(compress_ratio, q.shape[1])
    if route not in PREFILL_ROUTES[compress_ratio]:
        raise ValueError(f"route must be one of {PREFILL_ROUTES[compress_ratio]} for compress_ratio={compress_ratio}, got {route!r}")
    if route not in INDEX_ROW_ROUTES and q.shape[1] > SHARED_ROW_MAX_HEADS:
        raise ValueError(f"route={route!r} takes at most {SHARED_ROW_MAX_HEADS} heads, got q with {q.shape[1]}")
    if route == "folded" and fold is not None:
        check_fold(fold, plan, q.shape[1])
    if out is not None:
        check_tensor("out", out, dtypes=(torch.bfloat16,), shape=tuple(q.shape), device=q.device, last_dim_contiguous=True)
    result = _prefill(plan, workspace, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, c4_rows,
                      route, fold, choice, out)
    if out is None or result is out:
        return result
    return out.copy_(result)


def _prefill(plan, workspace, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, c4_rows,
             route, fold, choice, out):
    """:func:`prefill_layer` after its checks (caches as byte views); the Triton kernels write into ``out``."""
    if plan.num_tokens == 0:
        return q.new_empty(q.shape)
    if choice.check_bounds:
        check_prefill_layer_bounds(plan, swa_cache, compress_ratio, compressed_cache, topk_indices)
    if route == "native":
        route, choice = "index", choice.triton_only
    if compress_ratio == 0:
        kv = _stage_rows(plan, workspace, swa_cache, check_bounds=choice.check_bounds)
        if route == "shared":
            return _shared_rows(plan, q, kv, plan.swa_offsets[:-1], attn_sink, out=out)
        indices, lens = plan.c0_index_rows()
        return sparse_prefill_attention(q, kv, indices[:, None, :], lens, attn_sink, choice=choice, out=out)

    rows = plan.compressed[compress_ratio]
    if compress_ratio == 4:
        if route == "paged":
            return _prefill_c4_paged(plan, workspace, q, swa_cache, compressed_cache, topk_indices, attn_sink, rows,
                                     choice.check_bounds, out)
        return _prefill_c4(plan, workspace, q, swa_cache, compressed_cache, topk_indices, attn_sink, rows, c4_rows,
                           choice, split=route == "split", out=out)

    kv = _stage_rows(plan, workspace, swa_cache, compressed_cache, rows.token_ids, rows.page_size,
                     check_bounds=choice.check_bounds)
    if route == "shared":
        return _shared_rows(plan, q, kv, rows.swa_base, attn_sink, rows, out=out)
    if route == "folded":
        fold = fold if fold is not None else build_c128_fold(plan, q.shape[1])
        return c128_folded_attention(plan, fold, q, kv, attn_sink, choice=choice, out=out)
    if len(plan.c128_tiles) == 1:
        indices, lens = plan.c128_tile_indices(plan.c128_tiles[0])
        return sparse_prefill_attention(q, kv, indices[:, None, :], lens, attn_sink, choice=choice, out=out)
    out = torch.empty_like(q) if out is None else out
    for tile in plan.c128_tiles:
        indices, lens = plan.c128_tile_indices(tile)
        out[tile.start : tile.end] = sparse_prefill_attention(
            q[tile.start : tile.end], kv, indices[:, None, :], lens, attn_sink, choice=choice
        )
    return out


def _stage_rows(plan, workspace, swa_cache, compressed_cache=None, compressed_ids=None, compressed_page_size=None, *,
                check_bounds=False):
    """The rows a layer's index rows point at, dequantized into the workspace: [compressed | SWA window].

    The caches are the byte views the layer's checks returned.
    """
    n = 0 if compressed_ids is None else compressed_ids.shape[0]
    kv = workspace.get(n + plan.total_swa)
    if compressed_ids is not None:
        dequantize_k_cache_paged_unchecked(compressed_cache, compressed_ids, compressed_page_size, kv[:n],
                                           check_bounds=check_bounds)
    dequantize_k_cache_paged_unchecked(swa_cache, plan.swa_token_ids, plan.swa_page_size, kv[n:],
                                       check_bounds=check_bounds)
    return kv


def _shared_rows(plan, q, kv, swa_base, attn_sink, rows=None, prior=None, out=None):
    """The shared-row kernel over the staged rows: the window, and with ``rows`` the C128 prefix."""
    ratio, base = (128, rows.base) if rows is not None else (0, None)
    return shared_rows_attention_unchecked(
        q, kv, plan.req_of_token, plan.query_pos, plan.seq_lens, plan.swa_gather_lens, swa_base, plan.window,
        ratio, base, attn_sink, prior=prior, out=out,
    )[0]


def _prefill_c4(plan, workspace, q, swa_cache, compressed_cache, topk_indices, attn_sink, rows, c4_rows, choice,
                split=False, out=None):
    num_tokens, k = topk_indices.shape
    if c4_rows == "auto":
        c4_rows = choose_c4_rows(rows.total, num_tokens, k)
    if c4_rows == "all":
        compressed_ids, topk, base, swa_base = rows.token_ids, topk_indices, rows.base, rows.swa_base
        compressed_lens = rows.rows_per_req  # a pick past its request's rows is a hole
    else:
        compressed_ids, topk, base, swa_base = _select_rows(plan, rows, topk_indices)
        compressed_lens = None  # remapped picks are -1 or slots of the compacted rows
    kv = _stage_rows(plan, workspace, swa_cache, compressed_cache, compressed_ids, rows.page_size,
                     check_bounds=choice.check_bounds)
    # The split route's index rows hold the top-k only; its window goes through the shared-row kernel.
    window = 0 if split else plan.window
    indices, lens = combine_topk_swa_indices_unchecked(
        topk, plan.query_start_loc, plan.query_pos, plan.seq_lens, plan.swa_gather_lens, base, swa_base,
        window, 4, k, compressed_lens=compressed_lens, kv_rows=kv.shape[0], check_bounds=choice.check_bounds,
    )
    if not split:
        return sparse_prefill_attention(q, kv, indices[:, None, :], lens, attn_sink, choice=choice, out=out)
    out_topk, lse_topk = sparse_prefill_attention_lse(q, kv, indices[:, None, :], lens, choice=choice)
    return _shared_rows(plan, q, kv, swa_base, attn_sink, prior=(out_topk, lse_topk.contiguous()), out=out)


def _prefill_c4_paged(plan, workspace, q, swa_cache, compressed_cache, topk_indices, attn_sink, rows, check_bounds,
                      out):
    """The "paged" C4 route: each query's top-k from the fp8 cache, then its window, merged by lse."""
    check_cache_aligned("compressed_cache", compressed_cache)  # the paged kernel reads it in 8-byte words
    ids, lens = _c4_cache_ids(plan, rows, topk_indices)
    # No sink here: the window pass that merges this partial result applies it once.
    part_out, part_lse = sparse_mla_decode_paged_unchecked(
        q[:, None], compressed_cache, rows.page_size, _paged_index_rows(ids), lens, softmax_scale=L.SOFTMAX_SCALE,
        check_bounds=check_bounds,
    )
    kv = _stage_rows(plan, workspace, swa_cache, check_bounds=check_bounds)
    # lse comes as [T, h, 1] over contiguous [T, 1, h] storage: its [T, h] view is contiguous.
    return _shared_rows(plan, q, kv, plan.swa_offsets[:-1], attn_sink, prior=(part_out[:, 0], part_lse[:, :, 0]),
                        out=out)


def _c4_cache_ids(plan: PrefillPlan, rows, topk_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Request-local top-k rows as ids into the C4 cache (-1: a hole, a pick past the query's top-k
    length or outside its request's rows), and each query's top-k length (int32)."""
    local, readable, lens = _readable_picks(plan, rows, topk_indices)
    # rows.token_ids lists each request's compressed rows from its base on: the j-th is at base + j.
    ids = take(rows.token_ids, take(rows.base, plan.req_of_token)[:, None] + local, readable)
    return ids, lens.to(torch.int32)


def _readable_picks(plan: PrefillPlan, rows, topk_indices: torch.Tensor):
    """``(picks int64, readable [T, k] bool, top-k lengths int64)``: a pick is read when it lies inside its
    query's top-k length and its request's rows (one past them would name another request's row, or none)."""
    k = topk_indices.shape[1]
    lens = readable_topk_lengths(plan.query_pos, 4, k)
    local = topk_indices.to(torch.int64)
    limit = take(rows.rows_per_req, plan.req_of_token)
    readable = (torch.arange(k, device=local.device)[None, :] < lens[:, None]) & (local >= 0) & (local < limit[:, None])
    return local, readable, lens


def _select_rows(plan: PrefillPlan, rows, topk_indices: torch.Tensor):
    """Only the compressed rows this layer's top-k reads, compacted; the top-k remapped to them.

    Returns ``(token ids, remapped top-k, zero compressed bases, swa bases)``.
    The slot count is ``min(readable rows, picks)``, known on the host, so no
    sync sizes the workspace; slots past the union hold -1 (zero rows).
    """
    device = topk_indices.device
    num_tokens, k = topk_indices.shape
    local, readable, _ = _readable_picks(plan, rows, topk_indices)
    global_row = torch.where(readable, local + rows.base.to(torch.int64)[plan.req_of_token][:, None], -1)
    marks = torch.zeros(rows.total + 1, dtype=torch.int32, device=device)
    marks.scatter_(0, (global_row + 1).view(-1), torch.ones_like(global_row, dtype=torch.int32).view(-1))
    kept = marks[1:]
    rank = torch.cumsum(kept, 0, dtype=torch.int64) - 1
    slots = min(rows.total, num_tokens * k)
    selected = torch.full((slots + 1,), -1, dtype=torch.int64, device=device)
    # Unkept rows scatter into the spare last slot, which is dropped.
    selected.scatter_(0, torch.where(kept.bool(), rank, slots), rows.token_ids)
    remapped = torch.where(readable, rank[global_row.clamp_min(0)], -1).to(torch.int32)
    zeros = torch.zeros(plan.num_reqs, dtype=torch.int32, device=device)
    swa_base = (slots + plan.swa_offsets[:-1]).to(torch.int32)
    return selected[:slots], remapped, zeros, swa_base


def _check_paged_layer(plan, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, topk_lengths,
                       choice, route: str) -> tuple:
    """The checks a layer on the per-row plan makes (paged and verify routes): its arguments against the plan;
    returns the caches as their checked byte views and the kernel choice."""
    _check_layer(q, swa_cache, compress_ratio, compressed_cache, topk_indices, plan.num_tokens, attn_sink)
    if compress_ratio == 4:
        if topk_lengths is None:
            raise ValueError(f"a C4 layer on the {route} route needs topk_lengths (entries of each topk_indices row to read)")
        check_tensor(
            "topk_lengths", topk_lengths, dtypes=INDEX_DTYPES, shape=(plan.num_tokens,), device=q.device, contiguous=True
        )
    sizes = {ratio: plan.compressed_page_sizes[ratio] for ratio in plan.compressed_page_tables}
    swa_cache, compressed_cache = _check_caches(
        swa_cache, plan.swa_page_size, compress_ratio, compressed_cache, sizes, q.device, aligned=True
    )
    _check_placement(q, plan.swa_lens)
    return swa_cache, compressed_cache, _choice_for(q, choice)


def decode_layer(
    plan: PagedPlan,
    q: torch.Tensor,
    swa_cache: torch.Tensor,
    compress_ratio: int,
    compressed_cache: Optional[torch.Tensor] = None,
    topk_indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    topk_lengths: Optional[torch.Tensor] = None,
    *,
    choice: Optional[KernelChoice] = None,
) -> torch.Tensor:
    """One layer on the paged route: ``q [T, h, 512]`` -> ``[T, h, 512]`` bf16.

    A C4 layer's top-k comes as ids into its C4 cache (``topk_indices [T, k]``,
    -1 = hole) with ``topk_lengths [T]``: what SGLang's indexer writes to
    ``c4_sparse_page_indices`` / ``c4_sparse_topk_lengths`` and what its own
    paged attention reads. A caller holding request-local rows converts them
    once with :func:`~sglang_dsv4_sparse.core.plan.topk_to_token_ids`.
    ``choice``: the kernels (None: the default of q's device).
    """
    swa_cache, compressed_cache, choice = _check_paged_layer(
        plan, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, topk_lengths, choice, "paged"
    )
    if plan.num_tokens == 0:
        return q.new_empty(q.shape)
    if choice.check_bounds:
        check_decode_layer_bounds(plan, swa_cache, compress_ratio, compressed_cache, topk_indices, topk_lengths)
    extra = dict()
    if compress_ratio == 128:
        extra = dict(extra_indices=plan.c128_indices, extra_topk_length=plan.c128_lens)
    elif compress_ratio == 4:
        extra = dict(extra_indices=_paged_index_rows(topk_indices), extra_topk_length=topk_lengths.to(torch.int32))
    if compress_ratio:
        extra.update(extra_k_cache=compressed_cache, extra_page_size=plan.compressed_page_sizes[compress_ratio])
    out = paged_decode_attention(
        q[:, None], swa_cache, plan.swa_page_size, plan.swa_indices, plan.swa_lens, attn_sink,
        sched_meta=plan.sched_meta.get(compress_ratio), choice=choice, **extra,
    )
    return out[:, 0]


def verify_layer(
    plan: PagedPlan,
    rows,
    q: torch.Tensor,
    swa_cache: torch.Tensor,
    compress_ratio: int,
    compressed_cache: Optional[torch.Tensor] = None,
    topk_indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    topk_lengths: Optional[torch.Tensor] = None,
    *,
    choice: Optional[KernelChoice] = None,
) -> torch.Tensor:
    """One layer of a verify (or draft-extend) step: ``q [T, h, 512]`` -> ``[T, h, 512]`` bf16.

    The same answer as :func:`decode_layer` on the same per-row plan (each
    draft token its own query over its own index rows), computed by the
    verify kernel: ``rows`` (``query_start_loc``, ``tokens_per_req``) groups
    a request's draft tokens into one program, which reads the window and
    C128 rows they share once (docs/design-notes.md, "Verify steps").
    """
    from ..kernels.sparse_attn.verify_paged import sparse_mla_verify_paged

    swa_cache, compressed_cache, choice = _check_paged_layer(
        plan, q, swa_cache, compress_ratio, compressed_cache, topk_indices, attn_sink, topk_lengths, choice, "verify"
    )
    if plan.num_tokens == 0:
        return q.new_empty(q.shape)
    extra = dict()
    if compress_ratio == 128:
        extra = dict(extra_indices=plan.c128_indices[:, 0], extra_lens=plan.c128_lens, extra_shared=True)
    elif compress_ratio == 4:
        extra = dict(extra_indices=topk_indices, extra_lens=topk_lengths, extra_shared=False)
    if compress_ratio:
        extra.update(extra_k_cache=compressed_cache, extra_page_size=plan.compressed_page_sizes[compress_ratio])
    out, _ = sparse_mla_verify_paged(
        q, rows.query_start_loc, swa_cache, plan.swa_indices[:, 0], plan.swa_lens, attn_sink,
        swa_page_size=plan.swa_page_size, tokens_per_request=rows.tokens_per_req,
        check_bounds=choice.check_bounds, **extra,
    )
    return out


def _paged_index_rows(ids: torch.Tensor) -> torch.Tensor:
    """``[T, k]`` cache ids as the paged kernels take them: int32 ``[T, 1, width]``, width a multiple of 128.

    SGLang's top-k buffers are already int32 and 512 or 1024 wide, so this is a
    view there; anything else is converted or padded with -1 (FlashMLA reads
    index rows in blocks).
    """
    width = combined_index_width(ids.shape[1], 0)
    if ids.dtype != torch.int32:
        ids = ids.to(torch.int32)
    if width != ids.shape[1]:
        ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=-1)
    return ids[:, None, :]
