import pytest
import torch

from benchmarks.row_gather_ceiling import gather_rows_raw
from sglang_dsv4_sparse import layout as L


def gather_rows_raw_reference(cache_u8: torch.Tensor, token_ids: torch.Tensor, page_size: int) -> torch.Tensor:
    """Reference for :func:`benchmarks.row_gather_ceiling.gather_rows_raw`."""
    rows = []
    region = L.scale_region_offset(page_size)
    capacity = cache_u8.shape[0] * page_size
    for t in token_ids.long().tolist():
        if not 0 <= t < capacity:  # a hole or past the cache: zero row
            rows.append(torch.zeros(2 * L.HEAD_DIM, dtype=torch.uint8))
            continue
        page, slot = divmod(t, page_size)
        data = cache_u8[page, slot * L.DATA_BYTES : (slot + 1) * L.DATA_BYTES]
        scales = cache_u8[page, region + slot * L.SCALE_BYTES : region + (slot + 1) * L.SCALE_BYTES]
        repeat = 2 * L.HEAD_DIM - L.DATA_BYTES - L.SCALE_BYTES
        rows.append(torch.cat([data, data[:repeat], scales]))
    if not rows:
        return torch.zeros((0, 2 * L.HEAD_DIM), dtype=torch.uint8)
    return torch.stack(rows)


def test_copies_the_bytes_the_dequant_reads(gen, device):
    for page_size in (64, 2):
        pages = 5
        cache = torch.randint(0, 256, (pages, L.page_bytes(page_size)), dtype=torch.uint8, generator=gen)
        ids = torch.randint(0, pages * page_size, (11,), generator=gen).to(torch.int32)
        ids[0], ids[1] = 0, pages * page_size - 1  # first and last slot of the cache
        ids[2], ids[5] = -1, -1  # holes: zero rows
        got = gather_rows_raw(cache.to(device), ids.to(device), page_size)
        assert torch.equal(got.cpu(), gather_rows_raw_reference(cache, ids, page_size))
    assert gather_rows_raw(cache.to(device), ids[:0].to(device), page_size).shape == (0, 2 * L.HEAD_DIM)


def test_bounds_flag_rejects_ids_past_the_cache(gen, device, monkeypatch):
    cache = torch.randint(0, 256, (3, L.page_bytes(64)), dtype=torch.uint8, generator=gen).to(device)
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match="token_ids"):
        gather_rows_raw(cache, torch.tensor([0, 3 * 64], dtype=torch.int32, device=device), 64)
