import pytest
import torch

from sglang_dsv4_sparse.core.plan import StepInputs, build_paged_plan, build_prefill_plan, topk_to_token_ids


def step_inputs(device, positions=None):
    # r0: prefix 3 + 2 new tokens; r1: 3 new tokens. Window 4, C4 pages of 2.
    req_to_token = torch.tensor([[40, 41, 42, 43, 44, 45], [50, 51, 52, 53, 54, 55], [60, 61, 62, 63, 64, 65]])
    full_to_swa = torch.arange(100) * 3 + 1
    return StepInputs(
        seq_lens=torch.tensor([5, 3], device=device),
        extend_lens=torch.tensor([2, 3], device=device),
        req_pool_indices=torch.tensor([2, 0], device=device),
        req_to_token=req_to_token.to(device),
        full_to_swa=full_to_swa.to(device),
        compressed_page_tables={4: torch.tensor([[5, 7], [2, 0]], device=device), 128: torch.tensor([[9], [4]], device=device)},
        seq_lens_cpu=[5, 3],
        extend_lens_cpu=[2, 3],
        positions=positions,
        compressed_page_sizes={4: 2, 128: 2},
        window=4,
    )


def test_prefill_plan_by_hand(device):
    plan = build_prefill_plan(step_inputs(device))
    assert plan.query_start_loc.tolist() == [0, 2, 5]
    assert plan.query_pos.tolist() == [3, 4, 0, 1, 2]
    # Window unions: r0 positions 0..4 (min(5, 2 + 4 - 1)), r1 positions 0..2.
    assert plan.swa_gather_lens.tolist() == [5, 3] and plan.swa_offsets.tolist() == [0, 5, 8]
    assert plan.swa_token_ids.tolist() == [f * 3 + 1 for f in (60, 61, 62, 63, 64, 40, 41, 42)]
    c0 = [row[: n].tolist() for row, n in zip(plan.c0_indices, plan.c0_lens.tolist())]
    assert c0 == [[0, 1, 2, 3], [1, 2, 3, 4], [5], [5, 6], [5, 6, 7]]
    c4 = plan.compressed[4]
    # r0 has 5 // 4 = 1 compressed row (page 5, slot 0 -> token 10); r1 has none.
    assert c4.token_ids.tolist() == [10] and c4.base.tolist() == [0, 1] and c4.swa_base.tolist() == [1, 6]
    assert plan.compressed[128].total == 0


def test_prefill_plan_c4_layer_indices(device):
    plan = build_prefill_plan(step_inputs(device))
    from sglang_dsv4_sparse.kernels.indices import combine_topk_swa_indices

    topk = torch.tensor([[0, -1], [0, 0], [0, 0], [0, 0], [0, 0]], dtype=torch.int32, device=device)
    c4 = plan.compressed[4]
    idx, lens = combine_topk_swa_indices(
        topk, plan.query_start_loc, plan.query_pos, plan.seq_lens, plan.swa_gather_lens, c4.base, c4.swa_base, 4, 4, 2
    )
    rows = [row[:n].tolist() for row, n in zip(idx, lens.tolist())]
    # pos 3 and 4 of r0 read 1 compressed row (workspace row 0) then their window.
    assert rows[0] == [0, 1, 2, 3, 4] and rows[1] == [0, 2, 3, 4, 5]
    assert rows[2:] == [[6], [6, 7], [6, 7, 8]]


