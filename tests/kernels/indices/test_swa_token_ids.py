import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.indices import build_swa_token_ids
from sglang_dsv4_sparse.reference import build_swa_token_ids_reference

ON_GPU = torch.cuda.is_available()


def _random_pool(gen, seq_lens, pool_rows, full_size, swa_size, dtype):
    """req_to_token rows of distinct random full ids, and a random full->SWA map."""
    max_len = max(seq_lens) + 5
    req_to_token = torch.randint(0, full_size, (pool_rows, max_len), generator=gen).to(dtype)
    full_to_swa = torch.randint(0, swa_size, (full_size,), generator=gen).to(dtype)
    return req_to_token, full_to_swa


def _check(device, seq_lens, ext_lens, pool_idx, req_to_token, full_to_swa, window=L.SWA_WINDOW, dtype=torch.int32):
    to = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
    ref_ids, ref_first, ref_lens, ref_off = build_swa_token_ids_reference(
        torch.tensor(seq_lens), torch.tensor(ext_lens), torch.tensor(pool_idx), req_to_token, full_to_swa, window
    )
    total = int(ref_off[-1])
    ids, first, lens, off = build_swa_token_ids(
        to(seq_lens), to(ext_lens), to(pool_idx), req_to_token.to(device), full_to_swa.to(device), window, total
    )
    assert ids.dtype == first.dtype == lens.dtype == off.dtype == torch.int32
    assert torch.equal(ids.cpu().long(), ref_ids)
    assert torch.equal(first.cpu().long(), ref_first)
    assert torch.equal(lens.cpu().long(), ref_lens)
    assert torch.equal(off.cpu().long(), ref_off)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_ragged_requests_with_prefixes(gen, device, dtype):
    # Prefix-free, short, chunk-with-prefix and decode-like requests mixed.
    seq_lens = [300, 7, 1000, 130, 1]
    ext_lens = [300, 7, 200, 1, 1]
    pool_idx = [3, 0, 5, 1, 4]
    req_to_token, full_to_swa = _random_pool(gen, seq_lens, 6, 5000, 3000, dtype)
    _check(device, seq_lens, ext_lens, pool_idx, req_to_token, full_to_swa, dtype=dtype)


def test_many_requests(gen, device):
    n = 37
    ext = torch.randint(1, 60, (n,), generator=gen)
    seq = ext + torch.randint(0, 400, (n,), generator=gen)
    pool = torch.randperm(50, generator=gen)[:n]
    req_to_token, full_to_swa = _random_pool(gen, seq.tolist(), 50, 20000, 9000, torch.int32)
    _check(device, seq.tolist(), ext.tolist(), pool.tolist(), req_to_token, full_to_swa, window=16)


def test_empty_batch_and_zero_tokens(gen, device):
    req_to_token, full_to_swa = _random_pool(gen, [4], 2, 100, 50, torch.int32)
    empty = torch.zeros(0, dtype=torch.int32, device=device)
    ids, first, lens, off = build_swa_token_ids(empty, empty, empty, req_to_token.to(device), full_to_swa.to(device), 128, 0)
    assert ids.numel() == 0 and off.tolist() == [0]


def test_req_to_token_past_2_31_entries(gen, device):
    # Pool row 2 of a (3, 2**30) table starts at entry 2**31: the row offset
    # overflows int32 unless computed in int64. Only the used row is touched.
    req_to_token = torch.empty((3, 2**30), dtype=torch.int32, device=device)
    full_to_swa = torch.randint(0, 10**6, (5000,), generator=gen).to(device)
    seq, ext = 700, 150
    req_to_token[2, :seq] = torch.randint(0, 5000, (seq,), generator=gen).int().to(device)
    ids, *_ = build_swa_token_ids(
        torch.tensor([seq], device=device, dtype=torch.int32),
        torch.tensor([ext], device=device, dtype=torch.int32),
        torch.tensor([2], device=device, dtype=torch.int32),
        req_to_token,
        full_to_swa,
        128,
        ext + 127,
    )
    expected = full_to_swa[req_to_token[2, seq - ext - 127 : seq].long()]
    assert torch.equal(ids.long(), expected.long())
    del req_to_token


def test_bad_arguments(gen, device):
    i32 = torch.ones(2, dtype=torch.int32, device=device)
    table = torch.zeros((2, 8), dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="extend_seq_lens"):
        build_swa_token_ids(i32, i32[:1], i32, table, i32, 128, 2)
    with pytest.raises(TypeError, match="full_to_swa"):
        build_swa_token_ids(i32, i32, i32, table, i32.float(), 128, 2)
    with pytest.raises(ValueError, match="req_to_token"):
        build_swa_token_ids(i32, i32, i32, table[0], i32, 128, 2)
    with pytest.raises(ValueError, match="total_swa"):
        build_swa_token_ids(i32, i32, i32, table, i32, 128, -1)


def test_bounds_flag_catches_a_wrong_total(gen, device, monkeypatch):
    req_to_token, full_to_swa = _random_pool(gen, [50], 1, 100, 80, torch.int32)
    args = [torch.tensor([50], dtype=torch.int32, device=device)] * 2 + [torch.tensor([0], dtype=torch.int32, device=device)]
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match="total_swa=40"):
        build_swa_token_ids(*args, req_to_token.to(device), full_to_swa.to(device), 128, 40)
    monkeypatch.delenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS")
    # Without the flag a too-small total is still never written past.
    ids, *_ = build_swa_token_ids(*args, req_to_token.to(device), full_to_swa.to(device), 128, 40)
    assert ids.shape == (40,)


def test_lookups_outside_the_tables_give_minus_one(gen, device):
    # A pool row past req_to_token's rows, a negative one, a request longer
    # than req_to_token is wide, and full ids past (or before) full_to_swa.
    req_to_token, full_to_swa = _random_pool(gen, [40], 3, 200, 90, torch.int64)
    req_to_token[1, 5:9] = torch.tensor([200, 201, 10**12, -7])
    seq_lens = [40, 30, 60, 20, 30]  # the table is 45 wide: request 2 runs past it
    ext_lens = [10, 30, 60, 5, 30]
    pool_idx = [3, 1, 0, -1, 2**40]
    _check(device, seq_lens, ext_lens, pool_idx, req_to_token, full_to_swa, dtype=torch.int64)
    ids, *_ = build_swa_token_ids_reference(
        torch.tensor(seq_lens), torch.tensor(ext_lens), torch.tensor(pool_idx), req_to_token, full_to_swa, L.SWA_WINDOW
    )
    assert int((ids == -1).sum()) == 40 + 4 + 15 + 20 + 30
