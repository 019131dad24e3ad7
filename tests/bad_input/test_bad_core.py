"""Bad input to the core: StepInputs.validate, both plans, prefill_layer and decode_layer.

Without the bounds flag a bad value never makes the plan or a kernel index
outside a tensor: it becomes a hole (-1, a zero row or a skipped key). With
the flag each one raises ``ValueError`` naming the argument.
"""

import dataclasses

import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.dispatch import KernelChoice
from sglang_dsv4_sparse.core import StepInputs, Workspace, build_paged_plan, build_prefill_plan, decode_layer, prefill_layer
from sglang_dsv4_sparse.core.plan import topk_to_token_ids
from sglang_dsv4_sparse.random_inputs import written_cache
from sglang_dsv4_sparse.reference import layer_attention_reference

HUGE = 10**12
HEADS, TOPK = 4, 8
POOL_ROWS, MAX_LEN, FULL, SWA_PAGES = 4, 320, 1000, 2
C4_PAGES, C128_PAGES = 8, 6


class World:
    """Two requests' tables and one layer's caches of each ratio, random but valid."""

    def __init__(self, gen):
        self.gen = gen
        self.req_to_token = torch.stack([torch.randperm(FULL, generator=gen)[:MAX_LEN] for _ in range(POOL_ROWS)])
        self.full_to_swa = torch.randint(0, SWA_PAGES * L.SWA_PAGE_SIZE, (FULL,), generator=gen)
        self.swa_cache, _ = written_cache(SWA_PAGES, L.SWA_PAGE_SIZE, torch.arange(SWA_PAGES * L.SWA_PAGE_SIZE), gen)
        self.c4_cache, _ = written_cache(C4_PAGES, L.C4_PAGE_SIZE, torch.arange(C4_PAGES * L.C4_PAGE_SIZE), gen)
        self.c128_cache, _ = written_cache(C128_PAGES, L.C128_PAGE_SIZE, torch.arange(C128_PAGES * L.C128_PAGE_SIZE), gen)
        self.tables = {4: torch.randint(0, C4_PAGES, (2, 3), generator=gen), 128: torch.randint(0, C128_PAGES, (2, 3), generator=gen)}
        self.sink = torch.randn(HEADS, generator=gen)

    def inputs(self, seq=(150, 30), ext=(10, 20), **changes) -> StepInputs:
        base = dict(
            seq_lens=torch.tensor(seq, dtype=torch.int64), extend_lens=torch.tensor(ext, dtype=torch.int64),
            req_pool_indices=torch.tensor([2, 0]),
            req_to_token=self.req_to_token, full_to_swa=self.full_to_swa, compressed_page_tables=dict(self.tables),
            seq_lens_cpu=list(seq), extend_lens_cpu=list(ext),
        )
        base.update(changes)
        return StepInputs(**base)

    def decode_inputs(self, **changes) -> StepInputs:
        return self.inputs(seq=(151, 31), ext=(1, 1), **changes)

    def q(self, inputs: StepInputs) -> torch.Tensor:
        return torch.randn(inputs.num_tokens, HEADS, L.HEAD_DIM, generator=self.gen).to(torch.bfloat16)

    def topk(self, inputs: StepInputs) -> torch.Tensor:
        """Request-local C4 rows a query may read, with -1 holes."""
        seq, ext = inputs.seq_lens_cpu, inputs.extend_lens_cpu
        pos = torch.cat([torch.arange(s - e, s) for s, e in zip(seq, ext)])
        rows = torch.clamp(torch.div(pos + 1, 4, rounding_mode="floor"), min=1)
        picks = (torch.rand(pos.numel(), TOPK, generator=self.gen) * rows[:, None]).long()
        picks[torch.rand(picks.shape, generator=self.gen) < 0.1] = -1
        return picks.int()

    def layer(self, ratio):
        return {4: (4, self.c4_cache), 128: (128, self.c128_cache)}.get(ratio, (ratio, None))


