"""SGLang 0.5.23 integration: DeepSeek-V4 attention through the package's core.

``DeepseekV4SparseAttnBackend`` subclasses SGLang's ``DeepseekV4AttnBackend``.
It keeps everything SGLang builds per step (its metadata, the compressors, the
C4 indexer, the SWA cache writes) and replaces only the attention itself:

* ``init_forward_metadata`` calls the parent's, then turns the batch into the
  core's :class:`~sglang_dsv4_sparse.core.plan.StepInputs` and builds the
  step's plan: for an extend (EXTEND, chunked prefill, MIXED) a sparse prefill
  plan or a paged plan, as the core's router says; for a decode a paged plan.
* ``_forward_attention`` (the body of the parent's ``forward``) writes the
  layer's SWA rows exactly as the parent does (``store_cache`` when
  ``save_kv_cache``), then runs ``prefill_layer`` or ``decode_layer``.

Every case this backend does not handle goes to the parent unchanged, with
its reason logged once: per step (:meth:`step_fallback_reason`, at metadata
time) and per layer (:meth:`layer_fallback_reason`, which also checks that
the SGLang buffers the layer reads exist).

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
  paged attention; the plan views them (``_paged_plan``), so no per-step plan
  kernels run there, and a missing one sends the step to the parent.

CUDA graphs: the decode plan is built in ``init_forward_metadata_in_graph``,
which ``init_forward_metadata`` calls eagerly and the decode graph runner
records inside the graph, after the parent's own in-graph metadata build. It
only views that metadata, so replay refills what it points at. The host
lengths (``StepInputs.seq_lens_cpu``) are unknown inside a graph and the
paged route does not need them: None is passed there.
Extends are planned eagerly in ``init_forward_metadata``; prefill CUDA graphs
(breakable or piecewise capture) go to the parent.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Union

import torch

from . import dispatch
from . import layout as L
from .core.fold import C128Fold, build_c128_fold
from .core.forward import INDEX_ROW_ROUTES, Workspace, decode_layer, prefill_layer
from .core.plan import PagedPlan, PrefillPlan, StepInputs, build_prefill_plan
from .core.router import paged_kernel_row_limit, sparse_prefill_flag, use_sparse_prefill
from .validation import bounds_check_enabled, env_flag

logger = logging.getLogger(__name__)

SUPPORTED_SGLANG_VERSIONS = ("0.5.23",)
SWITCH_ENV = "SGLANG_DSV4_SPARSE"
BACKEND_NAME = "DeepseekV4SparseAttnBackend"

ROUTE_SPARSE_PREFILL = "sparse_prefill"
ROUTE_PAGED = "paged"
# The DSV4AttnMetadata fields a C4 layer's top-k is read from, per route
# (_SparseBackendMixin._c4_topk): the ones SGLang's own attention reads there.
_C4_FIELDS = {
    ROUTE_SPARSE_PREFILL: ("c4_sparse_raw_indices",),
    ROUTE_PAGED: ("c4_sparse_page_indices", "c4_sparse_topk_lengths"),
}
# What the paged route's plan views (_SparseBackendMixin._paged_plan), per compress ratio.
_PAGED_FIELDS = {
    0: ("swa_page_indices", "swa_topk_lengths"),
    128: ("c128_page_indices", "c128_topk_lengths_clamp1"),
}


def sparse_enabled() -> bool:
    """``SGLANG_DSV4_SPARSE`` (default on): ``0`` leaves SGLang's backend alone."""
    try:
        return env_flag(SWITCH_ENV, True)
    except ValueError as err:  # never crash SGLang over a typo: leave it untouched
        logger.warning("sglang-dsv4-sparse: %s; leaving SGLang's backend in place", err)
        return False


def sglang_version() -> Optional[str]:
    """The installed SGLang's version, without importing it when avoidable."""
    try:
        from importlib.metadata import version

        return version("sglang")
    except Exception:
        pass
    try:
        from sglang.version import __version__

        return str(__version__)
    except Exception:
        return None


