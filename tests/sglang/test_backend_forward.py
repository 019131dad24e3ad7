"""A tiny forward through DeepseekV4SparseAttnBackend on the CPU, against the dense fp32 reference.

Each step runs the three layer kinds (SWA only, C4, C128) with the caches
SGLang's pool allocates, filled with random rows; the C4 top-k is written
where SGLang's indexer writes it (``c4_sparse_page_indices`` as C4-cache ids,
and ``c4_sparse_raw_indices`` as request-local rows where SGLang allocated it).
"""

import pytest

pytest.importorskip("sglang")

import torch  # noqa: E402

from sglang_dsv4_sparse.core.plan import StepInputs  # noqa: E402
from sglang_dsv4_sparse.reference import layer_attention_reference  # noqa: E402

TOLERANCE = 2e-2  # bf16 output against an fp32 reference over the same fp8 cache


def _reference_inputs(env, helpers, fb):
    """The step described from the test's own bookkeeping, not from the backend's plan."""
    rows = fb.req_pool_indices.tolist()
    seq = fb.seq_lens_cpu.tolist()
    ext = fb.extend_seq_lens_cpu if fb.extend_seq_lens_cpu is not None else [1] * len(rows)
    dev = env.device
    tables = torch.tensor([helpers.PAGES_OF_ROW[r] for r in rows], device=dev)
    return StepInputs(
        seq_lens=torch.tensor(seq, device=dev), extend_lens=torch.tensor(ext, device=dev),
        req_pool_indices=torch.tensor(rows, device=dev), req_to_token=env.runner.req_to_token_pool.req_to_token,
        full_to_swa=torch.tensor([helpers.f2s(x) for x in range(1024)], device=dev),
        compressed_page_tables={4: tables, 128: tables}, seq_lens_cpu=seq, extend_lens_cpu=list(ext),
        compressed_page_sizes={4: 64, 128: 2}, window=128,
    )


def _run_step(env, helpers, fb, gen, *, padded_heads=None):
    """Init metadata, fill caches, run every layer; return (step, [(ratio, rel err)])."""
    backend = env.backend
    backend.init_forward_metadata(fb)
    step = backend._dsv4_step
    assert step is not None and step.metadata is backend.forward_metadata
    seq = fb.seq_lens_cpu.tolist()
    env.fill_caches(fb.req_pool_indices.tolist(), seq, gen)
    core = backend.forward_metadata.core_attn_metadata
    positions = core.positions_casual[: step.num_tokens].tolist()
    topk = helpers.c4_picks(positions, core.c4_sparse_page_indices.shape[1], gen)
    ext = fb.extend_seq_lens_cpu if fb.extend_seq_lens_cpu is not None else [1] * fb.batch_size
    helpers.write_c4_topk(core, topk, fb.req_pool_indices.tolist(), ext)
    inputs = _reference_inputs(env, helpers, fb)
    heads = env.heads
    width = padded_heads or heads
    errors = []
    for layer_id, ratio in enumerate(helpers.RATIOS):
        # SGLang pads a rank's heads for FlashMLA; the padding rows hold garbage.
        q = (torch.randn(step.num_tokens, width, 512, generator=gen) * 0.5).to(env.device, torch.bfloat16)
        sink = torch.randn(width, generator=gen).to(env.device)
        out = backend.forward(
            q=q, k=q, v=q, layer=env.layer(layer_id), forward_batch=fb, compress_ratio=ratio,
            attn_sink=sink, save_kv_cache=False,
        )
        assert out.shape == q.shape and out.dtype == torch.bfloat16
        if width > heads:
            # The model drops the padded heads: zeros where the core ran the real heads, FlashMLA's output
            # over the padding where it ran the padded query (as SGLang's backend returns it).
            assert bool(torch.isfinite(out[:, heads:]).all())
        pool = env.pool
        ref = layer_attention_reference(
            inputs, q[:, :heads], pool.get_swa_key_buffer_radix(layer_id), ratio,
            pool.get_extra_key_buffer(layer_id) if ratio else None, topk.to(env.device) if ratio == 4 else None,
            sink[:heads],
        )
        err = float((out[:, :heads].float() - ref).norm() / ref.norm())
        errors.append((ratio, err))
    return step, errors


