"""Bad input to the dequant, the index kernels and the layout quantizer: clear errors or masked results.

Masked results follow one rule: an id outside its tensor reads nothing and
gives a zero row (dequant) or -1 (index kernels). With the bounds flag, -1 is
the only id allowed outside and anything else raises ``ValueError`` naming
the argument.
"""

import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.dequant import dequantize_k_cache_paged
from sglang_dsv4_sparse.kernels.indices import build_swa_token_ids, combine_topk_swa_indices
from sglang_dsv4_sparse.random_inputs import random_byte_cache, random_rows
from sglang_dsv4_sparse.reference import build_swa_token_ids_reference, combine_topk_swa_indices_reference

HUGE = 10**12


def _meta(t):
    return torch.empty_like(t, device="meta")


# ---- dequantize_k_cache_paged -------------------------------------------------


def test_dequantize_k_cache_paged(cases, gen):
    page, pages = 64, 3
    capacity = page * pages
    cache = random_byte_cache(pages, page, gen)
    ids = torch.randint(0, capacity, (12,), generator=gen)

    def masked(bad_ids, dtype=torch.int64):
        def run():
            mixed = ids.clone()
            mixed[: len(bad_ids)] = torch.tensor(bad_ids)
            out = dequantize_k_cache_paged(cache, mixed.to(dtype), page)
            assert bool((out[: len(bad_ids)] == 0).all()), "ids outside the cache must give zero rows"
            assert torch.equal(out, L.dequantize_paged_reference(cache, mixed, page))
        return run

    cases.returns("one past the end", masked([capacity]))
    cases.returns("one past the end, int32", masked([capacity], torch.int32))
    cases.returns("far past the end", masked([10**6, capacity + 1, 2**31 - 1], torch.int32))
    cases.returns("huge ids", masked([HUGE, 2**62, 2**63 - 1]))
    cases.returns("negative ids", masked([-1, -2, -HUGE, -(2**63)]))
    cases.returns("empty ids", lambda: dequantize_k_cache_paged(cache, ids[:0], page).shape == (0, 1, 512) or 1 / 0)
    cases.returns("strided ids", lambda: torch.equal(
        dequantize_k_cache_paged(cache, ids[::2], page), L.dequantize_paged_reference(cache, ids[::2], page)) or 1 / 0)
    for bad in (capacity, -2, HUGE):
        cases.raises(f"id {bad}", lambda bad=bad: dequantize_k_cache_paged(cache, torch.tensor([0, bad]), page),
                     ValueError, "token_ids", bounds=True)
    cases.returns("-1 hole", lambda: dequantize_k_cache_paged(cache, torch.tensor([-1, capacity - 1]), page), bounds=True)

    out = torch.empty(12, 1, 512, dtype=torch.bfloat16)
    cases.raises("float ids", lambda: dequantize_k_cache_paged(cache, ids.float(), page), TypeError, "token_ids")
    cases.raises("2-D ids", lambda: dequantize_k_cache_paged(cache, ids.view(3, 4), page), ValueError, "token_ids")
    cases.raises("ids on meta", lambda: dequantize_k_cache_paged(cache, _meta(ids), page), ValueError, "token_ids")
    cases.raises("cache on meta", lambda: dequantize_k_cache_paged(_meta(cache), ids, page), ValueError, "quant_k_cache")
    cases.raises("cache not a tensor", lambda: dequantize_k_cache_paged(cache.tolist(), ids, page), TypeError, "quant_k_cache")
    cases.raises("3-D cache", lambda: dequantize_k_cache_paged(cache[None], ids, page), ValueError, "quant_k_cache")
    cases.raises("cache sliced by columns", lambda: dequantize_k_cache_paged(
        torch.zeros(pages, 2 * L.page_bytes(page), dtype=torch.uint8)[:, ::2], ids, page), ValueError, "quant_k_cache")
    cases.raises("wrong page size", lambda: dequantize_k_cache_paged(cache, ids, 256), ValueError, "page_size=256")
    cases.raises("page size 0", lambda: dequantize_k_cache_paged(cache, ids, 0), ValueError, "page_size")
    cases.raises("page size a string", lambda: dequantize_k_cache_paged(cache, ids, "64"), TypeError, "page_size")
    cases.raises("out fp32", lambda: dequantize_k_cache_paged(cache, ids, page, out=out.float()), TypeError, "out")
    cases.raises("out too short", lambda: dequantize_k_cache_paged(cache, ids, page, out=out[:5]), ValueError, "out")
    cases.raises("out strided", lambda: dequantize_k_cache_paged(
        cache, ids, page, out=torch.empty(12, 1, 1024, dtype=torch.bfloat16)[:, :, ::2]), ValueError, "out")
    cases.run()


