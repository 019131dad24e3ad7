import pytest
import torch

from sglang_dsv4_sparse import dispatch


def test_padded_head_counts():
    assert [dispatch.flashmla_padded_heads(h) for h in (1, 8, 16, 64, 65, 128, 129)] == [64, 64, 64, 64, 128, 128, None]


def test_kernel_choice_is_validated(monkeypatch):
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "cutlass")
    with pytest.raises(ValueError, match="SGLANG_DSV4_SPARSE_KERNELS"):
        dispatch.requested_kernels()


def test_triton_where_flashmla_cannot_run(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "auto")
    assert not dispatch.use_flashmla(cpu, 64)
    assert dispatch.heads_to_run(16, 64, cpu) == 16
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "flashmla")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        dispatch.use_flashmla(cpu, 64)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "triton")
    assert "Triton" in dispatch.describe(cpu)


def test_pad_heads_zero_fills_query_and_sink():
    q = torch.randn(3, 16, 512).bfloat16()
    sink = torch.randn(16)
    q_pad, sink_pad = dispatch._pad_heads(q, sink, 1)
    assert q_pad.shape == (3, 64, 512) and torch.equal(q_pad[:, :16], q) and bool((q_pad[:, 16:] == 0).all())
    assert torch.equal(sink_pad[:16], sink) and bool((sink_pad[16:] == 0).all())
    same, same_sink = dispatch._pad_heads(q_pad, sink_pad, 1)
    assert same is q_pad and same_sink is sink_pad


def test_auto_runs_flashmla_at_every_head_count_it_takes(monkeypatch):
    # Where FlashMLA runs, auto sends every head count it takes there, zero-padded
    # (FlashMLA on the padded query measured faster inside SGLang's step).
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "auto")
    monkeypatch.setattr(dispatch, "flashmla_status", lambda index=0: (True, "SM90 with flash_mla (test)"))
    dev = torch.device("cuda", 0)
    for heads in (8, 16, 17, 64, 128):
        assert dispatch.use_flashmla(dev, heads)
    assert dispatch.heads_to_run(16, 64, dev) == 64
    assert dispatch.heads_to_run(8, 64, dev) == 64
    # Past 128 heads FlashMLA cannot run: Triton at the real count.
    assert not dispatch.use_flashmla(dev, 129)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "triton")
    assert not dispatch.use_flashmla(dev, 16)
    assert dispatch.heads_to_run(16, 64, dev) == 16


def test_env_flags_parse_one_way(monkeypatch):
    from sglang_dsv4_sparse.validation import env_flag

    for value, expected in (("1", True), ("ON", True), ("n", False), ("0", False), ("", True)):
        monkeypatch.setenv("DSV4_TEST_FLAG", value)
        assert env_flag("DSV4_TEST_FLAG", True) is expected
    monkeypatch.delenv("DSV4_TEST_FLAG")
    assert env_flag("DSV4_TEST_FLAG", False) is False
    monkeypatch.setenv("DSV4_TEST_FLAG", "maybe")
    with pytest.raises(ValueError, match="DSV4_TEST_FLAG"):
        env_flag("DSV4_TEST_FLAG", True)
