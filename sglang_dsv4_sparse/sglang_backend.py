"""SGLang 0.5.23 integration: DeepSeek-V4 attention through the package's core.

``DeepseekV4SparseAttnBackend`` subclasses SGLang's ``DeepseekV4AttnBackend``.
It keeps everything SGLang builds per step (its metadata, the compressors, the
C4 indexer, the SWA cache writes) and replaces only the attention itself:

* ``init_forward_metadata`` calls the parent's, then decides the step's route
  (:mod:`~sglang_dsv4_sparse.routing`) and, where one of ours runs, describes
  it (:class:`~sglang_dsv4_sparse.sglang_plan.StepState`): for an extend
  (EXTEND, chunked prefill, MIXED) the sparse-prefill or the paged route, as
  the core's router says; for a decode, target verify or draft extend (SGLang
  builds their metadata per query row) the paged route, whose plan views the
  index rows SGLang's metadata already holds, and below 64 heads, where the
  policy takes it, the verify route over the same views. A step SGLang's
  attention takes whole keeps no state of ours.
* On sparse prefill each layer kind takes the route :mod:`~sglang_dsv4_sparse.routing`
  gives for the step's shape and the layer's real heads: SGLang's own
  attention (``"sglang"``, the parent's ``_forward_attention`` unchanged) or
  one of ours. Our plan is built once, by the first layer that takes one of
  ours, on top of SGLang's sparse-prefill chunk cache (its window ids and
  query layout; built by SGLang's shared-read snapshot or, as SGLang's own
  layers do, on first use), so nothing SGLang builds is built twice.
* ``_forward_attention`` (the body of the parent's ``forward``) writes the
  layer's SWA rows exactly as the parent does (``store_cache`` when
  ``save_kv_cache``), then runs ``prefill_layer``, ``decode_layer`` or
  ``verify_layer``.

Every case this backend does not handle goes to the parent unchanged, with
its reason logged once: per step (:func:`~sglang_dsv4_sparse.sglang_gating.step_fallback_reason`,
at metadata time) and per layer (:meth:`layer_fallback_reason`, which also
checks that the SGLang buffers the layer reads exist).

Where the inputs come from (SGLang 0.5.23):

* ``ForwardBatch``: ``forward_mode``, ``seq_lens`` / ``seq_lens_cpu``,
  ``extend_seq_lens`` / ``extend_seq_lens_cpu``, ``extend_start_loc`` (first
  query row of each request), ``req_pool_indices``, ``batch_size``;
  ``positions`` and ``out_cache_loc`` only through the parent's metadata.
* The parent's ``DSV4AttnMetadata`` (``forward_metadata.core_attn_metadata``):
  ``positions_casual`` (each query row's position), ``seq_lens_casual``
  (decode: the request lengths) and ``page_table`` (one row per query row:
  ``req_to_token[req, ::256] // 256``, the request's full-cache pages). SGLang
  pages its compressed caches like the full cache: full page ``p`` holds its
  C4 rows in page ``p`` of the C4 cache (64 rows a page) and its C128 rows in
  page ``p`` of the C128 cache (2 rows a page). So compressed row ``j`` of a
  request is ``page_table[r, j // P] * P + j % P`` with ``P = 256 // ratio``:
  the core's ``compressed_page_tables[4]`` and ``[128]`` are both the page
  table, one row per request.
* The C4 top-k, which SGLang's indexer writes in each C4 layer before that
  layer's attention, read from the fields SGLang's own attention reads on the
  same route: on sparse prefill ``c4_sparse_raw_indices`` (request-local
  compressed rows, -1 for holes; the parent allocates it for extends), on the
  paged route ``c4_sparse_page_indices`` and ``c4_sparse_topk_lengths`` (C4
  cache ids and how many of each row to read). Nothing else reads a buffer
  SGLang may leave unfilled; a missing field sends the layer to the parent.
* The pool: ``req_to_token_pool.req_to_token``,
  ``token_to_kv_pool.full_to_swa_index_mapping``,
  ``get_swa_key_buffer_radix(layer)`` / ``get_swa_key_page_size()`` and
  ``get_extra_key_buffer(layer)`` / ``get_extra_key_page_size(layer)``.

* The paged route's index rows: ``swa_page_indices`` / ``swa_topk_lengths``,
  ``c128_page_indices`` / ``c128_topk_lengths_clamp1`` and the per-ratio
  FlashMLA scheduler metadata, which SGLang's metadata builds for its own
  paged attention; the plan views them (``sglang_plan.paged_plan``), so no per-step plan
  kernels run there, and a missing one sends the step to the parent.

CUDA graphs: the per-row plans (decode, verify, draft extend) are built in
``init_forward_metadata_in_graph``, which ``init_forward_metadata`` calls
eagerly and SGLang's decode and verify graph runners record inside the graph,
after the parent's own in-graph metadata build. It
only views that metadata, so replay refills what it points at. The host
lengths (``StepInputs.seq_lens_cpu``) are unknown inside a graph and the
paged route does not need them: None is passed there.
Extends are routed in ``init_forward_metadata`` (eagerly, host lengths known)
and their plan is built by the first layer on one of our routes, over SGLang's
chunk cache; prefill CUDA graphs (breakable or piecewise capture) go to the parent.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

import torch

from . import config, dispatch, routing
from . import layout as L
from .core.forward import Workspace, decode_layer, prefill_layer, verify_layer
from .core.plan import StepInputs
from .core.router import paged_kernel_row_limit, use_sparse_prefill
from .sglang_gating import (  # noqa: F401  (re-exported: the plugin and tests import them from here)
    SUPPORTED_SGLANG_VERSIONS, SWITCH_ENV, backend_fallback_reason, capturing, flag_errors, is_paged_row_step,
    log_once, row_step_kind, sglang_version, sparse_enabled, step_fallback_reason, supported_sglang_version,
    unhandled_feature,
)
from .sglang_plan import (
    C4_FIELDS, PAGED_FIELDS, ROUTE_PAGED, ROUTE_SPARSE_PREFILL, StepState, int_list, paged_plan, verify_rows,
)

logger = logging.getLogger(__name__)

BACKEND_NAME = "DeepseekV4SparseAttnBackend"


def create_backend(runner, fallback: Callable[[Any], Any]):
    """Build our backend for ``runner``, or ``fallback(runner)`` when it does not apply.

    ``fallback`` is SGLang's original ``"dsv4"`` factory.
    """
    reason = backend_fallback_reason(runner)
    if reason is not None:
        log_once(logging.INFO, f"backend:{reason}", "sglang-dsv4-sparse: SGLang's dsv4 backend kept (%s)", reason)
        return fallback(runner)
    try:
        cls = backend_class()
    except Exception as exc:  # SGLang's internals moved
        log_once(
            logging.WARNING, f"class:{exc}",
            "sglang-dsv4-sparse: cannot subclass SGLang's DeepseekV4AttnBackend (%s: %s); using SGLang's",
            type(exc).__name__, exc,
        )
        return fallback(runner)
    backend = cls(runner)
    log_once(
        logging.INFO, "backend:ours", "Using %s for dsv4 attention (%s)", BACKEND_NAME,
        backend._dsv4_choice.describe(),
    )
    return backend


class _SparseBackendMixin:
    """The logic of :class:`DeepseekV4SparseAttnBackend`; mixed in before SGLang's class."""

    def __init__(self, model_runner, *args, **kwargs):
        super().__init__(model_runner, *args, **kwargs)
        self._dsv4_step: Optional[StepState] = None
        self._dsv4_workspace = Workspace(self.device)
        self._dsv4_router_heads = self._estimate_kernel_heads(model_runner)
        self._dsv4_row_limits: dict = {}  # heads -> the paged kernel's row limit (None: unbounded)
        # Every flag, read once (config.py); the step's path reads none of them again.
        self._dsv4_settings = config.read_settings()
        self._dsv4_choice = dispatch.KernelChoice.from_env(self.device, self._dsv4_settings)
        # SGLang's own flag, read at each step through SGLang's accessor as SGLang does (config.py).
        self._dsv4_sparse_prefill = config.sparse_prefill_reader()
        capability = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
        self._dsv4_policy = routing.make_policy(
            self._dsv4_settings.prefill_route, flashmla_usable=self._dsv4_choice.flashmla_usable,
            kernels=self._dsv4_choice.requested, capability=capability, table_path=self._dsv4_settings.route_table,
        )

    def step_fallback_reason(self, forward_batch) -> Optional[str]:
        return step_fallback_reason(self, forward_batch)

    def layer_fallback_reason(
        self, layer, q: torch.Tensor, compress_ratio: int, cos_sin_cache: Optional[torch.Tensor] = None
    ) -> Optional[str]:
        """Why SGLang's parent backend runs this layer's attention, or None for the core.

        Also checks that every SGLang buffer the core will read exists for this
        step: a C4 layer reads the indexer's top-k (see :meth:`_c4_topk`).
        """
        step = self._dsv4_step
        if step is None or step.metadata is not self.forward_metadata:
            return "no plan for this metadata (a mode SGLang handles, a prefill CUDA graph or the late-layer tail)"
        if cos_sin_cache is not None:
            return "fused RoPE attention (mega kernel)"
        if compress_ratio not in L.LAYER_RATIOS:
            return f"compress ratio {compress_ratio}"
        if q is None or q.dtype != torch.bfloat16 or q.dim() != 3 or q.shape[-1] != L.HEAD_DIM:
            return "query is not bf16 [T, h, 512]"
        if q.shape[0] != step.num_tokens:
            return f"{q.shape[0]} query rows, the plan has {step.num_tokens}"
        if compress_ratio:
            pool = self.token_to_kv_pool
            if getattr(pool.get_extra_key_layout(layer.layer_id), "value", None) != "v4":
                return "compressed cache is not in the V4 layout"
            if pool.get_extra_key_page_size(layer.layer_id) != self._dsv4_compressed_page_sizes.get(compress_ratio):
                return "compressed cache page size differs from the plan's"
        if compress_ratio and step.kind == "draft_extend":
            return f"a C{compress_ratio} layer in a draft extend (SGLang builds window rows only)"
        if compress_ratio == 4:
            return self._missing_field(step, 4)
        return None

    def _missing_field(self, step: StepState, ratio: int) -> Optional[str]:
        """Why a metadata field the core reads for a ``ratio`` layer on this route is unusable, or None."""
        core = self.forward_metadata.core_attn_metadata
        names = C4_FIELDS[step.route] if ratio == 4 else PAGED_FIELDS[ratio]
        for name in names:
            buf = getattr(core, name, None)
            if not isinstance(buf, torch.Tensor) or buf.shape[0] < step.num_tokens:
                return f"SGLang's metadata field {name} is missing or has fewer than {step.num_tokens} rows"
        return None

    def _note_fallback(self, reason: str) -> None:
        log_once(logging.INFO, f"step:{reason}", "sglang-dsv4-sparse: SGLang's attention runs (%s)", reason)

    # ---- metadata ----------------------------------------------------------

    def init_forward_metadata(self, forward_batch) -> None:
        self._dsv4_step = None
        # The parent builds its metadata, then calls init_forward_metadata_in_graph
        # (below), which plans the per-row steps (decode, verify, draft extend).
        super().init_forward_metadata(forward_batch)
        if self._dsv4_step is not None or not forward_batch.forward_mode.is_extend() or is_paged_row_step(forward_batch):
            return  # planned (or left to SGLang) in init_forward_metadata_in_graph
        # The route first: a step SGLang's attention takes whole costs no more than
        # SGLang's own metadata (no checks, no plan; docs/design-notes.md, "Routes by shape").
        extend_lens_cpu = int_list(forward_batch.extend_seq_lens_cpu)
        seq_lens_cpu = int_list(forward_batch.seq_lens_cpu)
        shape = dict(num_tokens=sum(extend_lens_cpu), num_reqs=len(seq_lens_cpu), max_seq_len=max(seq_lens_cpu, default=0))
        sparse = self._sparse_prefill(shape["num_tokens"])
        if self._sglang_takes_extend(sparse, shape):
            return
        reason = self.step_fallback_reason(forward_batch)
        if reason is not None:
            self._note_fallback(reason)
            return
        self._dsv4_step = self._planned(self._plan_extend(forward_batch, sparse, shape, extend_lens_cpu, seq_lens_cpu))

    def _sparse_prefill(self, num_tokens: int) -> bool:
        heads = self._dsv4_router_heads
        row_limit = self._dsv4_row_limits.get(heads, -1)
        if row_limit == -1:  # a device query: once per head count, not once a step
            row_limit = self._dsv4_row_limits[heads] = paged_kernel_row_limit(self._dsv4_choice, heads)
        return use_sparse_prefill(num_tokens, row_limit=row_limit, flag=bool(self._dsv4_sparse_prefill()))

    def _sglang_takes_extend(self, sparse: bool, shape: dict) -> bool:
        """Whether every layer of this extend runs SGLang's attention (decided at the heads the model gives a rank)."""
        policy = self._dsv4_policy
        if not sparse:
            return policy.paged_to_sglang
        return policy.all_sglang(shape["num_tokens"], shape["num_reqs"], shape["max_seq_len"],
                                 self._dsv4_router_heads, self._dsv4_layer_ratios)

    @functools.cached_property
    def _dsv4_layer_ratios(self) -> tuple:
        return (0,) + tuple(self._dsv4_compressed_page_sizes)

    def init_forward_metadata_in_graph(self, forward_batch) -> None:
        # SGLang's eager init ends here too, and its CUDA graphs record this part:
        # the parent turns raw decode / verify metadata into per-row index rows.
        super().init_forward_metadata_in_graph(forward_batch)
        self._dsv4_step = None
        if not is_paged_row_step(forward_batch):
            return
        if not self._dsv4_policy.plans_row_step(row_step_kind(forward_batch)):
            return
        reason = self.step_fallback_reason(forward_batch)
        if reason is not None:
            self._note_fallback(reason)
            return
        self._dsv4_step = self._planned(self._plan_rows(forward_batch))

    def _planned(self, step: StepState) -> Optional[StepState]:
        """``step``, or None (SGLang runs the step) when a metadata buffer its layers read is missing."""
        core = self.forward_metadata.core_attn_metadata
        # Draft extend is window-only (SGLang builds no compressed rows for it); its model has no other layers.
        window_only = step.kind == "draft_extend"
        reason = self._missing_field(step, 4) if core.has_c4 and not window_only else None
        if reason is None and step.route == ROUTE_PAGED:
            reason = self._missing_field(step, 0)
            if reason is None and core.has_c128 and not window_only:
                reason = self._missing_field(step, 128)
        if reason is not None:
            self._note_fallback(reason)
            return None
        return step

    def init_forward_metadata_for_breakable_cuda_graph_capture(self, forward_batch):
        self._dsv4_step = None
        return super().init_forward_metadata_for_breakable_cuda_graph_capture(forward_batch)

    def prepare_forward_metadata_for_breakable_cuda_graph_replay(self, capture_metadata, forward_batch, **kwargs):
        self._dsv4_step = None
        return super().prepare_forward_metadata_for_breakable_cuda_graph_replay(
            capture_metadata, forward_batch, **kwargs
        )

    @functools.cached_property
    def _dsv4_compressed_page_sizes(self):
        return {ratio: self.page_size // ratio for ratio in self.present_ratios if ratio in L.COMPRESS_RATIOS}

    def _step_inputs(self, *, seq_lens, extend_lens, req_pool_indices, tables, seq_lens_cpu,
                     extend_lens_cpu, positions) -> StepInputs:
        pool = self.token_to_kv_pool
        sizes = self._dsv4_compressed_page_sizes
        return StepInputs(
            seq_lens=seq_lens,
            extend_lens=extend_lens,
            req_pool_indices=req_pool_indices,
            req_to_token=self.req_to_token,
            full_to_swa=pool.full_to_swa_index_mapping,
            compressed_page_tables={ratio: tables for ratio in sizes},
            seq_lens_cpu=seq_lens_cpu,
            extend_lens_cpu=extend_lens_cpu,
            positions=positions,
            swa_page_size=pool.get_swa_key_page_size(),
            compressed_page_sizes=sizes,
            window=L.SWA_WINDOW,
        )

    def _plan_extend(self, forward_batch, sparse: bool, shape: dict, extend_lens_cpu: list,
                     seq_lens_cpu: list) -> StepState:
        """EXTEND / MIXED / a chunk of a chunked prefill: eager, host lengths known.

        Sparse prefill plans nothing here: a layer that takes one of our routes
        builds the plan (:meth:`StepState.prefill_plan`).
        """
        metadata = self.forward_metadata
        core = metadata.core_attn_metadata
        num_tokens = shape["num_tokens"]

        def inputs() -> StepInputs:
            # The parent's page table has one row per query row; a request's first
            # query row (extend_start_loc) carries the request's pages.
            first_rows = forward_batch.extend_start_loc.to(torch.int64)
            return self._step_inputs(
                seq_lens=forward_batch.seq_lens, extend_lens=forward_batch.extend_seq_lens,
                req_pool_indices=forward_batch.req_pool_indices, tables=core.page_table.index_select(0, first_rows),
                seq_lens_cpu=seq_lens_cpu, extend_lens_cpu=extend_lens_cpu, positions=core.positions_casual[:num_tokens],
            )

        if sparse:
            return StepState(metadata, None, ROUTE_SPARSE_PREFILL, None, num_tokens, shape=shape,
                             make_inputs=inputs, forward_batch=forward_batch, ratios=tuple(self._dsv4_compressed_page_sizes))
        step_inputs = inputs()
        return StepState(metadata, step_inputs, ROUTE_PAGED, paged_plan(core, step_inputs, num_tokens), num_tokens)

    def _plan_rows(self, forward_batch) -> StepState:
        """Decode, target verify, draft extend: graph-safe (see the module docstring).

        SGLang's metadata holds one row per query row (a draft token is a row of
        its own, with its own window and compressed ids); to the paged route
        each row is a one-row request at its own length. The verify route also
        groups a request's rows (:func:`~.sglang_plan.verify_rows`).
        """
        metadata = self.forward_metadata
        core = metadata.core_attn_metadata
        seq_lens = core.seq_lens_casual
        num_rows = seq_lens.shape[0]
        host_lens = forward_batch.seq_lens_cpu
        if capturing() or host_lens is None or len(host_lens) != num_rows:
            seq_lens_cpu = None  # unknown inside a graph (and per request, not per row, in verify)
        else:
            seq_lens_cpu = int_list(host_lens)
        req_pool_indices = forward_batch.req_pool_indices
        if req_pool_indices.shape[0] != num_rows and num_rows % max(req_pool_indices.shape[0], 1) == 0:
            # A request's draft tokens are consecutive rows (SGLang's static verify / draft-extend layout).
            req_pool_indices = req_pool_indices.repeat_interleave(num_rows // req_pool_indices.shape[0])
        inputs = self._step_inputs(
            seq_lens=seq_lens,
            extend_lens=torch.ones_like(seq_lens),
            req_pool_indices=req_pool_indices[:num_rows],
            tables=core.page_table,
            seq_lens_cpu=seq_lens_cpu,
            extend_lens_cpu=[1] * num_rows,
            positions=core.positions_casual[:num_rows],
        )
        step = StepState(metadata, inputs, ROUTE_PAGED, paged_plan(core, inputs, num_rows), num_rows,
                         in_graph=capturing(), kind=row_step_kind(forward_batch))
        if step.kind != "decode":
            step.verify = verify_rows(self, forward_batch, num_rows)
        return step

    # ---- attention ---------------------------------------------------------

    def _forward_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer,
        forward_batch,
        compress_ratio: int,
        save_kv_cache: bool = True,
        attn_sink: Optional[torch.Tensor] = None,
        cos_sin_cache: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        if self._dsv4_step is None:  # SGLang's step (its route, or a mode SGLang handles): its attention, untouched
            return super()._forward_attention(
                q, k, v, layer, forward_batch, compress_ratio,
                save_kv_cache=save_kv_cache, attn_sink=attn_sink, cos_sin_cache=cos_sin_cache, **kwargs,
            )
        reason = self.layer_fallback_reason(layer, q, compress_ratio, cos_sin_cache)
        route = None
        step = self._dsv4_step
        if reason is None and step.route == ROUTE_SPARSE_PREFILL:
            route = step.layer_route(self._dsv4_policy, compress_ratio, self._real_heads(layer, q), q.shape[1])
        elif reason is None:
            # A per-row step: each layer at its real heads (routing.RoutePolicy.row_step_route).
            route = self._dsv4_policy.row_step_route(step.kind, self._real_heads(layer, q))
            if route == routing.ROUTE_VERIFY and step.verify is None:
                route = routing.ROUTE_PAGED  # not uniform: each row on its own
            route = None if route == routing.ROUTE_PAGED else route
        if reason is not None or route == routing.ROUTE_SGLANG:
            if reason is not None:
                self._note_fallback(reason)
            return super()._forward_attention(
                q, k, v, layer, forward_batch, compress_ratio,
                save_kv_cache=save_kv_cache, attn_sink=attn_sink, cos_sin_cache=cos_sin_cache, **kwargs,
            )
        assert k is v, "DeepSeek-V4 shares k and v"
        assert attn_sink is not None, "DeepSeek-V4 layers have an attention sink"
        if save_kv_cache:
            self.store_cache(layer.layer_id, k, forward_batch)
        return self._core_attention(q, layer, compress_ratio, attn_sink, route)

    def _core_attention(self, q: torch.Tensor, layer, compress_ratio: int, attn_sink: torch.Tensor,
                        route: Optional[str]) -> torch.Tensor:
        step = self._dsv4_step
        pool = self.token_to_kv_pool
        layer_id = layer.layer_id
        swa_cache = pool.get_swa_key_buffer_radix(layer_id)
        compressed_cache = pool.get_extra_key_buffer(layer_id) if compress_ratio else None
        # SGLang pads a rank's heads to FlashMLA's 64 (zeros past the real ones):
        # routing.kernel_heads says how many of them the route's kernels take.
        heads = routing.kernel_heads(route, self._real_heads(layer, q), q.shape[1], self._dsv4_choice)
        q_run = q[:, :heads]
        sink = attn_sink[:heads].float()
        topk, topk_lengths = self._c4_topk(step) if compress_ratio == 4 else (None, None)
        if step.route == ROUTE_SPARSE_PREFILL:
            plan = step.prefill_plan(self, compress_ratio, route)
            fold = step.c128_fold(heads) if route == "folded" else None
            # Below the query's padded width the core writes the real heads straight into the
            # q-shaped output (no copy of the result).
            full = q.new_empty(q.shape) if heads < q.shape[1] else None
            out = prefill_layer(plan, self._dsv4_workspace, q_run, swa_cache, compress_ratio,
                                compressed_cache, topk, sink, route=route, fold=fold, choice=self._dsv4_choice,
                                out=None if full is None else full[:, :heads])
            if full is not None:
                full[:, heads:].zero_()
                return full
        elif route == routing.ROUTE_VERIFY:
            out = verify_layer(step.plan, step.verify, q_run, swa_cache, compress_ratio, compressed_cache, topk, sink,
                               topk_lengths=topk_lengths, choice=self._dsv4_choice)
        else:
            out = decode_layer(step.plan, q_run, swa_cache, compress_ratio, compressed_cache, topk, sink,
                               topk_lengths=topk_lengths, choice=self._dsv4_choice)
        if heads == q.shape[1]:
            return out
        full = q.new_empty(q.shape)
        full[:, :heads] = out
        full[:, heads:].zero_()
        return full

    @staticmethod
    def _real_heads(layer, q: torch.Tensor) -> int:
        """The rank's real heads (``tp_q_head_num``), at most the query's."""
        return min(int(getattr(layer, "tp_q_head_num", q.shape[1])), q.shape[1])

    def _c4_topk(self, step: StepState) -> tuple:
        """This C4 layer's top-k, read from the fields SGLang's own attention reads on the same route.

        The indexer fills them before the layer's attention. Sparse prefill reads
        request-local rows (``c4_sparse_raw_indices``; the core derives each
        query's length from its position, as SGLang does); the paged route reads
        C4-cache ids and their lengths (``c4_sparse_page_indices``,
        ``c4_sparse_topk_lengths``), so no per-layer conversion runs there.
        """
        core = self.forward_metadata.core_attn_metadata
        rows = step.num_tokens
        if step.route == ROUTE_SPARSE_PREFILL:
            return core.c4_sparse_raw_indices[:rows], None
        return core.c4_sparse_page_indices[:rows], core.c4_sparse_topk_lengths[:rows]

    @staticmethod
    def _estimate_kernel_heads(model_runner) -> int:
        """Heads the core will see, for the router's row limit (known before any layer runs)."""
        heads = getattr(getattr(model_runner, "model_config", None), "num_attention_heads", None)
        try:
            from sglang.srt.runtime_context import get_parallel

            tp = int(get_parallel().attn_tp_size or 1)
        except Exception:
            tp = 1
        if not heads:
            return 64
        # FlashMLA (auto or forced) runs the padded count; the router's limit is the same for both.
        return max(1, int(heads) // tp)


@functools.lru_cache(maxsize=None)
def backend_class():
    """``DeepseekV4SparseAttnBackend``: built on first use, so this module imports without SGLang."""
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    return type(
        BACKEND_NAME,
        (_SparseBackendMixin, DeepseekV4AttnBackend),
        {"__module__": __name__, "__doc__": "SGLang's DeepseekV4AttnBackend with attention run by sglang_dsv4_sparse's core."},
    )


def __getattr__(name: str):
    if name == BACKEND_NAME:
        return backend_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
