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


HEADS = (8, 16, 64, 128, 200)


def _fake_flashmla(monkeypatch, usable: bool):
    status = (True, "SM90 with flash_mla (test)") if usable else (False, "flash_mla does not import (test)")
    monkeypatch.setattr(dispatch, "flashmla_status", lambda index=0: status)


@pytest.fixture
def fresh_default_choice():
    dispatch.default_choice.cache_clear()
    yield
    dispatch.default_choice.cache_clear()


def test_kernel_choice_reads_the_environment_once(monkeypatch, fresh_default_choice):
    _fake_flashmla(monkeypatch, True)
    reads = []
    real = dispatch.config.read_settings
    monkeypatch.setattr(dispatch.config, "read_settings", lambda *a: reads.append(1) or real(*a))
    dev = torch.device("cuda", 0)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "triton")
    choice = dispatch.KernelChoice.from_env(dev)
    default = dispatch.default_choice(dev)
    assert len(reads) == 2
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "auto")
    for heads in HEADS:
        assert not choice.use_flashmla(heads) and choice.padded_heads(heads) == heads
        assert choice.heads_to_run(heads, 64) == heads
    assert dispatch.default_choice(dev) is default and not default.use_flashmla(64)
    assert len(reads) == 2, "answers and the cached default read nothing"
    # A new choice sees the change (as do the thin functions, which make one per call).
    assert dispatch.KernelChoice.from_env(dev).use_flashmla(64) and dispatch.use_flashmla(dev, 64)
    dispatch.default_choice.cache_clear()
    assert dispatch.default_choice(dev).use_flashmla(64)


@pytest.mark.parametrize("usable", [True, False])
@pytest.mark.parametrize("kernels", ["auto", "triton", "flashmla"])
def test_kernel_choice_answers_per_head_count(monkeypatch, usable, kernels):
    # What the rule has been: auto runs FlashMLA where it is usable at <= 128 heads, zero-padded to
    # 64/128; triton never; flashmla forced runs it or fails loudly.
    _fake_flashmla(monkeypatch, usable)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", kernels)
    dev = torch.device("cuda", 0)
    choice = dispatch.KernelChoice.from_env(dev)
    for heads in HEADS:
        padded = dispatch.flashmla_padded_heads(heads)
        available = padded or heads  # SGLang pads a rank's heads to 64 (or 128)
        flashmla = kernels != "triton" and usable and padded is not None
        if kernels == "flashmla" and not flashmla:
            with pytest.raises(RuntimeError, match="SGLANG_DSV4_SPARSE_KERNELS=flashmla"):
                choice.use_flashmla(heads)
            continue
        assert choice.use_flashmla(heads) is flashmla == dispatch.use_flashmla(dev, heads)
        assert choice.padded_heads(heads) == (padded if flashmla else heads)
        want = available if flashmla else heads
        assert choice.heads_to_run(heads, available) == want == dispatch.heads_to_run(heads, available, dev)
    assert choice.describe() == dispatch.describe(dev)


def test_kernel_choice_on_the_cpu(monkeypatch):
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "auto")
    choice = dispatch.KernelChoice.from_env("cpu")
    assert choice.device == torch.device("cpu") and not choice.flashmla_usable
    assert [choice.heads_to_run(h, 64) for h in (8, 16, 64)] == [8, 16, 64]
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", "flashmla")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        dispatch.KernelChoice.from_env("cpu").use_flashmla(64)


def test_prefill_routes_by_layer_and_head_count(monkeypatch):
    # auto: below 64 heads window-only layers share rows, C4 layers run the Triton kernel at the real
    # heads and C128 layers fold; 64+ heads keep index rows (FlashMLA unpadded).
    monkeypatch.delenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", raising=False)
    choice = dispatch.KernelChoice.from_env("cpu")
    expected = {8: ("shared", "native", "folded"), 16: ("shared", "native", "folded"), 63: ("shared", "native", "folded"),
                64: ("index",) * 3, 128: ("index",) * 3}
    for heads, routes in expected.items():
        assert tuple(choice.prefill_route(r, heads) for r in (0, 4, 128)) == routes, heads
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "index")
    assert choice.prefill_route(0, 16) == "shared"  # read once, when the choice was made
    assert dispatch.KernelChoice.from_env("cpu").prefill_route(0, 16) == "index"
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "fast")
    with pytest.raises(ValueError, match="SGLANG_DSV4_SPARSE_PREFILL_ROUTE"):
        dispatch.KernelChoice.from_env("cpu")
