"""The verify kernel against its reference (every draft token a paged decode
query of its own): index rows built from per-request page tables as SGLang
builds them, 1-8 draft tokens, ragged requests, tokens near the request start,
C0 / C4 / C128 layers (C128 rows clamped to 1 before a request's first
compressed row), holes and ids past the caches, page boundaries, split-KV,
multi-pass requests, empty batches and caches past 2**31 bytes."""

from dataclasses import dataclass

import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn import sparse_mla_decode_paged, sparse_mla_verify_paged
from sglang_dsv4_sparse.kernels.sparse_attn.configs import (
    VERIFY_CONFIGS_NARROW,
    VERIFY_CONFIGS_WIDE,
    VERIFY_MAX_ROWS,
    verify_tile,
)
from sglang_dsv4_sparse.random_inputs import random_rows, written_cache
from sglang_dsv4_sparse.reference import sparse_verify_paged_reference
from testing import assert_attention_close, huge_cache

ON_GPU = torch.cuda.is_available()
WINDOW = L.SWA_WINDOW
PAST_2_31 = 2**32 + 2**28 if ON_GPU else 2**31 + 2**20


@dataclass
class Pools:
    """Where a batch's rows live: SWA ids of each request's positions and compressed tables."""

    swa_ids: list  # per request: [seq_len] SWA id of each position (-1: evicted or a hole)
    c_ids: list  # per request: [rows] cache id of each compressed row (-1: a hole)


