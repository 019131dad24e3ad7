"""What the backend leaves to SGLang's parent class, and that it does so unchanged."""

import copy
import types

import pytest

pytest.importorskip("sglang")

import torch  # noqa: E402


@pytest.mark.parametrize("mode", ["IDLE", "SPLIT_PREFILL", "DLLM_EXTEND"])
def test_unhandled_modes_have_a_reason(dsv4_env, mode):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    env = dsv4_env()
    batch = types.SimpleNamespace(forward_mode=getattr(ForwardMode, mode))
    assert env.backend.step_fallback_reason(batch) == f"forward mode {mode}"


def test_step_level_reasons(dsv4_env):
    env = dsv4_env()
    fb = env.batch("EXTEND", rows=[1], prefix=[0], ext=[2])
    env.backend.init_forward_metadata(fb)
    assert env.backend.step_fallback_reason(fb) is None
    decode = env.batch("DECODE", rows=[1], prefix=[3])
    env.backend.init_forward_metadata(decode)
    assert env.backend.step_fallback_reason(decode) is None
    # Speculative decode batches are decodes to the paged route (one query row per metadata row).
    decode.spec_info = object()
    assert env.backend.step_fallback_reason(decode) is None
    env.backend.init_forward_metadata(fb)
    env.backend.enable_decoder_swa_bounded_replay = True
    assert "late-layer tail" in env.backend.step_fallback_reason(fb)
    env.backend.enable_decoder_swa_bounded_replay = False
    env.backend.hisparse_coordinator = object()
    assert env.backend.step_fallback_reason(fb) == "HiSparse"


def test_fallback_calls_the_parent_unchanged(dsv4_env, monkeypatch, gen):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    calls = []

    def parent_attention(self, q, k, v, layer, forward_batch, compress_ratio, save_kv_cache=True, attn_sink=None,
                         cos_sin_cache=None, **kwargs):
        calls.append(dict(layer=layer.layer_id, ratio=compress_ratio, save=save_kv_cache, rope=cos_sin_cache))
        return "parent"

    monkeypatch.setattr(DeepseekV4AttnBackend, "_forward_attention", parent_attention)
    env = dsv4_env()
    fb = env.batch("EXTEND", rows=[1], prefix=[0], ext=[2])
    env.backend.init_forward_metadata(fb)
    q = torch.randn(2, 2, 512, generator=gen).to(env.device, torch.bfloat16)
    sink = torch.zeros(2, device=env.device)
    run = lambda **kw: env.backend.forward(  # noqa: E731
        q=kw.pop("q", q), k=q, v=q, layer=env.layer(1), forward_batch=fb, compress_ratio=4, attn_sink=sink,
        save_kv_cache=False, **kw,
    )
    # Fused RoPE (the mega kernel's contract) and a query the plan was not built for.
    assert run(cos_sin_cache=torch.zeros(1)) == "parent"
    assert run(q=q[:1]) == "parent"
    # Metadata swapped after planning (what the late-layer tail does).
    env.backend.forward_metadata = copy.copy(env.backend.forward_metadata)
    assert run() == "parent"
    assert [c["ratio"] for c in calls] == [4, 4, 4] and calls[0]["rope"] is not None
    # The next init plans again, for its own metadata.
    env.backend.init_forward_metadata(fb)
    assert env.backend._dsv4_step.metadata is env.backend.forward_metadata
