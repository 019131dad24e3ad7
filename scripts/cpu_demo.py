"""CPU demo: the kernels in Triton's interpreter against the torch references.

    .venv/bin/python scripts/cpu_demo.py

Writes random rows into a paged V4 fp8 cache with the layout quantizer, reads
them back through the Triton dequant kernel, builds combined sparse-prefill
index rows for a two-request chunk, and prints what matched.
"""

import os
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.kernels.dequant import dequantize_k_cache_paged  # noqa: E402
from sglang_dsv4_sparse.kernels.indices import build_swa_token_ids, combine_topk_swa_indices  # noqa: E402
from sglang_dsv4_sparse.reference import build_swa_token_ids_reference, combine_topk_swa_indices_reference  # noqa: E402
from sglang_dsv4_sparse.testing import written_cache  # noqa: E402


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    ok = True
    t0 = time.time()
    for page_size in (L.SWA_PAGE_SIZE, L.C4_PAGE_SIZE, L.C128_PAGE_SIZE):
        pages = 64 if page_size > 2 else 2000
        ids = torch.randperm(pages * page_size, generator=gen)[:256]
        cache, rows = written_cache(pages, page_size, ids, gen)
        out = dequantize_k_cache_paged(cache, ids, page_size)
        same = torch.equal(out, L.dequantize_paged_reference(cache, ids, page_size))
        err = (out[:, 0].float() - rows.float()).abs().max().item()
        print(f"dequant  page_size={page_size:3d}: {ids.numel()} rows, cache {cache.numel() / 2**20:.1f} MiB, "
              f"bit-exact vs reference: {same}, max |fp8 round trip error| {err:.3f}")
        ok &= same

    # A chunk of two requests (one with a 300-token prefix) through the index kernels.
    seq, ext, pool = torch.tensor([340, 24]), torch.tensor([40, 24]), torch.tensor([1, 0])
    req_to_token = torch.randint(0, 4096, (2, 400), generator=gen).int()
    full_to_swa = torch.randperm(4096, generator=gen)
    ref = build_swa_token_ids_reference(seq, ext, pool, req_to_token, full_to_swa, L.SWA_WINDOW)
    got = build_swa_token_ids(seq.int(), ext.int(), pool.int(), req_to_token, full_to_swa, L.SWA_WINDOW, int(ref[3][-1]))
    same = all(torch.equal(g.long(), r) for g, r in zip(got, ref))
    print(f"swa ids  2 requests: {got[0].numel()} window rows, match: {same}")
    ok &= same
    compressed = seq // 4
    qsl = torch.tensor([0, 40, 64])
    pos = torch.cat([torch.arange(300, 340), torch.arange(0, 24)])
    topk = torch.randint(0, 85, (64, 512), generator=gen) % compressed.repeat_interleave(ext)[:, None]
    compressed_base, swa_base = torch.cumsum(compressed, 0) - compressed, compressed.sum() + ref[3][:-1]
    args = (topk, qsl, pos, seq, ref[2], compressed_base, swa_base)
    out, lens = combine_topk_swa_indices(*(a.int() for a in args), L.SWA_WINDOW, 4, 512)
    r_out, r_lens = combine_topk_swa_indices_reference(*args, window_size=L.SWA_WINDOW, compress_ratio=4, topk=512)
    same = torch.equal(out.long(), r_out) and torch.equal(lens.long(), r_lens)
    print(f"combine  64 queries: index rows {tuple(out.shape)}, lengths {int(lens.min())}..{int(lens.max())}, match: {same}")
    ok &= same
    print(f"{'all matched' if ok else 'MISMATCH'} in {time.time() - t0:.1f} s (Triton interpreter on the CPU)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
