"""The folded C128 route (core/fold.py) against the dense reference: head counts from 1 to 64
(groups of 64 to 1 queries), chunks that start on a multiple of 128 and off it, chunks whose length
is not a multiple of the group, a chunk that reads no compressed row, NaN in a head's q, groups that
straddle two requests."""

import pytest
import torch

from sglang_dsv4_sparse.core.fold import build_c128_fold
from sglang_dsv4_sparse.kernels.sparse_attn.shared_rows import queries_per_tile
from sglang_dsv4_sparse.core.forward import Workspace, prefill_layer
from sglang_dsv4_sparse.core.plan import build_prefill_plan
from sglang_dsv4_sparse.reference import layer_attention_reference
from testing import shared_prompt_inputs
from sglang_dsv4_sparse.stack_check import StackConfig, step_inputs, build_stack, layer_q

TOLERANCE = 1e-2  # bf16 output against the fp32 reference over the same fp8 caches


@pytest.mark.parametrize("heads, start, end", [
    (16, 256, 384),  # starts on a multiple of 128, groups of 4
    (8, 300, 437),   # off a boundary, crosses 383 -> 384, groups of 8 with a partial last one
    (1, 100, 230),   # 64 queries a group: some groups straddle position 127
    (64, 380, 390),  # one query a group: no folding
    (5, 0, 40),      # no compressed rows at all; 12 queries a group, 60 of 64 heads used
])
def test_folded_c128_matches_the_reference(device, heads, start, end):
    cfg = StackConfig(ratios=(128,), heads=heads, topk=8, prompt_len=460, decode_steps=0)
    stack = build_stack(cfg, device)
    inputs = step_inputs(stack, start, end)
    plan = build_prefill_plan(inputs)
    pos = torch.arange(start, end, device=stack.device)
    q = layer_q(stack, 0, pos)
    out = prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 128, stack.compressed_caches[0], None,
                        stack.sinks[0], route="folded")
    ref = layer_attention_reference(inputs, q, stack.swa_caches[0], 128, stack.compressed_caches[0], None, stack.sinks[0])
    assert out.shape == q.shape
    assert float((out.float() - ref).norm() / ref.norm()) <= TOLERANCE


def test_groups_share_what_their_first_query_sees(device):
    cfg = StackConfig(ratios=(128,), heads=16, topk=8, prompt_len=300, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 250, 261))
    fold = build_c128_fold(plan, 16)
    assert queries_per_tile(16) == 4 and fold.group_size == 4
    assert fold.folded_tokens == 8  # the last 3 queries form a partial group: no shared pass
    # Position p sees (p + 1) // 128 rows: the group of 250..253 and of 254..257 share the
    # lead's one row (255..257 read their second in the shared-row pass).
    assert fold.shared_lens.tolist() == [1, 1]
    assert fold.skip_rows.tolist() == [1, 1, 0]
    base = int(plan.compressed[128].base[0])
    assert fold.shared_indices[:, :2].tolist() == [[base, -1], [base, -1]]


def test_nan_in_a_head_stays_in_that_head(device):
    cfg = StackConfig(ratios=(128,), heads=8, topk=8, prompt_len=300, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 200, 216))
    q = layer_q(stack, 0, torch.arange(200, 216, device=stack.device))
    q[3, 2, 7] = float("nan")
    out = prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 128, stack.compressed_caches[0], None,
                        stack.sinks[0], route="folded")
    assert bool(out[3, 2].isnan().all())
    finite = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
    finite[3, 2] = False
    assert bool(torch.isfinite(out[finite]).all())


def test_several_requests_in_one_chunk(device):
    # Three requests over the same cached prompt (one pool row), ragged chunks: groups never mix requests.
    cfg = StackConfig(ratios=(128,), heads=16, topk=8, prompt_len=460, decode_steps=0)
    stack = build_stack(cfg, device)
    spans = [(100, 150), (250, 263), (380, 437)]
    dev = stack.device
    inputs, pos = shared_prompt_inputs(stack, spans)
    plan = build_prefill_plan(inputs)
    q = layer_q(stack, 0, pos)
    fold = build_c128_fold(plan, 16)
    # Groups of 4 token rows: 50 + 13 + 57 rows, so the groups at rows 48 and 60 hold two requests
    # and share nothing; the others share what their first query sees.
    assert fold.shared_lens[12].item() == 0 and fold.shared_lens[15].item() == 0
    assert fold.shared_lens[11].item() == (100 + 44 + 1) // 128
    out = prefill_layer(plan, Workspace(dev), q, stack.swa_caches[0], 128, stack.compressed_caches[0], None,
                        stack.sinks[0], route="folded", fold=fold)
    ref = layer_attention_reference(inputs, q, stack.swa_caches[0], 128, stack.compressed_caches[0], None, stack.sinks[0])
    assert float((out.float() - ref).norm() / ref.norm()) <= TOLERANCE


def test_a_fold_of_another_head_count_is_rejected(device):
    cfg = StackConfig(ratios=(128,), heads=16, topk=8, prompt_len=300, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 250, 261))
    q = layer_q(stack, 0, torch.arange(250, 261, device=stack.device))
    with pytest.raises(ValueError, match="fold was built for another step or head count"):
        prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 128, stack.compressed_caches[0], None,
                      stack.sinks[0], route="folded", fold=build_c128_fold(plan, 8))
    with pytest.raises(TypeError, match="fold must be a C128Fold"):
        prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 128, stack.compressed_caches[0], None,
                      stack.sinks[0], route="folded", fold="fold")
