"""The shared-row kernel against its reference: window-only and C128 layers,
ragged requests whose tiles straddle two requests, chunks on and off 128
boundaries, the folded route's skip and prior, bad ids, and workspaces past
2**31 bytes."""

import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.sparse_attn.shared_rows import queries_per_tile, shared_rows_attention
from sglang_dsv4_sparse.reference import shared_rows_attention_reference
from testing import assert_attention_close

WINDOW = 24


def _step(gen, device, seq_lens, extend_lens, ratio, *, spare_rows=5):
    """Workspace-shaped inputs: per request its compressed rows, then all window unions, then spare rows."""
    seq = torch.tensor(seq_lens)
    ext = torch.tensor(extend_lens)
    gather = torch.minimum(seq, ext + WINDOW - 1)
    rows_per_req = seq // ratio if ratio else torch.zeros_like(seq)
    c_base = torch.cumsum(rows_per_req, 0) - rows_per_req
    swa_base = int(rows_per_req.sum()) + torch.cumsum(gather, 0) - gather
    kv_rows = int(rows_per_req.sum() + gather.sum()) + spare_rows
    kv = (torch.randn(kv_rows, 1, L.HEAD_DIM, generator=gen) * 2).to(torch.bfloat16)
    req = torch.repeat_interleave(torch.arange(len(seq_lens)), ext)
    pos = torch.cat([torch.arange(s - e, s) for s, e in zip(seq_lens, extend_lens)])
    i32 = dict(dtype=torch.int32, device=device)
    return dict(
        kv=kv.to(device), req_of_token=req.to(device), query_pos=pos.to(**i32), seq_lens=seq.to(**i32),
        gather_lens=gather.to(**i32), swa_base=swa_base.to(**i32), compressed_base=c_base.to(**i32),
    )


def _q(gen, device, tokens, heads):
    return (torch.randn(tokens, heads, L.HEAD_DIM, generator=gen) * 3).to(torch.bfloat16).to(device)


def _run_both(q, step, ratio, **kw):
    args = dict(step, window=WINDOW, compress_ratio=ratio)
    if not ratio:
        args.pop("compressed_base")
    got = shared_rows_attention(q, **args, **kw)
    ref = shared_rows_attention_reference(q, **args, **kw)
    return got, ref


