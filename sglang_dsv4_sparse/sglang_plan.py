"""A step's state in the SGLang backend: its route, its layers' routes and our plan, built from SGLang's metadata.

* Paged route (decodes; extends with ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL=0``):
  :func:`paged_plan` views the index rows SGLang's metadata already holds.
* Sparse prefill: each layer kind's route comes from the backend's
  :class:`~sglang_dsv4_sparse.routing.RoutePolicy`, per real head count, once a
  step. Our plan is built by the first layer that takes one of our routes, on
  top of SGLang's sparse-prefill chunk cache (its window ids, query layout and
  window-only index rows; SGLang's shared-read snapshot builds it, or we call
  SGLang's own builder on first use, as its layers do), adding only what our
  routes read: each query's request and the compressed rows of the ratios
  that take our routes. Nothing reads ``req_to_token`` after the snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from . import layout as L
from . import routing
from .dispatch import FLASHMLA_HEADS
from .core.fold import C128Fold, build_c128_fold
from .core.forward import INDEX_ROW_ROUTES
from .core.plan import (
    PagedPlan, PrefillPlan, StepInputs, WindowRows, assemble_prefill_plan, c128_query_tiles, compressed_rows,
)
from .kernels.indices import combined_index_width
from .sglang_gating import log_once

ROUTE_SPARSE_PREFILL = "sparse_prefill"
ROUTE_PAGED = "paged"
# The DSV4AttnMetadata fields a C4 layer's top-k is read from, per route: the ones SGLang's own attention reads there.
C4_FIELDS = {
    ROUTE_SPARSE_PREFILL: ("c4_sparse_raw_indices",),
    ROUTE_PAGED: ("c4_sparse_page_indices", "c4_sparse_topk_lengths"),
}
# What the paged route's plan views (paged_plan), per compress ratio.
PAGED_FIELDS = {
    0: ("swa_page_indices", "swa_topk_lengths"),
    128: ("c128_page_indices", "c128_topk_lengths_clamp1"),
}


def int_list(values) -> list:
    return [int(x) for x in (values.tolist() if isinstance(values, torch.Tensor) else values)]


@dataclass
class StepState:
    """One step as the backend runs it, and the parent metadata it belongs to."""

    metadata: Any  # the parent's DSV4Metadata object of this step
    inputs: Optional[StepInputs]  # sparse prefill: made with the plan (make_inputs)
    route: str  # ROUTE_SPARSE_PREFILL or ROUTE_PAGED
    plan: Union[PrefillPlan, PagedPlan, None]  # sparse prefill: built by the first layer on one of our routes
    num_tokens: int
    in_graph: bool = False  # built while a CUDA graph was being captured
    shape: Dict[str, int] = field(default_factory=dict)  # routing.StepShape less the heads
    make_inputs: Optional[Callable[[], StepInputs]] = None
    forward_batch: Any = None
    ratios: Tuple[int, ...] = ()  # compressed ratios the model has
    routes_by_heads: Dict[tuple, Dict[int, str]] = field(default_factory=dict)  # (heads, query width) -> routes
    c128_folds: Dict[int, C128Fold] = field(default_factory=dict)  # per head count, built by the first C128 layer
    verify: Optional["VerifyRows"] = None  # the verify route's request grouping (paged steps only)
    kind: str = "extend"  # "extend", or a per-row step's kind: "decode", "verify", "draft_extend"

    def layer_route(self, policy: routing.RoutePolicy, ratio: int, heads: int, width: int) -> str:
        """The route of this step's ``ratio`` layers at ``heads`` real heads of a ``width``-head query
        (decided once per step and head count)."""
        routes = self.routes_by_heads.get((heads, width))
        if routes is None:
            shape = routing.StepShape(heads=heads, **self.shape)
            routes = self.routes_by_heads[(heads, width)] = policy.routes(
                shape, (0,) + self.ratios, sglang_takes_query=width in FLASHMLA_HEADS)
            log_once(logging.INFO, f"routes:{heads}:{sorted(routes.items())}",
                     "sglang-dsv4-sparse: sparse prefill at %d heads (e.g. %d rows, %d requests, up to %d tokens): %s",
                     heads, shape.num_tokens, shape.num_reqs, shape.max_seq_len, routing.describe_routes(routes))
        return routes[ratio]

    def prefill_plan(self, backend, ratio: int, route: str) -> PrefillPlan:
        """Our plan, built on first use over SGLang's chunk cache; a ``ratio`` layer's rows added when missing."""
        if self.plan is None:
            self.inputs = self.make_inputs()
            self.inputs.validate(check_bounds=backend._dsv4_choice.check_bounds)
            self.plan = _plan_over_chunk_cache(backend, self, ratio, route)
        elif ratio and ratio not in self.plan.compressed:
            self.plan.compressed[ratio] = compressed_rows(self.inputs, ratio, self.plan.swa_offsets)
            if ratio == 128 and self.num_tokens:
                self.plan.c128_tiles = c128_query_tiles(self.inputs, self.plan.query_start_loc,
                                                        self.plan.compressed[128].max_rows)
        return self.plan

    def c128_fold(self, heads: int) -> C128Fold:
        fold = self.c128_folds.get(heads)
        if fold is None:
            fold = self.c128_folds[heads] = build_c128_fold(self.plan, heads)
        return fold


def _chunk_cache(backend, step: StepState):
    """SGLang's sparse-prefill chunk cache of this step: the one its snapshot built, or built now as its layers do."""
    metadata = step.metadata
    cache = getattr(metadata, "sparse_prefill_cache", None)
    if cache is None:
        cache = backend._build_sparse_prefill_chunk_cache(
            step.forward_batch, metadata.core_attn_metadata, num_qo_tokens=step.num_tokens
        )
        metadata.sparse_prefill_cache = cache
    return cache


