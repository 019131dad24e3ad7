"""Benchmark-only: the key rows a sparse prefill reads, with none of its math.

``xor_gathered_rows`` reads, for every query, the bf16 key rows its index row
names (1024 bytes each, the bytes ``sparse_mla_fwd`` gathers) and folds them
into one row by XOR of their 8-byte words, which costs one integer op per word
and keeps every load live.  ``scripts/bench_attention.py`` times it on the
prefill benchmark's ids: how long the row traffic alone takes for that access
pattern, a floor under any attention kernel for the shape (its rows are
random, so queries share nothing but L2).  An id < 0 or >= ``s_kv`` is skipped
(reads nothing), as in the attention kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn.common import kv_ids
from sglang_dsv4_sparse.kernels.triton_utils import check_launch_device
from sglang_dsv4_sparse.validation import INDEX_DTYPES, check_tensor

# 8-byte words in a bf16 key row.
ROW_WORDS = 2 * L.HEAD_DIM // 8
# 32 keys a step on 4 warps: the fastest of 16-64 keys on 4-8 warps with 1-4
# pipeline stages in an exploration run (H200; docs/design-notes.md, "Sparse
# prefill kernel").
ROW_FLOOR_BLOCK_N = 32
ROW_FLOOR_NUM_WARPS = 4


@triton.jit
def _xor_gathered_rows_kernel(
    kv_words_ptr, idx_ptr, out_ptr, s_kv, topk, stride_idx_s, WORDS: tl.constexpr, BLOCK_N: tl.constexpr
):
    query = tl.program_id(0).to(tl.int64)
    words = tl.arange(0, WORDS)
    acc = tl.zeros([WORDS], tl.int64)
    for start in range(0, topk, BLOCK_N):
        # The prefill kernel's own id step: the same rows, skipped alike.
        kid, live = kv_ids(idx_ptr + query * stride_idx_s, start, topk, s_kv, BLOCK_N)
        rows = tl.load(kv_words_ptr + kid[:, None] * WORDS + words[None, :], mask=live[:, None], other=0)
        acc ^= tl.xor_sum(rows, 0)
    tl.store(out_ptr + query * WORDS + words, acc)


def xor_gathered_rows(kv: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``[s_q, 128]`` int64: per query, the XOR of the 8-byte words of the rows it names.

    Args:
        kv: ``[s_kv, 1, 512]`` bf16, contiguous (``sparse_mla_fwd``'s key buffer).
        indices: ``[s_q, 1, topk]`` int32/int64 rows of ``kv``; an id < 0 or
            >= ``s_kv`` is skipped.
    """
    check_tensor("kv", kv, dtypes=(torch.bfloat16,), shape=(None, 1, L.HEAD_DIM), contiguous=True)
    check_launch_device("kv", kv)
    check_tensor("indices", indices, dtypes=INDEX_DTYPES, ndim=3, device=kv.device, last_dim_contiguous=True)
    if indices.shape[1] != 1:
        raise ValueError(f"indices must have shape (s_q, 1, topk), got {tuple(indices.shape)}")
    s_q, topk = indices.shape[0], indices.shape[2]
    out = torch.empty((s_q, ROW_WORDS), dtype=torch.int64, device=kv.device)
    if s_q:
        _xor_gathered_rows_kernel[(s_q,)](
            kv.view(torch.int64), indices, out, kv.shape[0], topk, indices.stride(0),
            WORDS=ROW_WORDS, BLOCK_N=ROW_FLOOR_BLOCK_N, num_warps=ROW_FLOOR_NUM_WARPS,
        )
    return out