def supported_sglang_version(version: Optional[str] = None) -> bool:
    version = sglang_version() if version is None else version
    return version in SUPPORTED_SGLANG_VERSIONS


_logged: set = set()


def _log_once(level: int, key: str, msg: str, *args) -> None:
    if key in _logged:
        return
    _logged.add(key)
    logger.log(level, msg, *args)


# --------------------------------------------------------------------------
# Whole-backend decision (at construction)
# --------------------------------------------------------------------------


def unhandled_feature(
    *, trtllm: bool = False, mega: bool = False, dsv41: bool = False, hisparse: bool = False, unified_kv: bool = False
) -> Optional[str]:
    """The reason SGLang keeps a deployment feature this backend does not handle, or None.

    One place for the checks made at construction (from the runner and the
    server flags) and again per step (from the backend SGLang built).
    """
    if trtllm:
        return "--dsv4-attn-backend trtllm (trtllm-gen attention)"
    if mega:
        return "--dsv4-attn-backend flashmla_mega (fused RoPE attention)"
    if dsv41:
        return "DeepSeek-V4.1 (ratio 1/2 layers, V4.1 layouts)"
    if hisparse:
        return "HiSparse"
    if unified_kv:
        return "unified KV cache"
    return None


def backend_fallback_reason(runner) -> Optional[str]:
    """Why this runner gets SGLang's own DSv4 backend, or None for ours."""
    if not sparse_enabled():
        return f"{SWITCH_ENV}=0"
    version = sglang_version()
    if not supported_sglang_version(version):
        return f"SGLang {version} is not a supported version ({', '.join(SUPPORTED_SGLANG_VERSIONS)})"
    try:
        from sglang.srt.utils import is_hip, is_npu

        if is_npu() or is_hip():
            return "NPU/HIP: SGLang's platform backend"
    except Exception as exc:  # internals moved
        return f"cannot read SGLang's platform ({type(exc).__name__}: {exc})"
    try:
        from sglang.srt.layers.attention.deepseek_v4_trtllm_backend import (
            is_dsv4_mega_attn_enabled,
            is_dsv4_trtllm_attn_enabled,
        )

        trtllm, mega = is_dsv4_trtllm_attn_enabled(), is_dsv4_mega_attn_enabled()
    except Exception as exc:
        return f"cannot read --dsv4-attn-backend ({type(exc).__name__}: {exc})"
    if getattr(runner, "is_draft_worker", False):
        return "speculative draft runner"
    cfg = getattr(getattr(runner, "model_config", None), "hf_text_config", None)
    pool = getattr(runner, "token_to_kv_pool", None)
    reason = unhandled_feature(
        trtllm=trtllm, mega=mega, dsv41=getattr(cfg, "model_type", None) == "deepseek_v41",
        hisparse=getattr(runner, "hisparse_coordinator", None) is not None,
        unified_kv=getattr(pool, "_unified_kv", False),
    )
    if reason is not None:
        return reason
    layout = getattr(pool, "kv_layout", None)
    if layout is not None and getattr(layout, "value", layout) != "v4":
        return f"KV layout {getattr(layout, 'value', layout)} (only the V4 layout is handled)"
    if getattr(pool, "uniform_fp8", False):
        return "uniform-FP8 KV pool"
    return None


def create_backend(runner, fallback: Callable[[Any], Any]):
    """Build our backend for ``runner``, or ``fallback(runner)`` when it does not apply.

    ``fallback`` is SGLang's original ``"dsv4"`` factory.
    """
    reason = backend_fallback_reason(runner)
    if reason is not None:
        _log_once(logging.INFO, f"backend:{reason}", "sglang-dsv4-sparse: SGLang's dsv4 backend kept (%s)", reason)
        return fallback(runner)
    try:
        cls = backend_class()
    except Exception as exc:  # SGLang's internals moved
        _log_once(
            logging.WARNING, f"class:{exc}",
            "sglang-dsv4-sparse: cannot subclass SGLang's DeepseekV4AttnBackend (%s: %s); using SGLang's",
            type(exc).__name__, exc,
        )
        return fallback(runner)
    backend = cls(runner)
    _log_once(
        logging.INFO, "backend:ours", "Using %s for dsv4 attention (%s)", BACKEND_NAME,
        backend._dsv4_choice.describe(),
    )
    return backend


