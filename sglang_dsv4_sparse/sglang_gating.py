"""Which deployments and steps SGLang keeps: version gating and fallback reasons.

One place for every "not ours" decision: at construction
(:func:`backend_fallback_reason`, from the runner and the server flags) and
per step (:func:`step_fallback_reason`, from the backend SGLang built). Each
reason is logged once (:func:`log_once`).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional

import torch

from . import config

logger = logging.getLogger("sglang_dsv4_sparse.sglang_backend")

SUPPORTED_SGLANG_VERSIONS = ("0.5.23",)
SWITCH_ENV = config.ENABLE.name

_logged: set = set()


def log_once(level: int, key: str, msg: str, *args) -> None:
    if key in _logged:
        return
    _logged.add(key)
    logger.log(level, msg, *args)


def sparse_enabled() -> bool:
    """``SGLANG_DSV4_SPARSE`` (default on): ``0`` leaves SGLang's backend alone.

    A bad value of any flag also leaves it alone (:func:`flag_errors` says which, once).
    """
    if flag_errors():
        return False
    return config.ENABLE.parse(os.environ)


def flag_errors() -> list:
    """The flags holding values they do not take, each logged once as one line naming the flag."""
    errors = config.bad_flags()
    for err in errors:
        log_once(logging.ERROR, f"flag:{err}", "sglang-dsv4-sparse: %s; SGLang's dsv4 backend kept", err)
    return errors


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
    errors = flag_errors()
    if errors:
        return errors[0]
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


def capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def step_mode(forward_batch) -> str:
    mode = forward_batch.forward_mode
    return getattr(mode, "name", str(mode))


def in_breakable_cuda_graph() -> bool:
    try:
        from sglang.srt.model_executor.runner_backend_utils.breakable_cuda_graph.context import (
            is_in_breakable_cuda_graph,
        )

        return bool(is_in_breakable_cuda_graph())
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def _paged_row_modes() -> frozenset:
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return frozenset((ForwardMode.DECODE, ForwardMode.TARGET_VERIFY, ForwardMode.DRAFT_EXTEND_V2))


def is_paged_row_step(forward_batch) -> bool:
    """Decodes (plain or speculative), target verify and draft extend: steps whose metadata SGLang builds per query row."""
    return forward_batch.forward_mode in _paged_row_modes()


def row_step_kind(forward_batch) -> str:
    """``"verify"``, ``"draft_extend"`` or ``"decode"`` (:meth:`routing.RoutePolicy.row_step_route`)."""
    mode = forward_batch.forward_mode
    if mode.is_target_verify():
        return "verify"
    return "draft_extend" if mode.is_draft_extend_v2() else "decode"


def step_fallback_reason(backend, forward_batch) -> Optional[str]:
    """Why SGLang's parent backend runs this step, or None for ours (judged at metadata time)."""
    from sglang.srt.layers.attention.deepseek_v4_backend import DSV4AttnMetadata, DSV4Metadata
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    mode = forward_batch.forward_mode
    if mode not in (ForwardMode.EXTEND, ForwardMode.MIXED) and mode not in _paged_row_modes():
        return f"forward mode {step_mode(forward_batch)}"
    if getattr(forward_batch, "_original_forward_mode", None) not in (None, mode):
        return "rewritten forward mode (speculative decoding)"
    metadata = backend.forward_metadata
    if not isinstance(metadata, DSV4Metadata) or not isinstance(metadata.core_attn_metadata, DSV4AttnMetadata):
        return "metadata is not DSV4Metadata"
    if getattr(metadata, "late_layer_tail", None) is not None:
        return "late-layer tail metadata"
    pool = backend.token_to_kv_pool
    reason = unhandled_feature(
        trtllm=bool(backend.trtllm_attn), mega=bool(backend.mega_attn), dsv41=bool(backend.is_dsv41 or backend.low_ratios),
        hisparse=backend.hisparse_coordinator is not None, unified_kv=getattr(pool, "_unified_kv", False),
    )
    if reason is not None:
        return reason
    if getattr(pool, "request_window", None) is not None or getattr(forward_batch, "encoder_swa_replay", False):
        return "request window (encoder SWA bounded replay)"
    if getattr(pool, "swa_req_ring_size", None) is not None:
        return "SWA ring"
    if pool.full_to_swa_index_mapping is None:
        return "no full-to-SWA mapping registered"
    if backend.online_c128_mtp.enabled():
        return "online C128 MTP"
    try:
        from sglang.srt.runtime_context import get_platform

        if get_platform().is_sm120:
            return "SM120"
    except Exception:
        pass
    if mode in _paged_row_modes():
        # One query row per metadata row, each with its own index rows (SGLang builds
        # them per draft token for verify and draft extend): the paged route's views.
        if mode == ForwardMode.TARGET_VERIFY and getattr(backend, "topk", 0) > 1:
            return "tree verify (SGLang supports chain verify only)"
        if capturing() and backend._dsv4_choice.check_bounds:
            return "SGLANG_DSV4_SPARSE_CHECK_BOUNDS syncs with the host: not graph-safe"
        return None
    # Extends (EXTEND, MIXED)
    from sglang.srt.layers.cp.utils import is_cp_active

    if is_cp_active(forward_batch):
        return "context parallel"
    if backend.enable_decoder_swa_bounded_replay:
        return "late-layer tail (decoder SWA bounded replay)"
    if capturing() or in_breakable_cuda_graph():
        return "prefill CUDA graph"
    from sglang.srt.layers.attention.dsv4.sparse_prefill_utils import use_dsv4_q8kv8_sparse_prefill

    if use_dsv4_q8kv8_sparse_prefill(backend.dsv4_prefill_backend):
        return "q8kv8 sparse prefill selected"
    if forward_batch.seq_lens_cpu is None or forward_batch.extend_seq_lens_cpu is None:
        return "no host sequence lengths"
    if forward_batch.extend_start_loc is None:
        return "no extend_start_loc"
    return None
