"""The per-step plan: everything about a forward step that no layer changes.

Built once per step from plain tensors (no SGLang import), then read by every
layer. Two routes:

* **sparse prefill** (extends, chunked prefill, MIXED batches): each request's
  SWA window union and compressed rows are dequantized per layer into one flat
  bf16 workspace ``[compressed rows of all requests | window rows of all
  requests]``, and each query gets one combined index row into it. The SWA
  ids, the compressed-row ids and bases, and the index rows of C0 and C128
  layers are built here; a C4 layer combines its own top-k.
* **paged** (decode, and extends routed away from sparse prefill): attention
  reads the paged fp8 caches directly; the plan holds each query's SWA-cache
  window ids and the C128 ids, and converts a C4 layer's top-k per layer.

Compressed row ``j`` of request ``r`` (ratio 4 or 128) is token
``page_table[r, j // P] * P + j % P`` of that ratio's cache.

Bad values never make the plan index outside a tensor (``core.lookup``): a
pool row, position or page column outside its table, a full id outside
``full_to_swa``, a negative page id, and an id past ``cache_tokens`` become
-1 (a hole).  With ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``, ``validate`` raises
``ValueError`` naming the argument instead (``core.bounds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch

from .. import layout as L
from ..dispatch import decode_sched_metas
from ..kernels.indices import build_swa_token_ids, combine_topk_swa_indices, combined_index_width
from ..kernels.indices.plan_rows import compressed_token_ids, request_of_rows
from ..validation import INDEX_DTYPES, bounds_check_enabled, check_int, check_tensor
from .bounds import check_step_bounds
from .lookup import take, take2d, within

# Bytes of C128 index rows materialized at once. A 32k-token chunk at 1M context
# has 8192 C128 rows per query: 1 GiB of index rows if built whole. Query tiles
# of 48 MiB keep a C128 layer's temporaries (tile index rows, the tile's
# attention output before it lands in the layer output, the workspace) under
# 256 MiB there, while an 8k chunk at 128k context (38 MiB) stays one tile
# built once per step (measured: docs/design-notes.md, "C128 query tiles";
# BENCHMARKS.md section 3 has the current 128k figures).
C128_INDEX_BUDGET_BYTES = 48 << 20
# The paged route's index rows are int32: an id they cannot hold is a hole,
# not a wrapped-around id that may land inside a cache.
INT32_IDS = 2**31
# No cache capacity given: any id a page table names is kept.
INT64_IDS = 2**62


@dataclass
class StepInputs:
    """One forward step, described with plain tensors.

    Requests are in batch order; their query rows are consecutive. A decode
    request is a request with one query row at position ``seq_len - 1``.
    """

    seq_lens: torch.Tensor  # (R,) tokens in each request after this step
    extend_lens: torch.Tensor  # (R,) query rows of each request in this step
    req_pool_indices: torch.Tensor  # (R,) row of each request in req_to_token
    req_to_token: torch.Tensor  # (pool rows, max len) full-cache id of each position
    full_to_swa: torch.Tensor  # (full cache size,) SWA-cache id of each full-cache id
    compressed_page_tables: Dict[int, torch.Tensor]  # ratio -> (R, pages) page ids
    seq_lens_cpu: Optional[Sequence[int]]  # host copy; the paged route (decode graphs) may pass None
    extend_lens_cpu: Sequence[int]
    positions: Optional[torch.Tensor] = None  # (T,) absolute query positions; derived if None
    swa_page_size: int = L.SWA_PAGE_SIZE
    compressed_page_sizes: Dict[int, int] = field(default_factory=lambda: {4: L.C4_PAGE_SIZE, 128: L.C128_PAGE_SIZE})
    window: int = L.SWA_WINDOW
    # Token capacity (num_pages * page_size) of each kind's caches, by ratio
    # (0 = SWA): ids past it become -1 in the plan, so kernels that do not
    # skip them (FlashMLA's) never see them. Unknown kinds are left unmasked.
    cache_tokens: Optional[Dict[int, int]] = None

    def validate(self, check_bounds: Optional[bool] = None) -> None:
        """Check types, shapes and host lengths; with ``check_bounds`` (None: the environment's
        ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS``) also every value (host syncs)."""
        check_tensor("seq_lens", self.seq_lens, dtypes=INDEX_DTYPES, ndim=1)
        device = self.seq_lens.device
        num_reqs = self.seq_lens.shape[0]
        check_tensor("extend_lens", self.extend_lens, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device)
        check_tensor("req_pool_indices", self.req_pool_indices, dtypes=INDEX_DTYPES, shape=(num_reqs,), device=device)
        check_tensor("req_to_token", self.req_to_token, dtypes=INDEX_DTYPES, ndim=2, device=device)
        check_tensor("full_to_swa", self.full_to_swa, dtypes=INDEX_DTYPES, ndim=1, device=device)
        if len(self.extend_lens_cpu) != num_reqs:
            raise ValueError(f"extend_lens_cpu must have {num_reqs} entries, one per entry of extend_lens; got {len(self.extend_lens_cpu)}")
        if self.seq_lens_cpu is not None:
            if len(self.seq_lens_cpu) != num_reqs:
                raise ValueError(f"seq_lens_cpu must have {num_reqs} entries, one per entry of seq_lens; got {len(self.seq_lens_cpu)}")
            for r, (s, e) in enumerate(zip(self.seq_lens_cpu, self.extend_lens_cpu)):
                if not 0 <= e <= s:
                    raise ValueError(f"request {r}: extend_lens_cpu={e} must lie in [0, seq_lens_cpu={s}]")
        if self.positions is not None:
            check_tensor("positions", self.positions, dtypes=INDEX_DTYPES, shape=(sum(self.extend_lens_cpu),), device=device)
        for ratio, table in self.compressed_page_tables.items():
            check_int("compress ratio", ratio, allowed=L.COMPRESS_RATIOS)
            check_tensor(f"compressed_page_tables[{ratio}]", table, dtypes=INDEX_DTYPES, ndim=2, device=device)
            if table.shape[0] != num_reqs:
                raise ValueError(f"compressed_page_tables[{ratio}] must have one row per request ({num_reqs}), got {table.shape[0]}")
            if ratio not in self.compressed_page_sizes:
                raise ValueError(f"compressed_page_sizes has no page size for ratio {ratio}")
            check_int(f"compressed_page_sizes[{ratio}]", self.compressed_page_sizes[ratio], minimum=1)
            capacity = table.shape[1] * self.compressed_page_sizes[ratio]
            if self.seq_lens_cpu is not None and max(self.seq_lens_cpu, default=0) // ratio > capacity:
                raise ValueError(f"compressed_page_tables[{ratio}] holds {capacity} rows, fewer than a request needs")
        check_int("swa_page_size", self.swa_page_size, minimum=1)
        check_int("window", self.window, minimum=1)
        for ratio, tokens in (self.cache_tokens or {}).items():
            check_int("cache_tokens key", ratio, allowed=L.LAYER_RATIOS)
            check_int(f"cache_tokens[{ratio}]", tokens, minimum=0)
        if bounds_check_enabled() if check_bounds is None else check_bounds:
            check_step_bounds(self)

    @property
    def num_tokens(self) -> int:
        return int(sum(self.extend_lens_cpu))

    @property
    def device(self) -> torch.device:
        return self.seq_lens.device


@dataclass
class CompressedRows:
    """Where one ratio's compressed rows sit in the sparse-prefill workspace."""

    ratio: int
    page_size: int
    token_ids: torch.Tensor  # (total,) ids in the compressed cache, request after request
    rows_per_req: torch.Tensor  # (R,) int32: seq_len // ratio, every row a query may read
    base: torch.Tensor  # (R,) int32 workspace row of each request's first compressed row
    swa_base: torch.Tensor  # (R,) int32 workspace row of each request's window union
    total: int
    max_rows: int  # the longest request's row count
    bounds: Optional[torch.Tensor] = None  # (R + 1,) int32: base, then total


