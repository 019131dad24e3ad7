"""Which attention kernels run: FlashMLA where the GPU has it, Triton elsewhere.

``SGLANG_DSV4_SPARSE_KERNELS`` picks: ``auto`` (default: FlashMLA on SM90/SM100
when ``flash_mla`` imports and the head count is one it takes, Triton
otherwise), ``flashmla`` (fail loudly if it cannot run) or ``triton``.

FlashMLA on SM90 takes only 64 or 128 query heads; a tensor-parallel rank of
DSv4-Flash holds 16 (TP 4) or 8 (TP 8), which SGLang zero-pads to 64.

``auto`` runs FlashMLA wherever it can, padding heads with zeros as SGLang
does, at every head count. Inside SGLang's own step (scripts/bench_sglang_ab.py:
graph-captured decode, eager prefill over SGLang's batches) FlashMLA on the
padded query beat the native-head Triton kernels at 8 and 16 heads in every
row measured, although the kernels alone, timed apart, favour Triton at 16
heads; BENCHMARKS.md (section 4) has the table and docs/design-notes.md the
history.
Triton runs where FlashMLA cannot (other GPUs, no wheel, more than 128
heads) or when forced.

The choice is made once, as a :class:`KernelChoice` (the environment and
FlashMLA's usability on one device), and passed down: the SGLang backend makes
one when it is built; a core call given none uses :func:`default_choice`.
``use_flashmla`` / ``heads_to_run`` / ``describe`` stay for other callers and
read the environment at each call.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import config, routing
from . import layout as L
from .kernels.sparse_attn.decode_paged import sparse_mla_decode_paged_unchecked
from .kernels.sparse_attn.prefill import sparse_mla_fwd_unchecked
from .kernels.sparse_attn.shared_rows import BLOCK_M as SHARED_ROW_MAX_HEADS

FLASHMLA_HEADS = (64, 128)


def requested_kernels() -> str:
    """``SGLANG_DSV4_SPARSE_KERNELS`` (default ``auto``); a bad value raises naming it."""
    return config.KERNELS.parse(os.environ)


@functools.lru_cache(maxsize=None)
def flashmla_status(device_index: int = 0) -> tuple[bool, str]:
    """``(usable, why)``: FlashMLA imports and this GPU is SM90 or SM100."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    major, minor = torch.cuda.get_device_capability(device_index)
    if major not in (9, 10):
        return False, f"SM{major}{minor} has no FlashMLA sparse kernels (SM90/SM100 only)"
    try:
        import flash_mla  # noqa: F401
    except Exception as exc:  # an ImportError, or a broken extension load
        return False, f"flash_mla does not import ({type(exc).__name__}: {exc})"
    return True, f"SM{major}{minor} with flash_mla"


def flashmla_use_legacy(device: torch.device) -> bool:
    """FlashMLA's SM90 sparse kernels sit behind ``use_legacy=True``."""
    return torch.cuda.get_device_capability(device)[0] == 9


def flashmla_padded_heads(num_heads: int) -> Optional[int]:
    """The FlashMLA head count ``num_heads`` is zero-padded to (None past 128)."""
    return next((h for h in FLASHMLA_HEADS if h >= num_heads), None)


