"""Which request owns a flat position: a binary search over a starts array."""

import triton
import triton.language as tl


@triton.jit
def find_request(starts_ptr, flat, num_reqs, base, SEARCH_STEPS: tl.constexpr):
    """The last ``r`` in ``[0, num_reqs)`` with ``starts[r] - base <= flat``.

    ``flat`` is a block of int64 positions; ``SEARCH_STEPS`` must be at least
    ``num_reqs.bit_length()`` so the interval closes. Work per position is
    logarithmic in the batch, so grids can follow tokens instead of requests.
    """
    lo = tl.zeros(flat.shape, dtype=tl.int32)
    hi = tl.zeros(flat.shape, dtype=tl.int32) + (num_reqs - 1)
    for _ in tl.static_range(SEARCH_STEPS):
        active = lo < hi
        mid = (lo + hi + 1) // 2
        start = tl.load(starts_ptr + mid, mask=active, other=0).to(tl.int64) - base
        right = active & (start <= flat)
        lo = tl.where(right, mid, lo)
        hi = tl.where(active & ~right, mid - 1, hi)
    return lo
