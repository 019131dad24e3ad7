"""End-to-end check and per-layer timings of the core on a GPU.

    python scripts/e2e_stack.py [--quick] [--kernels auto|flashmla|triton] [--skip-check] [--skip-bench] [--json FILE]
    python scripts/e2e_stack.py --from-json e2e_stack.json [--markdown]

Check (ratios [0, 4, 128, 4, 128, 0], 64 heads, top-k 512, one C4 cache past
2**31 bytes): (a) a 32768-token prompt in chunks of 8192, (b) the same prompt
as one chunk, (c) a 131072-token prompt in chunks of 32768, each followed by 16
decode steps. Every layer's output is compared with the dense fp32 reference
(relative error <= 1e-2), and (a) with (b).

Bench: a C4 layer on an 8192-token chunk at prefix 0 / 24k / 120k, dequantizing
every readable compressed row ("all") or only those the top-k picks
("selected"), and the automatic choice; a MIXED-like short extend over a long
context; the peak temporary memory of a C128 layer on a 32768-token chunk at
1M context, tiled (ours) and untiled (one index tensor for the whole chunk,
as SGLang 0.5.23 builds it), and its time at an 8192 chunk / 128k context.
``--quick`` makes the prompts 8x shorter and keeps two C4 cases and the 128k
C128 case. The results go to ``--json FILE``, or with ``$OUT`` set to
``$OUT/e2e_stack.json`` (else they are not saved). ``--from-json`` prints
the tables of a saved run (no GPU needed); ``--markdown`` prints them as
BENCHMARKS.md shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's package, not an installed one

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.benchmarking import (  # noqa: E402
    device_summary,
    events_ms,
    header_line,
    markdown_table,
    no_gpu,
    print_table,
    run_header,
    save_json,
)

TOLERANCE = 1e-2


def run_checks(quick: bool) -> tuple[list, bool, list]:
    from sglang_dsv4_sparse.stack_check import StackConfig, build_stack, compare_chunkings, max_rel_err, run_prompt

    rows, ok = [], True
    scale = 8 if quick else 1
    prompt_a = 32768 // scale
    cfg = StackConfig(prompt_len=prompt_a, decode_steps=16, huge_cache_bytes=2**31)
    stack = build_stack(cfg, "cuda")
    print(f"(a) prompt {prompt_a} in chunks of {8192 // scale}; C4 cache of layer 1: {stack.compressed_caches[1].numel() / 2**30:.2f} GiB")
    out_a, res_a = run_prompt(stack, 8192 // scale)
    out_a = {k: v.cpu() for k, v in out_a.items()}
    print(f"(b) prompt {prompt_a} as one chunk")
    out_b, res_b = run_prompt(stack, prompt_a)
    agree = compare_chunkings(out_a, {k: v.cpu() for k, v in out_b.items()})
    del out_b
    for name, res in (("a", res_a), ("b", res_b)):
        err = max_rel_err(res)
        ok &= err <= TOLERANCE
        rows.append((name, "max rel err vs dense fp32", err, "PASS" if err <= TOLERANCE else "FAIL"))
    ok &= agree <= TOLERANCE
    rows.append(("a vs b", "max rel diff", agree, "PASS" if agree <= TOLERANCE else "FAIL"))
    per_layer = [(r.what, r.layer, r.ratio, r.ms, r.rel_err) for r in res_a]
    del stack, out_a
    torch.cuda.empty_cache()
    prompt_c = 131072 // scale
    cfg = StackConfig(prompt_len=prompt_c, decode_steps=16, huge_cache_bytes=2**31)
    stack = build_stack(cfg, "cuda")
    print(f"(c) prompt {prompt_c} in chunks of {32768 // scale}")
    _, res_c = run_prompt(stack, 32768 // scale)
    err = max_rel_err(res_c)
    ok &= err <= TOLERANCE
    rows.append(("c", "max rel err vs dense fp32", err, "PASS" if err <= TOLERANCE else "FAIL"))
    per_layer += [(r.what, r.layer, r.ratio, r.ms, r.rel_err) for r in res_c]
    del stack
    torch.cuda.empty_cache()
    return rows, ok, per_layer


def _single_request(prefix: int, chunk: int, ratios, heads: int, gen):
    """Caches of random (NaN-free) bytes and StepInputs for one request's chunk."""
    from sglang_dsv4_sparse.core.plan import StepInputs
    from sglang_dsv4_sparse.random_inputs import random_byte_cache

    seq = prefix + chunk
    swa_cap_pages = -(-(chunk + 2 * L.SWA_WINDOW) // L.SWA_PAGE_SIZE) * 4
    swa_cache = random_byte_cache(swa_cap_pages, L.SWA_PAGE_SIZE, gen, "cuda")
    req_to_token = torch.arange(seq, dtype=torch.int32, device="cuda")[None]
    full_to_swa = torch.randint(0, swa_cap_pages * L.SWA_PAGE_SIZE, (seq,), generator=gen).cuda()
    tables, caches = {}, {}
    for ratio in ratios:
        page = L.C4_PAGE_SIZE if ratio == 4 else L.C128_PAGE_SIZE
        pages = -(-(seq // ratio + 1) // page)
        tables[ratio] = torch.randperm(pages, generator=gen).cuda()[None].int()
        caches[ratio] = random_byte_cache(pages, page, gen, "cuda")
    inputs = StepInputs(
        seq_lens=torch.tensor([seq], dtype=torch.int32, device="cuda"),
        extend_lens=torch.tensor([chunk], dtype=torch.int32, device="cuda"),
        req_pool_indices=torch.zeros(1, dtype=torch.int32, device="cuda"),
        req_to_token=req_to_token,
        full_to_swa=full_to_swa,
        compressed_page_tables=tables,
        seq_lens_cpu=[seq],
        extend_lens_cpu=[chunk],
    )
    q = (torch.randn(chunk, heads, L.HEAD_DIM, generator=gen) * 0.5).to(torch.bfloat16).cuda()
    sink = torch.randn(heads, generator=gen).cuda()
    return inputs, swa_cache, caches, q, sink


def run_bench(quick: bool) -> tuple[list, list]:
    from sglang_dsv4_sparse.core.forward import Workspace, prefill_layer
    from sglang_dsv4_sparse.core.plan import build_prefill_plan

    gen = torch.Generator().manual_seed(1)
    c4_rows = []
    cases = [(8192, 0), (8192, 24576), (8192, 122880), (16, 122880), (1, 1 << 20)]
    if quick:
        cases = [(8192, 0), (16, 122880)]
    for chunk, prefix in cases:
        inputs, swa, caches, q, sink = _single_request(prefix, chunk, (4,), 64, gen)
        pos = torch.arange(prefix, prefix + chunk, device="cuda")
        n = (pos + 1) // 4
        topk = (torch.rand(chunk, 512, generator=gen).cuda() * n[:, None].clamp_min(1)).to(torch.int32)
        topk = torch.where(torch.arange(512, device="cuda")[None] < n[:, None], topk, -1)
        plan = build_prefill_plan(inputs)
        ws = Workspace("cuda")
        times = {}
        # Interleaved rounds, so clock and cache drift hit every mode alike.
        samples = {mode: [] for mode in ("all", "selected", "auto")}
        for _ in range(5):
            for mode in samples:
                samples[mode].append(events_ms(lambda: prefill_layer(plan, ws, q, swa, 4, caches[4], topk, sink, c4_rows=mode), reps=5))
        times = {mode: sorted(v)[len(v) // 2] for mode, v in samples.items()}
        from sglang_dsv4_sparse.core.forward import choose_c4_rows

        picked = choose_c4_rows(plan.compressed[4].total, chunk, 512)
        c4_rows.append((chunk, prefix, plan.compressed[4].total, times["all"], times["selected"], times["auto"], picked))
        del inputs, swa, caches, q, plan, ws
        torch.cuda.empty_cache()

    mem_rows = []
    c128_cases = [(32768, (1 << 20) - 32768), (8192, 131072 - 8192)]
    if quick:
        c128_cases = [(8192, 131072 - 8192)]
    for chunk, prefix in c128_cases:
        inputs, swa, caches, q, sink = _single_request(prefix, chunk, (128,), 64, gen)
        for label, budget in (("tiled (ours)", None), ("untiled", 1 << 40)):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            plan = build_prefill_plan(inputs) if budget is None else build_prefill_plan(inputs, index_budget_bytes=budget)
            ws = Workspace("cuda")
            out = prefill_layer(plan, ws, q, swa, 128, caches[128], None, sink)
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()) / 2**20
            del out
            ms = events_ms(lambda: prefill_layer(plan, ws, q, swa, 128, caches[128], None, sink), reps=3)
            mem_rows.append((chunk, prefix + chunk, label, len(plan.c128_tiles), peak, ms))
            del plan, ws
        del inputs, swa, caches, q
        torch.cuda.empty_cache()
    return c4_rows, mem_rows


PER_LAYER_HEAD = ["step", "layer", "ratio", "ms", "rel err"]
CHECK_HEAD = ["run", "what", "value", "verdict"]
C4_HEAD = ["chunk", "prefix", "readable rows", "all ms", "selected ms", "auto ms", "auto picks"]
C128_HEAD = ["chunk", "context", "variant", "query tiles", "peak temp MiB", "ms"]
C4_TITLE = "C4 layer prefill, h 64, top-k 512: compressed rows dequantized (median ms)"
C128_TITLE = "C128 layer prefill, h 64: peak temporary memory and time"


def _prompts(per_layer: list) -> list[tuple[int, int, int]]:
    """(prompt tokens, first chunk, decode steps) of each checked run, read from its per-layer step names."""
    runs: list[list] = []
    for what, *_ in per_layer:
        m = re.match(r"prefill \[(\d+), (\d+)\)", what)
        if m and int(m.group(1)) == 0 and (not runs or runs[-1][2]):
            runs.append([None, int(m.group(2)), set()])  # a new prompt starts at position 0
        d = re.match(r"decode pos (\d+)", what)
        if d and runs:
            pos = int(d.group(1))
            runs[-1][0] = pos if runs[-1][0] is None else min(runs[-1][0], pos)
            runs[-1][2].add(pos)
    return [(prompt, chunk, len(steps)) for prompt, chunk, steps in runs]


def _markdown(payload: dict) -> list[str]:
    """BENCHMARKS.md's tables: the check (prompt sizes from the step names), C4 and C128 prefill."""
    lines = [header_line(payload.get("header")), ""]
    if payload.get("check"):
        prompts = _prompts(payload.get("per_layer", []))
        what = {}
        if len(prompts) == 2:
            (pa, ca, da), (pc, cc, dc) = prompts
            what = {"a": f"(a) {pa} tokens in chunks of {ca}, + {da} decode steps",
                    "b": f"(b) {pa} tokens as one chunk, + {da} decode steps",
                    "a vs b": "(a) against (b), every layer's output",
                    "c": f"(c) {pc} tokens in chunks of {cc}, + {dc} decode steps"}
        rows = [(what.get(run, run), label, f"{value:.2e}" if value else "0", verdict)
                for run, label, value, verdict in payload["check"]]
        lines += markdown_table(CHECK_HEAD, rows) + [""]
    if payload.get("c4"):
        rows = [(c, p, n, f"{a:.2f}", f"{sel:.2f}", f"{auto:.2f}", pick) for c, p, n, a, sel, auto, pick in payload["c4"]]
        lines += [C4_TITLE + ":", ""] + markdown_table(C4_HEAD, rows) + [""]
    if payload.get("c128"):
        rows = [(c, ctx, v, t, f"{mib:.1f}", f"{ms:.2f}") for c, ctx, v, t, mib, ms in payload["c128"]]
        lines += [C128_TITLE + ":", ""] + markdown_table(C128_HEAD, rows)
    return lines


def report(payload: dict, markdown: bool = False) -> None:
    if markdown:
        print("\n".join(_markdown(payload)))
        return
    if payload.get("check"):
        print_table("per-layer time per step, run (a) then (c) (CUDA events, ms)", PER_LAYER_HEAD, payload["per_layer"])
        print_table("e2e check", CHECK_HEAD, payload["check"])
    if "c4" in payload:
        print_table(C4_TITLE, C4_HEAD, payload["c4"])
        print_table(C128_TITLE, C128_HEAD, payload["c128"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="prompts 8x shorter, fewer bench cases")
    ap.add_argument("--kernels", choices=("auto", "flashmla", "triton"), help="sets SGLANG_DSV4_SPARSE_KERNELS")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--json", metavar="FILE",
                    help="write the results here (default: $OUT/e2e_stack.json when OUT is set, else not saved)")
    ap.add_argument("--from-json", metavar="FILE", help="print the tables of a saved e2e_stack.json and exit")
    ap.add_argument("--markdown", action="store_true", help="print the tables as BENCHMARKS.md shows them")
    args = ap.parse_args(argv)
    if args.from_json:
        report(json.loads(Path(args.from_json).read_text()), args.markdown)
        return 0
    if not torch.cuda.is_available():
        return no_gpu("e2e_stack.py", "; the CPU version is tests/test_stack_check.py")
    if args.kernels:
        os.environ["SGLANG_DSV4_SPARSE_KERNELS"] = args.kernels
    from sglang_dsv4_sparse.dispatch import describe

    kernels = describe(torch.device("cuda"))
    print(f"device: {device_summary()}; {kernels}")
    t0 = time.time()
    ok = True
    payload = {"header": run_header(str(Path(__file__).resolve().parents[1]), kernels=kernels)}
    if not args.skip_check:
        rows, ok, per_layer = run_checks(args.quick)
        payload.update(check=rows, per_layer=per_layer)
        if not args.markdown:
            report(dict(check=rows, per_layer=per_layer))
    if not args.skip_bench:
        c4_rows, mem_rows = run_bench(args.quick)
        payload.update(c4=c4_rows, c128=mem_rows)
        if not args.markdown:
            report(dict(c4=c4_rows, c128=mem_rows))
    if args.markdown:
        report(payload, markdown=True)
    save_json("e2e_stack.json", payload, args.json)
    print(f"\ne2e_stack: {'PASS' if ok else 'FAIL'} in {time.time() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
