import pytest
import torch

from benchmarks.staged import sparse_mla_decode_staged
from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn import sparse_mla_decode_paged
from sglang_dsv4_sparse.kernels.sparse_attn.configs import (
    DECODE_CONFIGS_NARROW_FEW,
    DECODE_CONFIGS_NARROW_MANY,
    DECODE_CONFIGS_WIDE,
    DECODE_CONFIGS_WIDE_FEW,
    DEFAULT_NUM_SMS,
    NARROW_FEW_MAX_PROGRAMS,
    WIDE_UNPIPELINED_MAX_PROGRAMS,
    decode_block_h,
    decode_configs,
    plan_splits,
)
from sglang_dsv4_sparse.random_inputs import random_rows, written_cache
from sglang_dsv4_sparse.reference import sparse_decode_paged_reference
from testing import assert_attention_close, flashmla_or_skip, huge_cache, ids_past_offset

ON_GPU = torch.cuda.is_available()
SCALE = L.SOFTMAX_SCALE


def _cache(gen, num_pages, page_size, device):
    """A cache with every slot written from random rows (random bytes would give absurd logits)."""
    cache, _ = written_cache(num_pages, page_size, torch.arange(num_pages * page_size), gen, device)
    return cache


def _ids(gen, shape, capacity, *, holes=0.15, past_end=0.05):
    """Token ids with -1 holes and ids past the cache (both skipped)."""
    ids = torch.randint(0, capacity, shape, generator=gen)
    r = torch.rand(shape, generator=gen)
    ids[r < holes] = -1
    ids[(r >= holes) & (r < holes + past_end)] = capacity + 5
    return ids.to(torch.int32)


def _check(got, ref, *, lse_rtol=8.01 / 65536):
    out, lse = got
    r_out, r_lse = ref
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert lse.shape == r_lse.shape
    assert_attention_close(out, r_out)
    torch.testing.assert_close(lse.cpu(), r_lse.cpu(), atol=1e-5, rtol=lse_rtol)


def _case(gen, device, b, s_q, h, topk, page_size, extra_topk=0, extra_page_size=None, *, lengths=True, sink=True,
          pages=4, extra_pages=6):
    k_cache = _cache(gen, pages, page_size, device)
    kw = dict(
        q=torch.randn(b, s_q, h, L.HEAD_DIM, generator=gen).to(torch.bfloat16).to(device),
        k_cache=k_cache,
        indices=_ids(gen, (b, s_q, topk), pages * page_size).to(device),
        page_size=page_size,
        softmax_scale=SCALE,
    )
    if lengths:
        kw["topk_length"] = torch.randint(0, topk + 4, (b,), generator=gen).to(torch.int32).to(device)
    if sink:
        kw["attn_sink"] = (torch.randn(h, generator=gen) * 2).to(device)
    if extra_topk:
        kw["extra_k_cache"] = _cache(gen, extra_pages, extra_page_size, device)
        kw["extra_indices_in_kvcache"] = _ids(gen, (b, s_q, extra_topk), extra_pages * extra_page_size).to(device)
        kw["extra_page_size"] = extra_page_size
        if lengths:
            kw["extra_topk_length"] = torch.randint(0, extra_topk + 4, (b,), generator=gen).to(torch.int32).to(device)
    return kw


def _reference(kw):
    return sparse_decode_paged_reference(
        kw["q"], kw["k_cache"], kw["page_size"], kw["indices"], kw.get("topk_length"), kw["softmax_scale"],
        kw.get("attn_sink"), kw.get("extra_k_cache"), kw.get("extra_page_size"), kw.get("extra_indices_in_kvcache"),
        kw.get("extra_topk_length"),
    )