def _swa_ids_of_request(plan, r):
    a, b = int(plan.swa_offsets[r]), int(plan.swa_offsets[r + 1])
    return plan.swa_token_ids[a:b]


# ---- StepInputs.validate and the plans -----------------------------------------------


def test_step_inputs_validate_and_plans(cases, gen):
    w = World(gen)

    def both_plans(inputs, check=None):
        def run():
            prefill, paged = build_prefill_plan(inputs), build_paged_plan(inputs)
            if check is not None:
                check(prefill, paged)
        return run

    cases.returns("valid", both_plans(w.inputs()))
    cases.returns("valid", both_plans(w.inputs()), bounds=True)
    cases.returns("valid decode", lambda: build_paged_plan(w.decode_inputs()), bounds=True)

    def request0_has_no_window(prefill, paged):
        assert bool((_swa_ids_of_request(prefill, 0) == -1).all())
        assert bool((paged.swa_indices[:10] == -1).all()) and bool((paged.swa_indices[10:] != -1).any())

    for name, pool in (("pool row past the table", POOL_ROWS), ("negative pool row", -1), ("huge pool row", HUGE)):
        inputs = w.inputs(req_pool_indices=torch.tensor([pool, 0]))
        cases.returns(name, both_plans(inputs, request0_has_no_window))
        cases.raises(name, both_plans(inputs), ValueError, "req_pool_indices", bounds=True)

    def past_the_width(prefill, paged):
        # Request 0 reads positions [222, 350): those from 320 on are past req_to_token.
        ids = _swa_ids_of_request(prefill, 0)
        assert bool((ids[-30:] == -1).all()) and bool((ids[:-30] >= 0).all())
        assert bool((paged.swa_indices[9, 0, -30:] == -1).all())

    long_req = w.inputs(seq=(350, 30), ext=(10, 20))
    cases.returns("seq_lens past req_to_token's width", both_plans(long_req, past_the_width))
    cases.raises("seq_lens past req_to_token's width", both_plans(long_req), ValueError, "seq_lens", bounds=True)

    far = torch.cat([torch.arange(140, 150), torch.arange(10, 29), torch.tensor([HUGE])])
    past_seq = w.inputs(positions=far)
    cases.returns("a position past seq_len", lambda: bool((build_paged_plan(past_seq).swa_indices[-1] == -1).all()) or 1 / 0)
    cases.raises("a position past seq_len", lambda: build_paged_plan(past_seq), ValueError, r"positions\[29\]", bounds=True)
    negative = w.inputs(positions=torch.cat([torch.arange(140, 150), torch.arange(-20, 0)]))
    cases.returns("negative positions", lambda: build_paged_plan(negative))
    cases.raises("negative positions", lambda: build_paged_plan(negative), ValueError, "positions", bounds=True)

    def past_full(prefill, paged):
        assert bool((_swa_ids_of_request(prefill, 1) == -1).any()) and int(paged.swa_indices.max()) < 512

    wild_table = w.req_to_token.clone()
    wild_table[0, 5:9] = torch.tensor([FULL, HUGE, -5, 2**40])
    bad_full = w.inputs(req_to_token=wild_table)
    cases.returns("req_to_token ids past full_to_swa", both_plans(bad_full, past_full))
    cases.raises("req_to_token ids past full_to_swa", both_plans(bad_full), ValueError, "req_to_token", bounds=True)
    short_map = w.inputs(full_to_swa=w.full_to_swa[:500])
    cases.returns("short full_to_swa", both_plans(short_map))
    cases.raises("short full_to_swa", both_plans(short_map), ValueError, "req_to_token", bounds=True)

    wild_swa = w.full_to_swa.clone()
    wild_swa[w.req_to_token[0, :30]] = 10**6
    capped = w.inputs(full_to_swa=wild_swa, cache_tokens={0: 512})
    cases.returns("full_to_swa past the SWA cache", lambda: bool((build_paged_plan(capped).swa_indices[10:] == -1).all()) or 1 / 0)
    cases.raises("full_to_swa past the SWA cache", both_plans(capped), ValueError, "full_to_swa", bounds=True)

    def pages_are_holes(ratio):
        def check(prefill, paged):
            assert bool((prefill.compressed[ratio].token_ids == -1).any())
            assert int(prefill.compressed[ratio].token_ids.max()) < {4: C4_PAGES * 64, 128: C128_PAGES * 2}[ratio]
            if ratio == 128:
                assert bool((paged.c128_indices == -1).any()) and int(paged.c128_indices.max()) < C128_PAGES * 2
        return check

    for ratio, page_ids in ((4, [-1, C4_PAGES, HUGE]), (128, [-3, C128_PAGES, 2**40])):
        tables = dict(w.tables)
        tables[ratio] = tables[ratio].clone()
        tables[ratio][0] = torch.tensor(page_ids)
        tables[ratio][1, 0] = page_ids[0]
        bad_pages = w.inputs(compressed_page_tables=tables, cache_tokens={4: C4_PAGES * 64, 128: C128_PAGES * 2})
        cases.returns(f"C{ratio} page ids outside the cache", both_plans(bad_pages, pages_are_holes(ratio)))
        cases.raises(f"C{ratio} page ids outside the cache", both_plans(bad_pages), ValueError,
                     rf"compressed_page_tables\[{ratio}\]", bounds=True)

    for name, changes, arg in (
        ("seq_lens disagree with seq_lens_cpu", dict(seq_lens=torch.tensor([150, 29])), "seq_lens and seq_lens_cpu"),
        ("seq_lens_cpu disagree with seq_lens", dict(seq_lens_cpu=[151, 30]), "seq_lens and seq_lens_cpu"),
        ("extend_lens disagree with extend_lens_cpu", dict(extend_lens=torch.tensor([10, 15])), "extend_lens and extend_lens_cpu"),
        ("extend_lens_cpu disagree with extend_lens", dict(extend_lens_cpu=[14, 16]), "extend_lens and extend_lens_cpu"),
    ):
        cases.returns(name, both_plans(w.inputs(**changes)))
        cases.raises(name, both_plans(w.inputs(**changes)), ValueError, arg, bounds=True)

    empty = torch.zeros(0, dtype=torch.int64)
    no_reqs = w.inputs(seq=(), ext=(), req_pool_indices=empty,
                       compressed_page_tables={r: t[:0] for r, t in w.tables.items()})
    cases.returns("no requests", both_plans(no_reqs))
    cases.returns("no requests", both_plans(no_reqs), bounds=True)

    def invalid(name, arg, exc=ValueError, **changes):
        cases.raises(name, both_plans(w.inputs(**changes)), exc, arg)

    invalid("float seq_lens", "seq_lens", TypeError, seq_lens=torch.tensor([150.0, 60.0]))
    invalid("short extend_lens", "extend_lens", extend_lens=torch.tensor([10]))
    invalid("req_pool_indices on meta", "req_pool_indices", req_pool_indices=torch.empty(2, dtype=torch.int64, device="meta"))
    invalid("1-D req_to_token", "req_to_token", req_to_token=w.req_to_token[0])
    invalid("2-D full_to_swa", "full_to_swa", full_to_swa=w.full_to_swa[None])
    invalid("short extend_lens_cpu", "extend_lens_cpu", extend_lens_cpu=[10])
    invalid("long seq_lens_cpu", "seq_lens_cpu", seq_lens_cpu=[150, 30, 9])
    invalid("extend_lens_cpu past seq_lens_cpu", "extend_lens_cpu", extend_lens_cpu=[10, 31])
    invalid("short positions", "positions", positions=torch.arange(29))
    invalid("ratio 3", "compress ratio", compressed_page_tables={3: w.tables[4]})
    invalid("one table row", r"compressed_page_tables\[4\]", compressed_page_tables={4: w.tables[4][:1]})
    invalid("narrow table", r"compressed_page_tables\[4\]", seq=(900, 30), ext=(10, 20))
    invalid("no page size", "compressed_page_sizes", compressed_page_sizes={4: 64})
    invalid("swa_page_size 0", "swa_page_size", swa_page_size=0)
    invalid("window 0", "window", window=0)
    invalid("cache_tokens key 5", "cache_tokens", cache_tokens={5: 10})
    cases.raises("no seq_lens_cpu for prefill", lambda: build_prefill_plan(w.inputs(seq_lens_cpu=None)), ValueError, "seq_lens_cpu")
    cases.returns("no seq_lens_cpu for decode", lambda: build_paged_plan(w.decode_inputs(seq_lens_cpu=None)))
    cases.run()


