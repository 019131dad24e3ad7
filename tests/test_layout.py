import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.random_inputs import random_byte_cache, random_rows


def test_page_bytes_matches_sglang_page_sizes():
    assert L.TOKEN_BYTES == 584 and L.DATA_BYTES == 576 and L.SCALE_BYTES == 8
    assert L.page_bytes(L.SWA_PAGE_SIZE) == 149760
    assert L.page_bytes(L.C4_PAGE_SIZE) == 37440
    assert L.page_bytes(L.C128_PAGE_SIZE) == 1728
    for p in range(1, 300):
        b = L.page_bytes(p)
        assert b % 576 == 0 and b >= p * 584 and b - p * 584 < 576


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "64"])
def test_page_bytes_rejects_bad_page_size(bad):
    with pytest.raises(ValueError, match="page_size"):
        L.page_bytes(bad)


def test_quantize_recipe_and_round_trip(gen):
    rows = random_rows(64, gen)
    fp8, rope, scale_bytes = L.quantize_rows(rows)
    tiles = rows[:, : L.NOPE_DIM].float().view(64, L.NUM_SCALES, L.QUANT_TILE)
    scale = torch.exp2(scale_bytes.float() - 127)
    amax = tiles.abs().amax(-1).clamp_min(1e-4)
    # Rounded up to a power of two: amax / scale lands in (224, 448].
    assert bool(((amax / scale) <= 448).all()) and bool(((amax / scale) > 224).all())
    back = fp8.float().view(64, L.NUM_SCALES, L.QUANT_TILE) * scale[..., None]
    # e4m3 keeps 3 mantissa bits: relative error <= 2**-4 of the tile's largest value.
    assert bool(((back - tiles).abs() <= amax[..., None] / 16 + 1e-30).all())
    assert torch.equal(rope, rows[:, L.NOPE_DIM:])


def test_quantizer_writes_exactly_the_token_bytes(gen):
    p = 64
    cache = random_byte_cache(3, p, gen)
    before = cache.clone()
    loc = p + 63  # last slot of page 1
    L.quantize_into_paged_cache(cache, torch.tensor([loc]), random_rows(1, gen), p)
    changed = (cache != before).view(-1).nonzero().view(-1)
    data = 1 * L.page_bytes(p) + 63 * 576
    scales = 1 * L.page_bytes(p) + p * 576 + 63 * 8
    allowed = set(range(data, data + 576)) | set(range(scales, scales + 8))
    assert set(changed.tolist()) <= allowed
    assert int(cache.view(-1)[scales + 7]) == 0  # the pad byte


@pytest.mark.parametrize("page_size", [256, 64, 2])
def test_dequant_reference_round_trip(gen, page_size):
    cache = random_byte_cache(5, page_size, gen)
    ids = torch.randperm(5 * page_size, generator=gen)[: min(40, 5 * page_size)]
    rows = random_rows(ids.numel(), gen)
    L.quantize_into_paged_cache(cache, ids, rows, page_size)
    out = L.dequantize_paged_reference(cache, ids, page_size)
    assert out.shape == (ids.numel(), 1, 512) and out.dtype == torch.bfloat16
    assert torch.equal(out[:, 0, L.NOPE_DIM :], rows[:, L.NOPE_DIM :])
    err = (out[:, 0, : L.NOPE_DIM].float() - rows[:, : L.NOPE_DIM].float()).abs().max()
    assert err <= rows.float().abs().max() / 16
    holes = ids.clone()
    holes[::3] = -1
    out = L.dequantize_paged_reference(cache, holes, page_size)
    assert bool((out[::3] == 0).all())


def test_as_byte_cache_checks_the_page_size(gen):
    cache = random_byte_cache(2, 64, gen)
    with pytest.raises(ValueError, match="page_size=256"):
        L.as_byte_cache(cache, 256)
    with pytest.raises(ValueError, match="2-D"):
        L.as_byte_cache(cache.view(-1), 64)
    with pytest.raises(TypeError, match="quant_k_cache"):
        L.as_byte_cache(None, 64)
    # SGLang may hand the pool's bytes over in another dtype.
    assert L.as_byte_cache(cache.view(torch.bfloat16), 64).data_ptr() == cache.data_ptr()


def test_flashmla_view_round_trips_to_the_byte_cache(gen):
    cache = random_byte_cache(3, 64, gen)
    view = L.flashmla_cache_view(cache, 64)
    assert view.shape == (3, 64, 1, 584) and view.stride(0) == L.page_bytes(64)
    back = L.as_byte_cache(view, 64)
    assert back.shape == cache.shape and torch.equal(back, cache)