@pytest.mark.parametrize(
    "b,s_q,h,topk,extra_topk,splits,block_h",
    [
        (2, 2, 1, 40, 0, None, None),  # one head, padded inside the kernel; primary only
        (2, 1, 8, 50, 70, None, None),  # TP8 head count, primary + extra; the rule splits
        (2, 1, 16, 37, 45, 1, None),  # TP4 head count, one program per row
        (1, 2, 64, 40, 70, 3, 64),  # uneven splits across the primary/extra seam
        (1, 1, 128, 30, 50, None, 64),  # two 64-head blocks per row
        (1, 1, 40, 30, 50, 2, None),  # small batch: three 16-head blocks, the last one partly masked
    ],
)
def test_matches_reference(gen, device, b, s_q, h, topk, extra_topk, splits, block_h):
    kw = _case(gen, device, b, s_q, h, topk, L.SWA_PAGE_SIZE, extra_topk, L.C4_PAGE_SIZE)
    kw["topk_length"][0] = topk - 5  # shorter than the row, not on a block edge
    got = sparse_mla_decode_paged(**kw, num_splits=splits, block_h=block_h)
    assert got[0].shape == (b, s_q, h, L.HEAD_DIM) and got[1].shape == (b, h, s_q)
    _check(got, _reference(kw))


@pytest.mark.parametrize("splits", [1, 4])
def test_without_sink_or_lengths_c128_extra(gen, device, splits):
    kw = _case(gen, device, 2, 1, 16, 64, L.SWA_PAGE_SIZE, 40, L.C128_PAGE_SIZE, lengths=False, sink=False,
               extra_pages=40)
    _check(sparse_mla_decode_paged(**kw, num_splits=splits), _reference(kw))


@pytest.mark.parametrize("h", [16, 64])
def test_every_builtin_config_agrees(gen, device, h):
    # Hand-pipelined and Triton-pipelined loops, every block size, with and
    # without splits (the pipelined loop's look-ahead must stop at a split's end).
    kw = _case(gen, device, 1, 1, h, 40, L.SWA_PAGE_SIZE, 50, L.C4_PAGE_SIZE)
    kw["topk_length"][0] = 21
    ref = _reference(kw)
    block_h = 64 if h > 16 else 16
    configs = DECODE_CONFIGS_WIDE if h > 16 else DECODE_CONFIGS_NARROW_FEW + DECODE_CONFIGS_NARROW_MANY
    for cfg in dict.fromkeys(configs):
        for splits in (1, 3):
            _check(sparse_mla_decode_paged(**kw, num_splits=splits, config=cfg, block_h=block_h), ref)


def test_page_boundaries(gen, device):
    # Ids on both sides of every page edge, in both caches.
    b, h = 2, 16
    kw = _case(gen, device, b, 1, h, 16, L.C4_PAGE_SIZE, 16, L.C128_PAGE_SIZE, lengths=False, extra_pages=12)
    edges = torch.arange(1, 4) * L.C4_PAGE_SIZE
    row = torch.cat([edges - 1, edges])
    kw["indices"] = torch.cat([row, row.flip(0), row, row.flip(0)])[: 16].repeat(b, 1, 1).to(torch.int32).to(device)
    x_edges = torch.arange(1, 12) * L.C128_PAGE_SIZE
    x_row = torch.stack([x_edges - 1, x_edges], 1).reshape(-1)[:16]
    kw["extra_indices_in_kvcache"] = x_row.repeat(b, 1, 1).to(torch.int32).to(device)
    _check(sparse_mla_decode_paged(**kw), _reference(kw))


