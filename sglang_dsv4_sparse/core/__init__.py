"""The SGLang-free engine: per-step plan, per-layer forward, and the router."""

from .forward import Workspace, decode_layer, prefill_layer
from .plan import PagedPlan, PrefillPlan, StepInputs, build_paged_plan, build_prefill_plan
from .router import use_sparse_prefill

__all__ = [
    "StepInputs", "PrefillPlan", "PagedPlan", "build_prefill_plan", "build_paged_plan",
    "Workspace", "prefill_layer", "decode_layer", "use_sparse_prefill",
]
