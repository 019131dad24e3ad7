"""Bad input to the attention kernels: clear errors, skipped keys, and NaN for NaN or inf in q.

An index outside the keys (negative, one past the end, huge) is skipped, as
the reference does; with the bounds flag only -1 may be, among the columns
the lengths count. A head whose q holds NaN or inf gives NaN, the kernels and
the references alike.
"""

import math

import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn import sparse_mla_decode_paged, sparse_mla_fwd, sparse_mla_verify_paged
from sglang_dsv4_sparse.random_inputs import written_cache
from sglang_dsv4_sparse.reference import (
    sparse_attention_reference,
    sparse_decode_paged_reference,
    sparse_verify_paged_reference,
)
from testing import assert_attention_close

SCALE = L.SOFTMAX_SCALE
HUGE = 10**12


def _meta(t):
    return torch.empty_like(t, device="meta")


def _same_nans_else_close(out, lse, ref_out, ref_lse):
    """NaN exactly where the reference has NaN; elsewhere FlashMLA's tolerances."""
    out, ref_out = out.float(), ref_out.float()
    assert torch.equal(torch.isnan(out), torch.isnan(ref_out)) and torch.equal(torch.isnan(lse), torch.isnan(ref_lse))
    keep = ~torch.isnan(ref_out).any(-1)
    assert_attention_close(out[keep], ref_out[keep])
    torch.testing.assert_close(lse[~torch.isnan(ref_lse)], ref_lse[~torch.isnan(ref_lse)], atol=1e-5, rtol=8.01 / 65536)


# ---- sparse_mla_fwd ---------------------------------------------------------------


