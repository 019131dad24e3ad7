"""Benchmark the index and dequant kernels against the copy-bandwidth ceiling (GPU).

    python scripts/bench_kernels.py [--sweep] [--quick] [--json FILE]
    python scripts/bench_kernels.py --from-json bench_kernels.json [--markdown]

Dequant at 32k / 262k / 1M rows of a C4 cache several times larger than L2,
in three id patterns (random rows; random pages with their slots in order, as a
page table gives them; the random rows sorted), each beside a kernel that moves
the same bytes with no arithmetic (the pattern's own ceiling,
``benchmarks/row_gather_ceiling.py``); combine at 8k / 32k queries (top-k 512,
window 128, every query past the top-k warm-up so rows are full); SWA token ids
for a 32k chunk. Bytes count
each input read once and each output written once. ``--sweep`` also times
every block-size/warp configuration, which is how the constants in the kernel
files were chosen. Times are CUDA-graph replays (GPU time, see
``sglang_dsv4_sparse.benchmarking``); the eager ``do_bench`` time with an L2
flush is printed beside them. The results go to ``--json FILE``, or with
``$OUT`` set to ``$OUT/bench_kernels.json`` (else they are not saved).
``--from-json`` prints the table of a saved run (no GPU needed);
``--markdown`` prints it as BENCHMARKS.md shows it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's package, not an installed one

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.benchmarking import (  # noqa: E402
    copy_bandwidth_tbps,
    device_summary,
    graph_ms,
    header_line,
    markdown_table,
    median_ms,
    no_gpu,
    print_table,
    run_header,
    save_json,
)
from sglang_dsv4_sparse.kernels import dequant as dequant_mod  # noqa: E402
from sglang_dsv4_sparse.kernels.indices import build_swa_token_ids, combine_topk_swa_indices  # noqa: E402
from sglang_dsv4_sparse.kernels.indices import combine as combine_mod  # noqa: E402
from sglang_dsv4_sparse.kernels.indices import swa_token_ids as swa_mod  # noqa: E402
from benchmarks.row_gather_ceiling import gather_rows_raw  # noqa: E402

# Spec anchors (SGLang's own Triton kernels, one H200, 2026-11-21): context only;
# the in-run ceiling is the copy bandwidth measured here.
SGLANG_DEQUANT_TBPS = {32768: 2.31, 262144: 3.16, 1048576: 3.27}
SGLANG_COMBINE_US = {8192: 15.8, 32768: 42.9}


def _sweep_launch(module, block_name, warps_name, fn, label, size, moved, blocks=(1, 2, 4, 8, 16), warps=(1, 2, 4, 8)):
    """Time ``fn`` under every (block, warps) pair of a kernel module's launch constants, then restore them."""
    default = (getattr(module, block_name), getattr(module, warps_name))
    rows = []
    try:
        for block, nw in itertools.product(blocks, warps):
            setattr(module, block_name, block)
            setattr(module, warps_name, nw)
            ms = graph_ms(fn)
            rows.append((label, size, block, nw, ms * 1e3, moved / ms / 1e9))
    finally:
        setattr(module, block_name, default[0])
        setattr(module, warps_name, default[1])
    return rows


