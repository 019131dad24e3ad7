"""Triton sparse MLA attention for DeepSeek-V4.

* :func:`sparse_mla_fwd`: FlashMLA's ``flash_mla_sparse_fwd`` contract (bf16 keys),
  any ``h_q`` in 1..128 and any ``topk``.
* :func:`sparse_mla_decode_paged`: the sparse fp8 subset of FlashMLA's
  ``flash_mla_with_kvcache``, reading the paged V4 caches and dequantizing in
  the attention loop.
* :func:`sparse_mla_decode_staged`: the gather-dequantize-then-attend baseline
  (benchmarks only).
"""

from .decode_paged import sparse_mla_decode_paged
from .configs import KernelConfig
from .prefill import sparse_mla_fwd
from .staged import sparse_mla_decode_staged

__all__ = ["KernelConfig", "sparse_mla_decode_paged", "sparse_mla_decode_staged", "sparse_mla_fwd"]