def test_sparse_mla_fwd(cases, gen):
    s_q, h, s_kv, topk = 3, 16, 50, 32
    q = torch.randn(s_q, h, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    kv = torch.randn(s_kv, 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    idx = torch.randint(0, s_kv, (s_q, 1, topk), generator=gen)
    lengths = torch.tensor([topk, 20, 7])

    def matches(q=q, kv=kv, idx=idx, **kw):
        def run():
            out, max_logits, lse = sparse_mla_fwd(q, kv, idx, SCALE, **kw)
            r_out, r_max, r_lse = sparse_attention_reference(q, kv, idx, SCALE, **kw)
            _same_nans_else_close(out, lse, r_out, r_lse)
            assert torch.equal(torch.isnan(max_logits), torch.isnan(r_max))
            return out, lse
        return run

    def with_ids(values, dtype=torch.int64):
        bad = idx.clone()
        bad[:, 0, : len(values)] = torch.tensor(values)
        return bad.to(dtype)

    cases.returns("ids one past the end", matches(idx=with_ids([s_kv, s_kv + 1])))
    cases.returns("huge ids", matches(idx=with_ids([HUGE, 2**62, 2**63 - 1])))
    cases.returns("int32 ids past the end", matches(idx=with_ids([s_kv, 2**31 - 1], torch.int32)))
    cases.returns("negative ids", matches(idx=with_ids([-1, -2, -HUGE, -(2**63)])))
    cases.returns("every id skipped", lambda: _empty_rows(*sparse_mla_fwd(q, kv, torch.full_like(idx, -7), SCALE)[::2]))
    cases.returns("no keys at all", lambda: _empty_rows(*sparse_mla_fwd(q, kv[:0], idx, SCALE)[::2]))
    cases.returns("topk 0", lambda: _empty_rows(*sparse_mla_fwd(q, kv, idx[:, :, :0], SCALE)[::2]))
    cases.returns("no queries", lambda: sparse_mla_fwd(q[:0], kv, idx[:0], SCALE))
    cases.returns("lengths past topk and negative", matches(topk_length=torch.tensor([HUGE, -1, -HUGE])))
    cases.returns("ids past the cache beyond the lengths", matches(idx=with_ids([HUGE] * topk), topk_length=torch.tensor([0, 0, 0])))
    nan_q, inf_q = q.clone(), q.clone()
    nan_q[0, 1, 7] = float("nan")
    inf_q[1, 2, 300], inf_q[2, 3, 0] = float("inf"), float("-inf")
    sink = torch.randn(h, generator=gen)
    cases.returns("NaN in q", lambda: _nan_heads(matches(q=nan_q)(), [(0, 1)]))
    cases.returns("inf in q, with a sink", lambda: _nan_heads(matches(q=inf_q, attn_sink=sink)(), [(1, 2), (2, 3)]))

    for name, ids in (("id one past the end", with_ids([s_kv])), ("id -2", with_ids([-2])), ("huge id", with_ids([HUGE]))):
        cases.raises(name, lambda ids=ids: sparse_mla_fwd(q, kv, ids, SCALE), ValueError, "indices", bounds=True)
    cases.returns("bad ids beyond the lengths", lambda: sparse_mla_fwd(
        q, kv, with_ids([HUGE] * topk), SCALE, topk_length=torch.tensor([0, 0, 0])), bounds=True)
    cases.returns("-1 holes", lambda: sparse_mla_fwd(q, kv, with_ids([-1, -1]), SCALE), bounds=True)

    cases.raises("fp32 q", lambda: sparse_mla_fwd(q.float(), kv, idx, SCALE), TypeError, "q")
    cases.raises("2-D q", lambda: sparse_mla_fwd(q[0], kv, idx, SCALE), ValueError, "q")
    cases.raises("head dim 256", lambda: sparse_mla_fwd(q[..., :256], kv, idx, SCALE), ValueError, "q")
    cases.raises("no heads", lambda: sparse_mla_fwd(q[:, :0], kv, idx, SCALE), ValueError, "q")
    cases.raises("129 heads", lambda: sparse_mla_fwd(q[:, :1].expand(s_q, 129, L.HEAD_DIM), kv, idx, SCALE), ValueError, "q")
    cases.raises("q strided in its last dim", lambda: sparse_mla_fwd(
        torch.zeros(s_q, h, 2 * L.HEAD_DIM, dtype=torch.bfloat16)[..., ::2], kv, idx, SCALE), ValueError, "q")
    cases.raises("q on meta", lambda: sparse_mla_fwd(_meta(q), kv, idx, SCALE), ValueError, "q")
    cases.raises("kv on meta", lambda: sparse_mla_fwd(q, _meta(kv), idx, SCALE), ValueError, "kv")
    cases.raises("kv of two heads", lambda: sparse_mla_fwd(q, kv.expand(s_kv, 2, L.HEAD_DIM), idx, SCALE), ValueError, "kv")
    cases.raises("fp8 kv", lambda: sparse_mla_fwd(q, kv.to(torch.float8_e4m3fn), idx, SCALE), TypeError, "kv")
    cases.raises("float indices", lambda: sparse_mla_fwd(q, kv, idx.float(), SCALE), TypeError, "indices")
    cases.raises("indices of two rows", lambda: sparse_mla_fwd(q, kv, idx.expand(s_q, 2, topk), SCALE), ValueError, "indices")
    cases.raises("indices for fewer queries", lambda: sparse_mla_fwd(q, kv, idx[:2], SCALE), ValueError, "indices")
    cases.raises("NaN scale", lambda: sparse_mla_fwd(q, kv, idx, math.nan), TypeError, "sm_scale")
    cases.raises("d_v 256", lambda: sparse_mla_fwd(q, kv, idx, SCALE, 256), ValueError, "d_v")
    cases.raises("short sink", lambda: sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=sink[:3]), ValueError, "attn_sink")
    cases.raises("bf16 sink", lambda: sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=sink.bfloat16()), TypeError, "attn_sink")
    cases.raises("short lengths", lambda: sparse_mla_fwd(q, kv, idx, SCALE, topk_length=lengths[:2]), ValueError, "topk_length")
    cases.run()


