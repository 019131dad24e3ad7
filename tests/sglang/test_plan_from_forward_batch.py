"""Real ForwardBatch objects -> the core's step plan, checked against values worked out by hand.

The deployment (see conftest): req_to_token row r holds full-cache pages
PAGES_OF_ROW[r] = {0: (3, 0), 1: (1, 2), 2: (2, 3)}, so position p of row r is
full id ``page * 256 + p % 256``; the pool maps full id x to SWA id
``(7x + 3) % 1024``; SGLang's compressed caches are paged like the full cache,
so C4 row j of a request on full pages (a, b) is ``a * 64 + j`` (j < 64) and
C128 row j is ``a * 2 + j`` (j < 2). Window 128.
"""

import pytest

pytest.importorskip("sglang")

import torch  # noqa: E402


def _extend_plan(env, mode, rows, prefix, ext):
    fb = env.batch(mode, rows, prefix, ext)
    env.backend.init_forward_metadata(fb)
    step = env.backend._dsv4_step
    assert step is not None, "the backend should plan this step itself"
    assert step.metadata is env.backend.forward_metadata
    if step.route == "sparse_prefill":
        # The plan is built by the first layer on one of our routes; build it with both compressed kinds' rows.
        assert step.plan is None
        step.prefill_plan(env.backend, 4, "native")
        step.prefill_plan(env.backend, 128, "folded")
    return fb, step


def test_extend_two_requests_with_prefixes(dsv4_env, helpers):
    env = dsv4_env()
    loc, f2s = helpers.loc, helpers.f2s
    # r0: pool row 1 (pages 1, 2), 5 cached + 3 new; r1: pool row 0 (pages 3, 0), 130 cached + 2 new.
    _, step = _extend_plan(env, "EXTEND", rows=[1, 0], prefix=[5, 130], ext=[3, 2])
    assert step.route == "sparse_prefill" and step.num_tokens == 5
    plan = step.plan
    assert step.inputs.seq_lens_cpu == [8, 132] and step.inputs.extend_lens_cpu == [3, 2]
    # One page column (max seq 132 < 256), one row per request: the request's first page.
    assert step.inputs.compressed_page_tables[4].tolist() == [[1], [3]]
    assert step.inputs.compressed_page_tables[128].tolist() == [[1], [3]]
    assert step.inputs.compressed_page_sizes == {4: 64, 128: 2} and step.inputs.swa_page_size == 256
    assert plan.query_start_loc.tolist() == [0, 3, 5]
    assert plan.query_pos.tolist() == [5, 6, 7, 130, 131]
    # Window unions: r0 positions 0..7 (all 8), r1 min(132, 2 + 127) = 129 positions: 3..131.
    assert plan.swa_gather_lens.tolist() == [8, 129] and plan.swa_offsets.tolist() == [0, 8, 137]
    expected_swa = [f2s(loc(1, p)) for p in range(8)] + [f2s(loc(0, p)) for p in range(3, 132)]
    assert plan.swa_token_ids.tolist() == expected_swa
    # SWA-only layers: query (r0, pos 5) reads workspace rows 0..5; (r1, pos 131) reads
    # positions 4..131, which sit at 8 + (p - 3).
    c0 = helpers.valid_rows(*plan.c0_index_rows())
    assert c0[0] == list(range(6)) and c0[2] == list(range(8))
    assert c0[4] == [8 + p - 3 for p in range(4, 132)]
    # C4: r0 has 8 // 4 = 2 rows on page 1 (ids 64, 65), r1 has 33 on page 3 (192..224).
    c4 = plan.compressed[4]
    assert c4.rows_per_req.tolist() == [2, 33] and c4.total == 35
    assert c4.token_ids.tolist() == [64, 65] + list(range(192, 225))
    assert c4.base.tolist() == [0, 2] and c4.swa_base.tolist() == [35, 43]
    # C128: only r1 has a row (132 // 128 = 1): page 3, slot 0 -> id 6.
    c128 = plan.compressed[128]
    assert c128.token_ids.tolist() == [6] and c128.base.tolist() == [0, 0] and c128.swa_base.tolist() == [1, 9]
    # Query (r1, pos 130) reads (131 // 128 = 1) compressed row then its 128 window rows.
    c128_rows = helpers.valid_rows(*plan.c128_tile_indices(plan.c128_tiles[0]))
    assert c128_rows[3] == [0] + [9 + p - 3 for p in range(3, 131)]
    # Query (r0, pos 5) has no C128 row: its window, positions 0..5 at 1 + p.
    assert c128_rows[0] == list(range(1, 7))