@dataclass(frozen=True)
class KernelChoice:
    """Which attention kernels and routes run on one device: ``SGLANG_DSV4_SPARSE_KERNELS``,
    ``SGLANG_DSV4_SPARSE_PREFILL_ROUTE`` and FlashMLA's usability, read once.

    Made by :meth:`from_env`: the SGLang backend makes one when it is built and
    passes it to the core; a core call given none uses :func:`default_choice`
    (one per device, made at its first use). Nothing here reads the
    environment again, so a change to either variable after a choice is made
    needs a new one.

    Every answer about which kernel runs, at how many heads, and by which
    sparse-prefill route, comes from here.
    """

    requested: str  # "auto", "flashmla" or "triton"
    device: torch.device
    flashmla_usable: bool
    flashmla_why: str  # why FlashMLA can or cannot run on ``device``
    prefill_routes: str = "auto"  # SGLANG_DSV4_SPARSE_PREFILL_ROUTE
    check_bounds: bool = False  # SGLANG_DSV4_SPARSE_CHECK_BOUNDS

    @classmethod
    def from_env(cls, device, settings: Optional[config.Settings] = None) -> "KernelChoice":
        """The flags (``settings``, or read now) and FlashMLA's status on ``device`` (CUDA without an index: the current GPU)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        settings = config.read_settings() if settings is None else settings
        usable, why = flashmla_status(device.index) if device.type == "cuda" else (False, "no CUDA device")
        return cls(settings.kernels, device, usable, why, settings.prefill_route, settings.check_bounds)

    @functools.cached_property
    def triton_only(self) -> "KernelChoice":
        """This choice with the Triton kernels forced (the "native" prefill route), made once."""
        return dataclasses.replace(self, requested="triton")

    @functools.cached_property
    def flashmla_legacy(self) -> bool:
        """FlashMLA's SM90 sparse kernels sit behind ``use_legacy=True`` (asked once, where FlashMLA runs)."""
        return flashmla_use_legacy(self.device)

    def use_flashmla(self, num_heads: int) -> bool:
        """Whether a call of ``num_heads`` heads goes to FlashMLA (heads zero-padded up to 64 or 128)."""
        if self.requested == "triton" or self.device.type != "cuda":
            if self.requested == "flashmla":
                raise RuntimeError("SGLANG_DSV4_SPARSE_KERNELS=flashmla needs a CUDA device")
            return False
        padded = flashmla_padded_heads(num_heads)
        if self.requested == "flashmla":
            if not self.flashmla_usable:
                raise RuntimeError(f"SGLANG_DSV4_SPARSE_KERNELS=flashmla but FlashMLA cannot run: {self.flashmla_why}")
            if padded is None:
                raise RuntimeError(f"SGLANG_DSV4_SPARSE_KERNELS=flashmla but FlashMLA takes at most 128 heads, got {num_heads}")
            return True
        return self.flashmla_usable and padded is not None

    def padded_heads(self, num_heads: int) -> int:
        """The head count a call of ``num_heads`` heads runs at: FlashMLA's 64 or 128 where it runs, else ``num_heads``."""
        return flashmla_padded_heads(num_heads) if self.use_flashmla(num_heads) else num_heads

    def prefill_route(self, compress_ratio: int, heads: int) -> str:
        """The route of a direct core call (``prefill_layer(route="auto")``) at ``heads`` real heads.

        This package's own routes (no SGLang to hand a layer to): ``index``
        keeps index rows everywhere, every other setting takes
        :data:`routing.NARROW_ROUTES` below 64 heads and ``index`` above.
        The SGLang backend routes by shape instead (:mod:`routing`).
        """
        mode = "index" if self.prefill_routes == "index" else "ours"
        return routing.RoutePolicy(mode, sglang_available=False).routes(
            routing.StepShape(0, 0, 0, heads), (compress_ratio,))[compress_ratio]

    def heads_to_run(self, real_heads: int, available_heads: int) -> int:
        """How many of a (possibly zero-padded) query's heads to hand the kernels.

        SGLang pads a rank's heads to 64 for FlashMLA; when FlashMLA runs, the
        padded query goes as it is (no copy), and the Triton kernels get the
        real heads only. The answer depends on head counts only, so it is the
        same at CUDA-graph capture and replay.
        """
        if available_heads in FLASHMLA_HEADS and self.use_flashmla(available_heads):
            return available_heads
        return real_heads

    def describe(self) -> str:
        """One line naming the kernels in use, for the plugin's log."""
        choice, why = self.requested, self.flashmla_why
        if self.device.type != "cuda":
            return f"kernels={choice}: Triton (no CUDA device)"
        if choice == "triton":
            return "kernels=triton: Triton everywhere (forced)"
        if not self.flashmla_usable:
            if choice == "flashmla":
                return f"kernels=flashmla: ERROR, FlashMLA cannot run ({why})"
            return f"kernels={choice}: Triton ({why})"
        if choice == "flashmla":
            return f"kernels=flashmla: FlashMLA everywhere ({why}; heads zero-padded to 64/128)"
        return f"kernels=auto: FlashMLA ({why}; heads zero-padded to 64/128), Triton past 128 heads"


@functools.lru_cache(maxsize=None)
def default_choice(device: torch.device) -> KernelChoice:
    """The choice of a core call given none: made from the environment at the first call on ``device``, then kept.

    After changing ``SGLANG_DSV4_SPARSE_KERNELS``, pass ``choice=KernelChoice.from_env(device)``
    (or call ``default_choice.cache_clear()``).
    """
    return KernelChoice.from_env(device)


def choice_for_call(device: torch.device) -> KernelChoice:
    """The choice of a core call given none: :func:`default_choice`, with the bounds flag as the environment has it now.

    Direct callers (tests, scripts) may toggle ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS``
    between calls; the SGLang backend passes its own choice, read once.
    """
    choice = default_choice(device)
    bounds = config.CHECK_BOUNDS.parse(os.environ)
    return choice if bounds == choice.check_bounds else dataclasses.replace(choice, check_bounds=bounds)


def use_flashmla(device: torch.device, num_heads: int) -> bool:
    """:meth:`KernelChoice.use_flashmla` under the environment as it is now (read at every call)."""
    return KernelChoice.from_env(device).use_flashmla(num_heads)


def heads_to_run(real_heads: int, available_heads: int, device: torch.device) -> int:
    """:meth:`KernelChoice.heads_to_run` under the environment as it is now (read at every call)."""
    return KernelChoice.from_env(device).heads_to_run(real_heads, available_heads)


def _pad_heads(q: torch.Tensor, attn_sink: Optional[torch.Tensor], head_dim: int):
    """Zero-pad ``q``'s head dim (axis ``head_dim``) and the sink to FlashMLA's count."""
    heads = q.shape[head_dim]
    padded = flashmla_padded_heads(heads)
    if padded == heads:
        return q, attn_sink
    shape = list(q.shape)
    shape[head_dim] = padded
    q_pad = q.new_zeros(shape)
    q_pad.narrow(head_dim, 0, heads).copy_(q)
    sink_pad = None
    if attn_sink is not None:
        sink_pad = attn_sink.new_zeros(padded)
        sink_pad[:heads] = attn_sink
    return q_pad, sink_pad