def _plan_over_chunk_cache(backend, step: StepState, ratio: int, route: str) -> PrefillPlan:
    inputs = step.inputs
    cache = _chunk_cache(backend, step)
    window = WindowRows(cache.swa_token_ids, cache.swa_gather_lens, cache.swa_offsets, int(cache.swa_token_ids.shape[0]))
    c0_rows = None
    c0 = getattr(cache, "c0_combined_indices", None)
    if isinstance(c0, torch.Tensor) and c0.shape[-1] == combined_index_width(0, inputs.window):
        c0_rows = (c0[: step.num_tokens], cache.c0_combined_lens[: step.num_tokens])
    ratios = (ratio,) if ratio else ()
    return assemble_prefill_plan(
        inputs, window, ratios=ratios, index_rows=(ratio,) if route in INDEX_ROW_ROUTES else (),
        query_start_loc=cache.query_start_loc, query_pos=cache.query_pos[: step.num_tokens], c0_rows=c0_rows,
    )


@dataclass
class VerifyRows:
    """How a verify (or draft-extend) step's query rows group into requests: ``query_start_loc [B + 1]``
    int32, each request's draft tokens consecutive and in position order (a chain)."""

    query_start_loc: torch.Tensor
    num_reqs: int
    tokens_per_req: int


def verify_rows(backend, forward_batch, num_rows: int) -> Optional[VerifyRows]:
    """The request grouping of a verify / draft-extend step, or None where it is not uniform.

    SGLang's static layout gives every request the same count (its
    ``speculative_num_draft_tokens`` in verify, the accepted tokens' block in
    draft extend): rows ``b * S .. b * S + S - 1`` are request ``b``'s. A
    ragged layout (SGLang's ``ragged verify``) keeps the per-row route.
    """
    num_reqs = int(forward_batch.batch_size)
    if num_reqs <= 0 or num_rows % num_reqs:
        return None
    per_req = num_rows // num_reqs
    if forward_batch.forward_mode.is_target_verify() and per_req != getattr(backend, "speculative_num_draft_tokens", per_req):
        return None
    # One small launch, recorded with the rest of the metadata when a graph captures it.
    start = torch.arange(0, num_rows + 1, per_req, dtype=torch.int32, device=backend.device)
    return VerifyRows(start, num_reqs, per_req)


def paged_plan(core, inputs: StepInputs, num_tokens: int) -> PagedPlan:
    """The paged route's plan: views of the index rows SGLang's metadata built for its own paged attention.

    SGLang's decode (and dense extend) metadata already holds, per query,
    the SWA-cache ids of its window, the C128-cache ids it reads, their
    lengths and FlashMLA's per-ratio scheduler metadata; the core's
    ``build_paged_plan`` would compute the same ids again, in some
    twenty kernels per step. Views cost nothing and stay right under
    CUDA-graph replay, since they are taken from the metadata built in
    the graph.
    """
    rows = slice(0, num_tokens)
    plan = PagedPlan(
        num_tokens=num_tokens,
        swa_page_size=inputs.swa_page_size,
        swa_indices=core.swa_page_indices[rows].unsqueeze(1),
        swa_lens=core.swa_topk_lengths[rows],
        compressed_page_tables=inputs.compressed_page_tables,
        compressed_page_sizes=inputs.compressed_page_sizes,
    )
    if core.has_c128 and core.c128_page_indices is not None:  # draft extend builds no compressed rows
        plan.c128_indices = core.c128_page_indices[rows].unsqueeze(1)
        plan.c128_lens = core.c128_topk_lengths_clamp1[rows]
    for ratio in L.LAYER_RATIOS:
        meta = core.get_flashmla_metadata(ratio)
        if meta is not None:
            plan.sched_meta[ratio] = meta
    return plan