# ---- layout quantizer ------------------------------------------------------------


def test_quantize_into_paged_cache(cases, gen):
    page, pages = 64, 2
    cache = random_byte_cache(pages, page, gen)
    rows = random_rows(4, gen)
    ids = torch.tensor([0, 5, 64, 127])

    def write(bad_ids=None, bad_rows=None, bad_cache=None, page_size=page):
        return lambda: L.quantize_into_paged_cache(
            cache.clone() if bad_cache is None else bad_cache, ids if bad_ids is None else bad_ids,
            rows if bad_rows is None else bad_rows, page_size)

    cases.returns("in range", write())
    cases.raises("one past the end", write(bad_ids=torch.tensor([0, 5, 64, 128])), ValueError, "token_ids")
    cases.raises("negative id", write(bad_ids=torch.tensor([0, -1, 64, 1])), ValueError, "token_ids")
    cases.raises("huge id", write(bad_ids=torch.tensor([0, HUGE, 64, 1])), ValueError, "token_ids")
    cases.raises("float ids", write(bad_ids=ids.float()), ValueError, "token_ids")
    cases.raises("rows count", write(bad_rows=rows[:3]), ValueError, "rows")
    cases.raises("rows width", write(bad_rows=rows[:, :256]), ValueError, "rows")
    cases.raises("wrong page size", write(page_size=256), ValueError, "page_size=256")
    cases.raises("cache not a tensor", write(bad_cache=[0]), TypeError, "cache")
    cases.returns("reference dequant masks alike", lambda: bool(
        (L.dequantize_paged_reference(cache, torch.tensor([-2, 128, HUGE]), page) == 0).all()) or 1 / 0)
    cases.run()


# ---- build_swa_token_ids ----------------------------------------------------------


def _swa_args(gen, seq=(40, 30), ext=(10, 30), pool=(2, 0), width=45, full=200, swa=90):
    req_to_token = torch.randint(0, full, (3, width), generator=gen)
    full_to_swa = torch.randint(0, swa, (full,), generator=gen)
    return dict(
        seq_lens=torch.tensor(seq), extend_seq_lens=torch.tensor(ext), req_pool_indices=torch.tensor(pool),
        req_to_token=req_to_token, full_to_swa=full_to_swa,
    )


def _swa_run(args, total=None, window=L.SWA_WINDOW):
    ref = build_swa_token_ids_reference(*args.values(), window)
    total = int(ref[3][-1]) if total is None else total
    got = build_swa_token_ids(*args.values(), window, total)
    return got, ref


def _swa_masked(args):
    def run():
        (ids, first, lens, offs), (r_ids, *_rest) = _swa_run(args)
        assert torch.equal(ids.long(), r_ids), "the kernel must mask as the reference does"
        assert bool((ids >= -1).all()) and bool((ids < 90).all())
    return run


