"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (not a tensor, wrong dtype) or ``ValueError``
(wrong shape, device, layout, range) with a message that names the argument and
says what was expected, so a bad call fails at the boundary instead of reading
or writing out of bounds inside a kernel.

Ids are the exception: checking their values costs a host sync, so it happens
only under ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1``. Without the flag the kernels
mask instead, with one rule everywhere: an id outside its tensor's range
(negative, or past the end) reads nothing and gives an empty result (a zero
row, a skipped key, an index of -1). With the flag, -1 is the one legal
negative id (a hole) and any other id out of range raises ``ValueError``.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

import torch

from . import config

INDEX_DTYPES = (torch.int32, torch.int64)


def env_flag(name: str, default: bool) -> bool:
    """A boolean environment flag, parsed as every flag is (:mod:`~sglang_dsv4_sparse.config`): unset or empty
    is ``default``, anything but a switch value is an error naming the variable."""
    return config.Flag(name, "1" if default else "0", (), "").parse(os.environ)


def bounds_check_enabled() -> bool:
    """``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` also range-checks every id (host sync).

    Read at each call: for the public kernel functions and direct core calls.
    The SGLang backend reads it once, into its kernel choice.
    """
    return config.CHECK_BOUNDS.parse(os.environ)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return " or ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(
    name: str,
    t,
    *,
    dtypes: Optional[Sequence[torch.dtype]] = None,
    ndim: Optional[int] = None,
    shape: Optional[Sequence[Optional[int]]] = None,
    device: Optional[torch.device] = None,
    contiguous: bool = False,
    last_dim_contiguous: bool = False,
) -> torch.Tensor:
    """Check one tensor argument; ``None`` entries in ``shape`` match any size."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {_dtype_names(dtypes)}, got {str(t.dtype).replace('torch.', '')}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, t.shape)):
            if want is not None and want != got:
                expected = tuple("*" if s is None else s for s in shape)
                raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)} (axis {axis})")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if last_dim_contiguous and t.dim() and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have a unit stride in its last dim, got strides {t.stride()}")
    return t


def check_int(name: str, value, *, minimum: Optional[int] = None, allowed: Optional[Sequence[int]] = None) -> int:
    """Check a plain Python int argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value}")
    return value


def check_ids_in_range(name: str, ids: torch.Tensor, upper: int, *, allow_negative: bool = False) -> None:
    """Range-check ids (a host sync): only called under the bounds-check flag.

    ``allow_negative`` admits -1 (a hole) and no other negative id: -2 is as
    wrong as an id past the end, although the kernels mask both alike.
    """
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    low_ok = lo >= -1 if allow_negative else lo >= 0
    if not low_ok or hi >= upper:
        holes = "-1 (a hole) or " if allow_negative else ""
        raise ValueError(f"{name} must hold {holes}ids in [0, {upper}), found values in [{lo}, {hi}]")


def counted_ids(indices: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``indices`` with the columns past each row's length as -1: the ids a kernel reads.

    ``lengths`` has one entry per index of ``indices``' first dim (None: every
    column counts); entries past a length are ignored by contract, so the
    bounds flag must not reject them.
    """
    if lengths is None:
        return indices
    cols = torch.arange(indices.shape[-1], device=indices.device)
    shape = (-1,) + (1,) * (indices.dim() - 1)
    return torch.where(cols < lengths.to(indices.device).view(shape), indices, -1)


def check_host_copy(name: str, t: torch.Tensor, host_name: str, host: Sequence[int]) -> None:
    """A tensor must hold the values of its host copy (a host sync: only under the bounds flag).

    Host copies size buffers and device tensors fill them, so a disagreement
    means a buffer sized for one batch filled with another.
    """
    got = [int(v) for v in t.tolist()]
    want = [int(v) for v in host]
    if len(got) != len(want):
        raise ValueError(f"{host_name} must have {len(got)} entries, one per entry of {name}; got {len(want)}")
    if got != want:
        i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        raise ValueError(f"{name} and {host_name} must hold the same values; entry {i} is {got[i]} and {want[i]}")
