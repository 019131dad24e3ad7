"""The plan's per-row tables (kernels/indices/plan_rows.py) against their torch references."""

import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.indices.plan_rows import compressed_token_ids, fold_shared_rows, request_of_rows
from sglang_dsv4_sparse.reference import (
    compressed_token_ids_reference,
    fold_shared_rows_reference,
    request_of_rows_reference,
)


def _bounds(counts, dtype=torch.int32):
    b = [0]
    for c in counts:
        b.append(b[-1] + c)
    return torch.tensor(b, dtype=dtype)


@pytest.mark.parametrize("counts", [[5], [3, 0, 7, 1], [0, 0, 4], [1200, 3, 900]])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_request_of_rows(device, counts, dtype):
    bounds = _bounds(counts, dtype)
    total = int(bounds[-1])
    got = request_of_rows(bounds.to(device), total)
    assert got.dtype == torch.int64 and torch.equal(got.cpu(), request_of_rows_reference(bounds, total))


def test_request_of_rows_past_the_bounds_stays_in_range(device):
    # Host lengths that disagree with the device bounds: every row still gets a request in [0, R).
    bounds = _bounds([2, 3])
    got = request_of_rows(bounds.to(device), 9).cpu()
    assert torch.equal(got, request_of_rows_reference(bounds, 9)) and int(got.max()) == 1


def test_request_of_rows_empty(device):
    assert request_of_rows(_bounds([0, 0]).to(device), 0).numel() == 0
    with pytest.raises(ValueError, match="bounds"):
        request_of_rows(torch.zeros(0, dtype=torch.int32, device=device), 3)


@pytest.mark.parametrize("page_size", [64, 2])
def test_compressed_token_ids_random_tables_with_holes(gen, device, page_size):
    counts = [70, 0, 5, 129]
    pages = 4 if page_size == 64 else 70
    # Page ids whose pages start past 2**31 bytes of a V4 cache, holes (-1) and a short row.
    low = 2**31 // L.page_bytes(page_size) + 1
    table = torch.randint(low, low + 10_000, (len(counts), pages), generator=gen)
    table[0, 1] = -1
    table[3, -1] = -7
    bounds = _bounds(counts)
    total = int(bounds[-1])
    ref = compressed_token_ids_reference(bounds, table, page_size, total)
    got = compressed_token_ids(bounds.to(device), table.to(device), page_size, total)
    assert torch.equal(got.cpu(), ref)
    assert (int(ref.max()) // page_size) * L.page_bytes(page_size) > 2**31 and bool((ref == -1).any())


def test_compressed_token_ids_masks_columns_past_the_table_and_capacity(gen, device):
    counts = [10, 6]
    table = torch.randint(0, 50, (2, 1), generator=gen, dtype=torch.int32)  # one page of 4: rows 4.. have no page
    bounds = _bounds(counts)
    for capacity in (2**62, 100):
        ref = compressed_token_ids_reference(bounds, table, 4, 16, capacity)
        got = compressed_token_ids(bounds.to(device), table.to(device), 4, 16, capacity)
        assert torch.equal(got.cpu(), ref) and int((ref == -1).sum()) >= 8


@pytest.mark.parametrize("group_size", [1, 4, 8])
def test_fold_shared_rows(gen, device, group_size):
    # Three requests of 13, 8 and 11 query rows at chunk offsets; groups straddling requests share nothing.
    ext, first_pos, counts = [13, 8, 11], [250, 0, 1020], [2, 0, 8]
    req = torch.tensor([r for r, e in enumerate(ext) for _ in range(e)], dtype=torch.int64)
    pos = torch.tensor([p + i for p, e in zip(first_pos, ext) for i in range(e)], dtype=torch.int32)
    bounds = _bounds(counts)
    width = 128
    ref = fold_shared_rows_reference(req, pos, bounds, group_size, width)
    got = fold_shared_rows(req.to(device), pos.to(device), bounds.to(device), group_size, width)
    for a, b in zip(got, ref):
        assert torch.equal(a.cpu(), b)
    assert int(ref[1].max()) > 0


def test_fold_shared_rows_bad_request_ids_are_holes(device):
    req = torch.tensor([0, 0, 5, 5, -1, -1], dtype=torch.int64)  # requests outside the bounds
    pos = torch.tensor([300, 301, 400, 401, 500, 501], dtype=torch.int32)
    bounds = _bounds([3])
    got = fold_shared_rows(req.to(device), pos.to(device), bounds.to(device), 2, 128)
    ref = fold_shared_rows_reference(req, pos, bounds, 2, 128)
    for a, b in zip(got, ref):
        assert torch.equal(a.cpu(), b)
    assert got[1].tolist() == [2, 0, 0]
