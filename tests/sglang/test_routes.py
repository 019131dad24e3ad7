"""Routes by shape inside the backend: layers handed to SGLang's attention, the others on ours over one plan.

On the CPU SGLang's own sparse prefill (FlashMLA) cannot run, so its
``_forward_attention`` is replaced by a recorder here; on a GPU the real one
runs and the outputs are compared with the reference.
"""

import json

import pytest

pytest.importorskip("sglang")

import torch  # noqa: E402

from sglang_dsv4_sparse.reference import layer_attention_reference  # noqa: E402
from sglang_dsv4_sparse.routing import NARROW_MAX_HEADS, RoutePolicy  # noqa: E402

ON_GPU = torch.cuda.is_available()
S = "sglang"


def _table(tmp_path, layer_ms, plan_ms=0.05):
    """A route table with one shape at 2 heads."""
    entry = dict(tokens=60, reqs=2, max_seq_len=270, heads=2, plan_ms=plan_ms,
                 layer_ms={str(r): ms for r, ms in layer_ms.items()})
    path = tmp_path / "table.json"
    path.write_text(json.dumps(dict(header={"gpu": "test", "commit": "test"}, entries=[entry])))
    return str(path)


@pytest.fixture
def routed_env(dsv4_env, monkeypatch, tmp_path):
    """Our backend under ``auto`` with a table where only the C128 layer is faster on our route."""
    path = _table(tmp_path, {0: {S: 1.0, "ours": 1.2}, 4: {S: 1.0, "ours": 1.1}, 128: {S: 2.0, "ours": 1.0}})
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_ROUTE_TABLE", path)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "auto")
    env = dsv4_env(heads=2)
    if not ON_GPU:
        # SGLang's route is there on the CPU too (it is on every FlashMLA GPU); its attention is recorded below.
        env.backend._dsv4_policy = RoutePolicy("auto", True, env.backend._dsv4_policy.table)
    return env


def _layers(env, helpers, gen, fb, *, record):
    backend = env.backend
    backend.init_forward_metadata(fb)
    step = backend._dsv4_step
    num_tokens = sum(int(n) for n in fb.extend_seq_lens_cpu)
    env.fill_caches(fb.req_pool_indices.tolist(), fb.seq_lens_cpu.tolist(), gen)
    core = backend.forward_metadata.core_attn_metadata
    positions = core.positions_casual[:num_tokens].tolist()
    topk = helpers.c4_picks(positions, core.c4_sparse_page_indices.shape[1], gen)
    helpers.write_c4_topk(core, topk, fb.req_pool_indices.tolist(), fb.extend_seq_lens_cpu)
    outs = []
    for layer_id, ratio in enumerate(helpers.RATIOS):
        q = (torch.randn(num_tokens, 64, 512, generator=gen) * 0.5).to(env.device, torch.bfloat16)
        sink = torch.randn(64, generator=gen).to(env.device)
        out = backend.forward(q=q, k=q, v=q, layer=env.layer(layer_id), forward_batch=fb, compress_ratio=ratio,
                              attn_sink=sink, save_kv_cache=False)
        outs.append((ratio, q, sink, out))
    return step, topk, outs


