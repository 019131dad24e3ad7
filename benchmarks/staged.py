"""Benchmark-only: the staged baseline for paged sparse decode, gather +
dequantize, then attend.

Every row an index names is dequantized into a bf16 workspace
(``sglang_dsv4_sparse.kernels.dequant.dequantize_k_cache_paged``, one launch
per cache) and
:func:`sparse_mla_fwd` attends over the workspace.  This is what a backend
does without a fused kernel; it writes and re-reads 1024 bytes per key on top
of the 584 it reads, and needs ``rows * (topk + extra_topk) * 1 KB`` of
workspace.  Used by the benchmark as the bar the fused kernel must clear.
"""

from __future__ import annotations

from typing import Optional

import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.dequant import dequantize_k_cache_paged
from sglang_dsv4_sparse.kernels.sparse_attn.decode_paged import byte_cache_arg
from sglang_dsv4_sparse.kernels.sparse_attn.prefill import sparse_mla_fwd
from sglang_dsv4_sparse.kernels.triton_utils import check_launch_device
from sglang_dsv4_sparse.validation import INDEX_DTYPES, check_tensor


def _stage(cache_u8, page_size, ids, lengths, workspace, offset):
    """Dequantize ``ids [rows, topk]`` into ``workspace[offset:]``; return local indices (-1 = skip)."""
    rows, topk = ids.shape
    cols = torch.arange(topk, device=ids.device)
    live = (ids >= 0) & (ids < cache_u8.shape[0] * page_size)
    if lengths is not None:
        live &= cols[None, :] < lengths.to(torch.int64)[:, None]
    ids = torch.where(live, ids, -1)
    dequantize_k_cache_paged(cache_u8, ids.reshape(-1), page_size, out=workspace[offset : offset + rows * topk])
    local = offset + torch.arange(rows, device=ids.device, dtype=torch.int64)[:, None] * topk + cols[None, :]
    return torch.where(live, local, -1)


def sparse_mla_decode_staged(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices_in_kvcache: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    head_dim_v: int = L.HEAD_DIM,
    page_size: Optional[int] = None,
    extra_page_size: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and results as :func:`sparse_mla_decode_paged`, through a bf16 workspace."""
    check_tensor("q", q, dtypes=(torch.bfloat16,), ndim=4, last_dim_contiguous=True)
    check_launch_device("q", q)
    b, s_q, h_q, d_qk = q.shape
    if softmax_scale is None:
        softmax_scale = d_qk**-0.5
    k_u8, page_size = byte_cache_arg("k_cache", k_cache, page_size, "page_size")
    check_tensor("indices", indices, dtypes=INDEX_DTYPES, shape=(b, s_q, None), device=q.device)
    if topk_length is not None:
        check_tensor("topk_length", topk_length, dtypes=INDEX_DTYPES, shape=(b,), device=q.device)
    if extra_topk_length is not None:
        check_tensor("extra_topk_length", extra_topk_length, dtypes=INDEX_DTYPES, shape=(b,), device=q.device)
    sources = [(k_u8, page_size, indices, topk_length)]
    if (extra_k_cache is None) != (extra_indices_in_kvcache is None):
        raise ValueError("extra_k_cache and extra_indices_in_kvcache go together")
    if extra_k_cache is not None:
        x_u8, extra_page_size = byte_cache_arg("extra_k_cache", extra_k_cache, extra_page_size, "extra_page_size")
        check_tensor("extra_indices_in_kvcache", extra_indices_in_kvcache, dtypes=INDEX_DTYPES, shape=(b, s_q, None),
                     device=q.device)
        sources.append((x_u8, extra_page_size, extra_indices_in_kvcache, extra_topk_length))
    rows = b * s_q
    width = sum(src[2].shape[2] for src in sources)
    workspace = torch.empty((rows * width, 1, L.HEAD_DIM), dtype=torch.bfloat16, device=q.device)
    local, offset = [], 0
    for cache_u8, ps, ids, lengths in sources:
        topk = ids.shape[2]
        lens = None if lengths is None else lengths.repeat_interleave(s_q)
        local.append(_stage(cache_u8, ps, ids.reshape(rows, topk).to(torch.int64), lens, workspace, offset))
        offset += rows * topk
    combined = torch.cat(local, dim=1).to(torch.int32).view(rows, 1, width)
    out, _, lse = sparse_mla_fwd(
        q.reshape(rows, h_q, d_qk), workspace, combined, softmax_scale, d_v=head_dim_v, attn_sink=attn_sink
    )
    return out.view(b, s_q, h_q, head_dim_v), lse.view(b, s_q, h_q).transpose(1, 2)