@dataclass
class QueryTile:
    start: int
    end: int
    query_start_loc: torch.Tensor  # (R + 1,) clipped to [start, end), rebased to 0


@dataclass
class PrefillPlan:
    """Layer-independent inputs of the sparse prefill route for one step."""

    num_tokens: int
    num_reqs: int
    window: int
    swa_page_size: int
    seq_lens: torch.Tensor  # int32
    query_start_loc: torch.Tensor  # (R + 1,) int32
    query_pos: torch.Tensor  # (T,) int32
    req_of_token: torch.Tensor  # (T,) int64
    swa_token_ids: torch.Tensor
    swa_gather_lens: torch.Tensor
    swa_offsets: torch.Tensor
    total_swa: int
    c0_indices: Optional[torch.Tensor]  # None when the plan was told no window-only layer takes the index route
    c0_lens: Optional[torch.Tensor]
    compressed: Dict[int, CompressedRows]
    c128_tiles: list
    c128_indices: Optional[torch.Tensor] = None  # built once when one tile covers the step
    c128_lens: Optional[torch.Tensor] = None

    def c0_index_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Combined index rows of the window-only layers (built with the plan unless ``index_rows`` left them out)."""
        if self.c0_indices is not None:
            return self.c0_indices, self.c0_lens
        empty_topk = torch.empty((self.num_tokens, 0), dtype=torch.int32, device=self.seq_lens.device)
        zeros = torch.zeros(self.num_reqs, dtype=torch.int32, device=self.seq_lens.device)
        return combine_topk_swa_indices(
            empty_topk, self.query_start_loc, self.query_pos, self.seq_lens, self.swa_gather_lens, zeros,
            self.swa_offsets[:-1], self.window, 1, 0, kv_rows=self.total_swa,
        )

    def c128_tile_indices(self, tile: QueryTile) -> tuple[torch.Tensor, torch.Tensor]:
        """Combined C128 index rows of one query tile (cached when it is the whole step)."""
        if self.c128_indices is not None and tile.start == 0 and tile.end == self.num_tokens:
            return self.c128_indices, self.c128_lens
        rows = self.compressed[128]
        arange = torch.arange(max(rows.max_rows, 1), dtype=torch.int32, device=self.seq_lens.device)
        # Every C128 query reads rows 0 .. (pos + 1) // 128 - 1 of its request: a
        # stride-0 view of one arange row, never materialized per query.
        topk = arange[None, :].expand(tile.end - tile.start, -1)
        return combine_topk_swa_indices(
            topk, tile.query_start_loc, self.query_pos[tile.start : tile.end], self.seq_lens,
            self.swa_gather_lens, rows.base, rows.swa_base, self.window, 128, rows.max_rows,
            compressed_lens=rows.rows_per_req, kv_rows=rows.total + self.total_swa,
        )


@dataclass
class PagedPlan:
    """Layer-independent inputs of the paged route (decode, or extends sent there).

    ``build_paged_plan`` fills every field; the SGLang backend instead views
    the same index rows in SGLang's own metadata and leaves ``req_of_token``
    and ``query_pos`` (only :func:`topk_to_token_ids` reads them) unset.
    """

    num_tokens: int
    swa_page_size: int
    swa_indices: torch.Tensor  # (T, 1, window) int32 SWA-cache ids, -1 = hole; the first swa_lens count
    swa_lens: torch.Tensor  # (T,) int32
    compressed_page_tables: Dict[int, torch.Tensor]
    compressed_page_sizes: Dict[int, int]
    req_of_token: Optional[torch.Tensor] = None  # (T,) int64
    query_pos: Optional[torch.Tensor] = None  # (T,) int64
    cache_tokens: Dict[int, int] = field(default_factory=dict)  # StepInputs.cache_tokens
    c128_indices: Optional[torch.Tensor] = None  # (T, 1, width) int32 C128-cache ids
    c128_lens: Optional[torch.Tensor] = None
    sched_meta: Dict[int, object] = field(default_factory=dict)  # FlashMLA metadata per ratio, made with the plan


def _request_of_rows(counts: torch.Tensor, total: int) -> torch.Tensor:
    """The request (int64) of each of ``total`` consecutive rows, ``counts[r]`` rows per request.

    A search rather than ``repeat_interleave(..., output_size=total)``: when the
    counts (a device tensor) disagree with ``total`` (from their host copy),
    every row still gets a request in ``[0, R)`` instead of an error, or on the
    GPU a device-side assert.
    """
    ends = torch.cumsum(counts, 0)
    rows = torch.arange(total, device=counts.device)
    return torch.searchsorted(ends, rows, right=True).clamp_(max=max(counts.shape[0] - 1, 0))


def _query_positions(inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(req_of_token, positions) as int64, positions derived from lengths if not given."""
    device = inputs.device
    total = inputs.num_tokens
    ext = inputs.extend_lens.to(torch.int64)
    req_of_token = _request_of_rows(ext, total)
    if inputs.positions is not None:
        return req_of_token, inputs.positions.to(torch.int64)
    starts = torch.cumsum(ext, 0) - ext
    first_pos = inputs.seq_lens.to(torch.int64) - ext
    rank = torch.arange(total, device=device) - starts[req_of_token]
    return req_of_token, first_pos[req_of_token] + rank


