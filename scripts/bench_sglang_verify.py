#!/usr/bin/env python3
"""Verify and draft-extend A/B inside SGLang's step: this package's backend against SGLang 0.5.23's.

One CUDA-graph replay is what a speculative (EAGLE / MTP) step runs per layer
kind: the verify metadata (SGLang's, recorded in the graph, and our plan over
it) plus one window-only, one C4 and one C128 layer; a draft extend is
window-only, so its replay is the metadata plus one C0 layer. Both backends
run on the same pool, batch and query, in one process. Grid: batch 1, 8, 32,
64, 128; 2 and 4 draft tokens; context 8k and 128k; 8, 16 and 64 heads
(``--quick`` trims it). Each row also gives the key bytes our verify route
reads (window union, C128 rows once a request, C4 picks per token) and the
bytes SGLang's per-token route reads, so a missed row can be read against
the HBM copy ceiling measured in the same run.

    python scripts/bench_sglang_verify.py [--quick] [--tiny] [--breakdown] [--sweep] [--json FILE] [--markdown]

``--breakdown`` adds, per row and backend, each layer's time replayed alone
from a CUDA graph (the metadata as the step left it) and the GPU time of the
step replay's kernels (PyTorch profiler), so a missed row shows which layer
and which kernel bound it. ``--sweep`` times the verify kernel on the inputs
the ``static`` variant handed it, over launch configurations and split
counts (CUDA-graph replays of the kernel alone): the data behind
``configs.VERIFY_CONFIGS_*`` and the split rule, and the paged decode kernel
on the same rows (each draft token its own query) beside it. ``--tiny`` is a CPU plumbing
check (our backend only, eager). Exit status 4 without a GPU (and without
--tiny).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sglang_ab as ab  # noqa: E402  (its deployment, query and C4 picks; it sets up the stand-ins' path)

import torch  # noqa: E402

from sglang_dsv4_sparse.layout import TOKEN_BYTES as ROW_BYTES  # noqa: E402  (one V4 fp8 key row)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few rows")
    p.add_argument("--tiny", action="store_true", help="CPU plumbing check: tiny shapes, our backend only, eager")
    p.add_argument("--breakdown", action="store_true",
                   help="per layer (graph-replayed alone) and per kernel (profiler) GPU time of each row")
    p.add_argument("--sweep", action="store_true",
                   help="time the verify kernel's launch configs and split counts on the static variant's inputs")
    p.add_argument("--json", default=None, help="default: $OUT/bench_sglang_verify.json")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--from-json", default=None, help="print the tables of an earlier run's JSON and exit")
    return p.parse_args()


def grid(args):
    """(kind, heads, batch, draft tokens, context) rows."""
    if args.tiny:
        return [("verify", 16, 2, 3, 300), ("draft_extend", 16, 2, 2, 300)]
    if args.quick:
        verify = [(h, b, s, c) for h in (8, 64) for b in (8, 64) for s in (4,) for c in (8192, 131072)]
        drafts = [(h, b, 2, 8192) for h in (8, 64) for b in (8, 64)]
    else:
        verify = [(h, b, s, c) for h in (8, 16, 64) for b in (1, 8, 32, 64, 128) for s in (2, 4)
                  for c in (8192, 131072)]
        drafts = [(h, b, s, 8192) for h in (8, 16, 64) for b in (1, 8, 64, 128) for s in (2, 4)]
    return [("verify", *r) for r in verify] + [("draft_extend", *r) for r in drafts]


class speculative_settings:
    """SGLang's backend reads the speculative settings (draft tokens, EAGLE top-k 1: a chain) from its
    server config when it is built; a backend built in this block gets them, as a serving process with MTP
    on would (also used by ``soak_sglang.py``)."""

    def __init__(self, draft_tokens: int):
        self.draft_tokens = draft_tokens

    def __enter__(self):
        import sglang.srt.layers.attention.deepseek_v4_backend as parent

        self.parent = parent
        self.saved = parent.get_spec
        real = self.saved()
        draft_tokens = self.draft_tokens

        class Spec:
            def __getattr__(self, name):
                if name == "speculative_num_draft_tokens":
                    return draft_tokens
                if name == "speculative_eagle_topk":
                    return 1
                return getattr(real, name)

        parent.get_spec = lambda: Spec()

    def __exit__(self, *exc):
        self.parent.get_spec = self.saved


def _spec_case(dep, kind, prefix, ext):
    k = dep.kit
    return k.DSV4AttentionCase(
        name="sglang_verify_ab", backend="dsv4", forward_mode=ab._mode("TARGET_VERIFY" if kind == "verify" else "DRAFT_EXTEND_V2"),
        num_heads=ab.KERNEL_WIDTH, page_size=ab.PAGE, prefix_lens=tuple(prefix), extend_lens=tuple(ext),
    )


def spec_batch(dep, kind, bs, ntok, ctx):
    """A verify (or draft-extend) ForwardBatch: ``bs`` requests of ``ctx`` tokens whose last ``ntok`` are the
    draft (accepted) tokens, with the kit's EAGLE input on it."""
    prefix, ext = [ctx - ntok] * bs, [ntok] * bs
    fb, bases, _ = dep.batch("EXTEND", prefix, ext)
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    case = _spec_case(dep, kind, prefix, ext)
    dev = dep.device
    if kind == "verify":
        from sglang.test.kits.attention_unittest.runner_modes.speculative_target_verify_runner import (
            _make_eagle_verify_input,
        )

        fb.forward_mode = ForwardMode.TARGET_VERIFY
        # SGLang's verify batch carries the lengths before the draft tokens.
        fb.seq_lens = torch.tensor(prefix, dtype=torch.int32, device=dev)
        fb.seq_lens_cpu = torch.tensor(prefix, dtype=torch.int32)
        fb.seq_lens_sum = sum(prefix)
        fb.spec_info = _make_eagle_verify_input(case, fb, topk=1, device=dev)
    else:
        from sglang.test.kits.attention_unittest.runner_modes.speculative_draft_extend_runner import (
            _make_eagle_draft_extend_input,
        )

        fb.forward_mode = ForwardMode.DRAFT_EXTEND_V2
        fb.spec_info = _make_eagle_draft_extend_input(case, fb, device=dev)
    return fb, prefix, ext, bases