# --------------------------------------------------------------------------
# Per-step state
# --------------------------------------------------------------------------


@dataclass
class StepState:
    """The core's plan for one step, and the parent metadata it was built against."""

    metadata: Any  # the parent's DSV4Metadata object of this step
    inputs: StepInputs
    route: str  # ROUTE_SPARSE_PREFILL or ROUTE_PAGED
    plan: Union[PrefillPlan, PagedPlan]
    num_tokens: int
    in_graph: bool = False  # built while a CUDA graph was being captured
    c128_folds: Dict[int, C128Fold] = field(default_factory=dict)  # per head count, built by the first C128 layer


def _int_list(values) -> list:
    return [int(x) for x in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _step_mode(forward_batch) -> str:
    mode = forward_batch.forward_mode
    return getattr(mode, "name", str(mode))


class _SparseBackendMixin:
    """The logic of :class:`DeepseekV4SparseAttnBackend`; mixed in before SGLang's class."""

    def __init__(self, model_runner, *args, **kwargs):
        super().__init__(model_runner, *args, **kwargs)
        self._dsv4_step: Optional[StepState] = None
        self._dsv4_workspace = Workspace(self.device)
        self._dsv4_router_heads = self._estimate_kernel_heads(model_runner)
        # Which kernels run (SGLANG_DSV4_SPARSE_KERNELS, FlashMLA's usability), decided once for the backend.
        self._dsv4_choice = dispatch.KernelChoice.from_env(self.device)

    # ---- what falls back: one check per step, one per layer ----------------

    def step_fallback_reason(self, forward_batch) -> Optional[str]:
        """Why SGLang's parent backend runs this step, or None for the core (judged at metadata time)."""
        from sglang.srt.layers.attention.deepseek_v4_backend import DSV4AttnMetadata, DSV4Metadata
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        mode = forward_batch.forward_mode
        if mode not in (ForwardMode.EXTEND, ForwardMode.MIXED, ForwardMode.DECODE):
            return f"forward mode {_step_mode(forward_batch)}"
        if getattr(forward_batch, "_original_forward_mode", None) not in (None, mode):
            return "rewritten forward mode (speculative decoding)"
        if mode == ForwardMode.DECODE and getattr(forward_batch, "spec_info", None) is not None:
            return "speculative decode batch"
        metadata = self.forward_metadata
        if not isinstance(metadata, DSV4Metadata) or not isinstance(metadata.core_attn_metadata, DSV4AttnMetadata):
            return "metadata is not DSV4Metadata"
        if getattr(metadata, "late_layer_tail", None) is not None:
            return "late-layer tail metadata"
        pool = self.token_to_kv_pool
        reason = unhandled_feature(
            trtllm=bool(self.trtllm_attn), mega=bool(self.mega_attn), dsv41=bool(self.is_dsv41 or self.low_ratios),
            hisparse=self.hisparse_coordinator is not None, unified_kv=getattr(pool, "_unified_kv", False),
        )
        if reason is not None:
            return reason
        if getattr(pool, "request_window", None) is not None or getattr(forward_batch, "encoder_swa_replay", False):
            return "request window (encoder SWA bounded replay)"
        if getattr(pool, "swa_req_ring_size", None) is not None:
            return "SWA ring"
        if pool.full_to_swa_index_mapping is None:
            return "no full-to-SWA mapping registered"
        if self.online_c128_mtp.enabled():
            return "online C128 MTP"
        try:
            from sglang.srt.runtime_context import get_platform

            if get_platform().is_sm120:
                return "SM120"
        except Exception:
            pass
        if mode == ForwardMode.DECODE:
            if self.topk > 0 and self.speculative_num_steps > 1:
                return "multi-step draft decode"
            if _capturing() and bounds_check_enabled():
                return "SGLANG_DSV4_SPARSE_CHECK_BOUNDS syncs with the host: not graph-safe"
            return None
        # Extends (EXTEND, MIXED)
        from sglang.srt.layers.cp.utils import is_cp_active

        if is_cp_active(forward_batch):
            return "context parallel"
        if self.enable_decoder_swa_bounded_replay:
            return "late-layer tail (decoder SWA bounded replay)"
        if _capturing() or _in_breakable_cuda_graph():
            return "prefill CUDA graph"
        from sglang.srt.layers.attention.dsv4.sparse_prefill_utils import use_dsv4_q8kv8_sparse_prefill

        if use_dsv4_q8kv8_sparse_prefill(self.dsv4_prefill_backend):
            return "q8kv8 sparse prefill selected"
        if forward_batch.seq_lens_cpu is None or forward_batch.extend_seq_lens_cpu is None:
            return "no host sequence lengths"
        if forward_batch.extend_start_loc is None:
            return "no extend_start_loc"
        return None

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
            if pool.get_extra_key_page_size(layer.layer_id) != step.inputs.compressed_page_sizes.get(compress_ratio):
                return "compressed cache page size differs from the plan's"
        if compress_ratio == 4:
            return self._missing_field(step, 4)
        return None

    def _missing_field(self, step: StepState, ratio: int) -> Optional[str]:
        """Why a metadata field the core reads for a ``ratio`` layer on this route is unusable, or None."""
        core = self.forward_metadata.core_attn_metadata
        names = _C4_FIELDS[step.route] if ratio == 4 else _PAGED_FIELDS[ratio]
        for name in names:
            buf = getattr(core, name, None)
            if not isinstance(buf, torch.Tensor) or buf.shape[0] < step.num_tokens:
                return f"SGLang's metadata field {name} is missing or has fewer than {step.num_tokens} rows"
        return None

    def _note_fallback(self, reason: str) -> None:
        _log_once(logging.INFO, f"step:{reason}", "sglang-dsv4-sparse: SGLang's attention runs (%s)", reason)

    # ---- metadata ----------------------------------------------------------

    def init_forward_metadata(self, forward_batch) -> None:
        self._dsv4_step = None
        # The parent builds its metadata, then calls init_forward_metadata_in_graph
        # (below), which plans decodes.
        super().init_forward_metadata(forward_batch)
        if self._dsv4_step is not None or not forward_batch.forward_mode.is_extend():
            return
        reason = self.step_fallback_reason(forward_batch)
        if reason is not None:
            self._note_fallback(reason)
            return
        self._dsv4_step = self._planned(self._plan_extend(forward_batch))

    def init_forward_metadata_in_graph(self, forward_batch) -> None:
        super().init_forward_metadata_in_graph(forward_batch)
        self._dsv4_step = None
        if not forward_batch.forward_mode.is_decode():
            return
        reason = self.step_fallback_reason(forward_batch)
        if reason is not None:
            self._note_fallback(reason)
            return
        self._dsv4_step = self._planned(self._plan_decode(forward_batch))

    def _planned(self, step: StepState) -> Optional[StepState]:
        """``step``, or None (SGLang runs the step) when a metadata buffer its layers read is missing."""
        reason = self._missing_field(step, 4) if self.forward_metadata.core_attn_metadata.has_c4 else None
        if reason is None and step.route == ROUTE_PAGED:
            reason = self._missing_field(step, 0)
            if reason is None and self.forward_metadata.core_attn_metadata.has_c128:
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

    def _snapshot_prefill_shared_reads(self, forward_batch, *, num_qo_tokens: int):
        # Our plans read req_to_token and full_to_swa when they are built (in
        # init_forward_metadata) and keep their own page-table rows, so the
        # shared reads end there; the parent's chunk cache would be unused work.
        step = self._dsv4_step
        if step is not None and step.metadata is self.forward_metadata and num_qo_tokens == step.num_tokens:
            from sglang.srt.layers.attention.base_attn_backend import SharedReadEnds

            return SharedReadEnds.PRE_REPLAY
        return super()._snapshot_prefill_shared_reads(forward_batch, num_qo_tokens=num_qo_tokens)

    def _compressed_page_sizes(self) -> Dict[int, int]:
        return {ratio: self.page_size // ratio for ratio in self.present_ratios if ratio in L.COMPRESS_RATIOS}

    def _step_inputs(self, *, seq_lens, extend_lens, req_pool_indices, tables, seq_lens_cpu,
                     extend_lens_cpu, positions) -> StepInputs:
        pool = self.token_to_kv_pool
        sizes = self._compressed_page_sizes()
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

    def _plan_extend(self, forward_batch) -> StepState:
        """EXTEND / MIXED / a chunk of a chunked prefill: eager, host lengths known."""
        metadata = self.forward_metadata
        core = metadata.core_attn_metadata
        extend_lens_cpu = _int_list(forward_batch.extend_seq_lens_cpu)
        seq_lens_cpu = _int_list(forward_batch.seq_lens_cpu)
        num_tokens = sum(extend_lens_cpu)
        # The parent's page table has one row per query row; a request's first
        # query row (extend_start_loc) carries the request's pages.
        first_rows = forward_batch.extend_start_loc.to(torch.int64)
        tables = core.page_table.index_select(0, first_rows)
        inputs = self._step_inputs(
            seq_lens=forward_batch.seq_lens,
            extend_lens=forward_batch.extend_seq_lens,
            req_pool_indices=forward_batch.req_pool_indices,
            tables=tables,
            seq_lens_cpu=seq_lens_cpu,
            extend_lens_cpu=extend_lens_cpu,
            positions=core.positions_casual[:num_tokens],
        )
        row_limit = paged_kernel_row_limit(self._dsv4_choice, self._dsv4_router_heads)
        if use_sparse_prefill(num_tokens, row_limit=row_limit, flag=sparse_prefill_flag()):
            # Index rows only for the layer kinds whose route reads them at this rank's heads.
            index_rows = [r for r in (0, 128)
                          if self._dsv4_choice.prefill_route(r, self._dsv4_router_heads) in INDEX_ROW_ROUTES]
            plan = build_prefill_plan(inputs, index_rows=index_rows)
            return StepState(metadata, inputs, ROUTE_SPARSE_PREFILL, plan, num_tokens)
        return StepState(metadata, inputs, ROUTE_PAGED, self._paged_plan(inputs, num_tokens), num_tokens)

    def _plan_decode(self, forward_batch) -> StepState:
        """DECODE: graph-safe (see the module docstring); one query row per request."""
        metadata = self.forward_metadata
        core = metadata.core_attn_metadata
        seq_lens = core.seq_lens_casual
        num_rows = seq_lens.shape[0]
        host_lens = forward_batch.seq_lens_cpu
        if _capturing() or host_lens is None or len(host_lens) != num_rows:
            seq_lens_cpu = None  # unknown inside a graph; the paged route does not need it
        else:
            seq_lens_cpu = _int_list(host_lens)
        inputs = self._step_inputs(
            seq_lens=seq_lens,
            extend_lens=torch.ones_like(seq_lens),
            req_pool_indices=forward_batch.req_pool_indices[:num_rows],
            tables=core.page_table,
            seq_lens_cpu=seq_lens_cpu,
            extend_lens_cpu=[1] * num_rows,
            positions=core.positions_casual[:num_rows],
        )
        return StepState(metadata, inputs, ROUTE_PAGED, self._paged_plan(inputs, num_rows), num_rows, in_graph=_capturing())

    def _paged_plan(self, inputs: StepInputs, num_tokens: int) -> PagedPlan:
        """The paged route's plan: views of the index rows SGLang's metadata built for its own paged attention.

        SGLang's decode (and dense extend) metadata already holds, per query,
        the SWA-cache ids of its window, the C128-cache ids it reads, their
        lengths and FlashMLA's per-ratio scheduler metadata; the core's
        ``build_paged_plan`` would compute the same ids again, in some
        twenty kernels per step. Views cost nothing and stay right under
        CUDA-graph replay, since they are taken from the metadata built in
        the graph.
        """
        core = self.forward_metadata.core_attn_metadata
        rows = slice(0, num_tokens)
        plan = PagedPlan(
            num_tokens=num_tokens,
            swa_page_size=inputs.swa_page_size,
            swa_indices=core.swa_page_indices[rows].unsqueeze(1),
            swa_lens=core.swa_topk_lengths[rows],
            compressed_page_tables=inputs.compressed_page_tables,
            compressed_page_sizes=inputs.compressed_page_sizes,
        )
        if core.has_c128:
            plan.c128_indices = core.c128_page_indices[rows].unsqueeze(1)
            plan.c128_lens = core.c128_topk_lengths_clamp1[rows]
        for ratio in L.LAYER_RATIOS:
            meta = core.get_flashmla_metadata(ratio)
            if meta is not None:
                plan.sched_meta[ratio] = meta
        return plan

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
        reason = self.layer_fallback_reason(layer, q, compress_ratio, cos_sin_cache)
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
        return self._core_attention(q, layer, compress_ratio, attn_sink)

    def _core_attention(self, q: torch.Tensor, layer, compress_ratio: int, attn_sink: torch.Tensor) -> torch.Tensor:
        step = self._dsv4_step
        pool = self.token_to_kv_pool
        layer_id = layer.layer_id
        swa_cache = pool.get_swa_key_buffer_radix(layer_id)
        compressed_cache = pool.get_extra_key_buffer(layer_id) if compress_ratio else None
        # SGLang pads a tensor-parallel rank's heads to FlashMLA's 64 (zeros or
        # garbage past the real ones): FlashMLA takes the padded query as it is,
        # the Triton kernels and the shared-row routes the real heads only
        # (KernelChoice.heads_to_run and prefill_route).
        route = self._prefill_route(step, layer, q, compress_ratio)
        heads = self._kernel_heads(layer, q) if route in (None, "index") else self._real_heads(layer, q)
        q_run = q[:, :heads]
        sink = attn_sink[:heads].float()
        topk, topk_lengths = self._c4_topk(step) if compress_ratio == 4 else (None, None)
        if step.route == ROUTE_SPARSE_PREFILL:
            fold = None
            if route == "folded":
                fold = step.c128_folds.get(heads)
                if fold is None:
                    fold = step.c128_folds[heads] = build_c128_fold(step.plan, heads)
            # Below the query's padded width the core writes the real heads straight into the
            # q-shaped output (no copy of the result).
            full = q.new_empty(q.shape) if heads < q.shape[1] else None
            out = prefill_layer(step.plan, self._dsv4_workspace, q_run, swa_cache, compress_ratio,
                                compressed_cache, topk, sink, route=route, fold=fold, choice=self._dsv4_choice,
                                out=None if full is None else full[:, :heads])
            if full is not None:
                full[:, heads:].zero_()
                return full
        else:
            out = decode_layer(step.plan, q_run, swa_cache, compress_ratio, compressed_cache, topk, sink,
                               topk_lengths=topk_lengths, choice=self._dsv4_choice)
        if heads == q.shape[1]:
            return out
        full = q.new_empty(q.shape)
        full[:, :heads] = out
        full[:, heads:].zero_()
        return full

    def _prefill_route(self, step: StepState, layer, q: torch.Tensor, compress_ratio: int) -> Optional[str]:
        """The layer's sparse-prefill route (None on the paged route), by its real head count."""
        if step.route != ROUTE_SPARSE_PREFILL:
            return None
        return self._dsv4_choice.prefill_route(compress_ratio, self._real_heads(layer, q))

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

    def _kernel_heads(self, layer, q: torch.Tensor) -> int:
        real = self._real_heads(layer, q)
        if real == q.shape[1]:
            return real
        return self._dsv4_choice.heads_to_run(real, q.shape[1])

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
        real = max(1, int(heads) // tp)
        # FlashMLA (auto or forced) runs the padded count; the router's limit is the same for both.
        return real


def _in_breakable_cuda_graph() -> bool:
    try:
        from sglang.srt.model_executor.runner_backend_utils.breakable_cuda_graph.context import (
            is_in_breakable_cuda_graph,
        )

        return bool(is_in_breakable_cuda_graph())
    except Exception:
        return False


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
