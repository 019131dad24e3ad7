#!/usr/bin/env python3
"""Sparse-prefill layer time by route, at a tensor-parallel rank's head counts.

    python scripts/bench_prefill_routes.py [--quick] [--json FILE]
    python scripts/bench_prefill_routes.py --from-json bench_prefill_routes.json [--markdown]

One request; ``core.forward.prefill_layer`` on each route of ``PREFILL_ROUTES``
(staging of the layer's rows included, as a layer pays it): "index" is one
index row per query through FlashMLA with the query zero-padded to 64 heads
(what ``auto`` ran before the shared-row routes; "index, q padded" without the
padding copy), "native" the same index rows through the Triton kernel at the
real heads, the others go through the shared-row kernel. Cases: an
8192-token chunk after a 120k-token prefix (C0, C4 with top-k 512, C128) and
a 32768-token chunk ending at 1M tokens (C128), at 8, 16 and 64 heads. Times
are ``do_bench`` medians (L2 flushed between calls). "% floor": the layer's
useful FLOPs (``4 * h * 512`` per key a query reads) at the bf16 matmul rate
measured in the same run, over the time.
"vs index": relative norm difference of the route's output from the index
route's. ``--quick`` drops the 1M case. The rows go to ``--json FILE``, or
with ``$OUT`` set to ``$OUT/bench_prefill_routes.json`` (else they are not
saved).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.benchmarking import (  # noqa: E402
    header_line, markdown_table, median_ms, no_gpu, print_table, run_header, save_json,
)

TITLE = "sparse prefill layer by route (do_bench median ms)"
HEAD = ["case", "layer", "heads", "route", "ms", "x index", "% floor", "vs index"]
TOPK = 512
HEADS = (8, 16, 64)


def matmul_tflops() -> float:
    """The bf16 dense matmul rate of this GPU, measured: the compute ceiling of the floor column."""
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = median_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def build_case(prefix: int, chunk: int, ratios, gen: torch.Generator, dev=torch.device("cuda")):
    """One request of ``prefix + chunk`` tokens: caches of random rows (every slot written through the
    quantizer, so no byte pattern dequantizes to inf), random page tables, the step's plan."""

    def cache(pages, page):
        return written_cache(pages, page, torch.arange(pages * page), gen, dev)[0]

    from sglang_dsv4_sparse.core.plan import StepInputs, build_prefill_plan
    from sglang_dsv4_sparse.random_inputs import written_cache

    seq = prefix + chunk
    window = L.SWA_WINDOW
    swa_tokens = chunk + window
    swa_pages = -(-swa_tokens // L.SWA_PAGE_SIZE) + 1
    full_to_swa = torch.full((seq,), -1, dtype=torch.int32)
    first = max(0, prefix - window + 1)
    full_to_swa[first:] = torch.randperm(swa_pages * L.SWA_PAGE_SIZE, generator=gen)[: seq - first].to(torch.int32)
    caches = {0: cache(swa_pages, L.SWA_PAGE_SIZE)}
    tables = {}
    for ratio in ratios:
        page = L.C4_PAGE_SIZE if ratio == 4 else L.C128_PAGE_SIZE
        pages = -(-(seq // ratio) // page) + 1
        tables[ratio] = torch.randperm(pages, generator=gen)[None].to(torch.int32).to(dev)
        caches[ratio] = cache(pages, page)
    inputs = StepInputs(
        seq_lens=torch.tensor([seq], dtype=torch.int32, device=dev),
        extend_lens=torch.tensor([chunk], dtype=torch.int32, device=dev),
        req_pool_indices=torch.zeros(1, dtype=torch.int32, device=dev),
        req_to_token=torch.arange(seq, dtype=torch.int32, device=dev)[None],
        full_to_swa=full_to_swa.to(dev),
        compressed_page_tables=tables,
        seq_lens_cpu=[seq],
        extend_lens_cpu=[chunk],
        window=window,
    )
    return build_prefill_plan(inputs), caches


def useful_keys(plan, ratio: int) -> int:
    """Keys all queries read: window, plus top-k or the C128 prefix."""
    pos = plan.query_pos.long()
    keys = torch.clamp(pos + 1, max=plan.window)
    if ratio == 4:
        keys = keys + torch.clamp(torch.div(pos + 1, 4, rounding_mode="floor"), max=TOPK)
    elif ratio == 128:
        keys = keys + torch.div(pos + 1, 128, rounding_mode="floor")
    return int(keys.sum())


def variants(ratio: int, heads: int, q: torch.Tensor, routes, fold):
    """``(label, route, query)`` of each timed row: every route of the layer (at 64 heads "native" is
    "index" on Triton, which FlashMLA beats, so it is left out), and below 64 heads "index, q padded":
    the index route with FlashMLA handed a query already zero-padded to 64 heads, as SGLang's model
    hands it (no padding copy in the time)."""
    from sglang_dsv4_sparse.dispatch import SHARED_ROW_MAX_HEADS, flashmla_padded_heads

    narrow = heads < SHARED_ROW_MAX_HEADS
    out = [(route, route, q) for route in routes if (route != "folded" or fold is not None) and (route != "native" or narrow)]
    if narrow:
        out.insert(1, ("index, q padded", "index", torch.nn.functional.pad(q, (0, 0, 0, flashmla_padded_heads(heads) - heads))))
    return out


def run(quick: bool) -> tuple[float, list]:
    from sglang_dsv4_sparse.core.fold import build_c128_fold
    from sglang_dsv4_sparse.core.forward import PREFILL_ROUTES, Workspace, prefill_layer
    from sglang_dsv4_sparse.dispatch import SHARED_ROW_MAX_HEADS, flashmla_padded_heads

    gen = torch.Generator().manual_seed(0)
    tflops = matmul_tflops()
    print(f"bf16 matmul: {tflops:.0f} TFLOPS (the floor column's ceiling)")
    cases = [("8k chunk, 120k prefix", 122880 - 8192, 8192, (0, 4, 128))]
    if not quick:
        cases.append(("32k chunk, 1M context", (1 << 20) - 32768, 32768, (128,)))
    rows = []
    workspace = Workspace(torch.device("cuda"))
    for name, prefix, chunk, ratios in cases:
        plan, caches = build_case(prefix, chunk, [r for r in ratios if r], gen)
        pos = plan.query_pos.long()
        for ratio in ratios:
            topk = None
            if ratio == 4:
                visible = torch.div(pos + 1, 4, rounding_mode="floor").clamp_min(1)
                topk = (torch.randint(0, 1 << 30, (chunk, TOPK), device="cuda") % visible[:, None]).to(torch.int32)
            keys = useful_keys(plan, ratio)
            for heads in HEADS:
                q = torch.randn(chunk, heads, L.HEAD_DIM, device="cuda").to(torch.bfloat16)
                sink = torch.randn(heads, device="cuda")
                sink_padded = torch.nn.functional.pad(sink, (0, flashmla_padded_heads(heads) - heads))
                fold = build_c128_fold(plan, heads) if ratio == 128 and heads < SHARED_ROW_MAX_HEADS else None
                floor_ms = 4 * heads * L.HEAD_DIM * keys / (tflops * 1e12) * 1e3
                base_ms = base_out = None
                for label, route, q_run in variants(ratio, heads, q, PREFILL_ROUTES[ratio], fold):

                    def call(route=route, q_run=q_run):
                        return prefill_layer(plan, workspace, q_run, caches[0], ratio, caches.get(ratio), topk,
                                             sink if q_run is q else sink_padded, route=route, fold=fold)

                    out = call()[:, :heads]
                    ms = median_ms(call)
                    if label == "index":
                        base_ms, base_out = ms, out.float()
                    diff = float((out.float() - base_out).norm() / base_out.norm())
                    row = [name, f"C{ratio}", heads, label, round(ms, 3), round(base_ms / ms, 2),
                           round(100 * floor_ms / ms, 1), f"{diff:.1e}"]
                    rows.append(row)
                    print("  ".join(str(c) for c in row), flush=True)
                del q
        del plan, caches
        torch.cuda.empty_cache()
    return tflops, rows


SWEEP_TITLE = "shared-row kernel launch configs, 8k chunk at 120k (do_bench median ms)"
SWEEP_HEAD = ["layer", "heads", "config", "ms"]


def sweep() -> list:
    """Launch configs of the shared-row kernel on one staged workspace: window only and C128."""
    from sglang_dsv4_sparse.core.forward import Workspace, _stage_rows
    from sglang_dsv4_sparse.kernels.sparse_attn.configs import KernelConfig, shared_rows_configs
    from sglang_dsv4_sparse.kernels.sparse_attn.shared_rows import shared_rows_attention
    from triton.runtime.errors import OutOfResources

    candidates = list(shared_rows_configs()) + [
        KernelConfig(64, 8, 1, split_scores=True), KernelConfig(64, 8, 3, split_scores=True),
        KernelConfig(128, 8, 1, split_scores=True), KernelConfig(32, 8, 2, split_scores=True),
        KernelConfig(32, 4, 2),
    ]
    gen = torch.Generator().manual_seed(1)
    plan, caches = build_case(122880 - 8192, 8192, [128], gen)
    rows = plan.compressed[128]
    kv = _stage_rows(plan, Workspace(torch.device("cuda")), caches[0], caches[128], rows.token_ids, rows.page_size)
    out = []
    for ratio in (0, 128):
        for heads in (8, 16):
            q = torch.randn(8192, heads, L.HEAD_DIM, device="cuda").to(torch.bfloat16)
            for cfg in candidates:
                def call(cfg=cfg):
                    return shared_rows_attention(q, kv, plan.req_of_token, plan.query_pos, plan.seq_lens,
                                                 plan.swa_gather_lens, rows.swa_base, plan.window, ratio,
                                                 rows.base if ratio else None, config=cfg)
                try:
                    call()
                    out.append([f"C{ratio}", heads, str(cfg), round(median_ms(call), 3)])
                except (OutOfResources, RuntimeError) as err:
                    out.append([f"C{ratio}", heads, str(cfg), f"fails ({type(err).__name__})"])
                print(out[-1], flush=True)
    return out


def compact(rows: list) -> tuple[list, list]:
    """One line per (case, layer, route), one column per head count: "ms (x index, % floor)"."""
    heads = sorted({r[2] for r in rows})
    lines: dict = {}
    for case, layer, h, route, ms, speedup, floor, _ in rows:
        lines.setdefault((case, layer, route), {})[h] = f"{ms:.3g} ({speedup:.2f}x, {floor:.0f}%)"
    table = [[case, layer, route] + [cells.get(h, "-") for h in heads] for (case, layer, route), cells in lines.items()]
    return ["case", "layer", "route"] + [f"{h} heads" for h in heads], table


def report(payload: dict, markdown: bool = False) -> None:
    head, table = compact(payload["rows"])
    if markdown:
        print(header_line(payload.get("header")))
        print(f"bf16 matmul ceiling measured in the run: {payload['matmul_tflops']:.0f} TFLOPS. Cells: ms (speed-up"
              " over the index route, % of the compute floor).\n")
        print("\n".join(markdown_table(head, table)))
    else:
        print_table(TITLE, HEAD, payload["rows"])
        print_table(TITLE + ": ms (x index, % floor)", head, table)
    if payload.get("sweep") and not markdown:
        print_table(SWEEP_TITLE, SWEEP_HEAD, payload["sweep"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the 8k-chunk case")
    ap.add_argument("--sweep", action="store_true", help="also time the shared-row kernel's launch configs (8k chunk)")
    ap.add_argument("--json", metavar="FILE",
                    help="write the rows here (default: $OUT/bench_prefill_routes.json when OUT is set, "
                         "else not saved)")
    ap.add_argument("--from-json", metavar="FILE", help="print the table of a saved run and exit")
    ap.add_argument("--markdown", action="store_true", help="print the table as BENCHMARKS.md shows it")
    args = ap.parse_args(argv)
    if args.from_json:
        report(json.loads(Path(args.from_json).read_text()), args.markdown)
        return 0
    if not torch.cuda.is_available():
        return no_gpu("bench_prefill_routes.py", "; the routes' CPU tests are tests/core/test_forward.py")
    t0 = time.time()
    tflops, rows = run(args.quick)
    payload = {"header": run_header(str(ROOT)), "matmul_tflops": round(tflops), "rows": rows}
    if args.sweep:
        payload["sweep"] = sweep()
    report(payload, args.markdown)
    save_json("bench_prefill_routes.json", payload, args.json)
    print(f"\nbench_prefill_routes: done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