def bench_spec(dep, factory, name, kind, heads, bs, ntok, ctx, reps, breakdown=False, sweep=False):
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    from sglang_dsv4_sparse.benchmarking import events_ms

    dev = dep.device
    gen = torch.Generator(device=dev).manual_seed(3)
    ratios = ab.RATIOS if kind == "verify" else (0,)
    with speculative_settings(ntok):
        fb, prefix, ext, bases = spec_batch(dep, kind, bs, ntok, ctx)
        raw, ids = dep.c4_picks(prefix, ext, bases, gen)
        q, sink = ab._query(bs * ntok, heads, gen, dev)
        backend = ab.at_rank_heads(factory(dep.runner), heads)
    layers = [dep.layer(i, heads) for i in range(len(ratios))]
    row = {}
    with torch.no_grad(), forward_context(ForwardContext(attn_backend=backend)):
        backend.init_cuda_graph_state(max_bs=bs, max_num_tokens=bs * ntok)

        def body():
            backend.init_forward_metadata_in_graph(fb)
            if 4 in ratios:  # stands for the C4 indexer: the same copy for both backends
                backend.forward_metadata.core_attn_metadata.c4_sparse_page_indices[: bs * ntok, : ab.TOPK].copy_(ids)
            return [
                backend.forward(q=q, k=q, v=q, layer=layers[i], forward_batch=fb, compress_ratio=ratios[i],
                                save_kv_cache=False, attn_sink=sink)
                for i in range(len(ratios))
            ]

        if dev != "cuda":
            backend.init_forward_metadata(fb)
            if 4 in ratios:
                backend.forward_metadata.core_attn_metadata.c4_sparse_page_indices[: bs * ntok, : ab.TOPK].copy_(ids)
            row["step"] = events_ms(lambda: [backend.forward(q=q, k=q, v=q, layer=layers[i], forward_batch=fb,
                                                             compress_ratio=ratios[i], save_kv_cache=False,
                                                             attn_sink=sink) for i in range(len(ratios))], reps)
            row["route"] = _route(backend, heads)
            return row
        backend.init_forward_metadata_out_graph(fb, in_capture=True)
        graph, outs = ab.capture_graph(body)
        row["route"] = _route(backend, heads)
        backend.init_forward_metadata_out_graph(fb)
        graph.replay()
        torch.cuda.synchronize()
        row["out"] = [o[:, :heads].float().cpu() for o in outs]  # compared across backends below
        row["step"] = events_ms(graph.replay, max(reps, 20))
        if breakdown:
            row["layers_us"] = layer_times_us(backend, fb, q, layers, ratios, sink)
            row["kernels_us"] = kernel_times_us(graph.replay)
        if sweep and row["route"] == "verify":
            with recorded_verify_calls() as calls:
                body()
            torch.cuda.synchronize()
            row["sweep"] = sweep_verify_calls(calls, ratios)
    del graph, backend
    return row