def _empty_rows(out, lse):
    assert bool((out == 0).all()) and bool(torch.isposinf(lse).all()), "no valid key: out 0, lse +inf"


def _nan_heads(got, heads):
    out, lse = got
    for i in heads:
        assert bool(torch.isnan(out[i]).all()) and bool(torch.isnan(lse[i]).all()), f"head {i} must be NaN"
    finite = torch.ones(lse.shape, dtype=torch.bool)
    for i in heads:
        finite[i] = False
    assert bool(torch.isfinite(lse[finite]).all()), "other heads stay finite"


# ---- sparse_mla_decode_paged ------------------------------------------------------


def test_sparse_mla_decode_paged(cases, gen):
    b, h, topk, x_topk = 3, 16, 32, 24
    page, pages, x_page, x_pages = 64, 2, 2, 30
    cache, _ = written_cache(pages, page, torch.arange(pages * page), gen)
    x_cache, _ = written_cache(x_pages, x_page, torch.arange(x_pages * x_page), gen)
    cap, x_cap = pages * page, x_pages * x_page
    q = torch.randn(b, 1, h, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    idx = torch.randint(0, cap, (b, 1, topk), generator=gen)
    x_idx = torch.randint(0, x_cap, (b, 1, x_topk), generator=gen)
    base = dict(q=q, k_cache=cache, indices=idx, page_size=page, extra_k_cache=x_cache,
                extra_indices_in_kvcache=x_idx, extra_page_size=x_page, softmax_scale=SCALE)

    def decode(splits=None, **changes):
        kw = dict(base, **changes)
        return sparse_mla_decode_paged(**kw, num_splits=splits)

    def matches(splits=None, **changes):
        def run():
            kw = dict(base, **changes)
            out, lse = decode(splits, **changes)
            r_out, r_lse = sparse_decode_paged_reference(
                kw["q"], kw["k_cache"], kw["page_size"], kw["indices"], kw.get("topk_length"), SCALE, kw.get("attn_sink"),
                kw["extra_k_cache"], kw["extra_page_size"], kw["extra_indices_in_kvcache"], kw.get("extra_topk_length"))
            _same_nans_else_close(out, lse, r_out, r_lse)
            return out[:, 0], lse.transpose(1, 2)[:, 0]
        return run

    def with_ids(t, values, dtype=torch.int64):
        bad = t.clone()
        bad[:, 0, : len(values)] = torch.tensor(values)
        return bad.to(dtype)

    for splits in (None, 3):
        tag = "" if splits is None else ", split"
        cases.returns("ids one past the caches" + tag, matches(splits, indices=with_ids(idx, [cap]), extra_indices_in_kvcache=with_ids(x_idx, [x_cap])))
        cases.returns("huge ids" + tag, matches(splits, indices=with_ids(idx, [HUGE, 2**63 - 1]), extra_indices_in_kvcache=with_ids(x_idx, [2**62])))
        cases.returns("negative ids" + tag, matches(splits, indices=with_ids(idx, [-1, -2, -HUGE]), extra_indices_in_kvcache=with_ids(x_idx, [-(2**63)])))
        nan_q = q.clone()
        nan_q[0, 0, 1, 7], nan_q[1, 0, 2, 9] = float("nan"), float("inf")
        cases.returns("NaN and inf in q" + tag, lambda nan_q=nan_q, splits=splits: _nan_heads(
            matches(splits, q=nan_q, attn_sink=torch.randn(h, generator=gen))(), [(0, 1), (1, 2)]))
    cases.returns("int32 ids past the caches", matches(indices=with_ids(idx, [cap, 2**31 - 1], torch.int32),
                                                       extra_indices_in_kvcache=with_ids(x_idx, [x_cap], torch.int32)))
    cases.returns("lengths past topk and negative", matches(topk_length=torch.tensor([HUGE, -1, 0]),
                                                            extra_topk_length=torch.tensor([-HUGE, x_topk + 1, 3])))
    cases.returns("every id skipped", lambda: _empty_rows(*matches(indices=torch.full_like(idx, -5), extra_indices_in_kvcache=torch.full_like(x_idx, x_cap))()))
    cases.returns("topk 0", lambda: _empty_rows(*matches(indices=idx[:, :, :0], extra_indices_in_kvcache=x_idx[:, :, :0])()))
    cases.returns("no rows", lambda: decode(q=q[:0], indices=idx[:0], extra_indices_in_kvcache=x_idx[:0]))

    for name, changes in (("id one past the end", dict(indices=with_ids(idx, [cap]))),
                          ("id -2", dict(indices=with_ids(idx, [-2]))),
                          ("extra id past the end", dict(extra_indices_in_kvcache=with_ids(x_idx, [x_cap])))):
        arg = next(iter(changes))
        cases.raises(name, lambda changes=changes: decode(**changes), ValueError, arg, bounds=True)
    cases.returns("bad ids beyond the lengths", lambda: decode(indices=with_ids(idx, [HUGE] * 4), topk_length=torch.tensor([0, 0, 0])), bounds=True)

    cases.raises("fp32 q", lambda: decode(q=q.float()), TypeError, "q")
    cases.raises("3-D q", lambda: decode(q=q[:, 0]), ValueError, "q")
    cases.raises("q on meta", lambda: decode(q=_meta(q)), ValueError, "q")
    cases.raises("head dim 448", lambda: decode(q=q[..., :448]), ValueError, "q")
    cases.raises("wrong page size", lambda: decode(page_size=256), ValueError, "page_size")
    cases.raises("2-D cache without a page size", lambda: decode(page_size=None), ValueError, "page_size")
    cases.raises("cache on meta", lambda: decode(k_cache=_meta(cache)), ValueError, "k_cache")
    cases.raises("cache not a tensor", lambda: decode(k_cache=None), TypeError, "k_cache")
    cases.raises("view disagrees with page_size", lambda: decode(k_cache=L.flashmla_cache_view(cache, page), page_size=32),
                 ValueError, "page_size")
    cases.raises("misaligned cache", lambda: decode(k_cache=torch.zeros(pages * L.page_bytes(page) + 1, dtype=torch.uint8)[1:].view(pages, -1)),
                 ValueError, "k_cache")
    cases.raises("indices for fewer rows", lambda: decode(indices=idx[:2]), ValueError, "indices")
    cases.raises("float indices", lambda: decode(indices=idx.float()), TypeError, "indices")
    cases.raises("extra ids without a cache", lambda: decode(extra_k_cache=None, extra_page_size=None), ValueError, "extra_indices_in_kvcache")
    cases.raises("extra cache without ids", lambda: decode(extra_indices_in_kvcache=None), ValueError, "extra_indices_in_kvcache")
    cases.raises("extra lengths without a cache", lambda: decode(extra_k_cache=None, extra_page_size=None, extra_indices_in_kvcache=None,
                                                                 extra_topk_length=torch.tensor([1, 1, 1])), ValueError, "extra_topk_length")
    cases.raises("short lengths", lambda: decode(topk_length=torch.tensor([1, 1])), ValueError, "topk_length")
    cases.raises("infinite scale", lambda: decode(softmax_scale=math.inf), TypeError, "softmax_scale")
    cases.raises("head_dim_v 448", lambda: sparse_mla_decode_paged(**base, head_dim_v=448), ValueError, "head_dim_v")
    cases.raises("zero splits", lambda: decode(0), ValueError, "num_splits")
    cases.run()


# ---- sparse_mla_verify_paged ------------------------------------------------------


def _verify_rows(prefix_lens, drafts, swa_offsets, x_offsets, width):
    """Index rows in SGLang's verify layout: consecutive SWA ids per request (a window newest first),
    C128 rows clamped to 1."""
    swa, swa_lens, x, x_lens = [], [], [], []
    for p0, s, off, x_off in zip(prefix_lens, drafts, swa_offsets, x_offsets):
        for j in range(s):
            cached = p0 + j + 1
            n = min(cached, L.SWA_WINDOW)
            row = torch.full((width,), -1)
            row[:n] = (off + torch.arange(cached - n, cached) - max(p0 + 1 - L.SWA_WINDOW, 0)).flip(0)  # newest first
            swa.append(row)
            swa_lens.append(n)
            count = cached // 128
            row = torch.full((width,), -1)
            row[:count] = x_off + torch.arange(count)
            x.append(row)
            x_lens.append(max(count, 1))
    return torch.stack(swa), torch.tensor(swa_lens), torch.stack(x), torch.tensor(x_lens)


def test_sparse_mla_verify_paged(cases, gen):
    h, page, pages, x_page, x_pages = 8, 256, 2, 2, 8
    cache, _ = written_cache(pages, page, torch.arange(pages * page), gen)
    x_cache, _ = written_cache(x_pages, x_page, torch.arange(x_pages * x_page), gen)
    cap, x_cap = pages * page, x_pages * x_page
    # Request 0 near its start (no compressed row yet), request 1 just past position 256.
    swa, swa_lens, x_idx, x_lens = _verify_rows([5, 256], [2, 3], [0, 200], [0, 4], 128)
    t = swa.shape[0]
    qsl = torch.tensor([0, 2, 5], dtype=torch.int32)
    q = (torch.randn(t, h, L.HEAD_DIM, generator=gen) * 0.1).to(torch.bfloat16)
    sink = torch.randn(h, generator=gen)
    base = dict(q=q, query_start_loc=qsl, swa_cache=cache, swa_indices=swa, swa_lens=swa_lens, attn_sink=sink,
                extra_k_cache=x_cache, extra_indices=x_idx, extra_lens=x_lens, extra_shared=True, sm_scale=SCALE,
                swa_page_size=page, extra_page_size=x_page)

    def verify(splits=None, **changes):
        return sparse_mla_verify_paged(**dict(base, **changes), num_splits=splits)

    def matches(splits=None, **changes):
        def run():
            kw = dict(base, **changes)
            out, lse = verify(splits, **changes)
            r_out, r_lse = sparse_verify_paged_reference(
                kw["q"], kw["query_start_loc"], kw["swa_cache"], page, kw["swa_indices"], kw["swa_lens"], SCALE,
                kw["attn_sink"], kw["extra_k_cache"], x_page, kw["extra_indices"], kw["extra_lens"])
            _same_nans_else_close(out, lse, r_out, r_lse)
            return out, lse
        return run

    def with_ids(t, values, dtype=torch.int64):
        bad = t.clone()
        bad[:, : len(values)] = torch.tensor(values)
        return bad.to(dtype)

    def changed(t, index, value):
        bad = t.clone()
        bad[index] = value
        return bad

    def replaced(t, olds, news, dtype=torch.int64):
        # Bad values by position: every row naming a position's id gets the same
        # bad value, so the rows still agree with one another (the layout contract).
        bad = t.clone()
        for old, new in zip(olds, news):
            bad[t == old] = new
        return bad.to(dtype)

    cases.returns("SGLang's layout under the bounds flag", matches(), bounds=True)
    for splits in (None, 3):
        tag = "" if splits is None else ", split"
        cases.returns("ids one past the caches" + tag, matches(splits, swa_indices=replaced(swa, [1, 250], [cap, cap]),
                                                               extra_indices=replaced(x_idx, [4], [x_cap])))
        cases.returns("huge and negative ids" + tag, matches(splits, swa_indices=replaced(swa, [0, 2, 201, 300], [HUGE, -2, -HUGE, -(2**63)]),
                                                             extra_indices=replaced(x_idx, [5], [2**63 - 1])))
        nan_q = q.clone()
        nan_q[0, 1, 7], nan_q[3, 2, 9] = float("nan"), float("inf")
        cases.returns("NaN and inf in q" + tag, lambda nan_q=nan_q, splits=splits: _nan_heads(
            matches(splits, q=nan_q)(), [(0, 1), (3, 2)]))
    cases.returns("int32 ids past the caches", matches(swa_indices=replaced(swa, [3, 260], [cap, 2**31 - 1], torch.int32),
                                                       extra_indices=replaced(x_idx, [5], [x_cap], torch.int32)))
    cases.returns("compressed lengths past the rows and negative", matches(
        extra_lens=torch.tensor([-HUGE, 500, 1, 0, 2**40]), extra_shared=False))
    # Window lengths that break the layout contract: a result other than decode's, in bounds.
    cases.returns("window lengths past the rows and negative", lambda: verify(swa_lens=torch.tensor([HUGE, -1, 0, 3, -HUGE])))
    cases.returns("every id skipped", lambda: _empty_rows(*matches(
        swa_indices=torch.full_like(swa, -5), extra_indices=torch.full_like(x_idx, x_cap))()))
    cases.returns("no columns", lambda: _empty_rows(*matches(swa_indices=swa[:, :0], extra_indices=x_idx[:, :0])()))
    cases.returns("no tokens", lambda: verify(q=q[:0], query_start_loc=qsl[:1] * 0, swa_indices=swa[:0],
                                              swa_lens=swa_lens[:0], extra_indices=x_idx[:0], extra_lens=x_lens[:0]))
    # A query_start_loc that breaks its contract is clamped to [0, T]: nothing read or written outside.
    for name, bad_qsl in (("query_start_loc decreasing", [0, 4, 2]), ("query_start_loc short of T", [0, 2, 3]),
                          ("query_start_loc past T and negative", [-HUGE, 2, 2**31 - 1])):
        bad_qsl = torch.tensor(bad_qsl, dtype=torch.int64)
        cases.returns(name, lambda bad_qsl=bad_qsl: verify(query_start_loc=bad_qsl))
        cases.raises(name, lambda bad_qsl=bad_qsl: verify(query_start_loc=bad_qsl), ValueError, "query_start_loc",
                     bounds=True)
    cases.raises("query_start_loc not starting at 0", lambda: verify(query_start_loc=torch.tensor([1, 2, 5])),
                 ValueError, "query_start_loc", bounds=True)

    for name, changes, arg in (
        ("id one past the end", dict(swa_indices=with_ids(swa, [cap])), "swa_indices"),
        ("id -2", dict(swa_indices=with_ids(swa, [-2])), "swa_indices"),
        ("extra id past the end", dict(extra_indices=changed(x_idx, (4, 0), x_cap)), "extra_indices"),
        ("a window id that disagrees", dict(swa_indices=changed(swa, (3, 100), 1)), "swa_indices row 3 does not continue"),
        ("a window that does not grow", dict(swa_lens=changed(swa_lens, 1, 1)), "swa_lens row 1 does not continue"),
        ("a window longer than its row", dict(swa_lens=changed(swa_lens, 0, 300)), "swa_lens"),
        ("a compressed row that is not a prefix", dict(extra_indices=changed(x_idx, (2, 1), 7), extra_lens=changed(x_lens, 2, 2)),
         "extra_indices row 2"),
        ("compressed lengths that shrink", dict(extra_lens=changed(x_lens, 3, 3)), "extra_lens"),
    ):
        cases.raises(name, lambda changes=changes: verify(**changes), ValueError, arg, bounds=True)
    cases.returns("per-token rows need no prefix", matches(extra_indices=changed(x_idx, (2, 0), 3), extra_shared=False),
                  bounds=True)
    cases.returns("bad ids beyond the lengths", lambda: verify(swa_indices=with_ids(swa, [HUGE] * 128),
                                                               swa_lens=torch.zeros(t, dtype=torch.int64),
                                                               extra_lens=torch.zeros(t, dtype=torch.int64)))

    cases.raises("fp32 q", lambda: verify(q=q.float()), TypeError, "q")
    cases.raises("4-D q", lambda: verify(q=q[:, None]), ValueError, "q")
    cases.raises("q on meta", lambda: verify(q=_meta(q)), ValueError, "q")
    cases.raises("head dim 448", lambda: verify(q=q[..., :448]), ValueError, "q")
    cases.raises("129 heads", lambda: verify(q=q[:, :1].expand(t, 129, L.HEAD_DIM)), ValueError, "q")
    cases.raises("float query_start_loc", lambda: verify(query_start_loc=qsl.float()), TypeError, "query_start_loc")
    cases.raises("2-D query_start_loc", lambda: verify(query_start_loc=qsl[None]), ValueError, "query_start_loc")
    cases.raises("empty query_start_loc", lambda: verify(query_start_loc=qsl[:0]), ValueError, "query_start_loc")
    cases.raises("wrong page size", lambda: verify(swa_page_size=64), ValueError, "swa_page_size")
    cases.raises("2-D cache without a page size", lambda: verify(swa_page_size=None), ValueError, "swa_page_size")
    cases.raises("cache not a tensor", lambda: verify(swa_cache=None), TypeError, "swa_cache")
    cases.raises("cache on meta", lambda: verify(swa_cache=_meta(cache)), ValueError, "swa_cache")
    cases.raises("float swa_indices", lambda: verify(swa_indices=swa.float()), TypeError, "swa_indices")
    cases.raises("swa_indices for fewer tokens", lambda: verify(swa_indices=swa[:3]), ValueError, "swa_indices")
    cases.raises("1-D swa_indices", lambda: verify(swa_indices=swa[:, 0]), ValueError, "swa_indices")
    cases.raises("short swa_lens", lambda: verify(swa_lens=swa_lens[:2]), ValueError, "swa_lens")
    cases.raises("float swa_lens", lambda: verify(swa_lens=swa_lens.float()), TypeError, "swa_lens")
    cases.raises("short sink", lambda: verify(attn_sink=sink[:3]), ValueError, "attn_sink")
    cases.raises("bf16 sink", lambda: verify(attn_sink=sink.bfloat16()), TypeError, "attn_sink")
    cases.raises("extra ids without a cache", lambda: verify(extra_k_cache=None, extra_page_size=None, extra_lens=None,
                                                             extra_shared=False), ValueError, "extra_indices")
    cases.raises("extra cache without ids", lambda: verify(extra_indices=None), ValueError, "extra_indices")
    cases.raises("extra lengths without a cache", lambda: verify(extra_k_cache=None, extra_indices=None, extra_shared=False),
                 ValueError, "extra_lens")
    cases.raises("extra_shared without a cache", lambda: verify(extra_k_cache=None, extra_indices=None, extra_lens=None),
                 ValueError, "extra_shared")
    cases.raises("extra_shared not a bool", lambda: verify(extra_shared=1), TypeError, "extra_shared")
    cases.raises("extra_indices for fewer tokens", lambda: verify(extra_indices=x_idx[:1]), ValueError, "extra_indices")
    cases.raises("short extra_lens", lambda: verify(extra_lens=x_lens[:1]), ValueError, "extra_lens")
    cases.raises("wrong extra page size", lambda: verify(extra_page_size=64), ValueError, "extra_page_size")
    cases.raises("NaN scale", lambda: verify(sm_scale=math.nan), TypeError, "sm_scale")
    cases.raises("zero tokens_per_request", lambda: sparse_mla_verify_paged(**base, tokens_per_request=0), ValueError,
                 "tokens_per_request")
    cases.raises("zero splits", lambda: verify(0), ValueError, "num_splits")
    cases.run()