def test_chunked_prefill_three_chunks(dsv4_env, helpers):
    env = dsv4_env()
    loc, f2s = helpers.loc, helpers.f2s
    # One request on pool row 2 (pages 2, 3), prefilled as [0, 40), [40, 140), [140, 200).
    expected = {
        # chunk: (first window position, C4 ids, C128 ids)
        (0, 40): (0, list(range(128, 138)), []),
        (40, 140): (0, list(range(128, 163)), [4]),
        (140, 200): (200 - (60 + 127), list(range(128, 178)), [4]),
    }
    for (start, end), (first, c4_ids, c128_ids) in expected.items():
        _, step = _extend_plan(env, "EXTEND", rows=[2], prefix=[start], ext=[end - start])
        plan = step.plan
        assert step.route == "sparse_prefill"
        assert plan.query_pos.tolist() == list(range(start, end))
        assert plan.swa_token_ids.tolist() == [f2s(loc(2, p)) for p in range(first, end)]
        assert plan.compressed[4].token_ids.tolist() == c4_ids
        assert plan.compressed[128].token_ids.tolist() == c128_ids
        lens = plan.c128_tile_indices(plan.c128_tiles[0])[1].tolist()
        # (pos + 1) // 128 compressed rows plus min(pos + 1, 128) window rows.
        assert lens == [(p + 1) // 128 + min(p + 1, 128) for p in range(start, end)]
    # The last chunk's last query (pos 199): C128 row 0, then positions 72..199 at 1 + (p - 13).
    last = helpers.valid_rows(*plan.c128_tile_indices(plan.c128_tiles[0]))[-1]
    assert last == [0] + [1 + p - 13 for p in range(72, 200)]


def test_mixed_batch(dsv4_env, helpers):
    env = dsv4_env()
    loc, f2s = helpers.loc, helpers.f2s
    # A new 6-token prefill on pool row 2 and a decode row of pool row 1 (9 cached tokens).
    _, step = _extend_plan(env, "MIXED", rows=[2, 1], prefix=[0, 9], ext=[6, 1])
    plan = step.plan
    assert step.route == "sparse_prefill"
    assert plan.query_pos.tolist() == [0, 1, 2, 3, 4, 5, 9]
    assert plan.swa_gather_lens.tolist() == [6, 10]
    assert plan.swa_token_ids.tolist() == [f2s(loc(2, p)) for p in range(6)] + [f2s(loc(1, p)) for p in range(10)]
    c4 = plan.compressed[4]
    assert c4.token_ids.tolist() == [128, 64, 65] and c4.base.tolist() == [0, 1]
    assert helpers.valid_rows(*plan.c0_index_rows())[-1] == list(range(6, 16))


def test_decode_batch_paged_plan_matches_sglang_metadata(dsv4_env, helpers):
    env = dsv4_env()
    loc, f2s = helpers.loc, helpers.f2s
    # Pool rows 1 and 0 decode positions 140 and 7.
    fb = env.batch("DECODE", rows=[1, 0], prefix=[140, 7])
    env.backend.init_forward_metadata(fb)
    step = env.backend._dsv4_step
    assert step.route == "paged" and step.num_tokens == 2
    # The backend's plan views SGLang's own index rows; the core's plan builder gives the same ids.
    core = env.backend.forward_metadata.core_attn_metadata
    assert step.plan.swa_indices.data_ptr() == core.swa_page_indices.data_ptr()
    assert step.plan.c128_lens.data_ptr() == core.c128_topk_lengths_clamp1.data_ptr()
    from sglang_dsv4_sparse.core.plan import build_paged_plan

    plan = build_paged_plan(step.inputs)
    assert plan.query_pos.tolist() == [140, 7]
    assert plan.swa_lens.tolist() == [128, 8]
    swa = helpers.valid_rows(plan.swa_indices, plan.swa_lens)
    assert swa[0] == [f2s(loc(1, p)) for p in range(13, 141)]
    assert swa[1] == [f2s(loc(0, p)) for p in range(8)]
    # Decode page tables span req_to_token's width (512 = 2 pages): the whole request rows.
    assert step.inputs.compressed_page_tables[4].tolist() == [[1, 2], [3, 0]]
    assert plan.c128_lens.tolist() == [1, 0]
    assert plan.c128_indices.shape == (2, 1, 128) and plan.c128_indices[0, 0, :2].tolist() == [2, -1]
    # The same ids as SGLang's own decode metadata (which lists the window newest first).
    theirs = helpers.valid_rows(core.swa_page_indices, core.swa_topk_lengths)
    assert [sorted(row) for row in swa] == [sorted(row) for row in theirs]
    assert plan.c128_indices[0, 0, :1].tolist() == core.c128_page_indices[0, :1].tolist()
    # Decodes read the C4 top-k from SGLang's own fields; no extra buffer is asked of the indexer.
    assert core.c4_sparse_raw_indices is None


def test_decode_c4_topk_matches_sglang_indexer_page_indices(dsv4_env, helpers, gen):
    """SGLang's top-k transform writes both outputs; the core's conversion of the raw rows
    gives back SGLang's C4 page indices."""
    from sglang.srt.layers.attention.dsv4.indexer import topk_transform_pytorch_vectorized

    from sglang_dsv4_sparse.core.plan import topk_to_token_ids

    env = dsv4_env()
    fb = env.batch("DECODE", rows=[1, 0], prefix=[300, 7])
    env.backend.init_forward_metadata(fb)
    step = env.backend._dsv4_step
    core = env.backend.forward_metadata.core_attn_metadata
    c4_lens = core.c4_topk_lengths_raw
    assert c4_lens.tolist() == [75, 2]
    scores = torch.randn(2, 128, generator=gen).to(env.device)
    raw = torch.empty_like(core.c4_sparse_page_indices)
    topk_transform_pytorch_vectorized(scores, c4_lens, core.page_table, core.c4_sparse_page_indices, 64, raw)
    from sglang_dsv4_sparse.core.plan import build_paged_plan

    ids, lens = topk_to_token_ids(build_paged_plan(step.inputs), 4, raw)
    assert lens.tolist() == [75, 2]
    assert helpers.valid_rows(ids, lens) == helpers.valid_rows(core.c4_sparse_page_indices, lens)
    # Row 74 of pool row 1 (pages 1, 2) is on page 2: 2 * 64 + 10.
    assert 138 in helpers.valid_rows(ids, lens)[0]


def test_router_flag_off_sends_extends_to_the_paged_route(dsv4_env, helpers, monkeypatch):
    monkeypatch.setenv("SGLANG_OPT_FLASHMLA_SPARSE_PREFILL", "0")
    env = dsv4_env()
    _, step = _extend_plan(env, "EXTEND", rows=[1], prefix=[5], ext=[3])
    assert step.route == "paged"
    assert sorted(helpers.valid_rows(step.plan.swa_indices, step.plan.swa_lens)[2]) == sorted(
        helpers.f2s(helpers.loc(1, p)) for p in range(8)
    )