def layer_times_us(backend, fb, q, layers, ratios, sink):
    """Each layer's forward replayed alone from a CUDA graph, on the metadata the step's replay left (us)."""
    from sglang_dsv4_sparse.benchmarking import graph_ms

    times = {}
    for i, ratio in enumerate(ratios):
        times[f"c{ratio}"] = 1e3 * graph_ms(lambda i=i: backend.forward(
            q=q, k=q, v=q, layer=layers[i], forward_batch=fb, compress_ratio=ratios[i], save_kv_cache=False,
            attn_sink=sink))
    return times


def kernel_times_us(fn, reps=5, keep=6):
    """GPU microseconds per call of ``fn`` by kernel name (PyTorch profiler; CUDA-graph replays included),
    the ``keep`` largest, the rest summed as ``other``, and the total."""
    import torch.profiler as tp

    fn()
    torch.cuda.synchronize()
    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[_kernel_label(e.name)] += e.time_range.elapsed_us() / reps
    top = dict(times.most_common(keep))
    rest = sum(times.values()) - sum(top.values())
    if rest > 0:
        top["other"] = rest
    top["total"] = sum(times.values())
    return top


def _kernel_label(name: str) -> str:
    """A kernel's name without its template arguments and parameter list."""
    for stop in ("<", "("):
        name = name.split(stop, 1)[0]
    return name.strip()[:48]


@contextlib.contextmanager
def recorded_verify_calls():
    """Record every call of the verify kernel's wrapper (``core.forward.verify_layer`` looks it up at each
    call) while in the block: ``[(args, kwargs)]``, the calls still made."""
    from sglang_dsv4_sparse.kernels.sparse_attn import verify_paged

    original = verify_paged.sparse_mla_verify_paged
    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    verify_paged.sparse_mla_verify_paged = recording
    try:
        yield calls
    finally:
        verify_paged.sparse_mla_verify_paged = original


# What --sweep tries beside the shipped lists (configs.VERIFY_CONFIGS_*): fewer warps, deeper pipelines.
SWEEP_EXTRA_CONFIGS = ((64, 4, 1), (32, 4, 1), (32, 4, 2), (32, 8, 2), (16, 4, 2), (64, 8, 2))
SWEEP_SPLITS = (None, 1, 4, 16, 64)  # None: the shipped split rule; powers of 4 keep the cells a row few


def sweep_configs():
    """The launch configurations --sweep times: the shipped lists, then ``SWEEP_EXTRA_CONFIGS``."""
    from sglang_dsv4_sparse.kernels.sparse_attn import configs as C

    shipped = list(dict.fromkeys(C.VERIFY_CONFIGS_WIDE + C.VERIFY_CONFIGS_NARROW))
    return shipped + [c for c in (C.KernelConfig(*t) for t in SWEEP_EXTRA_CONFIGS) if c not in shipped]