def test_build_swa_token_ids(cases, gen):
    def bad(**changes):
        args = _swa_args(gen)
        for key, value in changes.items():
            if callable(value):
                value(args)
            else:
                args[key] = value
        return args

    def past_full(a):
        a["req_to_token"][2, 35:39] = torch.tensor([200, 10**6, HUGE, -5])

    cases.returns("pool row past the table", _swa_masked(bad(req_pool_indices=torch.tensor([3, 0]))))
    cases.returns("negative pool row", _swa_masked(bad(req_pool_indices=torch.tensor([-1, 0]))))
    cases.returns("huge pool row", _swa_masked(bad(req_pool_indices=torch.tensor([HUGE, 2**40]))))
    cases.returns("seq_lens past the table width", _swa_masked(bad(seq_lens=torch.tensor([60, 46]), extend_seq_lens=torch.tensor([60, 1]))))
    cases.returns("full ids past full_to_swa", _swa_masked(bad(req_to_token=past_full)))
    cases.returns("short full_to_swa", _swa_masked(bad(full_to_swa=torch.randint(0, 90, (20,), generator=gen))))
    cases.returns("int32 inputs", _swa_masked({k: v.int() for k, v in bad(req_pool_indices=torch.tensor([7, 0])).items()}))
    cases.returns("negative seq_lens", lambda: _swa_run(bad(seq_lens=torch.tensor([-5, 30])), total=30))
    cases.returns("total_swa too small", lambda: _swa_run(bad(), total=3)[0][0].shape == (3,) or 1 / 0)
    cases.returns("total_swa too large", lambda: _swa_run(bad(), total=500)[0][0].shape == (500,) or 1 / 0)
    empty = torch.zeros(0, dtype=torch.int64)
    cases.returns("empty batch", lambda: build_swa_token_ids(empty, empty, empty, torch.zeros(2, 4, dtype=torch.int64),
                                                             torch.zeros(9, dtype=torch.int64), 128, 0))

    good = _swa_args(gen)
    flagged = [
        ("pool row past the table", "req_pool_indices", dict(req_pool_indices=torch.tensor([3, 0]))),
        ("negative pool row", "req_pool_indices", dict(req_pool_indices=torch.tensor([-1, 0]))),
        ("seq_lens past the table width", "seq_lens", dict(seq_lens=torch.tensor([60, 30]), extend_seq_lens=torch.tensor([60, 30]))),
        ("negative seq_lens", "seq_lens", dict(seq_lens=torch.tensor([-5, 30]))),
        ("extend past seq", "extend_seq_lens", dict(extend_seq_lens=torch.tensor([41, 30]))),
        ("full ids past full_to_swa", "req_to_token", dict(req_to_token=past_full)),
    ]
    for name, arg, change in flagged:
        cases.raises(name, lambda change=change: _swa_run(bad(**change)), ValueError, arg, bounds=True)
    cases.raises("wrong total_swa", lambda: _swa_run(bad(), total=3), ValueError, "total_swa", bounds=True)

    def call(**changes):
        args = dict(good)
        args.update(changes)
        return lambda: build_swa_token_ids(*args.values(), 128, 40)

    cases.raises("float seq_lens", call(seq_lens=good["seq_lens"].float()), TypeError, "seq_lens")
    cases.raises("2-D seq_lens", call(seq_lens=good["seq_lens"][None]), ValueError, "seq_lens")
    cases.raises("short extend_seq_lens", call(extend_seq_lens=good["extend_seq_lens"][:1]), ValueError, "extend_seq_lens")
    cases.raises("strided req_pool_indices", call(req_pool_indices=torch.tensor([2, 9, 0, 9])[::2]), ValueError, "req_pool_indices")
    cases.raises("1-D req_to_token", call(req_to_token=good["req_to_token"][0]), ValueError, "req_to_token")
    cases.raises("req_to_token on meta", call(req_to_token=_meta(good["req_to_token"])), ValueError, "req_to_token")
    cases.raises("strided full_to_swa", call(full_to_swa=good["full_to_swa"][::2]), ValueError, "full_to_swa")
    cases.raises("seq_lens on meta", call(seq_lens=_meta(good["seq_lens"])), ValueError, "seq_lens")
    args = list(good.values())
    cases.raises("window 0", lambda: build_swa_token_ids(*args, 0, 40), ValueError, "swa_window")
    cases.raises("negative total", lambda: build_swa_token_ids(*args, 128, -1), ValueError, "total_swa")
    cases.raises("total past int32", lambda: build_swa_token_ids(*args, 128, 2**31), ValueError, "total_swa")
    cases.run()


# ---- combine_topk_swa_indices ------------------------------------------------------


