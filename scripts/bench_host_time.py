#!/usr/bin/env python3
"""Host (Python) time of one ``prefill_layer`` and one eager ``decode_layer`` call, C0, C4 and C128 layers.

    python scripts/bench_host_time.py [--label NAME] [--json FILE] [--iters N] [--heads H]
    PYTHONPATH=/path/to/other/tree python scripts/bench_host_time.py --label before --json before.json

What one layer costs the CPU before the GPU has its work: argument checks,
kernel choice, plan lookups and kernel launches. Each of ``--iters`` calls
(after warm-up) is timed as ``synchronize(); t0; call; t1; synchronize()``,
so ``t1 - t0`` is the host time alone (the launches are asynchronous); the
median and 90th percentile are printed in microseconds.

Problem (small, so host time dominates): prefill is one request, a
``--chunk``-token chunk (64) after a ``--prefix``-token prefix (4096);
decode is ``--batch`` requests (4) at the same length; ``--heads`` query
heads (64: what SGLang hands the core at a tensor-parallel rank), C4 top-k
``--topk`` (512). The core's calls are made as the API before the
KernelChoice change takes them (no ``choice``), so the same script times both
trees: with ``PYTHONPATH`` set, the package comes from there; without it,
from this tree. The output names the package file that ran.

Without CUDA it runs on the CPU under ``TRITON_INTERPRET=1`` with tiny
shapes and 2 iterations: the host time then includes the interpreted
kernels and means nothing (a smoke test of the script only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ON_GPU_HINT = "--cpu" not in sys.argv
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's package
if not ON_GPU_HINT:
    # The interpreter must be on before Triton is imported: on a GPU machine
    # ``import torch`` may import it, and a kernel defined after would compile for the GPU.
    os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402

CPU = not (ON_GPU_HINT and torch.cuda.is_available())
if CPU:
    # The interpreter must be on before the kernels are defined (at import).
    os.environ["TRITON_INTERPRET"] = "1"

import sglang_dsv4_sparse  # noqa: E402
from sglang_dsv4_sparse import dispatch  # noqa: E402
from sglang_dsv4_sparse.benchmarking import header_line, print_table, run_header  # noqa: E402
from sglang_dsv4_sparse.core.forward import Workspace, decode_layer, prefill_layer  # noqa: E402
from sglang_dsv4_sparse.core.plan import StepInputs, build_paged_plan, build_prefill_plan, topk_to_token_ids  # noqa: E402
from sglang_dsv4_sparse.stack_check import StackConfig, build_stack, deterministic_topk, layer_q  # noqa: E402

RATIOS = (0, 4, 128)
GPU_DEFAULTS = dict(heads=64, topk=512, prefix=4096, chunk=64, batch=4, iters=200, warmup=20)
CPU_DEFAULTS = dict(heads=4, topk=8, prefix=120, chunk=8, batch=2, iters=2, warmup=0)
CPU_NOTE = "CPU under TRITON_INTERPRET=1: host time includes the interpreted kernels, not meaningful"


def step_inputs(stack, seq_len: int, extend_len: int, num_reqs: int) -> StepInputs:
    """``num_reqs`` requests over the stack's one prompt (its pool row), each at ``seq_len`` with ``extend_len`` queries."""
    dev = stack.device
    tables = {r: t[stack.pool_row][None].repeat(num_reqs, 1) for r, t in stack.page_tables.items() if isinstance(r, int)}
    return StepInputs(
        seq_lens=torch.full((num_reqs,), seq_len, dtype=torch.int32, device=dev),
        extend_lens=torch.full((num_reqs,), extend_len, dtype=torch.int32, device=dev),
        req_pool_indices=torch.full((num_reqs,), stack.pool_row, dtype=torch.int32, device=dev),
        req_to_token=stack.req_to_token,
        full_to_swa=stack.full_to_swa,
        compressed_page_tables=tables,
        seq_lens_cpu=[seq_len] * num_reqs,
        extend_lens_cpu=[extend_len] * num_reqs,
    )


