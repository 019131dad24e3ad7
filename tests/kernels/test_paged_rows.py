import torch
import triton
import triton.language as tl

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.paged_rows import row_byte_offsets


@triton.jit
def _offsets_kernel(ids_ptr, data_ptr, scales_ptr, n, PAGE_SIZE: tl.constexpr, PAGE_BYTES: tl.constexpr,
                    BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    loc = tl.load(ids_ptr + i, mask=i < n, other=0)
    data, scales = row_byte_offsets(loc, PAGE_SIZE, PAGE_BYTES)
    tl.store(data_ptr + i, data, mask=i < n)
    tl.store(scales_ptr + i, scales, mask=i < n)


def test_offsets_follow_the_layout_past_2_31_bytes(gen, device):
    for page_size in (256, 64, 2):
        pb = L.page_bytes(page_size)
        far_page = (2**31) // pb + 3  # a page that starts past 2**31 bytes
        ids = torch.cat([
            torch.randint(0, 4 * page_size, (5,), generator=gen),
            far_page * page_size + torch.tensor([0, page_size - 1]),
            torch.randint(0, 2**40 // pb, (3,), generator=gen) * page_size,
        ]).to(torch.int64)
        data = torch.empty(ids.shape, dtype=torch.int64, device=device)
        scales = torch.empty_like(data)
        _offsets_kernel[(1,)](ids.to(device), data, scales, ids.numel(), PAGE_SIZE=page_size, PAGE_BYTES=pb, BLOCK=16)
        page, slot = ids // page_size, ids % page_size
        assert torch.equal(data.cpu(), page * pb + slot * L.DATA_BYTES)
        assert torch.equal(scales.cpu(), page * pb + L.scale_region_offset(page_size) + slot * L.SCALE_BYTES)
        assert int(data[5]) > 2**31