def describe(device: Optional[torch.device] = None) -> str:
    """One line naming the kernels in use, for the plugin's log (the environment as it is now)."""
    return KernelChoice.from_env("cpu" if device is None else device).describe()


def sparse_prefill_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    topk_length: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    sm_scale: float = L.SOFTMAX_SCALE,
    *,
    choice: Optional[KernelChoice] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``flash_mla_sparse_fwd``-style attention over a materialized bf16 workspace.

    The arguments are not checked here: the core checks its own once a layer,
    at its boundary (``kernels.sparse_attn.sparse_mla_fwd`` is the checked
    kernel). ``choice``: None is :func:`default_choice` of ``q``'s device.
    ``out``: where the Triton kernel writes its result (FlashMLA returns its
    own tensor; the caller copies it where it is not ``out``).
    """
    return sparse_prefill_attention_lse(q, kv, indices, topk_length, attn_sink, sm_scale, choice=choice, out=out)[0]


def sparse_prefill_attention_lse(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    topk_length: torch.Tensor,
    attn_sink: Optional[torch.Tensor] = None,
    sm_scale: float = L.SOFTMAX_SCALE,
    *,
    choice: Optional[KernelChoice] = None,
    out: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparse_prefill_attention` and each head's natural-log lse (``+inf`` for a row with no key)."""
    choice = choice if choice is not None else choice_for_call(q.device)
    if choice.use_flashmla(q.shape[1]):
        from flash_mla import flash_mla_sparse_fwd

        q_run, sink_run = _pad_heads(q, attn_sink, 1)
        out, _, lse = flash_mla_sparse_fwd(
            q_run, kv, indices, sm_scale, L.HEAD_DIM, sink_run, topk_length, use_legacy=choice.flashmla_legacy
        )
        return out[:, : q.shape[1]], lse[:, : q.shape[1]]
    out, _, lse = sparse_mla_fwd_unchecked(q, kv, indices, sm_scale, attn_sink, topk_length, out=out,
                                           check_bounds=choice.check_bounds)
    return out, lse


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    page_size: int,
    indices: torch.Tensor,
    topk_length: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_page_size: Optional[int] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    sched_meta=None,
    sm_scale: float = L.SOFTMAX_SCALE,
    *,
    choice: Optional[KernelChoice] = None,
) -> torch.Tensor:
    """Sparse attention straight from the paged fp8 caches: ``q [b, s_q, h, 512]``.

    The caches come as ``(num_pages, page_bytes)`` uint8 views, 16-byte
    aligned (what the core's checks return); like the other arguments they
    are not checked here (``kernels.sparse_attn.sparse_mla_decode_paged`` is
    the checked kernel). ``sched_meta`` is FlashMLA's scheduler metadata,
    shared by every layer that has the same shapes and lengths (one per
    compress ratio per step). ``choice``: None is :func:`default_choice` of
    ``q``'s device.
    """
    choice = choice if choice is not None else choice_for_call(q.device)
    if choice.use_flashmla(q.shape[2]):
        from flash_mla import flash_mla_with_kvcache, get_mla_metadata

        main = L.flashmla_cache_view(k_cache, page_size)
        extra = None if extra_k_cache is None else L.flashmla_cache_view(extra_k_cache, extra_page_size)

        meta = sched_meta if sched_meta is not None else get_mla_metadata()[0]
        q_run, sink_run = _pad_heads(q, attn_sink, 2)
        out, _ = flash_mla_with_kvcache(
            q_run, main, None, None, L.HEAD_DIM, meta,
            softmax_scale=sm_scale, is_fp8_kvcache=True, indices=indices, attn_sink=sink_run,
            extra_k_cache=extra, extra_indices_in_kvcache=extra_indices,
            topk_length=topk_length, extra_topk_length=extra_topk_length,
            use_legacy=choice.flashmla_legacy,
        )
        return out[:, :, : q.shape[2]]
    out, _ = sparse_mla_decode_paged_unchecked(
        q, k_cache, page_size, indices, topk_length, attn_sink,
        extra_k_cache, extra_page_size, extra_indices, extra_topk_length, sm_scale, check_bounds=choice.check_bounds,
    )
    return out


def decode_sched_metas(device: torch.device, ratios) -> dict:
    """One fresh FlashMLA scheduler-metadata object per compress ratio, where FlashMLA can run on ``device``.

    FlashMLA fills one on its first use and reuses it for every later call of
    the same shapes, so a step's layers of one ratio share it. Empty where
    FlashMLA cannot run (the Triton kernels need none).
    """
    if torch.device(device).type != "cuda" or not flashmla_status(torch.device(device).index or 0)[0]:
        return {}
    from flash_mla import get_mla_metadata

    return {ratio: get_mla_metadata()[0] for ratio in ratios}
