"""A C128 layer at fewer than 64 heads, with neighbouring queries folded into one wide query.

A C128 query at position ``p`` reads the compressed rows ``[0, (p + 1) // 128)``
of its request and its window. ``g = 64 // h`` consecutive queries of one
request (a "group") therefore share every compressed row the first of them
reads; MQA shares the index list across heads, so to the attention kernel the
group is one query of ``g * h`` heads over those shared rows: FlashMLA runs it
at its full width of 64 heads with no zero padding, and each key row is read
once per group instead of once per query. What not every query of a group sees
runs per query at ``h`` heads: the window, and the one compressed row a query
just past a multiple of 128 gains (``g <= 64 < 128``, so at most one). The two
partial results merge by log-sum-exp; the sink is applied once, at the end.

Issue 16 describes the route. Until it is measured on a GPU the SGLang
backend takes it only with ``SGLANG_DSV4_SPARSE_C128_FOLD=1``
(docs/design-notes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..dispatch import KernelChoice, sparse_prefill_attention_lse
from ..kernels.indices import combine_topk_swa_indices, combined_index_width
from .plan import PrefillPlan

# FlashMLA's narrower head count on SM90; a group fills it.
FOLD_WIDTH = 64


@dataclass
class C128Fold:
    """Which queries form each group, and the index rows of both passes (built once per step)."""

    group_size: int  # g queries a group
    rows: torch.Tensor  # (G, g) int64 query row of each slot, -1 for a slot past its request's queries
    group_of_token: torch.Tensor  # (T,) int64
    slot_of_token: torch.Tensor  # (T,) int64
    shared_indices: torch.Tensor  # (G, W) int32 workspace rows every query of the group reads, -1 after
    shared_lens: torch.Tensor  # (G,) int32
    own_indices: torch.Tensor  # (T, W') int32 the rest of each query's rows: its extra compressed row and window
    own_lens: torch.Tensor  # (T,) int32


def fold_group_size(heads: int) -> int:
    """Queries a group holds at ``heads`` heads: ``64 // heads`` (1 at 64 heads and more: nothing to fold)."""
    return max(1, FOLD_WIDTH // heads)


def build_c128_fold(plan: PrefillPlan, heads: int) -> C128Fold:
    """Group each request's queries ``g`` at a time and build both passes' index rows; no host sync."""
    if 128 not in plan.compressed:
        raise ValueError("the plan has no C128 rows (its StepInputs had no compressed_page_tables[128])")
    g = fold_group_size(heads)
    rows = plan.compressed[128]
    device = plan.query_pos.device
    num_tokens, num_reqs = plan.num_tokens, plan.num_reqs
    qsl = plan.query_start_loc.to(torch.int64)
    req = plan.req_of_token
    rank = torch.arange(num_tokens, device=device) - qsl[req]
    ext = qsl[1:] - qsl[:-1]
    groups_per_req = torch.div(ext + g - 1, g, rounding_mode="floor")
    first_group = torch.cumsum(groups_per_req, 0) - groups_per_req
    # At most one partial group a request: a bound the host knows, so nothing syncs.
    num_groups = -(-num_tokens // g) + num_reqs
    group_of_token = first_group[req] + torch.div(rank, g, rounding_mode="floor")
    slot_of_token = rank % g
    members = torch.full((num_groups, g), -1, dtype=torch.int64, device=device)
    members[group_of_token, slot_of_token] = torch.arange(num_tokens, device=device)

    # The first query of a group has the smallest position: its rows are the shared ones.
    lead = members[:, 0]
    has_lead = lead >= 0
    lead_row = lead.clamp_min(0)
    visible = torch.div(plan.query_pos.to(torch.int64) + 1, 128, rounding_mode="floor")
    shared = torch.where(has_lead, visible[lead_row], 0)
    base = rows.base.to(torch.int64)[req[lead_row]]
    width = combined_index_width(rows.max_rows, 0)
    cols = torch.arange(width, device=device)
    shared_indices = torch.where(cols[None, :] < shared[:, None], base[:, None] + cols[None, :], -1)

    # Per query: the compressed row it sees beyond its group's shared ones (request-local), and its window.
    extra = shared[group_of_token]
    extra_pick = torch.where(visible > extra, extra, -1)[:, None].to(torch.int32)
    own_indices, own_lens = combine_topk_swa_indices(
        extra_pick, plan.query_start_loc, plan.query_pos, plan.seq_lens, plan.swa_gather_lens,
        rows.base, rows.swa_base, plan.window, 128, 1,
    )
    return C128Fold(
        group_size=g, rows=members, group_of_token=group_of_token, slot_of_token=slot_of_token,
        shared_indices=shared_indices.to(torch.int32), shared_lens=shared.to(torch.int32),
        own_indices=own_indices, own_lens=own_lens,
    )


def _as_log_weight(lse: torch.Tensor) -> torch.Tensor:
    """An empty row's ``+inf`` marker as ``-inf``: it adds nothing to a log-sum-exp merge."""
    return torch.where(lse == float("inf"), float("-inf"), lse)


def c128_folded_attention(
    fold: C128Fold,
    q: torch.Tensor,
    kv: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    *,
    choice: Optional[KernelChoice] = None,
) -> torch.Tensor:
    """One C128 layer over its staged workspace ``kv`` (``[compressed | window]`` rows), ``q [T, h, 512]``.

    Unchecked (``prefill_c128_folded`` checks its arguments); ``choice``: None is the default of q's device.
    """
    num_tokens, heads, dim = q.shape
    g = fold.group_size
    slot_ok = fold.rows >= 0
    q_groups = q[fold.rows.clamp_min(0)] * slot_ok[:, :, None, None].to(q.dtype)
    out_shared, lse_shared = sparse_prefill_attention_lse(
        q_groups.reshape(-1, g * heads, dim), kv, fold.shared_indices[:, None, :], fold.shared_lens, choice=choice
    )
    pick = (fold.group_of_token, fold.slot_of_token)
    out_shared = out_shared.view(-1, g, heads, dim)[pick].float()
    lse_shared = _as_log_weight(lse_shared.view(-1, g, heads)[pick].float())
    out_own, lse_own = sparse_prefill_attention_lse(q, kv, fold.own_indices[:, None, :], fold.own_lens, choice=choice)
    lse_own = _as_log_weight(lse_own.float())
    lse = torch.logaddexp(lse_shared, lse_own)
    empty = lse == float("-inf")
    safe = torch.where(empty, 0.0, lse)
    weight_shared = torch.where(empty, 0.0, torch.exp(lse_shared - safe))
    weight_own = torch.where(empty, 0.0, torch.exp(lse_own - safe))
    out = out_shared * weight_shared[..., None] + out_own.float() * weight_own[..., None]
    if attn_sink is not None:
        # The sink is one more logit in the softmax with a zero value row: it only rescales.
        out = out * torch.sigmoid(lse - attn_sink.float()[None, :])[..., None]
    return out.to(q.dtype)


def prefill_c128_folded(
    plan: PrefillPlan,
    workspace,
    q: torch.Tensor,
    swa_cache: torch.Tensor,
    compressed_cache: torch.Tensor,
    attn_sink: Optional[torch.Tensor] = None,
    fold: Optional[C128Fold] = None,
    *,
    choice: Optional[KernelChoice] = None,
) -> torch.Tensor:
    """``prefill_layer`` for a C128 layer through the folded route (``fold``: built once per step and head count)."""
    from .forward import _check_prefill, _stage_rows

    swa_cache, compressed_cache, choice = _check_prefill(
        plan, workspace, q, swa_cache, 128, compressed_cache, None, attn_sink, choice
    )
    if plan.num_tokens == 0:
        return q.new_empty(q.shape)
    fold = fold if fold is not None else build_c128_fold(plan, q.shape[1])
    rows = plan.compressed[128]
    kv = _stage_rows(plan, workspace, swa_cache, compressed_cache, rows.token_ids, rows.page_size)
    return c128_folded_attention(fold, q, kv, attn_sink, choice=choice)