def sweep_verify_calls(calls, ratios, configs=None, splits_list=SWEEP_SPLITS, timer_ms=None):
    """Each recorded verify call (one a layer) timed alone over launch configs x split counts (us; by default
    CUDA-graph replays): the default's time, the best and its setting, and every cell. ``None`` in either
    list is the shipped choice."""
    from sglang_dsv4_sparse.kernels.sparse_attn import verify_paged

    if timer_ms is None:
        from sglang_dsv4_sparse.benchmarking import graph_ms

        def timer_ms(fn):
            return graph_ms(fn, rep_ms=50)

    configs = [None] + sweep_configs() if configs is None else configs
    result = {}
    for ratio, (args, kwargs) in zip(ratios, calls):
        base = {k: v for k, v in kwargs.items() if k not in ("config", "num_splits")}
        cells = {}
        for cfg in configs:
            for splits in splits_list:
                try:
                    us = 1e3 * timer_ms(lambda: verify_paged.sparse_mla_verify_paged(
                        *args, **base, config=cfg, num_splits=splits))
                except Exception as exc:  # a config that does not fit, a split count past the blocks
                    us = f"{type(exc).__name__}"
                cells[f"{cfg or 'default'}/{splits or 'rule'}"] = us
        timed = {k: v for k, v in cells.items() if isinstance(v, float)}
        best = min(timed, key=timed.get) if timed else None
        # The other way to run these rows at the real heads: each draft token a decode query of the paged
        # decode kernel (no rows shared), beside the layer SGLang runs (--breakdown's layer times).
        try:
            per_token = 1e3 * timer_ms(_decode_per_token(args, kwargs))
        except Exception as exc:
            per_token = f"{type(exc).__name__}"
        result[f"c{ratio}"] = dict(default=cells.get("default/rule"), best=best, best_us=timed.get(best),
                                   decode_per_token_us=per_token, cells=cells)
    return result


def _decode_per_token(args, kwargs):
    """The paged decode kernel on a recorded verify call's rows: each token its own query (``[T, 1, h]``)."""
    import inspect

    from sglang_dsv4_sparse.kernels.sparse_attn import sparse_mla_decode_paged
    from sglang_dsv4_sparse.kernels.sparse_attn import verify_paged

    a = inspect.signature(verify_paged.sparse_mla_verify_paged).bind(*args, **kwargs).arguments
    extra = {}
    if a.get("extra_k_cache") is not None:
        extra = dict(extra_k_cache=a["extra_k_cache"], extra_indices_in_kvcache=a["extra_indices"][:, None],
                     extra_topk_length=a.get("extra_lens"), extra_page_size=a.get("extra_page_size"))
    return lambda: sparse_mla_decode_paged(a["q"][:, None], a["swa_cache"], a["swa_indices"][:, None], a["swa_lens"],
                                           a.get("attn_sink"), page_size=a.get("swa_page_size"), **extra)


def _route(backend, heads):
    """The attention the step's layers ran: ``sglang`` (SGLang's, no plan of ours), ``plan+sglang`` (our
    plan built, SGLang's attention at these heads), ``verify`` or ``paged`` (ours)."""
    step = getattr(backend, "_dsv4_step", None)
    if step is None:
        return "sglang"
    route = backend._dsv4_policy.row_step_route(step.kind, heads)
    if route == "sglang":
        return "plan+sglang"
    return "verify" if route == "verify" and step.verify is not None else "paged"


def key_bytes(kind, bs, ntok, ctx):
    """Key bytes one replay reads on each route: SGLang's per token (window 128, C4 512, C128 ctx/128 rows
    each), ours per request for the rows its draft tokens share (window 128 + ntok - 1, C128 once)."""
    c128 = ctx // 128
    window_theirs, window_ours = bs * ntok * 128, bs * (128 + ntok - 1)
    if kind == "draft_extend":
        return window_theirs * ROW_BYTES, window_ours * ROW_BYTES
    c4 = bs * ntok * ab.TOPK
    theirs = 3 * window_theirs + c4 + bs * ntok * c128
    ours = 3 * window_ours + c4 + bs * c128
    return theirs * ROW_BYTES, ours * ROW_BYTES


def copy_ceiling_tbs(device):
    """Device-to-device copy of 1 GiB: bytes read + written per second (the run's HBM ceiling)."""
    if device != "cuda":
        return None
    from sglang_dsv4_sparse.benchmarking import events_ms

    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = events_ms(lambda: dst.copy_(src), 10)
    return 2 * src.numel() / ms / 1e9