def layer_calls(stack, cfg) -> dict:
    """``{"prefill C0": fn, ...}``: one layer call each, inputs built beforehand."""
    seq_len = cfg.prefix + cfg.chunk
    prefill_plan = build_prefill_plan(step_inputs(stack, seq_len, cfg.chunk, 1))
    decode_plan = build_paged_plan(step_inputs(stack, seq_len, 1, cfg.batch))
    workspace = Workspace(stack.device)
    prefill_pos = torch.arange(cfg.prefix, seq_len, device=stack.device)
    decode_pos = torch.full((cfg.batch,), seq_len - 1, device=stack.device)
    prefill, decode = {}, {}
    for layer, ratio in enumerate(RATIOS):
        swa, comp, sink = stack.swa_caches[layer], stack.compressed_caches[layer], stack.sinks[layer]
        q = layer_q(stack, layer, prefill_pos)
        topk = deterministic_topk(stack, layer, prefill_pos) if ratio == 4 else None
        prefill[f"prefill C{ratio}"] = (
            lambda q=q, swa=swa, ratio=ratio, comp=comp, topk=topk, sink=sink:
            prefill_layer(prefill_plan, workspace, q, swa, ratio, comp, topk, sink)
        )
        q = layer_q(stack, layer, decode_pos)
        ids = lens = None
        if ratio == 4:  # the paged route takes C4-cache ids and lengths, as SGLang's indexer writes them
            ids, lens = topk_to_token_ids(decode_plan, 4, deterministic_topk(stack, layer, decode_pos))
            ids = ids[:, 0]
        decode[f"decode C{ratio}"] = (
            lambda q=q, swa=swa, ratio=ratio, comp=comp, ids=ids, sink=sink, lens=lens:
            decode_layer(decode_plan, q, swa, ratio, comp, ids, sink, topk_lengths=lens)
        )
    return {**prefill, **decode}


def host_times_us(fn, iters: int, warmup: int, sync) -> list:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        sync()
        times.append((t1 - t0) * 1e6)
    return times


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="", help="a name for this run (e.g. before / after), kept in the JSON")
    ap.add_argument("--json", metavar="FILE", help="write the results, with a run header, to FILE")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (interpreter) even where CUDA is")
    defaults = CPU_DEFAULTS if CPU else GPU_DEFAULTS
    for name, value in defaults.items():
        ap.add_argument(f"--{name}", type=int, default=value, help=f"default {value}")
    args = ap.parse_args(argv)

    device = "cpu" if CPU else "cuda"
    sync = (lambda: None) if CPU else torch.cuda.synchronize
    stack = build_stack(
        StackConfig(ratios=RATIOS, heads=args.heads, topk=args.topk, prompt_len=args.prefix + args.chunk, decode_steps=0),
        device,
    )
    api = "KernelChoice" if hasattr(dispatch, "KernelChoice") else "before KernelChoice"
    rows = []
    for name, fn in layer_calls(stack, args).items():
        times = host_times_us(fn, args.iters, args.warmup, sync)
        rows.append(dict(call=name, median_us=statistics.median(times), p90_us=percentile(times, 0.9), iters=len(times)))

    package_dir = Path(sglang_dsv4_sparse.__file__).resolve().parents[1]
    header = run_header(str(package_dir), label=args.label, package=str(package_dir), api=api,
                        note=CPU_NOTE if CPU else "")
    print(header_line(header))
    print(f"package: {package_dir} ({api}); {args.heads} heads, top-k {args.topk}; prefill: 1 request, "
          f"{args.chunk} queries after {args.prefix} tokens; decode: {args.batch} requests at {args.prefix + args.chunk}")
    if CPU:
        print(f"NOTE: {CPU_NOTE}.")
    print_table(f"host time of one layer call, {args.iters} calls{' (' + args.label + ')' if args.label else ''}",
                ["call", "median us", "p90 us"], [(r["call"], r["median_us"], r["p90_us"]) for r in rows])
    if args.json:
        config = {k: getattr(args, k) for k in defaults}
        payload = dict(header=header, device="cpu (interpreter)" if CPU else torch.cuda.get_device_name(),
                       config=config, rows=rows)
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
