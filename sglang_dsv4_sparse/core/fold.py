"""A C128 layer at fewer than 64 heads, with neighbouring queries folded into one wide query.

A C128 query at position ``p`` reads the compressed rows ``[0, (p + 1) // 128)``
of its request and its window. ``g = 64 // h`` consecutive queries of one
request (a "group") therefore share every compressed row the first of them
reads; MQA shares the index list across heads, so to the attention kernel the
group is one query of ``g * h`` heads over those shared rows: FlashMLA runs it
at its full width of 64 heads with no zero padding, and each key row is read
once per group instead of once per query. What not every query of a group sees
(the window, and the one compressed row a query just past a multiple of 128
gains) runs through the shared-row kernel (``kernels/sparse_attn/shared_rows.py``),
whose tiles are the same groups: it skips the shared rows, starts from the
shared pass's partial result and applies the sink once, at the end.

Groups are fixed runs of ``g`` token rows of the step, so the shared pass reads
``q`` as it lies (``[T, h, 512]`` viewed as ``[T / g, g * h, 512]``); a group
that holds two requests' queries, or the last, partial one, shares nothing and
its queries read everything in the second pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..dispatch import KernelChoice, sparse_prefill_attention_lse
from ..kernels.indices import combined_index_width
from ..kernels.indices.plan_rows import fold_shared_rows
from ..kernels.sparse_attn.shared_rows import shared_rows_attention_unchecked, queries_per_tile
from .plan import PrefillPlan


@dataclass
class C128Fold:
    """The groups' shared compressed rows, as index rows for the shared pass (built once per step and head count)."""

    group_size: int  # g queries a group
    folded_tokens: int  # g * (T // g): the token rows the shared pass covers
    shared_indices: torch.Tensor  # (T // g, W) int32 workspace rows every query of the group reads, -1 after
    shared_lens: torch.Tensor  # (T // g,) int32
    skip_rows: torch.Tensor  # (cdiv(T, g),) int32 the same counts per shared-row tile (0 for the partial one)


def build_c128_fold(plan: PrefillPlan, heads: int) -> C128Fold:
    """Group the step's token rows ``g`` at a time and index each group's shared rows: one launch, no host sync."""
    if 128 not in plan.compressed:
        raise ValueError("the plan has no C128 rows (its StepInputs had no compressed_page_tables[128])")
    g = queries_per_tile(heads)
    rows = plan.compressed[128]
    width = combined_index_width(rows.max_rows, 0)
    shared_indices, shared_lens, skip_rows = fold_shared_rows(
        plan.req_of_token, plan.query_pos, rows.bounds, g, width, ratio=128
    )
    return C128Fold(
        group_size=g, folded_tokens=(plan.num_tokens // g) * g, shared_indices=shared_indices,
        shared_lens=shared_lens, skip_rows=skip_rows,
    )


def check_fold(fold: C128Fold, plan: PrefillPlan, heads: int) -> None:
    """``fold`` was built for this plan's token rows at ``heads`` heads (the kernels index with its shapes)."""
    if not isinstance(fold, C128Fold):
        raise TypeError(f"fold must be a C128Fold (build_c128_fold), got {type(fold).__name__}")
    g = queries_per_tile(heads)
    tokens = plan.num_tokens
    shapes = (fold.group_size, fold.folded_tokens, tuple(fold.skip_rows.shape), fold.shared_lens.shape[0])
    if shapes != (g, tokens // g * g, (-(-tokens // g),), tokens // g) or fold.shared_indices.shape[0] != tokens // g:
        raise ValueError(f"fold was built for another step or head count: group size {fold.group_size}, "
                         f"{fold.folded_tokens} folded rows; this layer needs groups of {g} over {tokens} rows")
    if fold.skip_rows.device != plan.query_pos.device:
        raise ValueError(f"fold is on {fold.skip_rows.device}, the plan on {plan.query_pos.device}")


def c128_folded_attention(
    plan: PrefillPlan,
    fold: C128Fold,
    q: torch.Tensor,
    kv: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    *,
    choice: Optional[KernelChoice] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One C128 layer over its staged workspace ``kv`` (``[compressed | window]`` rows), ``q [T, h, 512]``
    (written into ``out`` when given).

    Unchecked (``prefill_layer(..., route="folded")`` checks its arguments); ``choice``: None is the default of q's device.
    """
    num_tokens, heads, dim = q.shape
    g, folded = fold.group_size, fold.folded_tokens
    prior = None
    # FlashMLA takes no index row of width 0 (a step whose requests have no compressed row yet).
    if folded and fold.shared_indices.shape[1]:
        wide = q[:folded].reshape(folded // g, g * heads, dim)
        out_shared, lse_shared = sparse_prefill_attention_lse(
            wide, kv, fold.shared_indices[:, None, :], fold.shared_lens, choice=choice
        )
        prior = (out_shared.reshape(folded, heads, dim), lse_shared.reshape(folded, heads).contiguous())
    rows = plan.compressed[128]
    return shared_rows_attention_unchecked(
        q, kv, plan.req_of_token, plan.query_pos, plan.seq_lens, plan.swa_gather_lens, rows.swa_base, plan.window,
        128, rows.base, attn_sink, skip_rows=fold.skip_rows, prior=prior, out=out,
    )[0]

