import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.dequant import dequantize_k_cache_paged
from sglang_dsv4_sparse.random_inputs import random_byte_cache, random_rows, written_cache
from testing import huge_cache, ids_past_offset

ON_GPU = torch.cuda.is_available()


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("page_size", [256, 64, 2])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_matches_reference_on_random_bytes(gen, device, page_size, id_dtype):
    # Random bytes everywhere, not only quantized rows: every byte position of
    # the layout is checked, scale bytes included.
    num_pages = 6 if page_size > 2 else 200
    cache = random_byte_cache(num_pages, page_size, gen, device)
    n = 96 if not ON_GPU else 4096
    ids = torch.randint(0, num_pages * page_size, (n,), generator=gen).to(id_dtype).to(device)
    _same(dequantize_k_cache_paged(cache, ids, page_size), L.dequantize_paged_reference(cache, ids, page_size))


@pytest.mark.parametrize("page_size", [256, 64, 2])
def test_round_trip_across_page_boundaries(gen, device, page_size):
    # Last slot of each page next to the first slot of the next one.
    pages = torch.arange(1, 9)
    ids = torch.stack([pages * page_size - 1, pages * page_size], 1).view(-1)
    cache, rows = written_cache(10, page_size, ids, gen, device)
    out = dequantize_k_cache_paged(cache, ids.to(device), page_size)
    _same(out, L.dequantize_paged_reference(cache, ids, page_size))
    assert torch.equal(out[:, 0, L.NOPE_DIM :].cpu(), rows[:, L.NOPE_DIM :])


def test_holes_give_zero_rows(gen, device):
    cache = random_byte_cache(8, 64, gen, device)
    ids = torch.randint(0, 8 * 64, (40,), generator=gen)
    ids[torch.randperm(40, generator=gen)[:9]] = -1
    out = dequantize_k_cache_paged(cache, ids.to(device), 64)
    _same(out, L.dequantize_paged_reference(cache, ids, 64))
    assert bool((out[ids < 0] == 0).all())


def test_writes_into_a_workspace_slice_only(gen, device):
    cache = random_byte_cache(4, 64, gen, device)
    ids = torch.randint(0, 256, (30,), generator=gen).to(device)
    workspace = torch.full((50, 1, 512), 7.0, dtype=torch.bfloat16, device=device)
    out = dequantize_k_cache_paged(cache, ids, 64, out=workspace[11:41])
    assert out.data_ptr() == workspace[11].data_ptr()
    _same(workspace[11:41], L.dequantize_paged_reference(cache, ids, 64))
    assert bool((workspace[:11] == 7).all()) and bool((workspace[41:] == 7).all())


def test_zero_tokens(gen, device):
    cache = random_byte_cache(2, 64, gen, device)
    out = dequantize_k_cache_paged(cache, torch.zeros(0, dtype=torch.int32, device=device), 64)
    assert out.shape == (0, 1, 512)


def test_accepts_flashmla_view_and_other_dtypes(gen, device):
    cache = random_byte_cache(4, 64, gen, device)
    ids = torch.randint(0, 256, (20,), generator=gen).to(device)
    ref = L.dequantize_paged_reference(cache, ids, 64)
    _same(dequantize_k_cache_paged(L.flashmla_cache_view(cache, 64), ids, 64), ref)
    _same(dequantize_k_cache_paged(cache.view(torch.bfloat16), ids, 64), ref)


def test_cache_past_2_31_bytes(gen, device):
    # Rows whose byte offsets need more than 31 bits (and 32 on the GPU).
    page_size = L.C4_PAGE_SIZE
    limit = 2**32 + 2**28 if ON_GPU else 2**31 + 2**20
    cache = huge_cache(limit, page_size, device)
    ids = ids_past_offset(cache, page_size, limit - 2**20, 24, gen)
    rows = random_rows(ids.numel(), gen)
    L.quantize_into_paged_cache(cache, ids.to(device), rows.to(device), page_size)
    data_off, _ = L.token_byte_offsets(ids, page_size)
    assert int(data_off.min()) > 2**31
    for dtype in (torch.int32, torch.int64):
        out = dequantize_k_cache_paged(cache, ids.to(dtype).to(device), page_size)
        _same(out, L.dequantize_paged_reference(cache, ids, page_size))
    del cache


def test_bad_arguments_name_the_argument(gen, device):
    cache = random_byte_cache(2, 64, gen, device)
    ids = torch.zeros(4, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="page_size=256"):
        dequantize_k_cache_paged(cache, ids, 256)
    with pytest.raises(TypeError, match="token_ids"):
        dequantize_k_cache_paged(cache, ids.float(), 64)
    with pytest.raises(ValueError, match="token_ids"):
        dequantize_k_cache_paged(cache, ids.view(2, 2), 64)
    with pytest.raises(ValueError, match="out"):
        dequantize_k_cache_paged(cache, ids, 64, out=torch.empty(5, 1, 512, dtype=torch.bfloat16, device=device))
    with pytest.raises(TypeError, match="out"):
        dequantize_k_cache_paged(cache, ids, 64, out=torch.empty(4, 1, 512, device=device))
    with pytest.raises(ValueError, match="page_size"):
        dequantize_k_cache_paged(cache, ids, 0)


def test_bounds_flag_rejects_ids_past_the_cache(gen, device, monkeypatch):
    cache = random_byte_cache(2, 64, gen, device)
    ids = torch.tensor([0, 128], dtype=torch.int32, device=device)
    dequantize_k_cache_paged(cache, ids[:1], 64)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match=r"token_ids must hold .*\[0, 128\)"):
        dequantize_k_cache_paged(cache, ids, 64)


def test_ids_outside_the_cache_give_zero_rows(gen, device):
    # One past the end, far past it, and negative ids other than -1: all read
    # nothing and give zero rows, the in-range ids around them are unchanged.
    cache = random_byte_cache(3, 64, gen, device)
    capacity = 3 * 64
    ids = torch.randint(0, capacity, (24,), generator=gen)
    bad = torch.tensor([capacity, capacity + 1, 10**6, 10**12, -1, -2, -(10**12)])
    where = torch.randperm(24, generator=gen)[: bad.numel()]
    ids[where] = bad
    out = dequantize_k_cache_paged(cache, ids.to(device), 64)
    _same(out, L.dequantize_paged_reference(cache, ids, 64))
    assert bool((out[where] == 0).all())
    good = torch.ones(24, dtype=torch.bool)
    good[where] = False
    _same(out[good], L.dequantize_paged_reference(cache, ids[good], 64))


def test_bounds_flag_allows_only_the_minus_one_hole(gen, device, monkeypatch):
    cache = random_byte_cache(2, 64, gen, device)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")
    dequantize_k_cache_paged(cache, torch.tensor([-1, 0, 127], device=device), 64)
    for bad in (-2, 128, 10**12):
        with pytest.raises(ValueError, match="token_ids"):
            dequantize_k_cache_paged(cache, torch.tensor([0, bad], device=device), 64)