def _chunk(gen, prefixes=(100, 40), extends=(20, 12), ratio=4, topk=24, window=16):
    """Two requests laid out as the sparse prefill workspace does."""
    seq = torch.tensor(prefixes) + torch.tensor(extends)
    ext = torch.tensor(extends)
    gather = torch.minimum(seq, ext + window - 1)
    rows = seq // ratio
    pos = torch.cat([torch.arange(p, p + e) for p, e in zip(prefixes, extends)])
    owner = torch.repeat_interleave(torch.arange(len(extends)), ext)
    topk_indices = torch.randint(0, 1 << 20, (pos.numel(), topk), generator=gen) % rows[owner][:, None]
    qsl = torch.zeros(len(extends) + 1, dtype=torch.int64)
    qsl[1:] = torch.cumsum(ext, 0)
    return dict(
        topk_indices=topk_indices, query_start_loc=qsl, query_pos=pos, seq_lens=seq, gather_lens=gather,
        compressed_base=torch.cumsum(rows, 0) - rows, swa_base=rows.sum() + torch.cumsum(gather, 0) - gather,
    ), dict(window_size=window, compress_ratio=ratio, topk=topk), rows


def _combine(args, params, **kw):
    return combine_topk_swa_indices(*args.values(), *params.values(), **kw)


def _combine_masked(args, params, **kw):
    def run():
        out, lens = _combine(args, params, **kw)
        ref, ref_lens = combine_topk_swa_indices_reference(**args, **params, **kw)
        assert torch.equal(out.long(), ref) and torch.equal(lens.long(), ref_lens), "kernel and reference must mask alike"
        if "kv_rows" in kw:
            assert int(out.max()) < kw["kv_rows"]
    return run


