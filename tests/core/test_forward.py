"""Per-layer forward: both ways of laying out a C4 layer's compressed rows, and every route
of every layer kind against the dense reference."""

import pytest
import torch

from sglang_dsv4_sparse.core.forward import PREFILL_ROUTES, Workspace, choose_c4_rows, prefill_layer
from sglang_dsv4_sparse.core.plan import build_prefill_plan
from sglang_dsv4_sparse.reference import layer_attention_reference
from testing import shared_prompt_inputs
from sglang_dsv4_sparse.stack_check import StackConfig, step_inputs, build_stack, deterministic_topk, layer_q


@pytest.mark.parametrize("c4_rows", ["all", "selected"])
def test_c4_layer_all_and_selected_rows_match_the_reference(device, c4_rows):
    # A 20-query chunk after a 120-token prefix: "selected" compacts the rows the
    # top-k picks (with -1 holes) into the workspace and remaps the top-k.
    cfg = StackConfig(ratios=(0, 4), heads=4, topk=8, prompt_len=140, decode_steps=0)
    stack = build_stack(cfg, device)
    inputs = step_inputs(stack, 120, 140)
    plan = build_prefill_plan(inputs)
    pos = torch.arange(120, 140, device=stack.device)
    args = (layer_q(stack, 1, pos), stack.swa_caches[1], 4, stack.compressed_caches[1],
            deterministic_topk(stack, 1, pos), stack.sinks[1])
    out = prefill_layer(plan, Workspace(stack.device), *args, c4_rows=c4_rows)
    ref = layer_attention_reference(inputs, *args)
    assert float((out.float() - ref).norm() / ref.norm()) <= 1e-2


def test_auto_picks_selected_only_for_huge_sparsely_read_contexts():
    assert choose_c4_rows(30_000, 8192, 512) == "all"
    assert choose_c4_rows(262_144, 1, 512) == "all"  # measured: all rows still faster at 1M tokens
    assert choose_c4_rows(4_000_000, 1, 512) == "selected"
    assert choose_c4_rows(4_000_000, 8192, 512) == "all"


def test_bad_c4_rows_is_rejected_on_any_layer(device):
    cfg = StackConfig(ratios=(0,), heads=4, topk=8, prompt_len=20, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 0, 20))
    q = layer_q(stack, 0, torch.arange(20, device=stack.device))
    with pytest.raises(ValueError, match="c4_rows"):
        prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 0, c4_rows="some")


@pytest.mark.parametrize("ratio, route", [(r, route) for r, routes in PREFILL_ROUTES.items() for route in routes])
@pytest.mark.parametrize("heads, start, end", [
    (16, 256, 275),  # a chunk from a 128 boundary
    (8, 300, 322),   # off one, across 383 -> 384 only for C4's 4-row steps
    (3, 100, 170),   # 21 queries a tile, across position 127
    (1, 500, 501),   # a one-token chunk
    (64, 250, 262),  # one query a tile (the widest the shared-row kernel takes)
])
def test_every_route_matches_the_reference(device, ratio, route, heads, start, end):
    layer = {0: 0, 4: 1, 128: 2}[ratio]
    cfg = StackConfig(ratios=(0, 4, 128), heads=heads, topk=16, prompt_len=end, decode_steps=0)
    stack = build_stack(cfg, device)
    inputs = step_inputs(stack, start, end)
    plan = build_prefill_plan(inputs)
    pos = torch.arange(start, end, device=stack.device)
    topk = deterministic_topk(stack, layer, pos) if ratio == 4 else None
    args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer], topk,
            stack.sinks[layer])
    out = prefill_layer(plan, Workspace(stack.device), *args, route=route)
    ref = layer_attention_reference(inputs, *args)
    assert float((out.float() - ref).norm() / ref.norm()) <= 1e-2


def test_bad_route_is_rejected(device):
    cfg = StackConfig(ratios=(0,), heads=65, topk=8, prompt_len=20, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 0, 20))
    q = layer_q(stack, 0, torch.arange(20, device=stack.device))
    with pytest.raises(ValueError, match="route must be one of"):
        prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 0, route="folded")
    with pytest.raises(ValueError, match="at most 64 heads"):
        prefill_layer(plan, Workspace(stack.device), q, stack.swa_caches[0], 0, route="shared")


@pytest.mark.gpu
@pytest.mark.parametrize("ratio", [0, 128])
def test_gpu_32k_chunk_every_route(ratio):
    # A 32768-token chunk after a 300-token prefix, 16 heads: every route against the dense reference.
    layer = {0: 0, 128: 1}[ratio]
    start, end = 300, 300 + 32768
    cfg = StackConfig(ratios=(0, 128), heads=16, topk=16, prompt_len=end, decode_steps=0)
    stack = build_stack(cfg, "cuda")
    inputs = step_inputs(stack, start, end)
    plan = build_prefill_plan(inputs)
    pos = torch.arange(start, end, device=stack.device)
    args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer], None,
            stack.sinks[layer])
    ref = layer_attention_reference(inputs, *args)
    for route in PREFILL_ROUTES[ratio]:
        out = prefill_layer(plan, Workspace(stack.device), *args, route=route)
        assert float((out.float() - ref).norm() / ref.norm()) <= 1e-2, route


