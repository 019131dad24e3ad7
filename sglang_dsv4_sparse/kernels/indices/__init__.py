"""Index kernels for the sparse prefill: SWA window ids and combined index rows."""

from .combine import combine_topk_swa_indices, combined_index_width
from .swa_token_ids import build_swa_token_ids

__all__ = ["build_swa_token_ids", "combine_topk_swa_indices", "combined_index_width"]