def main() -> int:
    args = parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print_tables(saved["header"], saved["rows"], markdown=args.markdown)
        print_breakdown(saved["rows"], markdown=args.markdown)
        return 0
    device = ab.pick_device("bench_sglang_verify.py", args.tiny)
    if isinstance(device, int):
        return device
    rows_plan = grid(args)
    max_reqs = max(b for _, _, b, _, _ in rows_plan)
    max_context = max(c for *_, c in rows_plan)
    full_tokens = max(b * (-(-c // ab.PAGE) * ab.PAGE) for _, _, b, _, c in rows_plan)
    t0 = time.time()
    dep = ab.Deployment(max_reqs=max_reqs, max_context=max_context, full_tokens=full_tokens, device=device)
    print(f"deployment: {full_tokens} full-cache tokens, {max_reqs} requests, built in {time.time() - t0:.0f} s", flush=True)
    factories = ab._factories()
    # ``ours_static`` (our routes on every step: the verify kernel below 64 heads) beside ``ours`` as shipped.
    names = ("ours", "ours_static") if args.tiny else ("sglang", "ours", "ours_static")
    ceiling = copy_ceiling_tbs(device)
    results = []
    for i, (kind, heads, bs, ntok, ctx) in enumerate(rows_plan, 1):
        row = dict(kind=kind, heads=heads, bs=bs, ntok=ntok, ctx=ctx)
        row["bytes_sglang"], row["bytes_ours"] = key_bytes(kind, bs, ntok, ctx)
        for name in names:
            try:
                with ab._variant_env(name):
                    row[name] = bench_spec(dep, factories[name], name, kind, heads, bs, ntok, ctx,
                                           2 if args.tiny else 15, breakdown=args.breakdown and device == "cuda",
                                           sweep=args.sweep and name == "ours_static" and device == "cuda")
            except Exception as exc:
                traceback.print_exc()
                row[name] = dict(error=f"{type(exc).__name__}: {exc}"[:300])
            if device == "cuda":
                torch.cuda.empty_cache()
        outs = {n: row.get(n, {}).pop("out", None) for n in names}
        theirs = outs.get("sglang")
        for n in ("ours", "ours_static"):
            if theirs is not None and outs.get(n) is not None:
                key = "max_diff" if n == "ours" else "max_diff_static"
                row[key] = max(float((a - b).abs().max()) for a, b in zip(theirs, outs[n]))
        results.append(row)
        print(f"[{i}/{len(rows_plan)}, {time.time() - t0:.0f} s] {_brief(row)}", flush=True)
    from sglang_dsv4_sparse.benchmarking import run_header

    meta = run_header(ab.ROOT, packages=("sglang",))
    meta["copy_tbs"] = ceiling
    path = args.json or os.path.join(ab._default_out_dir(), "bench_sglang_verify.json")
    with open(path, "w") as f:
        json.dump(dict(header=meta, rows=results), f, indent=1)
    print(f"bench_sglang_verify.py: wrote {path}", flush=True)
    print_tables(meta, results, markdown=args.markdown)
    print_breakdown(results, markdown=args.markdown)
    return 0


def _brief(row):
    steps = [f"{n} {row[n]['step']:.3f} ({row[n].get('route')})" if "step" in row.get(n, {}) else f"{n} ERR"
             for n in ("sglang", "ours", "ours_static") if n in row]
    return f"{row['kind']} heads={row['heads']} bs={row['bs']} ntok={row['ntok']} ctx={row['ctx']}: " + ", ".join(steps)


def _cells(row, ceiling, name="ours"):
    theirs, ours = row.get("sglang", {}).get("step"), row.get(name, {}).get("step")
    ratio = f"{ours / theirs:.2f}" if theirs and ours else "-"
    pair = " / ".join("-" if v is None else f"{v:.3f}" for v in (theirs, ours))
    # Our route's key bytes over its replay time, against the copy ceiling of the same run.
    tbs = row["bytes_ours"] / ours / 1e9 if ours else None
    frac = f"{tbs:.2f} ({tbs / ceiling:.0%})" if tbs and ceiling else ("-" if tbs is None else f"{tbs:.2f}")
    diff_key = "max_diff" if name == "ours" else "max_diff_static"
    diff = f"{row[diff_key]:.4f}" if diff_key in row else "-"
    return [row["heads"], row["bs"], row["ntok"], row["ctx"], pair, ratio, row.get(name, {}).get("route", "-"),
            f"{row['bytes_sglang'] / 1e6:.1f} / {row['bytes_ours'] / 1e6:.1f}", frac, diff]


def print_tables(meta, rows, markdown=False):
    from sglang_dsv4_sparse.benchmarking import header_line

    ceiling = meta.get("copy_tbs")
    cols = ["heads", "bs", "draft", "ctx", "step ms SGLang / ours", "ratio", "our route", "key MB SGLang / ours",
            "ours TB/s (of copy)", "max |diff|"]
    print(header_line(meta) + (f"; HBM copy ceiling {ceiling:.2f} TB/s" if ceiling else ""))
    names = [n for n in ("ours", "ours_static") if any(n in r for r in rows)]
    for kind, title in (("verify", "Target verify, one CUDA-graph replay (metadata + C0, C4, C128 layer)"),
                        ("draft_extend", "Draft extend, one CUDA-graph replay (metadata + C0 layer)")):
        for name in names:
            table = [cols] + [_cells(r, ceiling, name) for r in rows if r["kind"] == kind]
            if len(table) == 1:
                continue
            label = title + ("" if name == "ours" else "; `static`: our routes on every step")
            print(("\n" if markdown else "== ") + label + (":\n" if markdown else ""))
            print("\n".join(ab._render(table, markdown)))
    print()
    for kind in ("verify", "draft_extend"):
        for name in names:
            ok = [r for r in rows if r["kind"] == kind and "step" in r.get(name, {}) and "step" in r.get("sglang", {})]
            ratios = [r[name]["step"] / r["sglang"]["step"] for r in ok]
            if not ratios:
                continue
            narrow = [r[name]["step"] / r["sglang"]["step"] for r in ok if r["heads"] < 64 and r["bs"] >= 8]
            line = (f"- {kind}, {name}: ours / SGLang {min(ratios):.2f}-{max(ratios):.2f}x, median "
                    f"{statistics.median(ratios):.2f}")
            if narrow:
                line += f"; at 8/16 heads and b >= 8: median {statistics.median(narrow):.2f}, worst {max(narrow):.2f}"
            print(line)


def print_breakdown(rows, markdown=False):
    """The --breakdown and --sweep tables, where the rows have them."""
    names = ("sglang", "ours", "ours_static")

    def triple(r, key, part):
        vals = [r.get(n, {}).get(key, {}).get(part) for n in names]
        return " / ".join("-" if v is None else f"{v:.1f}" for v in vals)

    profiled = [r for r in rows if any("layers_us" in r.get(n, {}) for n in names)]
    if profiled:
        table = [["kind", "heads", "bs", "draft", "ctx", "c0", "c4", "c128", "replay kernels",
                  "largest kernels, static"]]
        for r in profiled:
            static = r.get("ours_static", {}).get("kernels_us", {})
            largest = ", ".join(f"{k} {v:.1f}" for k, v in static.items() if k not in ("total", "other"))[:160]
            table.append([r["kind"], r["heads"], r["bs"], r["ntok"], r["ctx"], triple(r, "layers_us", "c0"),
                          triple(r, "layers_us", "c4"), triple(r, "layers_us", "c128"),
                          triple(r, "kernels_us", "total"), largest or "-"])
        print(("\n" if markdown else "== ") + "Breakdown (us, SGLang / ours / static): each layer replayed alone "
              "from a CUDA graph; the step replay's kernel time (profiler)" + (":\n" if markdown else ""))
        print("\n".join(ab._render(table, markdown)))
    swept = [r for r in rows if "sweep" in r.get("ours_static", {})]
    if swept:
        def us(v):
            return f"{v:.1f}" if isinstance(v, float) else ("-" if v is None else str(v))

        table = [["kind", "heads", "bs", "draft", "ctx", "layer", "default us", "best us", "best config/splits",
                  "decode kernel per token us"]]
        for r in swept:
            for layer, cell in r["ours_static"]["sweep"].items():
                table.append([r["kind"], r["heads"], r["bs"], r["ntok"], r["ctx"], layer, us(cell.get("default")),
                              us(cell.get("best_us")), cell.get("best") or "-", us(cell.get("decode_per_token_us"))])
        print(("\n" if markdown else "== ") + "Verify kernel alone (--sweep): the shipped launch against the best "
              "config and split count timed, and the paged decode kernel on the same rows (each draft token its "
              "own query)" + (":\n" if markdown else ""))
        print("\n".join(ab._render(table, markdown)))


if __name__ == "__main__":
    sys.exit(main())