# ---- prefill_layer and decode_layer --------------------------------------------------


def _strided_last_dim(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a view whose last dim has stride 2."""
    wide = torch.stack([t, t], dim=-1)
    return wide.flatten(-2)[..., ::2]


def _misaligned(cache: torch.Tensor) -> torch.Tensor:
    """A copy of ``cache`` that starts 8 bytes past a 16-byte boundary."""
    flat = torch.empty(cache.numel() + 8, dtype=torch.uint8)
    out = flat[8:].view(cache.shape)
    out.copy_(cache)
    return out


# A choice made for a device the test's tensors are not on.
OTHER_DEVICE_CHOICE = KernelChoice("auto", torch.device("cuda", 0), False, "test")


def _close_to_reference(out, inputs, q, cache, ratio, ccache, topk, sink):
    ref = layer_attention_reference(inputs, q, cache, ratio, ccache, topk, sink)
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(out.float()), nan), "NaN exactly where the reference has it"
    keep = ~nan.any(-1)
    err = float((out.float()[keep] - ref[keep]).norm() / ref[keep].norm())
    assert err <= 1e-2, f"relative error {err:.3g}"


def test_prefill_layer(cases, gen):
    w = World(gen)
    inputs = w.inputs()
    plan = build_prefill_plan(inputs)
    q, topk = w.q(inputs), w.topk(inputs)
    ws = Workspace("cpu")

    def layer(ratio, q=q, topk=topk, swa_cache=w.swa_cache, plan=plan, **kw):
        _, ccache = w.layer(ratio)
        ccache = kw.pop("compressed_cache", ccache)
        return prefill_layer(plan, ws, q, swa_cache, ratio, ccache, topk if ratio == 4 else None, w.sink, **kw)

    def matches(ratio, q=q, topk=topk, masked_topk=None, **kw):
        def run():
            out = layer(ratio, q, topk, **kw)
            _, ccache = w.layer(ratio)
            ref_topk = (masked_topk if masked_topk is not None else topk) if ratio == 4 else None
            _close_to_reference(out, inputs, q, w.swa_cache, ratio, ccache, ref_topk, w.sink)
        return run

    for ratio in (0, 4, 128):
        cases.returns(f"valid C{ratio}", matches(ratio))
        cases.returns(f"valid C{ratio}", matches(ratio), bounds=True)
        nan_q = q.clone()
        nan_q[3, 1, 5], nan_q[20, 2, 100], nan_q[21, 0, 0] = float("nan"), float("inf"), float("-inf")
        cases.returns(f"NaN and inf in q, C{ratio}", matches(ratio, q=nan_q))

    wild = topk.clone()
    wild[2, :4] = torch.tensor([38, -2, HUGE, 10**6])  # request 0 has 37 C4 rows
    wild[20, :2] = torch.tensor([7, 2**31 - 1])  # request 1 has 7
    holes = wild.long().clone()
    holes[(holes < -1) | (holes >= torch.where(torch.arange(30) < 10, 37, 7)[:, None])] = -1
    for c4_rows in ("all", "selected"):
        cases.returns(f"top-k outside the request's rows, {c4_rows}",
                      matches(4, topk=wild.long(), masked_topk=holes, c4_rows=c4_rows))
    cases.raises("top-k outside the request's rows", lambda: layer(4, topk=wild), ValueError, "topk_indices", bounds=True)

    small_swa = w.swa_cache[:1]
    cases.returns("SWA cache smaller than its ids", lambda: bool(torch.isfinite(layer(0, swa_cache=small_swa)).all()) or 1 / 0)
    cases.raises("SWA cache smaller than its ids", lambda: layer(0, swa_cache=small_swa), ValueError, "full_to_swa", bounds=True)
    small_c4 = w.c4_cache[: int(w.tables[4][:, :1].min())]
    cases.returns("C4 cache smaller than its pages", lambda: bool(torch.isfinite(layer(4, compressed_cache=small_c4)).all()) or 1 / 0)
    cases.raises("C4 cache smaller than its pages", lambda: layer(4, compressed_cache=small_c4), ValueError,
                 r"compressed_page_tables\[4\]", bounds=True)

    # The C4 routes that read the window through the shared-row kernel; "paged" reads the top-k
    # straight from the fp8 cache by cache id.
    for route in ("native", "split", "paged"):
        cases.returns(f"valid C4, {route}", matches(4, route=route))
        cases.returns(f"NaN and inf in q, C4, {route}", matches(4, q=nan_q, route=route))
        cases.returns(f"top-k outside the request's rows, {route}",
                      matches(4, topk=wild.long(), masked_topk=holes, route=route))
        cases.returns(f"C4 cache smaller than its pages, {route}", lambda route=route: bool(
            torch.isfinite(layer(4, compressed_cache=small_c4, route=route)).all()) or 1 / 0)
    cases.raises("C4 cache off a 16-byte boundary, paged", lambda: layer(
        4, compressed_cache=_misaligned(w.c4_cache), route="paged"), ValueError, "compressed_cache")

    mismatched = w.inputs(seq_lens=torch.tensor([150, 29]), extend_lens=torch.tensor([10, 29]))
    for ratio in (0, 4, 128):
        cases.returns(f"host copies disagree, C{ratio}", lambda ratio=ratio: layer(
            ratio, plan=build_prefill_plan(mismatched)).shape == q.shape or 1 / 0)

    no_reqs = w.inputs(seq=(), ext=(), req_pool_indices=torch.zeros(0, dtype=torch.int64),
                       compressed_page_tables={r: t[:0] for r, t in w.tables.items()})
    empty_plan = build_prefill_plan(no_reqs)
    cases.returns("no queries", lambda: layer(4, q=q[:0], topk=topk[:0], plan=empty_plan).shape == (0, HEADS, 512) or 1 / 0)

    c0_plan = build_prefill_plan(w.inputs(compressed_page_tables={}))
    cases.raises("fp32 q", lambda: layer(0, q=q.float()), TypeError, "q")
    cases.raises("q for fewer queries", lambda: layer(0, q=q[:5]), ValueError, "q")
    cases.raises("q on meta", lambda: layer(0, q=torch.empty_like(q, device="meta")), ValueError, "q")
    cases.raises("ratio 2", lambda: layer(2), ValueError, "compress_ratio")
    cases.raises("ratio the plan lacks", lambda: layer(128, plan=c0_plan), ValueError, "compress_ratio=128")
    cases.raises("C4 without top-k", lambda: layer(4, topk=None), ValueError, "topk_indices")
    cases.raises("top-k for fewer queries", lambda: layer(4, topk=topk[:5]), ValueError, "topk_indices")
    cases.raises("float top-k", lambda: layer(4, topk=topk.float()), TypeError, "topk_indices")
    cases.raises("SWA cache of C4 pages", lambda: layer(0, swa_cache=w.c4_cache), ValueError, "swa_cache")
    cases.raises("C4 cache of C128 pages", lambda: layer(4, compressed_cache=w.c128_cache), ValueError, "compressed_cache")
    cases.raises("no compressed cache", lambda: layer(4, compressed_cache=None), ValueError, "compressed_cache")
    cases.raises("SWA cache not a tensor", lambda: layer(0, swa_cache=[1]), TypeError, "swa_cache")
    cases.raises("short sink", lambda: prefill_layer(plan, ws, q, w.swa_cache, 0, attn_sink=w.sink[:2]), ValueError, "attn_sink")
    cases.raises("bad c4_rows", lambda: layer(4, c4_rows="some"), ValueError, "c4_rows")
    # Checked here once, not again by the kernels the layer calls.
    cases.raises("q with a strided last dim", lambda: layer(0, q=_strided_last_dim(q)), ValueError, "q")
    many = torch.zeros(q.shape[0], 129, L.HEAD_DIM, dtype=torch.bfloat16)
    cases.raises("q of 129 heads", lambda: prefill_layer(plan, ws, many, w.swa_cache, 0), ValueError, "129")
    cases.raises("strided sink", lambda: prefill_layer(plan, ws, q, w.swa_cache, 0, attn_sink=_strided_last_dim(w.sink)),
                 ValueError, "attn_sink")
    cases.raises("top-k with a strided last dim", lambda: layer(4, topk=_strided_last_dim(topk)), ValueError, "topk_indices")
    cases.raises("SWA cache on meta", lambda: layer(0, swa_cache=w.swa_cache.to("meta")), ValueError, "swa_cache")
    cases.raises("C128 cache on meta", lambda: layer(128, compressed_cache=w.c128_cache.to("meta")), ValueError,
                 "compressed_cache")
    meta_plan = dataclasses.replace(plan, query_pos=plan.query_pos.to("meta"))
    cases.raises("plan on meta", lambda: layer(0, plan=meta_plan), ValueError, "plan")
    cases.raises("workspace on meta", lambda: prefill_layer(plan, Workspace("meta"), q, w.swa_cache, 0), ValueError,
                 "workspace")
    cases.raises("choice for another device", lambda: layer(0, choice=OTHER_DEVICE_CHOICE), ValueError, "choice")
    cases.run()


def test_decode_layer(cases, gen):
    w = World(gen)
    inputs = w.decode_inputs()
    plan = build_paged_plan(inputs)
    q, topk = w.q(inputs), w.topk(inputs)
    # The paged route takes a C4 layer's top-k as C4-cache ids with lengths (what SGLang's indexer writes).
    c4_ids, c4_lens = topk_to_token_ids(plan, 4, topk)
    c4_ids = c4_ids[:, 0]

    def layer(ratio, q=q, ids=c4_ids, swa_cache=w.swa_cache, plan=plan, **kw):
        _, ccache = w.layer(ratio)
        ccache = kw.pop("compressed_cache", ccache)
        c4 = ratio == 4 and ids is not None
        return decode_layer(plan, q, swa_cache, ratio, ccache, ids if ratio == 4 else None, w.sink,
                            topk_lengths=kw.pop("topk_lengths", c4_lens) if c4 else None, **kw)

    for ratio in (0, 4, 128):
        cases.returns(f"valid C{ratio}", lambda ratio=ratio: _close_to_reference(
            layer(ratio), inputs, q, w.swa_cache, ratio, w.layer(ratio)[1], topk if ratio == 4 else None, w.sink))
        cases.returns(f"valid C{ratio}", lambda ratio=ratio: layer(ratio), bounds=True)
        nan_q = q.clone()
        nan_q[0, 1, 5], nan_q[1, 2, 100] = float("nan"), float("inf")
        cases.returns(f"NaN and inf in q, C{ratio}", lambda ratio=ratio, nan_q=nan_q: _close_to_reference(
            layer(ratio, q=nan_q), inputs, nan_q, w.swa_cache, ratio, w.layer(ratio)[1], topk if ratio == 4 else None, w.sink))

    wild = c4_ids.clone()
    wild[0, :3] = torch.tensor([w.c4_cache.shape[0] * 64, -2, 2**31 - 1])  # one past the C4 cache, negative, huge
    cases.returns("top-k ids outside the C4 cache", lambda: bool(torch.isfinite(layer(4, ids=wild)).all()) or 1 / 0)
    cases.raises("top-k ids outside the C4 cache", lambda: layer(4, ids=wild), ValueError, "topk_indices", bounds=True)
    local_wild = topk.clone()
    local_wild[0, :3] = torch.tensor([38, -2, 2**31 - 1])  # request 0 has 37 C4 rows
    cases.returns("request-local picks outside the request's rows become holes",
                  lambda: bool((topk_to_token_ids(plan, 4, local_wild)[0][0, 0, :3] == -1).all()) or 1 / 0)
    small_swa = w.swa_cache[:1]
    cases.returns("SWA cache smaller than its ids", lambda: bool(torch.isfinite(layer(0, swa_cache=small_swa)).all()) or 1 / 0)
    cases.raises("SWA cache smaller than its ids", lambda: layer(0, swa_cache=small_swa), ValueError, "full_to_swa", bounds=True)
    small_c128 = w.c128_cache[: int(w.tables[128][:, :1].min())]
    cases.returns("C128 cache smaller than its pages", lambda: bool(torch.isfinite(layer(128, compressed_cache=small_c128)).all()) or 1 / 0)
    cases.raises("C128 cache smaller than its pages", lambda: layer(128, compressed_cache=small_c128), ValueError,
                 r"compressed_page_tables\[128\]", bounds=True)
    small_c4 = w.c4_cache[:1]
    cases.raises("C4 cache smaller than its ids", lambda: layer(4, compressed_cache=small_c4), ValueError,
                 "topk_indices", bounds=True)

    empty_plan = build_paged_plan(w.inputs(seq=(), ext=(), req_pool_indices=torch.zeros(0, dtype=torch.int64),
                                           compressed_page_tables={r: t[:0] for r, t in w.tables.items()}))
    cases.returns("no queries", lambda: layer(128, q=q[:0], plan=empty_plan).shape == (0, HEADS, 512) or 1 / 0)

    cases.raises("fp32 q", lambda: layer(0, q=q.float()), TypeError, "q")
    cases.raises("q for more queries", lambda: layer(0, q=torch.cat([q, q])), ValueError, "q")
    cases.raises("q on meta", lambda: layer(0, q=torch.empty_like(q, device="meta")), ValueError, "q")
    cases.raises("ratio 64", lambda: layer(64), ValueError, "compress_ratio")
    cases.raises("C4 without top-k", lambda: layer(4, ids=None), ValueError, "topk_indices")
    cases.raises("C4 without top-k lengths", lambda: decode_layer(plan, q, w.swa_cache, 4, w.c4_cache, c4_ids, w.sink),
                 ValueError, "topk_lengths")
    cases.raises("SWA cache of C128 pages", lambda: layer(0, swa_cache=w.c128_cache), ValueError, "swa_cache")
    cases.raises("C128 cache of C4 pages", lambda: layer(128, compressed_cache=w.c4_cache), ValueError, "compressed_cache")
    cases.raises("ratio the plan lacks", lambda: layer(4, plan=build_paged_plan(w.decode_inputs(compressed_page_tables={}))),
                 ValueError, "compress_ratio=4")
    # Checked here once, not again by the kernels the layer calls.
    cases.raises("q with a strided last dim", lambda: layer(0, q=_strided_last_dim(q)), ValueError, "q")
    cases.raises("strided top-k lengths", lambda: layer(4, topk_lengths=_strided_last_dim(c4_lens)), ValueError,
                 "topk_lengths")
    cases.raises("misaligned SWA cache", lambda: layer(0, swa_cache=_misaligned(w.swa_cache)), ValueError,
                 "swa_cache must start at a 16-byte aligned")
    cases.raises("misaligned C128 cache", lambda: layer(128, compressed_cache=_misaligned(w.c128_cache)), ValueError,
                 "compressed_cache must start at a 16-byte aligned")
    cases.raises("C4 cache on meta", lambda: layer(4, compressed_cache=w.c4_cache.to("meta")), ValueError,
                 "compressed_cache")
    meta_plan = dataclasses.replace(plan, swa_lens=plan.swa_lens.to("meta"))
    cases.raises("plan on meta", lambda: layer(0, plan=meta_plan), ValueError, "plan")
    cases.raises("choice for another device", lambda: layer(0, choice=OTHER_DEVICE_CHOICE), ValueError, "choice")
    cases.run()