def test_paged_plan_by_hand(device):
    plan = build_paged_plan(step_inputs(device), c128_width=4)
    swa = [row[0, :n].tolist() for row, n in zip(plan.swa_indices, plan.swa_lens.tolist())]
    f = lambda *ids: [i * 3 + 1 for i in ids]  # noqa: E731
    assert swa == [f(60, 61, 62, 63), f(61, 62, 63, 64), f(40), f(40, 41), f(40, 41, 42)]
    assert bool((plan.swa_indices[2, 0, 1:] == -1).all())
    # C128: no query has reached 128 tokens; width padded to 128 columns.
    assert plan.c128_indices.shape == (5, 1, 128) and bool((plan.c128_indices == -1).all())
    assert plan.c128_lens.tolist() == [0] * 5
    topk = torch.tensor([[0, 1], [0, -1], [1, 0], [0, 0], [0, 0]], device=device)
    ids, lens = topk_to_token_ids(plan, 4, topk)
    # (pos + 1) // 4: 1, 1, 0, 0, 0 rows readable; r0's row 0 is token 5 * 2 + 0.
    assert lens.tolist() == [1, 1, 0, 0, 0]
    assert ids.shape == (5, 1, 128) and ids[0, 0, :2].tolist() == [10, -1] and ids[1, 0, :2].tolist() == [10, -1]
    assert bool((ids[2:] == -1).all())


def test_explicit_positions_and_long_c128(device):
    # A decode-like step: one row per request at seq_len - 1, C128 rows present.
    inputs = step_inputs(device)
    inputs.seq_lens = torch.tensor([300, 129], device=device)
    inputs.seq_lens_cpu = [300, 129]
    inputs.extend_lens = torch.tensor([1, 1], device=device)
    inputs.extend_lens_cpu = [1, 1]
    inputs.req_to_token = torch.arange(3 * 300, device=device).view(3, 300)
    inputs.full_to_swa = torch.arange(900, device=device)
    inputs.compressed_page_tables = {128: torch.tensor([[9, 3], [4, 0]], device=device)}
    inputs.positions = torch.tensor([299, 128], device=device)
    plan = build_paged_plan(inputs)
    assert plan.c128_lens.tolist() == [2, 1]
    assert plan.c128_indices[0, 0, :3].tolist() == [18, 19, -1] and plan.c128_indices[1, 0, :2].tolist() == [8, -1]
    prefill = build_prefill_plan(inputs)
    rows = prefill.compressed[128]
    assert rows.token_ids.tolist() == [18, 19, 8] and rows.max_rows == 2
    assert len(prefill.c128_tiles) == 1 and prefill.c128_indices.shape == (2, 128)


def test_c128_query_tiles_match_one_tile(device):
    inputs = step_inputs(device)
    inputs.compressed_page_tables = {128: torch.tensor([[9, 3], [4, 0]], device=device)}
    whole = build_prefill_plan(inputs)
    tiled = build_prefill_plan(inputs, index_budget_bytes=2 * 128 * 4)  # 2 queries per tile
    assert [(t.start, t.end) for t in tiled.c128_tiles] == [(0, 2), (2, 4), (4, 5)]
    for tile in tiled.c128_tiles:
        idx, lens = tiled.c128_tile_indices(tile)
        assert torch.equal(idx, whole.c128_indices[tile.start : tile.end])
        assert torch.equal(lens, whole.c128_lens[tile.start : tile.end])


def test_bad_inputs_name_the_field(device):
    inputs = step_inputs(device)
    inputs.extend_lens_cpu = [6, 3]
    with pytest.raises(ValueError, match="extend_lens_cpu=6"):
        build_prefill_plan(inputs)
    inputs = step_inputs(device)
    inputs.compressed_page_tables = {8: inputs.compressed_page_tables[4]}
    with pytest.raises(ValueError, match="compress ratio"):
        build_prefill_plan(inputs)
    inputs = step_inputs(device)
    inputs.compressed_page_tables[128] = torch.tensor([[1]], device=device)
    with pytest.raises(ValueError, match=r"compressed_page_tables\[128\]"):
        build_prefill_plan(inputs)


def test_paged_plan_needs_no_host_lengths(device):
    inputs = step_inputs(device)
    with_host = build_paged_plan(inputs, c128_width=4)
    inputs.seq_lens_cpu = None
    without = build_paged_plan(inputs, c128_width=4)
    assert torch.equal(with_host.swa_indices, without.swa_indices)
    assert torch.equal(with_host.c128_indices, without.c128_indices)
    with pytest.raises(ValueError, match="seq_lens_cpu is required"):
        build_prefill_plan(inputs)
