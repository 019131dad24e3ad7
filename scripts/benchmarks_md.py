#!/usr/bin/env python3
"""Print BENCHMARKS.md from the JSON the benchmark scripts saved.

    python scripts/benchmarks_md.py > BENCHMARKS.md
    python scripts/benchmarks_md.py --check    # exit 1 if BENCHMARKS.md is not what this prints

Every table, with its run header (GPU, date, torch and Triton versions,
commit), is printed by the script that measured it, from its saved JSON
(``scripts/X.py --from-json FILE --markdown``); the JSON files live in
``benchmarks/results/``. This file holds only the text around the tables,
which quotes no figures. After a new GPU run, copy its ``$OUT/*.json`` into
``benchmarks/results/`` and regenerate.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Text, and (script, JSON file) pairs whose ``--from-json ... --markdown`` output goes there.
PARTS = [
    """# Benchmarks

The current figures, one table per benchmark, each under its run line (GPU, date UTC, torch and Triton
versions, commit). Figures move between runs: compare them within one run. What was tried and dropped, with
older runs' figures and dates, is in `docs/design-notes.md`, as is the kernel-diff tool's timing.

Generated: `python scripts/benchmarks_md.py > BENCHMARKS.md` prints this file from `benchmarks/results/*.json`
(each table by its script's `--from-json FILE --markdown`; copy a GPU run's `$OUT/*.json` there, then
regenerate). Sections 1-3 and 5 come from `bash scripts/gpu_check.sh --quick` (`--sweep` adds the launch-config
sweeps behind the kernels' constants), section 4 from `bash scripts/gpu_sglang_check.sh --quick`.

## 1. Index and dequant kernels (`scripts/bench_kernels.py`)

Dequant reads a C4 cache several times the L2 by random rows, random pages (64 slots in order, a page
table's layout) or the random rows sorted; "same bytes, no arithmetic" (`benchmarks/row_gather_ceiling.py`)
moves exactly its bytes at the same addresses and only copies them, the access pattern's own ceiling.
Combine builds top-k 512 + window 128 index rows; SWA ids serve 8 requests of 4096 tokens. "graph us": CUDA-
graph replays (GPU time); "eager us": single calls after an L2 flush; the copy ceiling is an eager copy.
""",
    ("bench_kernels.py", "bench_kernels.json"),
    """
## 2. Sparse MLA attention (`scripts/bench_attention.py`)

Decode: SWA 128 + C4 512 keys a row (C4 1024 at 128 heads), random rows of fp8 V4 caches larger than the L2,
CUDA-graph replays; FlashMLA reuses its scheduler metadata and at 16 heads runs the query zero-padded to 64;
"staged" dequantizes the rows, then runs `sparse_mla_fwd`. Prefill: top-k 640 over random rows of a bf16
buffer of 32k rows (32 MB, L2-resident) or 256k (five times the L2), `do_bench` medians; "Triton fp8" is the
paged kernel on the same rows in an fp8 cache; "rows only" gathers the rows and only XORs them, a floor under
its buffer's rows. TFLOPS count real heads (`4 * h * keys * 512` a query). Configs: `n<keys a step>w<warps>
s<stages>`, `x` split score dot, `k` keys-major scores. Under `auto` FlashMLA runs these shapes, save C4
prefill layers below 64 heads (Triton, the "native" route of section 5) and what FlashMLA cannot take.
""",
    ("bench_attention.py", "bench_attention.json"),
    """
## 3. The core end to end (`scripts/e2e_stack.py`)

Six layers, ratios [0, 4, 128, 4, 128, 0], 64 heads, top-k 512, `auto` kernels, a C4 cache past 2**31
bytes: every layer against the dense fp32 reference (pass: relative error at most 1e-2), chunked against
unchunked prefill. Then a C4 layer dequantizing all rows its queries may read, or only those its top-k picks
("selected"), beside the core's choice; and a C128 layer's peak temporaries (above the memory before it,
less its output), tiled by query as the core runs it and untiled (index rows for the whole chunk, as SGLang).
""",
    ("e2e_stack.py", "e2e_stack.json"),
    """
## 4. Against SGLang 0.5.23's own backend (`scripts/sglang_kit_matrix.py`, `scripts/bench_sglang_ab.py`)

Same answers: SGLang's DSv4 attention kit, every case as a window-only, C4 and C128 layer, on the sparse
prefill and the paged route, through both backends. The columns are the worst `(|diff| - rtol * |expected|)
/ atol` over a head count's cases (at most 1 passes), against the kit's reference and between the backends.
""",
    ("sglang_kit_matrix.py", "sglang_kit_matrix.json"),
    """
Speed: both backends on one serving-sized DSv4 pool built as the kit builds it (fp8 V4 caches of random
rows), SGLang's `ForwardBatch`es, the same queries and C4 picks. `meta`: `init_forward_metadata`; `c0`,
`c4`, `c128`: one layer's `forward` (median of 15); `step`: metadata plus one layer of each kind, synchronized
(SGLang builds its sparse-prefill chunk cache in its first sparse layer, ours its plan in its first layer on
one of its routes: only `step` compares all work); `ratio`: ours / SGLang. `routes`: the route each layer
kind took in ours (`S`: SGLang's attention; `sh` shared rows, `fold` folded, `nat` native), from the route
table `sglang_dsv4_sparse/route_tables/sm90.json`. `static`: ours with our routes on every layer
(`SGLANG_DSV4_SPARSE_PREFILL_ROUTE=ours`), `plan` its plan's cost on top of SGLang's chunk cache. Decode
replays a CUDA graph of the metadata, a stand-in indexer and the three layers (median of 20). At 8 and 16
heads both get the query zero-padded to 64, as the model hands it over. (`--breakdown` adds a profile of
one call of each part, host time to issue it and GPU kernel time by kind; this run did not take it.)
""",
    ("bench_sglang_ab.py", "bench_sglang_ab.json"),
    """
This run (commit f647426) decided each extend's route at metadata time from the route table shipped in
`route_tables/sm90.json` (generated by `--route-table` from the H100 run of the same day at a4dc261), and
handed decodes to SGLang's attention (`auto`). Rows whose layers all take SGLang's route (`S/S/S`) build
nothing of ours: their ratio is the host cost of our per-step decision (about 0.05 ms in `meta`, 1-3% of
the step) plus run-to-run host noise, which in single rows reaches 0.64-1.43 (a wall-clock step of a few
ms, median of 15). Our routes win from 120k of prefix with several requests, and on 1M prefixes. Where a
goal is missed: short prefixes and C4 layers have no faster route of ours at these sizes (the `static`
table: our routes on every layer; docs/design-notes.md, "Routes by shape"); a 2k chunk
on a 1M prefix keeps SGLang's C4 and window layers and its metadata (5.9 ms of SGLang's step), so ours
stops at 0.58 (8 heads) and 0.66 (16 heads).
""",
    """
Speculative steps (`scripts/bench_sglang_verify.py --quick`): one CUDA-graph replay of SGLang's verify
metadata (ours: and our plan over it) and one C0, C4 and C128 layer; a draft extend is metadata and one C0
layer. `key MB`: the key bytes SGLang's per-token route and our verify route read; `TB/s`: ours over its
replay time against the device-to-device copy ceiling of the same run. In this run (commit f647426) `auto`
sent verify and draft-extend layers below 64 heads to the verify kernel (`our route` verify); at 64 heads
the layers ran SGLang's attention, but our plan (views, `query_start_loc`) was built in the graph, which
cost 3-20% of these 20-300 us replays. The verify kernel, untuned, read its keys at 1-8% of the copy
ceiling: latency-bound (few programs, a per-token C4 walk), 1.8-2.8x slower than SGLang's FlashMLA on the
padded query. So `auto` now hands verify and draft extend to SGLang whole at every head count
(`routing.VERIFY_KERNEL_IN_AUTO`), and `SGLANG_DSV4_SPARSE_PREFILL_ROUTE=ours` runs the kernel.
""",
    ("bench_sglang_verify.py", "bench_sglang_verify.json"),

    """
Reliability under churn: `scripts/soak_sglang.py` runs random steps through SGLang's `ForwardBatch` on one
pool for both backends (requests arriving and finishing, extend, decode and mixed batches, chunked
prefill of prompts up to 128k, prefix-cache hits, decode batches of 1 to 128, 8/16/64 heads, our routes on
every layer), compares ours with SGLang's every 20th step within the kit's tolerance, checks for non-finite
output and reads `torch.cuda.max_memory_allocated` every 500 steps after warm-up. Goal: 0 mismatches, 0 drift.
The soak now also runs speculative rounds (a chain TARGET_VERIFY of 4 draft tokens a request, then its
DRAFT_EXTEND, on backends built with MTP on); the run below predates them and has no GPU run with them yet.
""",
    ("soak_sglang.py", "soak_sglang.json"),
    """
## 5. Sparse prefill at a rank's head counts (`scripts/bench_prefill_routes.py`)

One layer's `prefill_layer` (staging included) on each route of one request: "index" is one index row a
query through FlashMLA on the query zero-padded to 64 heads (the padding copy included); "index, q padded"
the same with the query handed over already padded, as SGLang's model hands it (no copy); "native" the
Triton kernel on the index rows at the real heads; "shared" the shared-row kernel (each tile of
`64 // h` queries reads its window and C128 prefix once); "split" (C4) its top-k through index rows and its
window through the shared-row kernel; "paged" (C4) its top-k read straight from the fp8 cache by the paged
kernel at the real heads (no compressed row staged) and its window as in "split"; "folded" (C128) each
group of `64 // h` queries' shared compressed rows through FlashMLA at full width, the rest through the
shared-row kernel. The compute floor counts the keys each query reads (`4 * h * 512` FLOPs a key) at the
bf16 matmul rate measured in the same run. `auto` (`dispatch.KernelChoice.prefill_route`) takes, below 64
heads, "shared" for window-only, "native" for C4 and "folded" for C128 layers; "index" at 64 heads and more.
The first table is `gpu_check.sh --quick`'s (8k chunk); the second the 1M case of an earlier full run.
""",
    ("bench_prefill_routes.py", "bench_prefill_routes.json"),
    "",
    ("bench_prefill_routes.py", "bench_prefill_routes_1m.json"),
]


def render(results: Path = RESULTS) -> str:
    out = []
    for part in PARTS:
        if isinstance(part, str):
            out.append(part)
            continue
        script, name = part
        # A path relative to the checkout, so the page reads the same in every clone (CI checks it).
        path = results / name
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        cmd = [sys.executable, str(ROOT / "scripts" / script), "--from-json", str(shown), "--markdown"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"benchmarks_md: {' '.join(cmd[1:])} failed:\n{done.stderr}")
        out.append("\n" + done.stdout)
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the saved JSON (default: benchmarks/results)")
    ap.add_argument("--check", action="store_true", help="compare with BENCHMARKS.md instead of printing")
    args = ap.parse_args(argv)
    text = render(args.results)
    if not args.check:
        sys.stdout.write(text)
        return 0
    current = (ROOT / "BENCHMARKS.md").read_text()
    if current == text:
        print("BENCHMARKS.md is up to date")
        return 0
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), "BENCHMARKS.md",
                                               "scripts/benchmarks_md.py"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