def test_extend_with_prefixes_matches_reference(dsv4_env, helpers, gen):
    env = dsv4_env(heads=2)
    fb = env.batch("EXTEND", rows=[1, 0], prefix=[5, 130], ext=[3, 2])
    step, errors = _run_step(env, helpers, fb, gen, padded_heads=64)
    assert step.route == "sparse_prefill"
    assert all(err < TOLERANCE for _, err in errors), errors


def test_decode_matches_reference(dsv4_env, helpers, gen):
    env = dsv4_env(heads=2)
    fb = env.batch("DECODE", rows=[1, 0], prefix=[140, 7])
    step, errors = _run_step(env, helpers, fb, gen)
    assert step.route == "paged"
    assert all(err < TOLERANCE for _, err in errors), errors


def test_mixed_batch_on_the_paged_route_matches_reference(dsv4_env, helpers, gen, monkeypatch):
    monkeypatch.setenv("SGLANG_OPT_FLASHMLA_SPARSE_PREFILL", "0")
    env = dsv4_env(heads=2)
    fb = env.batch("MIXED", rows=[2, 1], prefix=[0, 133], ext=[6, 1])
    step, errors = _run_step(env, helpers, fb, gen)
    assert step.route == "paged"
    assert all(err < TOLERANCE for _, err in errors), errors


def test_last_chunk_of_chunked_prefill_matches_reference(dsv4_env, helpers, gen):
    env = dsv4_env(heads=2)
    fb = env.batch("EXTEND", rows=[2], prefix=[136], ext=[4])
    step, errors = _run_step(env, helpers, fb, gen)
    assert step.route == "sparse_prefill"
    assert all(err < TOLERANCE for _, err in errors), errors


def test_save_kv_cache_keeps_sglangs_cache_write(dsv4_env, gen, monkeypatch):
    env = dsv4_env(heads=2)
    fb = env.batch("EXTEND", rows=[1], prefix=[0], ext=[2])
    env.backend.init_forward_metadata(fb)
    env.fill_caches([1], [2], gen)
    writes = []
    monkeypatch.setattr(env.backend, "store_cache", lambda layer_id, k, batch: writes.append((layer_id, k, batch)))
    q = torch.randn(2, 2, 512, generator=gen).to(env.device, torch.bfloat16)
    env.backend.forward(q=q, k=q, v=q, layer=env.layer(0), forward_batch=fb, compress_ratio=0,
                        attn_sink=torch.zeros(2, device=env.device), save_kv_cache=True)
    assert len(writes) == 1 and writes[0][0] == 0 and writes[0][1] is q and writes[0][2] is fb


@pytest.mark.parametrize("setting", ["ours", "index"])
def test_prefill_routes_match_reference(dsv4_env, helpers, gen, monkeypatch, setting):
    # Under "ours", a 2-head rank's (query padded to 64) C0 layers take the shared-row route and its
    # C128 layers the folded one (32 queries a group, built once per step); "index" keeps index rows.
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", setting)
    env = dsv4_env(heads=2)
    assert env.backend._dsv4_choice.prefill_routes == setting
    fb = env.batch("EXTEND", rows=[1, 0], prefix=[5, 250], ext=[40, 20])
    step, errors = _run_step(env, helpers, fb, gen, padded_heads=64)
    assert step.route == "sparse_prefill" and list(step.c128_folds) == ([2] if setting == "ours" else [])
    assert all(err < TOLERANCE for _, err in errors), errors


def test_bad_prefill_route_setting_names_the_variable(dsv4_env, monkeypatch):
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "fastest")
    with pytest.raises(ValueError, match="SGLANG_DSV4_SPARSE_PREFILL_ROUTE"):
        dsv4_env(heads=2)