def _check(got, ref):
    assert_attention_close(got[0], ref[0])
    torch.testing.assert_close(got[1].cpu(), ref[1].cpu(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("heads", [1, 3, 8, 16, 24, 64])
@pytest.mark.parametrize("ratio", [0, 128])
def test_matches_reference_ragged(gen, device, heads, ratio):
    # Three requests: a fresh prompt (positions from 0), a chunk starting just past a
    # 128 boundary with >64 compressed rows (two key blocks), one ending on a boundary.
    # Extends of 5, 7 and 6 queries put tiles across request boundaries at most head counts.
    seq_lens, extend_lens = [5, 8321, 8448], [5, 7, 6]
    if heads == 1:  # 64 queries a tile: make tiles straddle requests too
        seq_lens, extend_lens = [40, 8321, 8448], [40, 30, 20]
    step = _step(gen, device, seq_lens, extend_lens, ratio)
    q = _q(gen, device, sum(extend_lens), heads)
    sink = (torch.randn(heads, generator=gen) * 2).to(device)
    _check(*_run_both(q, step, ratio, attn_sink=sink))


def test_chunk_on_a_128_boundary_without_sink(gen, device):
    step = _step(gen, device, [256 + 9], [9], 128)  # first query at 256: a new row appears at 255 -> 256
    q = _q(gen, device, 9, 16)
    _check(*_run_both(q, step, 128))


def test_skip_and_prior_merge(gen, device):
    heads = 16
    g = queries_per_tile(heads)
    seq_lens, extend_lens = [8321, 8448], [9, 6]
    step = _step(gen, device, seq_lens, extend_lens, 128)
    tokens = sum(extend_lens)
    q = _q(gen, device, tokens, heads)
    tiles = -(-tokens // g)
    skip = torch.randint(0, 66, (tiles,), generator=gen, dtype=torch.int32)
    skip[1] = -3  # a negative skip reads from row 0
    prior_rows = tokens - 2
    prior_out = torch.randn(prior_rows, heads, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    prior_lse = torch.randn(prior_rows, heads, generator=gen) * 4
    prior_lse[0] = float("inf")  # an empty partial
    prior_lse[3, :5] = float("-inf")
    sink = torch.randn(heads, generator=gen).to(device)
    got, ref = _run_both(
        q, step, 128, attn_sink=sink, skip_rows=skip.to(device),
        prior=(prior_out.to(device), prior_lse.to(device)),
    )
    _check(got, ref)


def test_bad_ids_read_nothing(gen, device):
    heads = 8
    step = _step(gen, device, [300, 8400], [10, 12], 128, spare_rows=0)
    step["req_of_token"][3] = 7  # no such request
    step["req_of_token"][4] = -2
    step["query_pos"][12] = 9999  # past its request: clamped to the last token
    step["query_pos"][13] = -50  # before the prompt: no keys
    step["swa_base"][1] += 15  # window union partly past the workspace: those rows skipped
    q = _q(gen, device, 22, heads)
    got, ref = _run_both(q, step, 128)
    _check(got, ref)
    assert bool((got[0][3:5] == 0).all()) and bool((got[1][3:5] == float("inf")).all())


def test_no_queries(device):
    q = torch.empty(0, 16, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    i32 = dict(dtype=torch.int32, device=device)
    out, lse = shared_rows_attention(
        q, torch.zeros(4, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device), torch.empty(0, **i32),
        torch.empty(0, **i32), torch.empty(0, **i32), torch.empty(0, **i32), torch.empty(0, **i32), WINDOW,
    )
    assert out.shape == q.shape and lse.shape == (0, 16)


def test_workspace_past_2_31_bytes(gen, device):
    """The same rows at workspace rows past 2**31 bytes give the same result (64-bit row offsets)."""
    heads = 16
    step = _step(gen, device, [8330], [6], 128)
    q = _q(gen, device, 6, heads)
    small, _ = _run_both(q, step, 128)
    shift = (2**31) // (L.HEAD_DIM * 2) + 1000
    rows = step["kv"].shape[0]
    huge = torch.empty(shift + rows, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    huge[shift:] = step["kv"]
    moved = dict(step, kv=huge, swa_base=step["swa_base"] + shift, compressed_base=step["compressed_base"] + shift)
    out, lse = shared_rows_attention(q, **moved, window=WINDOW, compress_ratio=128)
    assert torch.equal(out, small[0]) and torch.equal(lse, small[1])


def test_rejects_bad_arguments(device):
    q = torch.zeros(4, 65, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    i32 = dict(dtype=torch.int32, device=device)
    one = torch.zeros(1, **i32)
    kv = torch.zeros(4, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match="q must have shape"):
        shared_rows_attention(q, kv, torch.zeros(4, **i32), torch.zeros(4, **i32), one, one, one, WINDOW)
    q = q[:, :16]
    with pytest.raises(ValueError, match="compressed_base"):
        shared_rows_attention(q, kv, torch.zeros(4, **i32), torch.zeros(4, **i32), one, one, one, WINDOW, 128)
    with pytest.raises(ValueError, match="skip_rows"):
        shared_rows_attention(q, kv, torch.zeros(4, **i32), torch.zeros(4, **i32), one, one, one, WINDOW,
                              skip_rows=one)
    with pytest.raises(ValueError, match="prior"):
        shared_rows_attention(q, kv, torch.zeros(4, **i32), torch.zeros(4, **i32), one, one, one, WINDOW,
                              prior=(q[:, :8].contiguous(), torch.zeros(4, 8, device=device)))
