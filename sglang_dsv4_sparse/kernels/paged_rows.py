"""Where a token's bytes sit in a paged V4 cache: one ``@triton.jit`` helper for every kernel that reads it.

A page of ``P`` tokens is ``P`` data rows of 576 bytes, then ``P`` scale rows
of 8 bytes, padded to a multiple of 576 (``layout.page_bytes``).  Token id
``t`` lives in page ``t // P``, slot ``t % P``.  Offsets are int64, so caches
past 2**31 bytes address correctly.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .. import layout as L

_DATA_BYTES = tl.constexpr(L.DATA_BYTES)
_SCALE_BYTES = tl.constexpr(L.SCALE_BYTES)


@triton.jit
def row_byte_offsets(loc, PAGE_SIZE: tl.constexpr, PAGE_BYTES: tl.constexpr):
    """Byte offsets (int64) of the data row and the scale row of token ids ``loc`` (int64)."""
    page = loc // PAGE_SIZE
    slot = loc - page * PAGE_SIZE
    base = page * PAGE_BYTES
    return base + slot * _DATA_BYTES, base + PAGE_SIZE * _DATA_BYTES + slot * _SCALE_BYTES
