"""Benchmark-only: the bytes of the paged dequant with none of its arithmetic.

``gather_rows_raw`` reads what ``dequantize_k_cache_paged`` reads for a token
(its 576 data bytes and 8 scale bytes, same addresses, same launch shape and
L2 policy) and writes 1024 bytes per token as the dequant does, but only
copies bytes.  ``scripts/bench_kernels.py`` times it on the same ids as the
dequant: the access pattern's own ceiling, which the plain device-to-device
copy (sequential on both sides) overstates for scattered rows.

Output row: ``data[0:576] | data[0:440] | scale bytes[0:8]`` (576 + 440 + 8 = 1024);
an id outside ``[0, num_pages * page_size)`` gives a zero row and reads
nothing, as in the dequant.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.dequant import DEQUANT_BLOCK_TOKENS, DEQUANT_EVICTION, DEQUANT_NUM_WARPS
from sglang_dsv4_sparse.kernels.paged_rows import row_byte_offsets
from sglang_dsv4_sparse.kernels.triton_utils import check_launch_device
from sglang_dsv4_sparse.validation import INDEX_DTYPES, bounds_check_enabled, check_ids_in_range, check_int, check_tensor

OUT_ROW_BYTES = 2 * L.HEAD_DIM  # what the dequant writes: 512 bf16 values
# The largest power of two in a data row (512 bytes), loaded as one tile; the rest (64) as a second.
_HEAD_BYTES = 1 << (L.DATA_BYTES.bit_length() - 1)
_REPEAT_BYTES = OUT_ROW_BYTES - L.DATA_BYTES - L.SCALE_BYTES  # 440


@triton.jit
def _gather_rows_raw_kernel(
    cache_ptr,
    ids_ptr,
    out_ptr,
    num_tokens,
    capacity,
    PAGE_SIZE: tl.constexpr,
    PAGE_BYTES: tl.constexpr,
    DATA_BYTES: tl.constexpr,
    SCALE_BYTES: tl.constexpr,
    OUT_BYTES: tl.constexpr,
    HEAD_BYTES: tl.constexpr,
    REPEAT_BYTES: tl.constexpr,
    BLOCK_T: tl.constexpr,
    EVICTION: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = rows < num_tokens
    loc = tl.load(ids_ptr + rows, mask=ok, other=-1).to(tl.int64)
    live = ok & (loc >= 0) & (loc < capacity)
    data, scales = row_byte_offsets(tl.where(live, loc, 0), PAGE_SIZE, PAGE_BYTES)
    data = tl.multiple_of(data, 64)
    scales = tl.multiple_of(scales, 8)
    head = tl.arange(0, HEAD_BYTES)
    tail = tl.arange(0, DATA_BYTES - HEAD_BYTES)
    sc = tl.arange(0, SCALE_BYTES)
    a = tl.load(cache_ptr + data[:, None] + head[None, :], mask=live[:, None], other=0, eviction_policy=EVICTION)
    b = tl.load(cache_ptr + data[:, None] + HEAD_BYTES + tail[None, :], mask=live[:, None], other=0,
                eviction_policy=EVICTION)
    s = tl.load(cache_ptr + scales[:, None] + sc[None, :], mask=live[:, None], other=0, eviction_policy=EVICTION)
    o = out_ptr + rows[:, None] * OUT_BYTES
    tl.store(o + head[None, :], a, mask=ok[:, None])
    tl.store(o + HEAD_BYTES + tail[None, :], b, mask=ok[:, None])
    tl.store(o + DATA_BYTES + head[None, :], a, mask=ok[:, None] & (head < REPEAT_BYTES)[None, :])
    tl.store(o + OUT_BYTES - SCALE_BYTES + sc[None, :], s, mask=ok[:, None])


def gather_rows_raw(
    quant_k_cache: torch.Tensor, token_ids: torch.Tensor, page_size: int, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``(n, 1024)`` uint8: each token's raw bytes laid out as the module docstring says.

    An id outside ``[0, num_pages * page_size)`` gives a zero row (under
    ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` only -1 may, as in the dequant).
    """
    check_int("page_size", page_size, minimum=1)
    cache_u8 = L.as_byte_cache(quant_k_cache, page_size, "quant_k_cache")
    check_launch_device("quant_k_cache", cache_u8)
    check_tensor("token_ids", token_ids, dtypes=INDEX_DTYPES, ndim=1, device=cache_u8.device, contiguous=True)
    n = token_ids.shape[0]
    if out is None:
        out = torch.empty((n, OUT_ROW_BYTES), dtype=torch.uint8, device=cache_u8.device)
    else:
        check_tensor("out", out, dtypes=(torch.uint8,), shape=(n, OUT_ROW_BYTES), device=cache_u8.device,
                     contiguous=True)
    capacity = cache_u8.shape[0] * page_size
    if bounds_check_enabled():
        check_ids_in_range("token_ids", token_ids, capacity, allow_negative=True)
    if n:
        _gather_rows_raw_kernel[(triton.cdiv(n, DEQUANT_BLOCK_TOKENS),)](
            cache_u8, token_ids, out, n, capacity,
            PAGE_SIZE=page_size, PAGE_BYTES=cache_u8.shape[1],
            DATA_BYTES=L.DATA_BYTES, SCALE_BYTES=L.SCALE_BYTES, OUT_BYTES=OUT_ROW_BYTES, HEAD_BYTES=_HEAD_BYTES,
            REPEAT_BYTES=_REPEAT_BYTES, BLOCK_T=DEQUANT_BLOCK_TOKENS, EVICTION=DEQUANT_EVICTION,
            num_warps=DEQUANT_NUM_WARPS,
        )
    return out