@pytest.mark.parametrize("splits", [1, 3])
def test_rows_without_valid_keys(gen, device, splits):
    # FlashMLA's convention: out = 0, lse = +inf.
    b, h, topk, extra_topk = 4, 16, 40, 40
    kw = _case(gen, device, b, 1, h, topk, L.SWA_PAGE_SIZE, extra_topk, L.C4_PAGE_SIZE)
    kw["indices"][0] = -1
    kw["extra_indices_in_kvcache"][0] = -1  # all holes
    kw["topk_length"][1] = 0
    kw["extra_topk_length"][1] = 0  # zero lengths
    kw["indices"][2] = 10**6
    kw["extra_topk_length"][2] = 0  # ids past the cache
    kw["topk_length"][3] = topk
    kw["extra_topk_length"][3] = extra_topk
    out, lse = sparse_mla_decode_paged(**kw, num_splits=splits)
    assert bool((out[:3] == 0).all()) and bool(torch.isposinf(lse[:3]).all())
    assert bool(torch.isfinite(lse[3]).all())
    _check((out, lse), _reference(kw))


def test_cache_views_and_dtypes_agree(gen, device):
    kw = _case(gen, device, 2, 1, 16, 48, L.SWA_PAGE_SIZE, 48, L.C4_PAGE_SIZE)
    ref = sparse_mla_decode_paged(**kw)
    view = dict(kw)
    view["k_cache"] = L.flashmla_cache_view(kw["k_cache"], L.SWA_PAGE_SIZE)
    view["extra_k_cache"] = L.flashmla_cache_view(kw["extra_k_cache"], L.C4_PAGE_SIZE).view(torch.float8_e4m3fn)
    del view["page_size"], view["extra_page_size"]  # taken from the 4-D shapes
    for a, b_ in zip(sparse_mla_decode_paged(**view), ref):
        assert torch.equal(a, b_)
    other = dict(kw, k_cache=kw["k_cache"].view(torch.bfloat16), indices=kw["indices"].long())
    for a, b_ in zip(sparse_mla_decode_paged(**other), ref):
        assert torch.equal(a, b_)


def test_staged_baseline_matches(gen, device):
    kw = _case(gen, device, 2, 2, 16, 40, L.SWA_PAGE_SIZE, 50, L.C4_PAGE_SIZE)
    _check(sparse_mla_decode_staged(**kw), _reference(kw))


def test_cache_past_2_31_bytes(gen, device):
    # Extra-cache rows whose byte offsets need more than 31 bits (32 on the GPU).
    page_size = L.C4_PAGE_SIZE
    limit = 2**32 + 2**28 if ON_GPU else 2**31 + 2**20
    big = huge_cache(limit, page_size, device)
    b, h, topk = 2, 16, 48
    ids = ids_past_offset(big, page_size, limit - 2**20, b * topk, gen)
    L.quantize_into_paged_cache(big, ids.to(device), random_rows(ids.numel(), gen).to(device), page_size)
    assert int(L.token_byte_offsets(ids, page_size)[0].min()) > 2**31
    kw = _case(gen, device, b, 1, h, 32, L.SWA_PAGE_SIZE, lengths=False)
    kw.update(extra_k_cache=big, extra_page_size=page_size,
              extra_indices_in_kvcache=ids.view(b, 1, topk).to(torch.int32).to(device))
    got = sparse_mla_decode_paged(**kw, num_splits=2)
    # The reference over a small copy of the pages in use, ids shifted to match.
    first_page = int(ids.min()) // page_size
    small = big[first_page:].clone()
    ref_kw = dict(kw, extra_k_cache=small, extra_indices_in_kvcache=kw["extra_indices_in_kvcache"] - first_page * page_size)
    del big
    _check(got, _reference(ref_kw))


def test_split_rule():
    slots = DEFAULT_NUM_SMS
    assert plan_splits(128, 1, 20, slots) == (1, 20)  # a full grid: no split
    assert plan_splits(64, 2, 20, slots) == (1, 20)
    assert plan_splits(64, 1, 20, slots) == (2, 10)
    splits, per = plan_splits(1, 1, 20, slots)
    assert splits == 20 and per == 1  # b = 1: every block its own program
    assert plan_splits(1, 1, 40, slots, min_blocks=4) == (10, 4)  # at least 4 blocks a split
    assert plan_splits(1, 1, 3, slots, min_blocks=4) == (1, 3)
    splits, per = plan_splits(8, 1, 20, slots)
    assert splits * 8 <= slots and (splits - 1) * per < 20 <= splits * per
    assert plan_splits(1, 1, 0, slots) == (1, 1)