def compressed_rows(inputs: StepInputs, ratio: int, swa_offsets: torch.Tensor) -> CompressedRows:
    """Where each request's ``ratio`` rows sit in the workspace: before every window union, request after request.

    The counts and their running sums are host arithmetic (one small copy); the
    ids are one kernel launch (``kernels.indices.plan_rows``).
    """
    device = inputs.device
    page_size = inputs.compressed_page_sizes[ratio]
    counts_cpu = [int(s) // ratio for s in inputs.seq_lens_cpu]
    bounds_cpu = [0]
    for count in counts_cpu:
        bounds_cpu.append(bounds_cpu[-1] + count)
    total = bounds_cpu[-1]
    num_reqs = len(counts_cpu)
    packed = torch.tensor(bounds_cpu + counts_cpu, dtype=torch.int32).to(device, non_blocking=True)
    bounds = packed[: num_reqs + 1]
    capacity = (inputs.cache_tokens or {}).get(ratio)
    token_ids = compressed_token_ids(bounds, inputs.compressed_page_tables[ratio], page_size, total,
                                     INT64_IDS if capacity is None else capacity)
    return CompressedRows(
        ratio=ratio,
        page_size=page_size,
        token_ids=token_ids,
        rows_per_req=packed[num_reqs + 1 :],
        base=bounds[:-1],
        swa_base=(total + swa_offsets[:-1]).to(torch.int32),
        total=total,
        max_rows=max(counts_cpu, default=0),
        bounds=bounds,
    )


def c128_query_tiles(inputs: StepInputs, query_start_loc: torch.Tensor, max_rows: int,
                     index_budget_bytes: int = C128_INDEX_BUDGET_BYTES) -> list:
    """Query tiles whose C128 index rows (``max_rows`` compressed rows and the window each) fit the budget."""
    width = combined_index_width(max_rows, inputs.window)
    return _query_tiles(inputs, query_start_loc, max(1, index_budget_bytes // (width * 4)))


def _query_tiles(inputs: StepInputs, query_start_loc: torch.Tensor, tile_rows: int) -> list:
    tiles = []
    total = inputs.num_tokens
    qsl = query_start_loc.to(torch.int64)
    for start in range(0, total, tile_rows):
        end = min(start + tile_rows, total)
        tiles.append(QueryTile(start, end, (qsl.clamp(start, end) - start).to(torch.int32)))
    return tiles


@dataclass
class WindowRows:
    """Each request's window union, gathered into the workspace after the compressed rows.

    What :func:`~sglang_dsv4_sparse.kernels.indices.build_swa_token_ids` returns
    (and SGLang's sparse-prefill chunk cache holds): the SWA-cache ids, each
    request's gather length and its offset among the gathered rows.
    """

    token_ids: torch.Tensor  # (total,) int32 SWA-cache ids, -1 = hole
    gather_lens: torch.Tensor  # (R,) int32
    offsets: torch.Tensor  # (R + 1,) int32
    total: int


def window_total(inputs: StepInputs) -> int:
    """Rows of all window unions: ``min(seq_len, extend_len + window - 1)`` a request (host lengths)."""
    return sum(min(int(s), int(e) + inputs.window - 1) for s, e in zip(inputs.seq_lens_cpu, inputs.extend_lens_cpu))


def build_prefill_plan(
    inputs: StepInputs, index_budget_bytes: int = C128_INDEX_BUDGET_BYTES, index_rows: Sequence[int] = (0, 128),
    *, check_bounds: Optional[bool] = None,
) -> PrefillPlan:
    """Plan the sparse prefill route of one step (any mix of prefixes and lengths).

    ``index_rows``: the layer ratios (0, 128) whose layers take the index route;
    their combined index rows are built here, once for the step. Others'
    routes (shared rows, folded) do not read them; a layer that does anyway
    gets them built on demand (:meth:`PrefillPlan.c0_index_rows`,
    :meth:`PrefillPlan.c128_tile_indices`). ``check_bounds``: None reads
    ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS``.
    """
    if inputs.seq_lens_cpu is None:
        raise ValueError("seq_lens_cpu is required on the sparse prefill route: host lengths size the workspace")
    inputs.validate(check_bounds=check_bounds)
    seq_lens = inputs.seq_lens.to(torch.int32)
    ext = inputs.extend_lens.to(torch.int32)
    total_swa = window_total(inputs)
    swa_ids, _, gather_lens, swa_offsets = build_swa_token_ids(
        seq_lens, ext, inputs.req_pool_indices, inputs.req_to_token, inputs.full_to_swa, inputs.window, total_swa
    )
    window = WindowRows(swa_ids, gather_lens, swa_offsets, total_swa)
    return assemble_prefill_plan(inputs, window, ratios=tuple(inputs.compressed_page_tables), index_rows=index_rows,
                                 index_budget_bytes=index_budget_bytes)


def assemble_prefill_plan(
    inputs: StepInputs,
    window: WindowRows,
    *,
    ratios: Sequence[int],
    index_rows: Sequence[int] = (),
    query_start_loc: Optional[torch.Tensor] = None,
    query_pos: Optional[torch.Tensor] = None,
    c0_rows: Optional[tuple] = None,
    index_budget_bytes: int = C128_INDEX_BUDGET_BYTES,
) -> PrefillPlan:
    """A plan over window rows gathered elsewhere (here, or SGLang's chunk cache), for validated ``inputs``.

    ``ratios``: the compressed ratios whose layers read the plan (their rows
    are laid out here); ``index_rows`` as for :func:`build_prefill_plan`.
    ``query_start_loc`` / ``query_pos`` (int32) and ``c0_rows`` (the window-only
    layers' combined index rows and lengths) may come with the window rows.
    """
    device = inputs.device
    num_reqs = len(inputs.seq_lens_cpu)
    num_tokens = inputs.num_tokens
    if query_start_loc is None:
        query_start_loc = torch.zeros(num_reqs + 1, dtype=torch.int32, device=device)
        torch.cumsum(inputs.extend_lens.to(torch.int32), 0, out=query_start_loc[1:])
    req_of_token = request_of_rows(query_start_loc, num_tokens)
    if query_pos is None:
        query_pos = (_query_positions(inputs)[1] if inputs.positions is None else inputs.positions).to(torch.int32)
    plan = PrefillPlan(
        num_tokens=num_tokens,
        num_reqs=num_reqs,
        window=inputs.window,
        swa_page_size=inputs.swa_page_size,
        seq_lens=inputs.seq_lens.to(torch.int32),
        query_start_loc=query_start_loc,
        query_pos=query_pos.contiguous(),
        req_of_token=req_of_token,
        swa_token_ids=window.token_ids,
        swa_gather_lens=window.gather_lens,
        swa_offsets=window.offsets,
        total_swa=window.total,
        c0_indices=None if c0_rows is None else c0_rows[0],
        c0_lens=None if c0_rows is None else c0_rows[1],
        compressed={r: compressed_rows(inputs, r, window.offsets) for r in ratios},
        c128_tiles=[],
    )
    if 0 in index_rows and plan.c0_indices is None:
        plan.c0_indices, plan.c0_lens = plan.c0_index_rows()
    if 128 in plan.compressed:
        plan.c128_tiles = c128_query_tiles(inputs, query_start_loc, plan.compressed[128].max_rows,
                                           index_budget_bytes) if num_tokens else []
        if len(plan.c128_tiles) == 1 and 128 in index_rows:
            # One tile covers the step: build the index rows once for all C128 layers.
            plan.c128_indices, plan.c128_lens = plan.c128_tile_indices(plan.c128_tiles[0])
    return plan


def build_paged_plan(inputs: StepInputs, c128_width: Optional[int] = None, *,
                     check_bounds: Optional[bool] = None) -> PagedPlan:
    """Plan the paged route: per-query window ids and C128 ids into the paged caches.

    ``c128_width`` fixes the C128 index width (CUDA graphs need static shapes);
    by default it is the capacity of the C128 page table.
    """
    inputs.validate(check_bounds=check_bounds)
    device = inputs.device
    window = inputs.window
    req_of_token, pos = _query_positions(inputs)
    swa_lens = torch.clamp(pos + 1, min=0, max=window)
    offs = torch.arange(window, device=device)
    # Valid entries first (kernels read the first topk_length columns).
    p = pos[:, None] - swa_lens[:, None] + 1 + offs[None, :]
    valid = offs[None, :] < swa_lens[:, None]
    pool_row = take(inputs.req_pool_indices, req_of_token)
    full = take2d(inputs.req_to_token, pool_row[:, None], p, valid)
    cache_tokens = dict(inputs.cache_tokens or {})
    swa_ids = within(take(inputs.full_to_swa, full), cache_tokens.get(0, INT32_IDS))
    plan = PagedPlan(
        num_tokens=inputs.num_tokens,
        req_of_token=req_of_token,
        query_pos=pos,
        swa_page_size=inputs.swa_page_size,
        swa_indices=swa_ids.to(torch.int32)[:, None, :],
        swa_lens=swa_lens.to(torch.int32),
        compressed_page_tables=dict(inputs.compressed_page_tables),
        compressed_page_sizes=dict(inputs.compressed_page_sizes),
        cache_tokens=cache_tokens,
        sched_meta=decode_sched_metas(device, (0,) + tuple(inputs.compressed_page_tables)),
    )
    if 128 in inputs.compressed_page_tables:
        table = inputs.compressed_page_tables[128]
        page_size = inputs.compressed_page_sizes[128]
        width = c128_width if c128_width is not None else table.shape[1] * page_size
        width = combined_index_width(width, 0)  # FlashMLA wants index rows in multiples of 128
        counts = torch.div(pos + 1, 128, rounding_mode="floor").clamp_min(0)
        j = torch.arange(width, device=device)
        page_col = torch.div(j, page_size, rounding_mode="floor")
        page = take2d(table, req_of_token[:, None], page_col[None, :], j[None, :] < counts[:, None])
        ids = within(torch.where(page >= 0, page * page_size + j % page_size, -1), cache_tokens.get(128, INT32_IDS))
        plan.c128_indices = ids.to(torch.int32)[:, None, :]
        plan.c128_lens = counts.clamp(max=width).to(torch.int32)
    return plan


def readable_topk_lengths(query_pos: torch.Tensor, ratio: int, k: int) -> torch.Tensor:
    """How many top-k entries a query at each position may read: ``min((pos + 1) // ratio, k)`` (int64)."""
    return torch.clamp(torch.div(query_pos.to(torch.int64) + 1, ratio, rounding_mode="floor"), max=k)


def topk_to_token_ids(plan: PagedPlan, ratio: int, topk_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A C4 layer's request-local top-k rows as ids into its paged cache, and their lengths."""
    if plan.req_of_token is None or plan.query_pos is None:
        raise ValueError("plan must come from build_paged_plan (it needs each query's request and position)")
    table = plan.compressed_page_tables[ratio]
    page_size = plan.compressed_page_sizes[ratio]
    k = topk_indices.shape[1]
    width = combined_index_width(k, 0)
    local = topk_indices.to(torch.int64)
    lens = readable_topk_lengths(plan.query_pos, ratio, k).to(torch.int32)
    cols = torch.arange(k, device=local.device)
    # A pick is a row the query may read: inside its top-k length and below
    # (pos + 1) // ratio; anything else (a hole, a wild value) becomes -1.
    visible = torch.div(plan.query_pos + 1, ratio, rounding_mode="floor")
    ok = (cols[None, :] < lens[:, None]) & (local < visible[:, None])
    page = take2d(table, plan.req_of_token[:, None], torch.div(local, page_size, rounding_mode="floor"), ok)
    ids = within(torch.where(page >= 0, page * page_size + local % page_size, -1), plan.cache_tokens.get(ratio, INT32_IDS))
    if width != k:
        ids = torch.nn.functional.pad(ids, (0, width - k), value=-1)
    return ids.to(torch.int32)[:, None, :], lens
