"""Which attention kernels run: FlashMLA where the GPU has it, Triton elsewhere.

``SGLANG_DSV4_SPARSE_KERNELS`` picks: ``auto`` (default: FlashMLA on SM90/SM100
when ``flash_mla`` imports and the head count is one it takes, Triton
otherwise), ``flashmla`` (fail loudly if it cannot run) or ``triton``.

FlashMLA on SM90 takes only 64 or 128 query heads; a tensor-parallel rank of
DSv4-Flash holds 16 (TP 4) or 8 (TP 8). Rather than padding to 64 heads and
doing 4-8x the useful arithmetic, those head counts go to the Triton kernels,
which run at the native count.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from . import layout as L

KERNEL_CHOICES = ("auto", "flashmla", "triton")
FLASHMLA_HEADS = (64, 128)


def requested_kernels() -> str:
    value = os.environ.get("SGLANG_DSV4_SPARSE_KERNELS", "auto").strip().lower()
    if value not in KERNEL_CHOICES:
        raise ValueError(f"SGLANG_DSV4_SPARSE_KERNELS must be one of {KERNEL_CHOICES}, got {value!r}")
    return value


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


def use_flashmla(device: torch.device, num_heads: int) -> bool:
    """Whether this call goes to FlashMLA under the current kernel choice."""
    choice = requested_kernels()
    if choice == "triton" or device.type != "cuda":
        if choice == "flashmla":
            raise RuntimeError("SGLANG_DSV4_SPARSE_KERNELS=flashmla needs a CUDA device")
        return False
    usable, why = flashmla_status(device.index or 0)
    if choice == "flashmla":
        if not usable:
            raise RuntimeError(f"SGLANG_DSV4_SPARSE_KERNELS=flashmla but FlashMLA cannot run: {why}")
        if num_heads not in FLASHMLA_HEADS:
            raise RuntimeError(f"SGLANG_DSV4_SPARSE_KERNELS=flashmla but FlashMLA takes {FLASHMLA_HEADS} heads, got {num_heads}")
        return True
    return usable and num_heads in FLASHMLA_HEADS


def describe(device: Optional[torch.device] = None) -> str:
    """One line naming the kernels in use, for the plugin's log."""
    choice = requested_kernels()
    if device is None or device.type != "cuda":
        return f"kernels={choice}: Triton (no CUDA device)"
    usable, why = flashmla_status(device.index or 0)
    if choice == "triton":
        return "kernels=triton: Triton everywhere (forced)"
    if usable:
        return f"kernels={choice}: FlashMLA for {FLASHMLA_HEADS} heads ({why}), Triton for other head counts"
    return f"kernels={choice}: Triton ({why})"


def sparse_prefill_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    topk_length: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    sm_scale: float = L.SOFTMAX_SCALE,
) -> torch.Tensor:
    """``flash_mla_sparse_fwd``-style attention over a materialized bf16 workspace."""
    if use_flashmla(q.device, q.shape[1]):
        from flash_mla import flash_mla_sparse_fwd

        out, _, _ = flash_mla_sparse_fwd(
            q, kv, indices, sm_scale, L.HEAD_DIM, attn_sink, topk_length, use_legacy=flashmla_use_legacy(q.device)
        )
        return out
    from .kernels.sparse_attn import sparse_mla_fwd

    out, _, _ = sparse_mla_fwd(q, kv, indices, sm_scale, L.HEAD_DIM, attn_sink, topk_length)
    return out


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
) -> torch.Tensor:
    """Sparse attention straight from the paged fp8 caches: ``q [b, s_q, h, 512]``.

    ``sched_meta`` is FlashMLA's scheduler metadata, shared by every layer that
    has the same shapes and lengths (one per compress ratio per step).
    """
    main = L.flashmla_cache_view(k_cache, page_size)
    extra = None if extra_k_cache is None else L.flashmla_cache_view(extra_k_cache, extra_page_size)
    if use_flashmla(q.device, q.shape[2]):
        from flash_mla import flash_mla_with_kvcache, get_mla_metadata

        meta = sched_meta if sched_meta is not None else get_mla_metadata()[0]
        out, _ = flash_mla_with_kvcache(
            q, main, None, None, L.HEAD_DIM, meta,
            softmax_scale=sm_scale, is_fp8_kvcache=True, indices=indices, attn_sink=attn_sink,
            extra_k_cache=extra, extra_indices_in_kvcache=extra_indices,
            topk_length=topk_length, extra_topk_length=extra_topk_length,
            use_legacy=flashmla_use_legacy(q.device),
        )
        return out
    from .kernels.sparse_attn import sparse_mla_decode_paged

    out, _ = sparse_mla_decode_paged(
        q, main, indices, topk_length=topk_length, attn_sink=attn_sink,
        extra_k_cache=extra, extra_indices_in_kvcache=extra_indices, extra_topk_length=extra_topk_length,
        softmax_scale=sm_scale, head_dim_v=L.HEAD_DIM,
    )
    return out


def new_decode_sched_meta(device: torch.device, num_heads: int):
    """A fresh FlashMLA scheduler-metadata object, or None on the Triton path."""
    if not use_flashmla(device, num_heads):
        return None
    from flash_mla import get_mla_metadata

    return get_mla_metadata()[0]