def test_auto_hands_layers_to_sglang_and_plans_over_its_chunk_cache(routed_env, helpers, gen, monkeypatch):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    env = routed_env
    calls = []
    if not ON_GPU:
        def recorder(self, q, k, v, layer, forward_batch, compress_ratio, **kwargs):
            calls.append(compress_ratio)
            return torch.zeros_like(q)

        monkeypatch.setattr(DeepseekV4AttnBackend, "_forward_attention", recorder)
    fb = env.batch("EXTEND", rows=[1, 0], prefix=[5, 250], ext=[40, 20])
    step, topk, outs = _layers(env, helpers, gen, fb, record=calls)
    assert step.routes_by_heads == {(2, 64): {0: S, 4: S, 128: "folded"}}
    if not ON_GPU:
        assert calls == [0, 4], "the window-only and C4 layers go to SGLang's attention"
    # Our plan sits on SGLang's chunk cache: its window ids, not a second gather.
    cache = env.backend.forward_metadata.sparse_prefill_cache
    assert cache is not None and step.plan.swa_token_ids is cache.swa_token_ids
    assert list(step.plan.compressed) == [128] and list(step.c128_folds) == [2]
    from test_backend_forward import _reference_inputs

    inputs = _reference_inputs(env, helpers, fb)
    pool = env.pool
    for layer_id, (ratio, q, sink, out) in enumerate(outs):
        if ratio != 128 and not ON_GPU:
            continue
        ref = layer_attention_reference(
            inputs, q[:, :2], pool.get_swa_key_buffer_radix(layer_id), ratio,
            pool.get_extra_key_buffer(layer_id) if ratio else None, topk.to(env.device) if ratio == 4 else None,
            sink[:2],
        )
        assert float((out[:, :2].float() - ref).norm() / ref.norm()) < 2e-2, ratio


def test_a_step_all_on_sglang_builds_no_plan(dsv4_env, helpers, gen, monkeypatch, tmp_path):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    monkeypatch.setenv("SGLANG_DSV4_SPARSE_ROUTE_TABLE", _table(
        tmp_path, {0: {S: 1.0, "ours": 1.2}, 4: {S: 1.0, "ours": 1.1}, 128: {S: 2.0, "ours": 1.9}}))
    env = dsv4_env(heads=2)
    env.backend._dsv4_policy = RoutePolicy("auto", True, env.backend._dsv4_policy.table)
    calls = []
    monkeypatch.setattr(DeepseekV4AttnBackend, "_forward_attention",
                        lambda self, q, k, v, layer, fb, ratio, **kw: calls.append(ratio) or torch.zeros_like(q))
    fb = env.batch("EXTEND", rows=[1, 0], prefix=[5, 250], ext=[40, 20])
    step, _, _ = _layers(env, helpers, gen, fb, record=calls)
    # Decided at metadata time: no step state at all, every layer straight to SGLang's attention.
    assert calls == [0, 4, 128] and step is None


def test_decodes_go_to_sglang_where_it_runs_the_same_kernel(dsv4_env, helpers, gen, monkeypatch):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    env = dsv4_env(heads=2)
    calls = []
    monkeypatch.setattr(DeepseekV4AttnBackend, "_forward_attention",
                        lambda self, q, k, v, layer, fb, ratio, **kw: calls.append(ratio) or torch.zeros_like(q))
    fb = env.batch("DECODE", rows=[1, 0], prefix=[5, 250], ext=[1, 1])
    for mode, available, ours in (("auto", True, False), ("sglang", True, False), ("ours", True, True),
                                  ("auto", False, True)):
        env.backend._dsv4_policy = RoutePolicy(mode, available, None)
        env.backend.init_forward_metadata(fb)
        assert (env.backend._dsv4_step is not None) == ours, (mode, available)
    env.backend._dsv4_policy = RoutePolicy("auto", True, None)
    env.backend.init_forward_metadata(fb)
    q = torch.randn(2, 64, 512, generator=gen).to(env.device, torch.bfloat16)
    env.backend.forward(q=q, k=q, v=q, layer=env.layer(0), forward_batch=fb, compress_ratio=0,
                        attn_sink=torch.zeros(64, device=env.device), save_kv_cache=False)
    assert calls == [0]


def test_an_unpadded_query_never_goes_to_sglang(dsv4_env, monkeypatch):
    # FlashMLA takes 64 or 128 heads: a query handed over at its real width stays on our routes.
    env = dsv4_env(heads=2)
    policy = RoutePolicy("auto", True, None)
    from sglang_dsv4_sparse.routing import StepShape

    shape = StepShape(60, 2, 270, 2)
    assert set(policy.routes(shape).values()) == {S}
    assert policy.routes(shape, sglang_takes_query=False)[128] == "folded"
    assert 2 < NARROW_MAX_HEADS and env.heads == 2
