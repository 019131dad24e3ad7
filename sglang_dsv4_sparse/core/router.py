"""The large-query router: which route an extend takes.

An extend (prefill chunk, or a MIXED batch) can run as sparse prefill
(workspace of dequantized rows + ``flash_mla_sparse_fwd``) or through the
paged decode kernel with one decode "query" per row. The sparse prefill route
is taken when ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` is on, and always when the
paged kernel in use cannot take that many query rows.

FlashMLA's decode scheduler keeps ``4 * (5 * b + 1)`` bytes of shared memory
for ``b`` query rows, so ``b`` is bounded by the device's shared memory per
SM (228 KB on Hopper: b <= 11673). The Triton paged kernel has no such bound.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import config
from ..dispatch import KernelChoice

# FlashMLA's decode scheduler: 4 bytes for each of 5 * b + 1 int32 entries.
SCHEDULER_BYTES_PER_ROW = 4 * 5
SCHEDULER_FIXED_BYTES = 4
FLAG = config.SPARSE_PREFILL.name
# SGLang's envs where SGLang is installed, else parsed as every flag is (config.py).
sparse_prefill_flag = config.sparse_prefill_flag


def scheduler_row_limit(shared_memory_bytes: int) -> int:
    """Largest ``b`` with ``4 * (5 * b + 1) <= shared_memory_bytes``."""
    return (shared_memory_bytes - SCHEDULER_FIXED_BYTES) // SCHEDULER_BYTES_PER_ROW


def flashmla_decode_row_limit(device: torch.device) -> int:
    """Largest ``b`` FlashMLA's decode scheduler fits in this device's shared memory per SM."""
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_multiprocessor", None) or props.shared_memory_per_block_optin
    return scheduler_row_limit(smem)


def paged_kernel_row_limit(choice: KernelChoice, num_heads: int) -> Optional[int]:
    """Row limit of the paged kernel ``choice`` runs at ``num_heads`` heads; None when unbounded (Triton)."""
    if choice.device.type == "cuda" and choice.use_flashmla(num_heads):
        return flashmla_decode_row_limit(choice.device)
    return None


def use_sparse_prefill(num_query_rows: int, *, row_limit: Optional[int], flag: Optional[bool] = None) -> bool:
    """Route an extend of ``num_query_rows`` rows: True for sparse prefill, False for paged."""
    if flag is None:
        flag = sparse_prefill_flag()
    return flag or (row_limit is not None and num_query_rows > row_limit)