def _id_patterns(n, num_pages, page_size, copies=4):
    """Several id sets per access pattern (repeated runs over one set would re-read L2-resident rows)."""
    capacity = num_pages * page_size
    random_rows = [torch.randperm(capacity, device="cuda")[:n].int() for _ in range(copies)]

    def page_ordered():
        # A request's rows as a page table gives them: pages anywhere in the
        # pool, slots in order within each page.
        pages = torch.randperm(num_pages, device="cuda")[: -(-n // page_size)]
        ids = pages[:, None] * page_size + torch.arange(page_size, device="cuda")
        return ids.reshape(-1)[:n].int()

    return {
        "random rows": random_rows,
        "random pages": [page_ordered() for _ in range(copies)],
        "random rows, id order": [torch.sort(ids)[0] for ids in random_rows],
    }


def bench_dequant(rows_list, gen, sweep):
    page_size = L.C4_PAGE_SIZE
    capacity = max(rows_list) * 2  # a cache of 2x the rows read: ~1.2 GB at 1M rows
    num_pages = -(-capacity // page_size)
    cache = torch.randint(0, 256, (num_pages, L.page_bytes(page_size)), dtype=torch.uint8, device="cuda")
    results, sweep_rows = [], []
    for n in rows_list:
        out = torch.empty((n, 1, L.HEAD_DIM), dtype=torch.bfloat16, device="cuda")
        raw_out = torch.empty((n, 2 * L.HEAD_DIM), dtype=torch.uint8, device="cuda")
        moved = n * (L.TOKEN_BYTES + 2 * L.HEAD_DIM + 4)
        for pattern, id_sets in _id_patterns(n, num_pages, page_size).items():
            step = itertools.cycle(id_sets)
            fn = lambda: dequant_mod.dequantize_k_cache_paged(cache, next(step), page_size, out=out)  # noqa: E731
            if sweep and pattern == "random rows" and n == rows_list[min(1, len(rows_list) - 1)]:
                sweep_rows += _sweep_launch(dequant_mod, "DEQUANT_BLOCK_TOKENS", "DEQUANT_NUM_WARPS", fn, "dequant", n, moved)
            ms, eager = graph_ms(fn), median_ms(fn)
            results.append(dict(kernel=f"dequant, {pattern}", size=n, us=ms * 1e3, eager_us=eager * 1e3,
                                tbps=moved / ms / 1e9, anchor=SGLANG_DEQUANT_TBPS.get(n) if pattern == "random rows" else None))
            # The same ids through a kernel that moves the same bytes with no
            # arithmetic: what this access pattern allows on this GPU.
            step_raw = itertools.cycle(id_sets)
            fn_raw = lambda: gather_rows_raw(cache, next(step_raw), page_size, out=raw_out)  # noqa: E731
            ms = graph_ms(fn_raw)
            results.append(dict(kernel=f"  same bytes, no arithmetic, {pattern}", size=n, us=ms * 1e3,
                                eager_us=median_ms(fn_raw) * 1e3, tbps=moved / ms / 1e9))
        del out, raw_out
    return results, sweep_rows


def _combine_inputs(num_queries, prefix, topk, window, copies):
    seq = torch.tensor([prefix + num_queries], dtype=torch.int32, device="cuda")
    ext = torch.tensor([num_queries], dtype=torch.int32, device="cuda")
    gather = torch.minimum(seq, ext + window - 1)
    compressed = seq // 4
    base = dict(
        query_start_loc=torch.tensor([0, num_queries], dtype=torch.int32, device="cuda"),
        query_pos=torch.arange(prefix, prefix + num_queries, dtype=torch.int32, device="cuda"),
        seq_lens=seq,
        gather_lens=gather,
        compressed_base=torch.zeros(1, dtype=torch.int32, device="cuda"),
        swa_base=compressed.int(),
    )
    tops = [torch.randint(0, int(compressed), (num_queries, topk), dtype=torch.int32, device="cuda") for _ in range(copies)]
    return base, tops


def bench_combine(queries_list, sweep):
    topk, window = 512, L.SWA_WINDOW
    results, sweep_rows = [], []
    for n in queries_list:
        base, tops = _combine_inputs(n, prefix=131072, topk=topk, window=window, copies=4)
        width = combine_mod.combined_index_width(topk, window)
        outs = [torch.empty((n, width), dtype=torch.int32, device="cuda") for _ in tops]
        lens = torch.empty(n, dtype=torch.int32, device="cuda")
        step = itertools.cycle(range(len(tops)))

        def fn():
            i = next(step)
            combine_topk_swa_indices(
                tops[i], base["query_start_loc"], base["query_pos"], base["seq_lens"], base["gather_lens"],
                base["compressed_base"], base["swa_base"], window, 4, topk, out_indices=outs[i], out_lens=lens,
            )

        moved = n * (topk * 4 + width * 4 + 4 + 4)
        if sweep and n == queries_list[-1]:
            sweep_rows += _sweep_launch(combine_mod, "COMBINE_BLOCK_QUERIES", "COMBINE_NUM_WARPS", fn, "combine", n, moved)
        ms, eager = graph_ms(fn), median_ms(fn)
        results.append(dict(kernel="combine", size=n, us=ms * 1e3, eager_us=eager * 1e3, tbps=moved / ms / 1e9, anchor_us=SGLANG_COMBINE_US.get(n)))
    return results, sweep_rows


def bench_swa_ids(sweep):
    # One 32k chunk of 8 requests with 120k-token prefixes, in a big pool table.
    reqs, ext, prefix = 8, 4096, 120_000
    seq = torch.full((reqs,), prefix + ext, dtype=torch.int32, device="cuda")
    ext_t = torch.full((reqs,), ext, dtype=torch.int32, device="cuda")
    pool = torch.randperm(64, device="cuda")[:reqs].int()
    table = torch.randint(0, 1 << 24, (64, prefix + ext + 8), dtype=torch.int32, device="cuda")
    full_to_swa = torch.randint(0, 1 << 20, (1 << 24,), dtype=torch.int64, device="cuda")
    total = reqs * (ext + L.SWA_WINDOW - 1)
    fn = lambda: build_swa_token_ids(seq, ext_t, pool, table, full_to_swa, L.SWA_WINDOW, total)  # noqa: E731
    sweep_rows = []
    if sweep:
        sweep_rows = _sweep_launch(swa_mod, "SWA_IDS_BLOCK", "SWA_IDS_NUM_WARPS", fn, "swa ids", total, float("nan"),
                                   blocks=(128, 256, 512, 1024, 2048), warps=(2, 4, 8))
    ms, eager = graph_ms(fn), median_ms(fn)
    moved = total * (4 + 8 + 4)  # req_to_token entry, full_to_swa entry, output id
    return [dict(kernel="swa ids", size=total, us=ms * 1e3, eager_us=eager * 1e3, tbps=moved / ms / 1e9)], sweep_rows


def report(payload: dict, markdown: bool = False) -> None:
    """Print a run's results: the plain table, or BENCHMARKS.md's (run header first, no spec anchors)."""
    ceiling = payload["copy_tbps"]
    if payload.get("sweep") and not markdown:
        print_table("sweep (block, warps)", ["kernel", "size", "block", "warps", "us", "TB/s"], payload["sweep"])
    table = []
    for r in payload["results"]:
        pct = 100 * r["tbps"] / ceiling if r["tbps"] == r["tbps"] else float("nan")
        anchor = r.get("anchor") or r.get("anchor_us") or ""
        table.append((r["kernel"], r["size"], r["us"], r["tbps"], pct, r["eager_us"], anchor))
    if markdown:
        print(header_line(payload.get("header")) + f" Copy ceiling {ceiling:.2f} TB/s (read + write), same run.")
        print()
        rows = [(k.strip(), n, f"{us:.1f}", f"{tb:.2f}", "-" if pct != pct else f"{pct:.0f}", f"{eager:.1f}")
                for k, n, us, tb, pct, eager, _ in table]
        print("\n".join(markdown_table(["kernel", "rows / queries", "graph us", "TB/s", "% of copy", "eager us"], rows)))
        return
    print(f"\ndevice: {payload['device']}; copy ceiling {ceiling:.2f} TB/s (read + write), same run")
    print_table(
        "index and dequant kernels (median)",
        ["kernel", "rows/queries", "graph us", "TB/s", "% of copy", "eager us", "SGLang anchor (spec: TB/s or us)"],
        table,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true", help="also time every block/warp configuration")
    ap.add_argument("--quick", action="store_true", help="smallest sizes only")
    ap.add_argument("--only", choices=("dequant", "combine", "swa"), help="one kernel only")
    ap.add_argument("--json", metavar="FILE",
                    help="write the results here (default: $OUT/bench_kernels.json when OUT is set, else not saved)")
    ap.add_argument("--from-json", metavar="FILE", help="print the table of a saved bench_kernels.json and exit")
    ap.add_argument("--markdown", action="store_true", help="print the table as BENCHMARKS.md shows it")
    args = ap.parse_args(argv)
    if args.from_json:
        report(json.loads(Path(args.from_json).read_text()), args.markdown)
        return 0
    if not torch.cuda.is_available():
        return no_gpu("bench_kernels.py")
    torch.manual_seed(0)
    gen = torch.Generator(device="cuda")
    rows_list = [32768] if args.quick else [32768, 262144, 1048576]
    queries = [8192] if args.quick else [8192, 32768]
    results, sweep_rows = [], []
    parts = {
        "dequant": lambda: bench_dequant(rows_list, gen, args.sweep),
        "combine": lambda: bench_combine(queries, args.sweep),
        "swa": lambda: bench_swa_ids(args.sweep),
    }
    for name, run in parts.items():
        if args.only in (None, name):
            part = run()
            results += part[0]
            sweep_rows += part[1]
    ceiling = copy_bandwidth_tbps()  # after the kernels: same run, fresh allocations
    payload = dict(header=run_header(str(Path(__file__).resolve().parents[1])), device=device_summary(),
                   copy_tbps=ceiling, results=results, sweep=sweep_rows)
    report(payload, args.markdown)
    save_json("bench_kernels.json", payload, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
