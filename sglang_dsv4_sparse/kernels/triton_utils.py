"""Small facts about how Triton runs here, shared by the kernel wrappers."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (kernels run on the CPU through numpy).

    The interpreter's ``tl.dot`` on bf16 multiplies raw bits (Triton issue
    11584), so attention kernels take this as a constexpr and upcast dot
    operands to fp32 when it is set.
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_launch_device(name: str, t: torch.Tensor) -> None:
    """Triton launches on CUDA tensors, or on CPU tensors under the interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise ValueError(
        f"{name} is on {t.device}: the Triton kernels need CUDA tensors "
        "(or CPU tensors with TRITON_INTERPRET=1)"
    )
