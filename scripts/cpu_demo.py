"""CPU demo: the kernels in Triton's interpreter against the torch references.

    .venv/bin/python scripts/cpu_demo.py [--no-stack]

Writes random rows into a paged V4 fp8 cache with the layout quantizer, reads
them back through the Triton dequant kernel, builds combined sparse-prefill
index rows for a two-request chunk, runs a small C0/C4/C128 stack of layers
through the core (chunked prefill and decode against the dense fp32
reference), and prints what matched. Exit status 1 if anything did not.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.kernels.dequant import dequantize_k_cache_paged  # noqa: E402
from sglang_dsv4_sparse.kernels.indices import build_swa_token_ids, combine_topk_swa_indices  # noqa: E402
from sglang_dsv4_sparse.reference import build_swa_token_ids_reference, combine_topk_swa_indices_reference  # noqa: E402
from sglang_dsv4_sparse.random_inputs import written_cache  # noqa: E402


# e4m3 keeps 3 mantissa bits and a tile's scale puts its largest |value| in
# (224, 448]: rounding moves a value by at most half of 32 there, 16 / 224 of
# the largest |value| (smaller values move less).
FP8_TILE_BOUND = 16 / 224


def fp8_round_trip_error(out: torch.Tensor, rows: torch.Tensor) -> float:
    """Worst |dequant - original| of the fp8 part, relative to its 64-value tile's largest |value|."""
    got = out[:, : L.NOPE_DIM].float().view(-1, L.NUM_SCALES, L.QUANT_TILE)
    want = rows[:, : L.NOPE_DIM].float().view(-1, L.NUM_SCALES, L.QUANT_TILE)
    amax = want.abs().amax(dim=-1, keepdim=True).clamp_min(L.AMAX_FLOOR)
    return float(((got - want).abs() / amax).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-stack", action="store_true", help="skip the layer stack (most of the demo's time)")
    opts = ap.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    ok = True
    t0 = time.time()
    for page_size in (L.SWA_PAGE_SIZE, L.C4_PAGE_SIZE, L.C128_PAGE_SIZE):
        pages = 64 if page_size > 2 else 2000
        ids = torch.randperm(pages * page_size, generator=gen)[:256]
        cache, rows = written_cache(pages, page_size, ids, gen)
        out = dequantize_k_cache_paged(cache, ids, page_size)
        same = torch.equal(out, L.dequantize_paged_reference(cache, ids, page_size))
        tile_err = fp8_round_trip_error(out[:, 0], rows)
        rope_exact = torch.equal(out[:, 0, L.NOPE_DIM :], rows[:, L.NOPE_DIM :])
        print(f"dequant  page_size={page_size:3d}: {ids.numel()} rows, cache {cache.numel() / 2**20:.1f} MiB, "
              f"bit-exact vs reference: {same}; fp8 round trip (quantize, dequant) off by at most "
              f"{tile_err:.3f} of a 64-value tile's largest |value| (e4m3 bound {FP8_TILE_BOUND:.3f}), "
              f"RoPE exact: {rope_exact}")
        ok &= same and rope_exact and tile_err <= FP8_TILE_BOUND

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
    if not opts.no_stack:
        ok &= stack_demo()
    print(f"{'all matched' if ok else 'MISMATCH'} in {time.time() - t0:.1f} s (Triton interpreter on the CPU)")
    return 0 if ok else 1


def stack_demo() -> bool:
    """A C0 / C4 / C128 stack through the core: chunked prefill, then decode, vs dense fp32."""
    from sglang_dsv4_sparse.stack_check import StackConfig, build_stack, compare_chunkings, run_prompt

    cfg = StackConfig(ratios=(0, 4, 128), heads=4, topk=8, prompt_len=130, decode_steps=1)
    stack = build_stack(cfg, "cpu")
    print(f"stack    ratios {list(cfg.ratios)}, {cfg.heads} heads, prompt {cfg.prompt_len} in chunks of 65, "
          f"then {cfg.decode_steps} decode step (most of the demo's time)")
    chunked, results = run_prompt(stack, 65, log=lambda line: print("        " + line.strip()))
    whole, _ = run_prompt(stack, cfg.prompt_len, check=False, log=lambda _: None)
    worst = max(r.rel_err for r in results)
    agree = compare_chunkings(chunked, whole)
    print(f"stack    worst relative error vs dense fp32 {worst:.2e}; chunks of 65 vs one chunk differ by {agree:.2e}")
    return worst <= 1e-2 and agree <= 1e-2


if __name__ == "__main__":
    sys.exit(main())
