"""Triton sparse MLA attention for DeepSeek-V4.

* :func:`sparse_mla_fwd`: FlashMLA's ``flash_mla_sparse_fwd`` contract (bf16 keys),
  any ``h_q`` in 1..128 and any ``topk``.
* :func:`sparse_mla_decode_paged`: the sparse fp8 subset of FlashMLA's
  ``flash_mla_with_kvcache``, reading the paged V4 caches and dequantizing in
  the attention loop.
* :func:`sparse_mla_verify_paged`: a speculative-decoding verify step over the
  same caches, each draft token as its own decode query, the rows a request's
  draft tokens share read once per request.

``common.py`` holds the ``@triton.jit`` steps both kernels share, ``configs.py``
how they are launched (:class:`KernelConfig` and the lists tried per head count
and grid size).  The staged decode baseline the benchmark compares against is
``benchmarks/staged.py``, outside the package.
"""

from .configs import KernelConfig
from .decode_paged import sparse_mla_decode_paged
from .prefill import sparse_mla_fwd
from .verify_paged import sparse_mla_verify_paged

__all__ = ["KernelConfig", "sparse_mla_decode_paged", "sparse_mla_fwd", "sparse_mla_verify_paged"]
