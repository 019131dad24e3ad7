import math

import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn import sparse_mla_fwd
from sglang_dsv4_sparse.kernels.sparse_attn.configs import (
    PREFILL_CONFIGS_H16,
    PREFILL_CONFIGS_NARROW,
    PREFILL_CONFIGS_WIDE,
    KernelConfig,
    block_h_for,
)
from sglang_dsv4_sparse.reference import sparse_attention_reference
from testing import assert_attention_close, flashmla_or_skip

ON_GPU = torch.cuda.is_available()
SCALE = L.SOFTMAX_SCALE


def step_inputs(gen, s_q, h, s_kv, topk, *, holes=0.15, past_end=0.05):
    """Random q/kv (never zeros) and index rows with -1 holes and ids >= s_kv."""
    q = torch.randn(s_q, h, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    kv = torch.randn(s_kv, 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    idx = torch.randint(0, s_kv, (s_q, 1, topk), generator=gen)
    r = torch.rand(s_q, 1, topk, generator=gen)
    idx[r < holes] = -1
    idx[(r >= holes) & (r < holes + past_end)] = s_kv + 3
    return q, kv, idx.to(torch.int32)


def _check(got, ref, *, lse_rtol=8.01 / 65536):
    out, max_logits, lse = got
    r_out, r_max, r_lse = ref
    # The kernel rounds P to bf16 for P V and the output to bf16: FlashMLA's bounds.
    assert_attention_close(out, r_out)
    torch.testing.assert_close(max_logits.cpu(), r_max.cpu(), atol=1e-5, rtol=2.01 / 65536)
    torch.testing.assert_close(lse.cpu(), r_lse.cpu(), atol=1e-5, rtol=lse_rtol)


def _ref(q, kv, idx, **kw):
    return sparse_attention_reference(q.cpu(), kv.cpu(), idx.cpu(), SCALE, **kw)


@pytest.mark.parametrize(
    "h,s_q,topk",
    [
        (1, 6, 100),  # 1 head padded to 16 rows inside the kernel
        (8, 6, 100),
        (16, 6, 77),
        (24, 3, 70),  # a 32-head block, 8 of its rows masked
        (64, 5, 70),  # topk not a multiple of any block size
        (128, 3, 40),  # two head blocks per query
    ],
)
def test_matches_reference_with_sink_lengths_and_holes(gen, device, h, s_q, topk):
    s_kv = 300
    q, kv, idx = step_inputs(gen, s_q, h, s_kv, topk)
    sink = torch.randn(h, generator=gen) * 2
    lengths = torch.randint(0, topk + 10, (s_q,), generator=gen).to(torch.int32)
    lengths[0] = topk - 3  # shorter than the row, not at a block edge
    got = sparse_mla_fwd(
        q.to(device), kv.to(device), idx.to(device), SCALE, attn_sink=sink.to(device), topk_length=lengths.to(device)
    )
    assert got[0].dtype == torch.bfloat16 and got[0].shape == (s_q, h, L.HEAD_DIM)
    assert got[1].dtype == got[2].dtype == torch.float32 and got[2].shape == (s_q, h)
    _check(got, _ref(q, kv, idx, attn_sink=sink, topk_length=lengths))


def test_plain_call_strided_q_and_int64_indices(gen, device):
    s_q, h, topk = 4, 16, 64
    q_full, kv, idx = step_inputs(gen, s_q, 2 * h, 200, topk)
    q = q_full[:, ::2]  # head stride 1024, not contiguous
    got = sparse_mla_fwd(q.to(device), kv.to(device), idx.long().to(device), SCALE)
    _check(got, _ref(q, kv, idx))


@pytest.mark.parametrize("h", [16, 64])  # 64: the split-score default
def test_rows_without_valid_keys(gen, device, h):
    # FlashMLA's convention: out = 0, max_logits = -inf, lse = +inf.
    s_q, topk, s_kv = 4, 48, 100
    q, kv, idx = step_inputs(gen, s_q, h, s_kv, topk)
    idx[0] = -1  # all holes
    idx[1] = s_kv  # all past the end
    lengths = torch.tensor([topk, topk, 0, topk], dtype=torch.int32)  # row 2: zero length
    for sink in (None, torch.randn(h, generator=gen)):
        out, max_logits, lse = sparse_mla_fwd(
            q.to(device), kv.to(device), idx.to(device), SCALE,
            attn_sink=None if sink is None else sink.to(device), topk_length=lengths.to(device),
        )
        out, max_logits, lse = out.cpu(), max_logits.cpu(), lse.cpu()
        assert bool((out[:3] == 0).all())
        assert bool(torch.isposinf(lse[:3]).all()) and bool(torch.isneginf(max_logits[:3]).all())
        assert bool(torch.isfinite(lse[3]).all()) and bool((out[3] != 0).any())
        _check((out, max_logits, lse), _ref(q, kv, idx, attn_sink=sink, topk_length=lengths))


def test_infinite_sinks(gen, device):
    # +inf silences a head; -inf is no sink at all.
    s_q, h, topk = 3, 16, 40
    q, kv, idx = step_inputs(gen, s_q, h, 120, topk, holes=0.0, past_end=0.0)
    sink = torch.zeros(h)
    sink[::2] = float("inf")
    sink[1::2] = float("-inf")
    out, _, lse = sparse_mla_fwd(q.to(device), kv.to(device), idx.to(device), SCALE, attn_sink=sink.to(device))
    plain, _, plain_lse = sparse_mla_fwd(q.to(device), kv.to(device), idx.to(device), SCALE)
    assert bool((out[:, ::2] == 0).all())
    # Two compiled variants (with and without a sink): equal up to the last bit.
    torch.testing.assert_close(out[:, 1::2], plain[:, 1::2], rtol=2**-7, atol=0)
    torch.testing.assert_close(lse, plain_lse, rtol=1e-6, atol=0)


def test_zero_queries(device):
    q = torch.zeros(0, 16, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    kv = torch.ones(8, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    out, max_logits, lse = sparse_mla_fwd(q, kv, torch.zeros(0, 1, 64, dtype=torch.int32, device=device), SCALE)
    assert out.shape == (0, 16, L.HEAD_DIM) and lse.shape == (0, 16) and max_logits.shape == (0, 16)


def test_kv_past_2_31_bytes(gen, device):
    # Key rows whose byte offsets need more than 31 bits (32 on the GPU).
    row_bytes = L.HEAD_DIM * 2
    limit = 2**32 + 2**28 if ON_GPU else 2**31 + 2**20
    s_kv = limit // row_bytes + 64
    kv = torch.empty(s_kv, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    s_q, h, topk = 3, 16, 48
    first = (limit - 2**20) // row_bytes
    ids = first + torch.randperm(s_kv - first, generator=gen)[: s_q * topk]
    kv[ids.to(device)] = torch.randn(ids.numel(), 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16).to(device)
    assert int(ids.min()) * row_bytes > 2**31
    q = torch.randn(s_q, h, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    idx = ids.view(s_q, 1, topk).to(torch.int32)
    got = sparse_mla_fwd(q.to(device), kv, idx.to(device), SCALE)
    # The reference gathers the same rows into a small kv, re-indexed.
    local = torch.arange(s_q * topk).view(s_q, 1, topk)
    _check(got, sparse_attention_reference(q, kv[ids.to(device)].cpu(), local, SCALE))
    del kv


@pytest.mark.parametrize("h", [16, 64])
def test_every_builtin_config_agrees(gen, device, h):
    # Every built-in config (block sizes, hand-pipelined or not) gives the
    # reference result, tails and length cut-offs included.
    s_q, topk = 2, 90
    q, kv, idx = step_inputs(gen, s_q, h, 150, topk)
    lengths = torch.tensor([topk, 37], dtype=torch.int32)
    ref = _ref(q, kv, idx, topk_length=lengths)
    configs = PREFILL_CONFIGS_WIDE if h > 32 else PREFILL_CONFIGS_H16 + PREFILL_CONFIGS_NARROW
    # Plus keys-major tiles of both widths: 128 keys at 64 heads (213 KB of
    # shared memory; at 16 heads the same tile needs 278 KB, past an SM's 227).
    keys_major = KernelConfig(128, 8, 1, keys_major=True) if h > 32 else KernelConfig(64, 8, 2, keys_major=True)
    # And the split score dot on the 16-head (mma.sync) kernel.
    extra = (KernelConfig(64, 4, 1, prefetch=True), keys_major, KernelConfig(64, 4, 2, split_scores=True))
    for cfg in dict.fromkeys(configs + extra):
        got = sparse_mla_fwd(q.to(device), kv.to(device), idx.to(device), SCALE, topk_length=lengths.to(device),
                             config=cfg)
        _check(got, ref)


def test_config_rejects_split_keys_major():
    with pytest.raises(ValueError, match="split_scores"):
        KernelConfig(64, 8, 2, keys_major=True, split_scores=True)


def test_block_h_rule():
    assert [block_h_for(h) for h in (1, 8, 16, 17, 32, 33, 64, 128)] == [16, 16, 16, 32, 32, 64, 64, 64]


def test_bad_arguments_name_the_argument(device):
    bf = dict(dtype=torch.bfloat16, device=device)
    q = torch.ones(2, 16, L.HEAD_DIM, **bf)
    kv = torch.ones(10, 1, L.HEAD_DIM, **bf)
    idx = torch.zeros(2, 1, 32, dtype=torch.int32, device=device)
    with pytest.raises(TypeError, match="q"):
        sparse_mla_fwd(q.float(), kv, idx, SCALE)
    with pytest.raises(ValueError, match="head dim"):
        sparse_mla_fwd(q[..., :256], kv, idx, SCALE)
    with pytest.raises(ValueError, match="heads"):
        sparse_mla_fwd(torch.ones(2, 129, L.HEAD_DIM, **bf), kv, idx, SCALE)
    with pytest.raises(TypeError, match="kv"):
        sparse_mla_fwd(q, kv.float(), idx, SCALE)
    with pytest.raises(ValueError, match="kv"):
        sparse_mla_fwd(q, torch.ones(10, 2, L.HEAD_DIM, **bf), idx, SCALE)
    with pytest.raises(TypeError, match="indices"):
        sparse_mla_fwd(q, kv, idx.float(), SCALE)
    with pytest.raises(ValueError, match="indices"):
        sparse_mla_fwd(q, kv, idx[:1], SCALE)
    with pytest.raises(ValueError, match="indices"):
        sparse_mla_fwd(q, kv, idx[:, :, ::2], SCALE)
    with pytest.raises(TypeError, match="sm_scale"):
        sparse_mla_fwd(q, kv, idx, None)
    with pytest.raises(TypeError, match="sm_scale"):
        sparse_mla_fwd(q, kv, idx, math.nan)
    with pytest.raises(ValueError, match="d_v"):
        sparse_mla_fwd(q, kv, idx, SCALE, d_v=256)
    with pytest.raises(ValueError, match="attn_sink"):
        sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=torch.zeros(8, device=device))
    with pytest.raises(TypeError, match="attn_sink"):
        sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=torch.zeros(16, dtype=torch.bfloat16, device=device))
    with pytest.raises(ValueError, match="topk_length"):
        sparse_mla_fwd(q, kv, idx, SCALE, topk_length=torch.zeros(3, dtype=torch.int32, device=device))
    with pytest.raises(TypeError, match="topk_length"):
        sparse_mla_fwd(q, kv, idx, SCALE, topk_length=torch.zeros(2, device=device))
    if ON_GPU:
        with pytest.raises(ValueError, match="kv"):
            sparse_mla_fwd(q, kv.cpu(), idx, SCALE)


# --------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("h", [16, 24, 64, 128])
def test_gpu_large_shapes_match_reference(gen, h):
    s_q, s_kv, topk = 192, 6000, 640
    q, kv, idx = step_inputs(gen, s_q, h, s_kv, topk)
    sink = torch.randn(h, generator=gen)
    lengths = torch.randint(topk // 2, topk + 1, (s_q,), generator=gen).to(torch.int32)
    got = sparse_mla_fwd(q.cuda(), kv.cuda(), idx.cuda(), SCALE, attn_sink=sink.cuda(), topk_length=lengths.cuda())
    ref = sparse_attention_reference(q.cuda(), kv.cuda(), idx.cuda(), SCALE, attn_sink=sink.cuda(),
                                     topk_length=lengths.cuda())
    _check(got, ref)


@pytest.mark.gpu
@pytest.mark.flashmla
@pytest.mark.parametrize("h", [64, 128])
@pytest.mark.parametrize("features", ["plain", "sink_len"])
def test_gpu_matches_flashmla(gen, h, features):
    flash_mla, major = flashmla_or_skip()
    s_q, s_kv, topk = 256, 4096, 640  # topk % 128 == 0 for SM90's kernel
    q, kv, idx = step_inputs(gen, s_q, h, s_kv, topk)
    q, kv, idx = q.cuda(), kv.cuda(), idx.cuda()
    kw = {}
    if features == "sink_len":
        kw = dict(
            attn_sink=torch.randn(h, generator=gen).cuda(),
            topk_length=torch.randint(1, topk + 1, (s_q,), generator=gen).to(torch.int32).cuda(),
        )
    theirs = flash_mla.flash_mla_sparse_fwd(q, kv, idx, SCALE, 512, use_legacy=(major == 9), **kw)
    ours = sparse_mla_fwd(q, kv, idx, SCALE, **kw)
    assert_attention_close(ours[0], theirs[0], 'out vs FlashMLA')
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-6, rtol=2.01 / 65536)
    torch.testing.assert_close(ours[2], theirs[2], atol=1e-6, rtol=8.01 / 65536)


# numpy warns of the NaN arithmetic the interpreter runs; it is the point here.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("h", [16, 64])
def test_nan_and_inf_in_q_give_nan(gen, device, h):
    # A head whose q holds NaN or +-inf has NaN logits (or +inf ones, whose
    # exp(x - max) is NaN): its out, max_logits and lse are NaN, never the
    # empty-row markers; every other head is untouched.
    s_q, topk = 3, 40
    q, kv, idx = step_inputs(gen, s_q, h, 200, topk, past_end=0.0)
    q[0, 1, 7] = float("nan")
    q[1, 2, 300] = float("inf")
    q[2, 3, 0] = float("-inf")
    sink = torch.randn(h, generator=gen)
    out, max_logits, lse = sparse_mla_fwd(q.to(device), kv.to(device), idx.to(device), SCALE, attn_sink=sink.to(device))
    r_out, r_max, r_lse = _ref(q, kv, idx, attn_sink=sink)
    bad = torch.zeros(s_q, h, dtype=torch.bool)
    bad[0, 1] = bad[1, 2] = bad[2, 3] = True
    for got, ref in ((out.float().cpu(), r_out), (max_logits.cpu(), r_max), (lse.cpu(), r_lse)):
        assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert bool(torch.isnan(out[bad]).all()) and bool(torch.isnan(lse[bad]).all()) and bool(torch.isnan(max_logits[bad]).all())
    _check((out[~bad], max_logits[~bad], lse[~bad]), (r_out[~bad], r_max[~bad], r_lse[~bad]))