def test_combine_topk_swa_indices(cases, gen):
    def bad(edit):
        args, params, rows = _chunk(gen)
        edit(args)
        return args, params, rows

    def pos_past_seq(a):
        a["query_pos"][3] += 50
        a["query_pos"][25] = HUGE

    def neg_pos(a):
        a["query_pos"][0] = -3
        a["query_pos"][1] = -HUGE

    def wild_topk(a):
        a["topk_indices"][5, :4] = torch.tensor([10**6, -2, HUGE, -HUGE])
        a["topk_indices"][30, :2] = torch.tensor([10, 11])  # request 1 has 13 rows: in range

    def wild_bases(a):
        a["compressed_base"][0] = -50
        a["swa_base"][1] = 10**9

    def bad_qsl(a):
        a["query_start_loc"] = torch.tensor([0, 25, 10])

    def long_qsl(a):
        a["query_start_loc"] = torch.tensor([0, 20, 1000])

    for name, edit in (("positions past seq_len", pos_past_seq), ("negative positions", neg_pos),
                       ("top-k entries outside the rows", wild_topk), ("wild bases", wild_bases),
                       ("query_start_loc past the queries", long_qsl)):
        args, params, rows = bad(edit)
        kv_rows = int(args["swa_base"].max()) + 40
        cases.returns(name, _combine_masked(args, params, compressed_lens=rows, kv_rows=kv_rows))

    def rows_of_the_workspace():
        # Unsorted offsets leave which request owns a query undefined, but
        # every entry is still -1 or a workspace row.
        args, params, rows = bad(bad_qsl)
        kv_rows = int(args["swa_base"].max()) + 40
        out, lens = _combine(args, params, compressed_lens=rows, kv_rows=kv_rows)
        assert bool((out >= -1).all()) and bool((out < kv_rows).all())

    cases.returns("decreasing query_start_loc", rows_of_the_workspace)
    args, params, rows = _chunk(gen)
    cases.returns("kv_rows cuts a window", _combine_masked(args, params, kv_rows=int(args["swa_base"][1]) + 3))
    cases.returns("no masks asked", _combine_masked(*bad(wild_topk)[:2]))
    n = args["topk_indices"].shape[0]
    swa_indices = torch.randint(0, 40, (n, 16), generator=gen)
    lengths = torch.randint(-HUGE, HUGE, (n,), generator=gen)
    cases.returns("explicit swa_lengths past the window", _combine_masked(args, params, swa_indices=swa_indices, swa_lengths=lengths))
    empty = torch.zeros(0, dtype=torch.int64)
    cases.returns("no queries", lambda: combine_topk_swa_indices(
        torch.zeros(0, 8, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), empty, empty, empty, empty, empty, 8, 4, 8))
    cases.returns("no requests", lambda: bool((combine_topk_swa_indices(
        torch.zeros(3, 8, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), torch.zeros(3, dtype=torch.int64),
        empty, empty, empty, empty, 8, 4, 8)[0] == -1).all()) or 1 / 0)

    flagged = [
        ("positions past seq_len", "query_pos", pos_past_seq, {}),
        ("negative positions", "query_pos", neg_pos, {}),
        ("top-k entries outside the rows", "topk_indices", wild_topk, {}),
        ("decreasing query_start_loc", "query_start_loc", bad_qsl, {}),
        ("query_start_loc past the queries", "query_start_loc", long_qsl, {}),
    ]
    for name, arg, edit, kw in flagged:
        args, params, rows = bad(edit)
        cases.raises(name, lambda a=args, p=params, r=rows: _combine(a, p, compressed_lens=r), ValueError, arg, bounds=True)
    args, params, rows = _chunk(gen)
    cases.returns("valid input", lambda: _combine(args, params, compressed_lens=rows,
                                                  kv_rows=int(args["swa_base"][-1] + args["gather_lens"][-1])), bounds=True)
    cases.raises("kv_rows too small", lambda: _combine(args, params, kv_rows=int(args["swa_base"][1])), ValueError,
                 "kv_rows", bounds=True)
    cases.raises("gather_lens past seq_lens", lambda: _combine(dict(args, gather_lens=args["seq_lens"] + 1), params),
                 ValueError, "gather_lens", bounds=True)
    cases.raises("explicit swa_lengths past the window", lambda: _combine(
        args, params, swa_indices=swa_indices, swa_lengths=lengths), ValueError, "swa_lengths", bounds=True)

    def call(**changes):
        return lambda: _combine(dict(args, **changes), params)

    cases.raises("float query_pos", call(query_pos=args["query_pos"].float()), TypeError, "query_pos")
    cases.raises("1-D topk_indices", call(topk_indices=args["topk_indices"][:, 0]), ValueError, "topk_indices")
    cases.raises("too few top-k columns", call(topk_indices=args["topk_indices"][:, :8]), ValueError, "topk_indices")
    cases.raises("topk_indices on meta", call(topk_indices=_meta(args["topk_indices"])), ValueError, "topk_indices")
    cases.raises("seq_lens on meta", call(seq_lens=_meta(args["seq_lens"])), ValueError, "seq_lens")
    cases.raises("strided seq_lens", call(seq_lens=torch.stack([args["seq_lens"]] * 2, 1)[:, 0]), ValueError, "seq_lens")
    cases.raises("short query_start_loc", call(query_start_loc=args["query_start_loc"][:2]), ValueError, "query_start_loc")
    cases.raises("short swa_base", call(swa_base=args["swa_base"][:1]), ValueError, "swa_base")
    cases.raises("ratio 0", lambda: _combine(args, dict(params, compress_ratio=0)), ValueError, "compress_ratio")
    cases.raises("negative window", lambda: _combine(args, dict(params, window_size=-1)), ValueError, "window_size")
    cases.raises("narrow out_indices", lambda: _combine(args, params, out_indices=torch.empty(32, 16, dtype=torch.int32)),
                 ValueError, "out_indices")
    cases.raises("float out_lens", lambda: _combine(args, params, out_lens=torch.empty(32)), TypeError, "out_lens")
    cases.raises("swa_indices alone", lambda: _combine(args, params, swa_indices=swa_indices), ValueError, "swa_indices")
    cases.raises("short compressed_lens", lambda: _combine(args, params, compressed_lens=rows[:1]), ValueError, "compressed_lens")
    cases.raises("negative kv_rows", lambda: _combine(args, params, kv_rows=-1), ValueError, "kv_rows")
    cases.run()