def test_an_explicit_kernel_choice_gives_the_same_results(device):
    # choice=None is the default choice of q's device: the same kernels as one made from the environment.
    from sglang_dsv4_sparse.core.forward import decode_layer
    from sglang_dsv4_sparse.core.plan import build_paged_plan, topk_to_token_ids
    from sglang_dsv4_sparse.dispatch import KernelChoice

    cfg = StackConfig(ratios=(0, 4, 128), heads=4, topk=8, prompt_len=141, decode_steps=0)
    stack = build_stack(cfg, device)
    choice = KernelChoice.from_env(stack.device)
    prefill_plan = build_prefill_plan(step_inputs(stack, 120, 140))
    decode_plan = build_paged_plan(step_inputs(stack, 140, 141))
    for layer, ratio in enumerate(cfg.ratios):
        pos = torch.arange(120, 140, device=stack.device)
        args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer],
                deterministic_topk(stack, layer, pos) if ratio == 4 else None, stack.sinks[layer])
        outs = [prefill_layer(prefill_plan, Workspace(stack.device), *args, **kw) for kw in ({}, dict(choice=choice))]
        assert torch.equal(outs[0], outs[1]), f"prefill C{ratio}"

        pos = torch.tensor([140], device=stack.device)
        ids, lens = (None, None)
        if ratio == 4:
            ids, lens = topk_to_token_ids(decode_plan, 4, deterministic_topk(stack, layer, pos))
            ids = ids[:, 0]
        args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer], ids,
                stack.sinks[layer])
        outs = [decode_layer(decode_plan, *args, topk_lengths=lens, **kw) for kw in ({}, dict(choice=choice))]
        assert torch.equal(outs[0], outs[1]), f"decode C{ratio}"


@pytest.mark.parametrize("ratio, route", [(r, route) for r, routes in PREFILL_ROUTES.items() for route in routes])
def test_out_takes_a_slice_of_a_wider_buffer(device, ratio, route):
    # SGLang's query is padded to 64 heads: the real heads' result goes straight into the padded output.
    layer = {0: 0, 4: 1, 128: 2}[ratio]
    cfg = StackConfig(ratios=(0, 4, 128), heads=8, topk=16, prompt_len=300, decode_steps=0)
    stack = build_stack(cfg, device)
    plan = build_prefill_plan(step_inputs(stack, 280, 300))
    pos = torch.arange(280, 300, device=stack.device)
    args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer],
            deterministic_topk(stack, layer, pos) if ratio == 4 else None, stack.sinks[layer])
    expected = prefill_layer(plan, Workspace(stack.device), *args, route=route)
    wide = torch.full((20, 16, 512), 7.0, dtype=torch.bfloat16, device=stack.device)
    got = prefill_layer(plan, Workspace(stack.device), *args, route=route, out=wide[:, :8])
    assert got.data_ptr() == wide.data_ptr() and torch.equal(wide[:, :8], expected)
    assert bool((wide[:, 8:] == 7).all())
    with pytest.raises(ValueError, match="out"):
        prefill_layer(plan, Workspace(stack.device), *args, route=route, out=wide[:, :4])


def test_index_rows_left_out_of_the_plan_are_built_on_demand(device):
    # The backend leaves out the index rows of layer kinds whose route does not read them; a layer that
    # takes the index route anyway gets the same rows, built then.
    cfg = StackConfig(ratios=(0, 128), heads=8, topk=16, prompt_len=300, decode_steps=0)
    stack = build_stack(cfg, device)
    inputs = step_inputs(stack, 250, 300)
    full, lean = build_prefill_plan(inputs), build_prefill_plan(inputs, index_rows=())
    assert lean.c0_indices is None and lean.c128_indices is None
    pos = torch.arange(250, 300, device=stack.device)
    for layer, ratio in enumerate(cfg.ratios):
        args = (layer_q(stack, layer, pos), stack.swa_caches[layer], ratio, stack.compressed_caches[layer], None,
                stack.sinks[layer])
        outs = [prefill_layer(plan, Workspace(stack.device), *args, route="index") for plan in (full, lean)]
        assert torch.equal(outs[0], outs[1]), ratio


def test_c4_paged_route_several_requests_and_wild_picks(device):
    # Three requests over one cached prompt, ragged chunks, 4 heads (16 queries a shared-row tile, so
    # tiles straddle requests): the "paged" route reads each top-k pick from the fp8 cache by its cache
    # id. Clean picks match the dense reference; picks past the query's rows, past the request's rows,
    # huge or negative read nothing, as on the index route.
    cfg = StackConfig(ratios=(4,), heads=4, topk=16, prompt_len=460, decode_steps=0)
    stack = build_stack(cfg, device)
    spans = [(100, 121), (250, 263), (380, 437)]
    dev = stack.device
    inputs, pos = shared_prompt_inputs(stack, spans)
    plan = build_prefill_plan(inputs)
    q = layer_q(stack, 0, pos)
    topk = deterministic_topk(stack, 0, pos)
    args = (stack.swa_caches[0], 4, stack.compressed_caches[0])
    out = prefill_layer(plan, Workspace(dev), q, *args, topk, stack.sinks[0], route="paged")
    ref = layer_attention_reference(inputs, q, *args, topk, stack.sinks[0])
    assert float((out.float() - ref).norm() / ref.norm()) <= 1e-2

    wild = topk.clone()
    gen = torch.Generator().manual_seed(7)
    cells = torch.randint(0, wild.numel(), (40,), generator=gen)
    values = torch.tensor([-2, 2**31 - 1, 10_000, 115, 200], dtype=torch.int32)  # 115, 200: past early queries' rows
    wild.view(-1)[cells.to(dev)] = values[torch.randint(0, len(values), (40,), generator=gen)].to(dev)
    got = prefill_layer(plan, Workspace(dev), q, *args, wild, stack.sinks[0], route="paged")
    expected = prefill_layer(plan, Workspace(dev), q, *args, wild, stack.sinks[0], route="index")
    assert float((got.float() - expected.float()).norm() / expected.float().norm()) <= 1e-2