def _pools(gen, prefix_lens, draft_counts, ratio, *, swa_base=0, swa_capacity, x_base=0, x_capacity=0,
           holes=0.05, past_end=0.03, x_page_size=None):
    """Per-request page tables as SGLang keeps them: positions -> full-cache ids -> SWA ids
    (only the last ``WINDOW + S`` positions still have one), compressed rows -> pages.

    SWA ids of a request are consecutive from a random start (pages are
    shared by neighbouring positions, and a window crosses page edges); a
    fraction are holes (-1) and ids past the cache, the same for every token
    that reads the position.
    """
    full_pool = sum(p + s for p, s in zip(prefix_lens, draft_counts))
    req_to_token = torch.randperm(full_pool, generator=gen)
    full_to_swa = torch.full((full_pool,), -1, dtype=torch.int64)
    swa_ids, c_ids, offset, next_swa, next_page = [], [], 0, swa_base, 0
    for p0, s in zip(prefix_lens, draft_counts):
        seq_len = p0 + s
        full = req_to_token[offset:offset + seq_len]
        offset += seq_len
        live = torch.arange(max(0, seq_len - WINDOW - s), seq_len)
        full_to_swa[full[live]] = next_swa + torch.arange(live.numel())
        next_swa += live.numel() + int(torch.randint(0, 40, (1,), generator=gen))
        ids = full_to_swa[full].clone()
        r = torch.rand(seq_len, generator=gen)
        ids[r < holes] = -1
        ids[(r >= holes) & (r < holes + past_end)] = swa_base + swa_capacity + 3
        swa_ids.append(ids)
        if ratio:
            rows = seq_len // ratio
            pages = -(-max(rows, 1) // x_page_size)
            # Pages spread over the cache, rows of a page consecutive.
            table = torch.randperm(x_capacity // x_page_size, generator=gen)[:pages] + x_base // x_page_size
            assert table.numel() == pages, "extra cache too small"
            j = torch.arange(rows)
            cid = table[j // x_page_size] * x_page_size + j % x_page_size
            r = torch.rand(rows, generator=gen)
            cid[r < holes] = -1
            cid[(r >= holes) & (r < holes + past_end)] = x_base + x_capacity + 1
            c_ids.append(cid)
            next_page += pages
    assert next_swa <= swa_base + swa_capacity, "SWA cache too small"
    return Pools(swa_ids, c_ids)


def _rows(gen, pools, prefix_lens, draft_counts, ratio, width, x_width):
    """Per-token index rows, each built for its own position, as SGLang's verify metadata does."""
    swa_rows, swa_lens, x_rows, x_lens = [], [], [], []
    for r, (p0, s) in enumerate(zip(prefix_lens, draft_counts)):
        for j in range(s):
            cached = p0 + j + 1  # the token's own position is already written
            n = min(cached, WINDOW)
            row = torch.full((width,), -1, dtype=torch.int64)
            row[:n] = pools.swa_ids[r][cached - n:cached].flip(0)  # newest first, as SGLang lists a window
            swa_rows.append(row)
            swa_lens.append(n)
            if ratio == 128:
                count = cached // 128
                row = torch.full((x_width,), -1, dtype=torch.int64)
                row[:count] = pools.c_ids[r][:count]
                x_rows.append(row)
                x_lens.append(max(count, 1))  # SGLang clamps to 1 over a -1 entry
            elif ratio == 4:
                count = min(cached // 4, x_width)
                row = torch.full((x_width,), -1, dtype=torch.int64)
                pick = torch.randperm(cached // 4, generator=gen)[:count]
                row[:count] = pools.c_ids[r][pick]
                x_rows.append(row)
                x_lens.append(count)
    i32 = dict(dtype=torch.int32)
    out = dict(swa_indices=torch.stack(swa_rows).to(**i32) if swa_rows else torch.zeros(0, width, **i32),
               swa_lens=torch.tensor(swa_lens, **i32))
    if ratio:
        out.update(extra_indices=torch.stack(x_rows).to(**i32) if x_rows else torch.zeros(0, x_width, **i32),
                   extra_lens=torch.tensor(x_lens, **i32), extra_shared=ratio == 128)
    return out


def _case(gen, device, prefix_lens, draft_counts, h, ratio=0, *, width=WINDOW, x_width=128, sink=True,
          swa_cache=None, swa_base=0, x_cache=None, x_base=0, holes=0.05, past_end=0.03):
    x_page = {4: L.C4_PAGE_SIZE, 128: L.C128_PAGE_SIZE}.get(ratio)
    if swa_cache is None:
        needed = swa_base + sum(min(p + s, WINDOW + s) + 40 for p, s in zip(prefix_lens, draft_counts))
        pages = -(-(needed + 1) // L.SWA_PAGE_SIZE)
        swa_cache = written_cache(pages, L.SWA_PAGE_SIZE, torch.arange(pages * L.SWA_PAGE_SIZE), gen, device)[0]
    swa_capacity = swa_cache.shape[0] * L.SWA_PAGE_SIZE - swa_base
    x_capacity = 0
    if ratio:
        if x_cache is None:
            rows = sum((p + s) // ratio for p, s in zip(prefix_lens, draft_counts))
            pages = 2 * (rows // x_page + len(prefix_lens)) + 2
            x_cache = written_cache(pages, x_page, torch.arange(pages * x_page), gen, device)[0]
        x_capacity = x_cache.shape[0] * x_page - x_base
    pools = _pools(gen, prefix_lens, draft_counts, ratio, swa_base=swa_base, swa_capacity=swa_capacity,
                   x_base=x_base, x_capacity=x_capacity, x_page_size=x_page, holes=holes, past_end=past_end)
    rows = _rows(gen, pools, prefix_lens, draft_counts, ratio, width, x_width)
    t = sum(draft_counts)
    qsl = torch.zeros(len(draft_counts) + 1, dtype=torch.int32)
    qsl[1:] = torch.cumsum(torch.tensor(draft_counts, dtype=torch.int32), 0)
    # Logits of about unit spread: every key carries weight, so one key seen or missed shows in lse.
    kw = dict(q=(torch.randn(t, h, L.HEAD_DIM, generator=gen) * 0.1).to(torch.bfloat16), query_start_loc=qsl,
              swa_cache=swa_cache, swa_page_size=L.SWA_PAGE_SIZE, sm_scale=L.SOFTMAX_SCALE, **rows)
    if sink:
        kw["attn_sink"] = torch.randn(h, generator=gen) * 2
    if ratio:
        kw.update(extra_k_cache=x_cache, extra_page_size=x_page)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _reference(kw):
    return sparse_verify_paged_reference(
        kw["q"], kw["query_start_loc"], kw["swa_cache"], kw["swa_page_size"], kw["swa_indices"], kw["swa_lens"],
        kw["sm_scale"], kw.get("attn_sink"), kw.get("extra_k_cache"), kw.get("extra_page_size"),
        kw.get("extra_indices"), kw.get("extra_lens"), kw.get("extra_shared", False),
    )


def _check(got, ref):
    out, lse = got
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert out.shape == ref[0].shape and lse.shape == ref[1].shape
    assert_attention_close(out, ref[0])
    torch.testing.assert_close(lse.cpu(), ref[1].cpu(), atol=1e-5, rtol=8.01 / 65536)


@pytest.mark.parametrize(
    "prefix_lens,draft_counts,h,ratio,splits",
    [
        ([300, 50], [4, 4], 16, 0, None),  # window only; the second request's windows straddle its start
        ([124, 1000, 5], [8, 3, 1], 8, 128, None),  # ragged; clamp-1 C128 rows becoming real mid-request
        ([700, 90], [2, 5], 16, 4, None),  # per-token C4 picks, ragged
        ([4000, 129], [2, 2], 64, 128, None),  # 64 heads: two 32-head blocks of 2 tokens
        ([2100], [8], 8, 4, 4),  # 8 tokens x 8 heads, forced splits over the per-token segments
        ([200, 7, 3000], [1, 1, 1], 16, 128, None),  # one draft token: plain decode
    ],
)
def test_matches_reference(gen, device, prefix_lens, draft_counts, h, ratio, splits):
    kw = _case(gen, device, prefix_lens, draft_counts, h, ratio)
    got = sparse_mla_verify_paged(**kw, num_splits=splits)
    _check(got, _reference(kw))


def test_matches_the_decode_kernel(gen, device):
    # The same tokens through the paged decode kernel, one query each: what SGLang runs today.
    kw = _case(gen, device, [500, 60], [3, 4], 16, 128)
    got = sparse_mla_verify_paged(**kw)
    t, h = kw["q"].shape[:2]
    out, lse = sparse_mla_decode_paged(
        kw["q"].unsqueeze(1), kw["swa_cache"], kw["swa_indices"].unsqueeze(1), kw["swa_lens"], kw["attn_sink"],
        kw["extra_k_cache"], kw["extra_indices"].unsqueeze(1), kw["extra_lens"], kw["sm_scale"],
        page_size=kw["swa_page_size"], extra_page_size=kw["extra_page_size"],
    )
    assert_attention_close(got[0], out[:, 0].float())
    torch.testing.assert_close(got[1], lse[:, :, 0], atol=1e-5, rtol=8.01 / 65536)


def test_every_builtin_config_agrees(gen, device):
    # Every key-tile size and the split score dot, with and without split-KV.
    kw = _case(gen, device, [140], [3], 16, 128)
    ref = _reference(kw)
    for cfg in dict.fromkeys(VERIFY_CONFIGS_WIDE + VERIFY_CONFIGS_NARROW):
        for splits in (1, 3):
            _check(sparse_mla_verify_paged(**kw, config=cfg, num_splits=splits), ref)


@pytest.mark.parametrize("ratio", [4, 128])
def test_split_rule_splits_a_small_batch(gen, device, ratio):
    # One request of 4 tokens: the shape rule splits its key blocks; forced single pass agrees.
    kw = _case(gen, device, [1500], [4], 16, ratio, x_width=256)
    ref = _reference(kw)
    _check(sparse_mla_verify_paged(**kw), ref)
    _check(sparse_mla_verify_paged(**kw, num_splits=1), ref)


@pytest.mark.parametrize("tokens", [2, 8])
def test_c128_rows_clamped_to_one(gen, device, tokens):
    # Draft tokens crossing position 128: the first ones have no compressed row
    # yet (length clamped to 1 over -1), the later ones see row 0, in one pass
    # (8) and in passes that mix both kinds (2).
    kw = _case(gen, device, [124, 300], [8, 2], 8, 128, holes=0.0, past_end=0.0)
    assert kw["extra_indices"][:3, 0].eq(-1).all() and kw["extra_indices"][3:8, 0].ge(0).all()
    _check(sparse_mla_verify_paged(**kw, tokens_per_request=tokens), _reference(kw))


@pytest.mark.parametrize("tokens", [1, 2, 8])
def test_tile_narrower_or_wider_than_requests(gen, device, tokens):
    # tokens_per_request below a request's draft count: several passes; above: masked rows.
    kw = _case(gen, device, [130, 400], [5, 3], 8, 4, x_width=128)
    _check(sparse_mla_verify_paged(**kw, tokens_per_request=tokens), _reference(kw))


def test_page_boundaries(gen, device):
    # SWA ids consecutive across a page edge (the request starts 60 slots before it), C128 rows on pages of 2.
    kw = _case(gen, device, [600], [4], 16, 128, swa_base=L.SWA_PAGE_SIZE - 60, holes=0.0, past_end=0.0)
    ids = kw["swa_indices"][kw["swa_indices"] >= 0]
    assert int(ids.min()) < L.SWA_PAGE_SIZE <= int(ids.max())
    _check(sparse_mla_verify_paged(**kw), _reference(kw))


def test_skipped_ids_and_rows_without_keys(gen, device):
    # Many holes and ids past both caches; the last request's rows hold nothing valid:
    # out 0 and lse +inf, as for decode.
    kw = _case(gen, device, [350, 20], [3, 2], 16, 4, holes=0.3, past_end=0.2)
    kw["swa_indices"][3:] = -1
    kw["extra_indices"][3:] = 10**9
    out, lse = sparse_mla_verify_paged(**kw)
    assert bool((out[3:] == 0).all()) and bool(torch.isposinf(lse[3:]).all())
    _check((out, lse), _reference(kw))


def test_without_sink_and_with_int64_rows(gen, device):
    kw = _case(gen, device, [260, 1300], [3, 3], 16, 128, sink=False)
    kw.update(swa_indices=kw["swa_indices"].long(), query_start_loc=kw["query_start_loc"].long())
    _check(sparse_mla_verify_paged(**kw), _reference(kw))


@pytest.mark.parametrize("reqs", [0, 2])
def test_empty_batch(gen, device, reqs):
    kw = _case(gen, device, [10], [2], 16, 128)
    kw.update(q=kw["q"][:0], swa_indices=kw["swa_indices"][:0], swa_lens=kw["swa_lens"][:0],
              extra_indices=kw["extra_indices"][:0], extra_lens=kw["extra_lens"][:0],
              query_start_loc=torch.zeros(reqs + 1, dtype=torch.int32, device=device))
    out, lse = sparse_mla_verify_paged(**kw, check_bounds=True)
    assert out.shape == (0, 16, L.HEAD_DIM) and lse.shape == (0, 16)


def test_caches_past_2_31_bytes(gen, device):
    # Window and C128 rows whose byte offsets need more than 31 bits (32 on the GPU):
    # uninitialised caches, only the rows in use written.
    swa = huge_cache(PAST_2_31, L.SWA_PAGE_SIZE, device)
    x = huge_cache(PAST_2_31, L.C128_PAGE_SIZE, device)
    swa_base = (swa.shape[0] - 3) * L.SWA_PAGE_SIZE
    x_base = (x.shape[0] - 60) * L.C128_PAGE_SIZE
    kw = _case(gen, device, [2000, 700], [3, 2], 16, 128, swa_cache=swa, swa_base=swa_base, x_cache=x,
               x_base=x_base, past_end=0.0)
    for cache, page, ids in ((swa, L.SWA_PAGE_SIZE, kw["swa_indices"]), (x, L.C128_PAGE_SIZE, kw["extra_indices"])):
        used = torch.unique(ids[ids >= 0].long())
        assert int(L.token_byte_offsets(used, page)[0].min()) > 2**31
        L.quantize_into_paged_cache(cache, used, random_rows(used.numel(), gen).to(device), page)
    _check(sparse_mla_verify_paged(**kw, num_splits=2), _reference(kw))


def test_bounds_flag_checks_the_contract(gen, device):
    kw = _case(gen, device, [300, 124], [3, 4], 16, 128, holes=0.0, past_end=0.0)
    _check(sparse_mla_verify_paged(**kw, check_bounds=True), _reference(kw))  # SGLang's layout passes
    bad = dict(kw, swa_indices=kw["swa_indices"].clone())
    bad["swa_indices"][5, 10] += 1
    with pytest.raises(ValueError, match=r"swa_indices row 5 does not continue request 1's window"):
        sparse_mla_verify_paged(**bad, check_bounds=True)
    bad = dict(kw, extra_lens=kw["extra_lens"].clone())
    bad["extra_lens"][1] = 0
    with pytest.raises(ValueError, match="extra_lens"):
        sparse_mla_verify_paged(**bad, check_bounds=True)


def test_verify_tile():
    assert verify_tile(16, 4) == (4, 16, 64)
    assert verify_tile(8, 8) == (8, 8, 64)
    assert verify_tile(16, 8) == (8, 8, 64)  # two head blocks
    assert verify_tile(8, 1) == (1, 8, 16)  # a dot needs 16 rows: half masked
    assert verify_tile(128, 1) == (1, 64, 64)
    assert verify_tile(64, 3) == (4, 16, 64)
    assert verify_tile(8, 100) == (VERIFY_MAX_ROWS, 1, VERIFY_MAX_ROWS)
