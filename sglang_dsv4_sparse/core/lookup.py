"""Table lookups in torch that never index outside the table.

Advanced indexing with an index out of range is an error on the CPU and an
illegal address (the end of the serving process) on the GPU, and checking
indices first costs a host sync. So every lookup of the plan clamps its index
into the table and then replaces what it read with -1 where the index was
out of range: the kernels' rule (an id outside its tensor is a hole), in
torch, with no sync, so CUDA graphs can capture it.
"""

from __future__ import annotations

from typing import Optional

import torch


def take(table: torch.Tensor, idx: torch.Tensor, ok: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``table[idx]`` (int64) where ``ok`` and ``0 <= idx < len(table)``, else -1; ``table`` is 1-D."""
    inside = (idx >= 0) & (idx < table.shape[0])
    if ok is not None:
        inside = inside & ok
    if table.shape[0] == 0:
        return torch.full(idx.shape, -1, dtype=torch.int64, device=idx.device)
    got = table[idx.clamp(0, table.shape[0] - 1)].to(torch.int64)
    return torch.where(inside, got, -1)


def take2d(table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ok: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``table[rows, cols]`` (int64, broadcast) where ``ok`` and both lie inside ``table``, else -1."""
    inside = (rows >= 0) & (rows < table.shape[0]) & (cols >= 0) & (cols < table.shape[1])
    if ok is not None:
        inside = inside & ok
    if table.numel() == 0:
        return torch.full(inside.shape, -1, dtype=torch.int64, device=inside.device)
    got = table[rows.clamp(0, table.shape[0] - 1), cols.clamp(0, table.shape[1] - 1)].to(torch.int64)
    return torch.where(inside, got, -1)


def within(ids: torch.Tensor, capacity: Optional[int]) -> torch.Tensor:
    """``ids`` (int64) with every id outside ``[0, capacity)`` as -1 (``capacity`` None: no upper bound)."""
    ok = ids >= 0
    if capacity is not None:
        ok = ok & (ids < capacity)
    return torch.where(ok, ids, -1)
