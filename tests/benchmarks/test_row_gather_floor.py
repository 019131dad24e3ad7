import pytest
import torch

from benchmarks.row_gather_floor import ROW_FLOOR_BLOCK_N, ROW_WORDS, xor_gathered_rows
from sglang_dsv4_sparse import layout as L

ON_GPU = torch.cuda.is_available()


def xor_gathered_rows_reference(kv: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`benchmarks.row_gather_floor.xor_gathered_rows`."""
    s_kv = kv.shape[0]
    words = kv.reshape(s_kv, -1).view(torch.int64)
    out = torch.zeros((indices.shape[0], words.shape[1]), dtype=torch.int64)
    for query, ids in enumerate(indices[:, 0, :].long().tolist()):
        for t in ids:
            if 0 <= t < s_kv:
                out[query] ^= words[t]
    return out


def test_folds_the_rows_each_query_names(gen, device):
    s_kv, s_q = 40, 3
    kv = torch.randn(s_kv, 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16)
    # A ragged last step, -1 holes, ids past the buffer (skipped) and repeats.
    topk = ROW_FLOOR_BLOCK_N + 13
    for dtype in (torch.int32, torch.int64):
        idx = torch.randint(0, s_kv, (s_q, 1, topk), generator=gen).to(dtype)
        idx[0, 0, :5] = -1
        idx[1, 0, 7] = s_kv
        idx[2, 0, 3] = idx[2, 0, 4]
        got = xor_gathered_rows(kv.to(device), idx.to(device)).cpu()
        want = xor_gathered_rows_reference(kv, idx)
        assert torch.equal(got, want)
        assert want.ne(0).any()


def test_empty_batches_and_all_holes(gen, device):
    kv = torch.randn(8, 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16).to(device)
    empty = torch.zeros((0, 1, 5), dtype=torch.int32, device=device)
    assert xor_gathered_rows(kv, empty).shape == (0, ROW_WORDS)
    holes = torch.full((2, 1, 5), -1, dtype=torch.int32, device=device)
    assert xor_gathered_rows(kv, holes).eq(0).all()
    # An empty buffer: every id is past it, so every query folds nothing.
    ids = torch.zeros((2, 1, 3), dtype=torch.int32, device=device)
    assert xor_gathered_rows(kv[:0], ids).eq(0).all()


def test_rows_past_2_31_bytes(gen, device):
    # Row byte offsets that need more than 31 bits (32 on the GPU); only the named rows are written.
    row_bytes = 2 * L.HEAD_DIM
    limit = 2**32 + 2**28 if ON_GPU else 2**31 + 2**20
    s_kv = limit // row_bytes + 64
    kv = torch.empty(s_kv, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    first = (limit - 2**20) // row_bytes
    ids = first + torch.randperm(s_kv - first, generator=gen)[:2 * 40]
    kv[ids.to(device)] = torch.randn(ids.numel(), 1, L.HEAD_DIM, generator=gen).to(torch.bfloat16).to(device)
    assert int(ids.min()) * row_bytes > 2**31
    idx = ids.view(2, 1, 40).to(torch.int32)
    got = xor_gathered_rows(kv, idx.to(device)).cpu()
    # The reference folds the same rows out of a small buffer, re-indexed.
    local = torch.arange(ids.numel()).view(2, 1, 40)
    assert torch.equal(got, xor_gathered_rows_reference(kv[ids.to(device)].cpu(), local))
    del kv


def test_rejects_bad_arguments(device):
    kv = torch.zeros(4, 1, L.HEAD_DIM, dtype=torch.bfloat16, device=device)
    idx = torch.zeros(2, 1, 3, dtype=torch.int32, device=device)
    with pytest.raises(TypeError, match="kv"):
        xor_gathered_rows(kv.float(), idx)
    with pytest.raises(ValueError, match="kv"):
        xor_gathered_rows(kv[:, :, :256], idx)
    with pytest.raises(ValueError, match="indices"):
        xor_gathered_rows(kv, idx.view(2, 3, 1))
    with pytest.raises(TypeError, match="indices"):
        xor_gathered_rows(kv, idx.float())