def test_decode_head_blocks_and_configs():
    assert [decode_block_h(h) for h in (1, 8, 16, 17, 32, 64, 128)] == [16, 16, 16, 64, 64, 64, 64]
    # Above 16 heads, a batch of a single 64-head program takes 16-head programs.
    assert [decode_block_h(64, rows=r) for r in (1, 2, 8)] == [16, 64, 64]
    assert [decode_block_h(h, rows=1) for h in (17, 64, 65, 128)] == [16, 16, 64, 64]
    assert decode_block_h(16, rows=10_000) == 16
    # Wide lists by grid size too: the unpipelined split config first for small grids.
    assert decode_configs(64, 64, WIDE_UNPIPELINED_MAX_PROGRAMS) == ("wide-few", DECODE_CONFIGS_WIDE_FEW)
    assert decode_configs(64, 64, WIDE_UNPIPELINED_MAX_PROGRAMS + 1) == ("wide", DECODE_CONFIGS_WIDE)
    assert decode_configs(128, 64, WIDE_UNPIPELINED_MAX_PROGRAMS // 2 + 1)[0] == "wide"
    assert set(DECODE_CONFIGS_WIDE_FEW) <= set(DECODE_CONFIGS_WIDE)
    # Narrow lists by grid size: rows x head blocks.
    assert decode_configs(16, 16, NARROW_FEW_MAX_PROGRAMS)[0] == "narrow-few"
    assert decode_configs(16, 16, NARROW_FEW_MAX_PROGRAMS + 1)[0] == "narrow-many"
    assert decode_configs(64, 16, NARROW_FEW_MAX_PROGRAMS // 4)[0] == "narrow-few"
    assert decode_configs(64, 16, NARROW_FEW_MAX_PROGRAMS // 4 + 1)[0] == "narrow-many"


def test_bad_arguments_name_the_argument(gen, device):
    kw = _case(gen, device, 2, 1, 16, 32, L.SWA_PAGE_SIZE, 32, L.C4_PAGE_SIZE)
    with pytest.raises(TypeError, match="q"):
        sparse_mla_decode_paged(**dict(kw, q=kw["q"].float()))
    with pytest.raises(ValueError, match="q"):
        sparse_mla_decode_paged(**dict(kw, q=kw["q"][0]))
    with pytest.raises(ValueError, match=r"page_size=64"):
        sparse_mla_decode_paged(**dict(kw, page_size=L.C4_PAGE_SIZE))
    with pytest.raises(ValueError, match="page_size"):
        sparse_mla_decode_paged(**{k: v for k, v in kw.items() if k != "page_size"})
    with pytest.raises(ValueError, match="page_size"):
        sparse_mla_decode_paged(**dict(kw, k_cache=L.flashmla_cache_view(kw["k_cache"], 256), page_size=64))
    with pytest.raises(TypeError, match="indices"):
        sparse_mla_decode_paged(**dict(kw, indices=kw["indices"].float()))
    with pytest.raises(ValueError, match="indices"):
        sparse_mla_decode_paged(**dict(kw, indices=kw["indices"][:1]))
    with pytest.raises(ValueError, match="topk_length"):
        sparse_mla_decode_paged(**dict(kw, topk_length=kw["topk_length"][:1]))
    with pytest.raises(ValueError, match="attn_sink"):
        sparse_mla_decode_paged(**dict(kw, attn_sink=kw["attn_sink"][:3]))
    with pytest.raises(ValueError, match="extra_indices_in_kvcache"):
        sparse_mla_decode_paged(**{k: v for k, v in kw.items() if k != "extra_indices_in_kvcache"})
    with pytest.raises(ValueError, match="extra_k_cache"):
        sparse_mla_decode_paged(**{k: v for k, v in kw.items() if k != "extra_k_cache"})
    with pytest.raises(ValueError, match="extra_page_size"):
        sparse_mla_decode_paged(**dict(kw, extra_page_size=L.SWA_PAGE_SIZE))
    with pytest.raises(ValueError, match="head_dim_v"):
        sparse_mla_decode_paged(**kw, head_dim_v=256)
    with pytest.raises(TypeError, match="softmax_scale"):
        sparse_mla_decode_paged(**dict(kw, softmax_scale="0.1"))
    with pytest.raises(ValueError, match="num_splits"):
        sparse_mla_decode_paged(**kw, num_splits=0)
    with pytest.raises(ValueError, match="block_h"):
        sparse_mla_decode_paged(**kw, block_h=32)
    with pytest.raises(TypeError, match="k_cache"):
        sparse_mla_decode_paged(**dict(kw, k_cache=[1, 2]))


def test_bounds_flag_rejects_ids_past_the_cache(gen, device, monkeypatch):
    kw = _case(gen, device, 1, 1, 16, 16, L.C4_PAGE_SIZE, lengths=False, pages=2)
    kw["indices"] = torch.full((1, 1, 16), 128, dtype=torch.int32, device=device)
    out, lse = sparse_mla_decode_paged(**kw)  # skipped without the flag
    assert bool(torch.isposinf(lse).all()) and bool((out == 0).all())
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match=r"indices must hold .*\[0, 128\)"):
        sparse_mla_decode_paged(**kw)


# --------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("b,h,extra_topk", [(1, 64, 512), (37, 64, 512), (8, 128, 1024), (200, 16, 512)])
def test_gpu_large_shapes_match_reference(gen, b, h, extra_topk):
    kw = _case(gen, "cuda", b, 1, h, L.SWA_WINDOW, L.SWA_PAGE_SIZE, extra_topk, L.C4_PAGE_SIZE, pages=8,
               extra_pages=300)
    _check(sparse_mla_decode_paged(**kw), _reference(kw))


@pytest.mark.gpu
def test_gpu_many_rows_past_flashmla_scheduler_limit(gen):
    # 20000 rows: more than FlashMLA's decode scheduler takes (11673); check a sample.
    b, h = 20000, 16
    kw = _case(gen, "cuda", b, 1, h, 64, L.SWA_PAGE_SIZE, 64, L.C4_PAGE_SIZE, pages=8, extra_pages=64)
    out, lse = sparse_mla_decode_paged(**kw)
    pick = torch.randperm(b, generator=gen)[:128].cuda()
    sub = dict(kw, q=kw["q"][pick], indices=kw["indices"][pick], topk_length=kw["topk_length"][pick],
               extra_indices_in_kvcache=kw["extra_indices_in_kvcache"][pick],
               extra_topk_length=kw["extra_topk_length"][pick])
    _check((out[pick], lse[pick]), _reference(sub))


@pytest.mark.gpu
@pytest.mark.flashmla
@pytest.mark.parametrize("b,h,extra_topk", [(1, 64, 512), (16, 64, 512), (64, 64, 512), (2, 128, 1024), (128, 128, 1024)])
def test_gpu_matches_flashmla(gen, b, h, extra_topk):
    flash_mla, major = flashmla_or_skip()
    if major != 9:
        pytest.skip("FlashMLA reads the 584-byte V4 layout with its legacy (SM90) kernels only")
    # FlashMLA skips only -1 and reads any other id: no ids past the cache here.
    kw = _case(gen, "cuda", b, 1, h, L.SWA_WINDOW, L.SWA_PAGE_SIZE, extra_topk, L.C4_PAGE_SIZE, pages=8,
               extra_pages=300)
    kw["indices"] = torch.where(kw["indices"] >= 8 * L.SWA_PAGE_SIZE, -1, kw["indices"])
    kw["extra_indices_in_kvcache"] = torch.where(
        kw["extra_indices_in_kvcache"] >= 300 * L.C4_PAGE_SIZE, -1, kw["extra_indices_in_kvcache"]
    )
    kw["topk_length"] = kw["topk_length"].clamp(1, L.SWA_WINDOW)
    kw["extra_topk_length"] = kw["extra_topk_length"].clamp(0, extra_topk)
    meta, _ = flash_mla.get_mla_metadata()
    theirs = flash_mla.flash_mla_with_kvcache(
        kw["q"], L.flashmla_cache_view(kw["k_cache"], L.SWA_PAGE_SIZE), None, None, L.HEAD_DIM, meta,
        softmax_scale=SCALE, is_fp8_kvcache=True, indices=kw["indices"], attn_sink=kw["attn_sink"],
        extra_k_cache=L.flashmla_cache_view(kw["extra_k_cache"], L.C4_PAGE_SIZE),
        extra_indices_in_kvcache=kw["extra_indices_in_kvcache"], topk_length=kw["topk_length"],
        extra_topk_length=kw["extra_topk_length"], use_legacy=True,
    )
    ours = sparse_mla_decode_paged(**kw)
    assert ours[1].shape == theirs[1].shape
    assert_attention_close(ours[0], theirs[0], 'out vs FlashMLA')
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-6, rtol=8.01 / 65536)


@pytest.mark.gpu
@pytest.mark.parametrize("b,h", [(2, 64), (64, 64), (4, 16)])
def test_gpu_cuda_graph_replay_equals_eager(gen, b, h):
    kw = _case(gen, "cuda", b, 1, h, L.SWA_WINDOW, L.SWA_PAGE_SIZE, 512, L.C4_PAGE_SIZE, pages=8, extra_pages=300)
    static_q = kw.pop("q")
    sparse_mla_decode_paged(static_q, **kw)  # compile and pick the config outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            static_out, static_lse = sparse_mla_decode_paged(static_q, **kw)
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        fresh = torch.randn(static_q.shape, generator=gen).to(torch.bfloat16).cuda()
        static_q.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        eager_out, eager_lse = sparse_mla_decode_paged(fresh, **kw)
        assert torch.equal(static_out, eager_out)
        assert torch.equal(static_lse, eager_lse)


# numpy warns of the NaN arithmetic the interpreter runs; it is the point here.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("splits", [1, 3])
def test_nan_and_inf_in_q_give_nan(gen, device, splits):
    # NaN or inf in a head's q gives that head NaN out and lse (also through
    # the split merge), not the empty-row markers; other heads are untouched.
    b, h = 3, 16
    kw = _case(gen, device, b, 1, h, 40, L.SWA_PAGE_SIZE, 40, L.C4_PAGE_SIZE, lengths=False)
    kw["q"][0, 0, 1, 7] = float("nan")
    kw["q"][1, 0, 2, 300] = float("inf")
    kw["q"][2, 0, 3, 0] = float("-inf")
    out, lse = (t.cpu() for t in sparse_mla_decode_paged(**kw, num_splits=splits))
    r_out, r_lse = (t.cpu() for t in _reference(kw))
    bad = torch.zeros(b, 1, h, dtype=torch.bool)
    bad[0, 0, 1] = bad[1, 0, 2] = bad[2, 0, 3] = True
    assert torch.equal(torch.isnan(out.float().cpu()), torch.isnan(r_out))
    assert torch.equal(torch.isnan(lse.cpu()), torch.isnan(r_lse))
    assert bool(torch.isnan(out[bad]).all()) and bool(torch.isnan(lse.transpose(1, 2)[bad]).all())
    assert_attention_close(out[~bad], r_out[~bad])
    torch.testing.assert_close(lse.transpose(1, 2)[~bad].cpu(), r_lse.transpose(1, 2)[~bad], atol=1e-5, rtol=8.01 / 65536)
