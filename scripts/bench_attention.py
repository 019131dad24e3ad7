#!/usr/bin/env python3
"""Sparse MLA attention on the GPU: Triton (this package) vs FlashMLA vs staged, one table.

    python scripts/bench_attention.py [--quick] [--only decode|prefill] [--check] [--sweep] [--json FILE]
    python scripts/bench_attention.py --from-json bench_attention.json [--markdown]

Decode (``flash_mla_with_kvcache`` shapes, fp8 V4 caches): SWA 128 (page 256)
plus C4 512 (page 64) at h 64, and SWA 128 + C4 1024 at h 128, for b in
{1, 8, 64, 128}.  The caches are larger than L2 (a 153 MB C4 cache and a
9.6 MB SWA cache, as in DSV4_SPEC.md) and every row is random.
  * ``triton``: ``sparse_mla_decode_paged`` (dequant fused in the attention loop).
  * ``flashmla``: ``flash_mla_with_kvcache`` with its scheduler metadata built
    once and reused, as serving does (``use_legacy=True`` on SM90).
  * ``staged``: dequantize every named row into a bf16 workspace, then
    ``sparse_mla_fwd`` (``benchmarks/staged.py``).

Prefill: h in {16, 64, 128}, topk 640, random rows of a bf16 buffer, at
(s_q, rows) = (8192, 32768), (8192, 262144) and (32768, 262144).  The 32 MB
buffer is L2-resident (the range of FlashMLA's own prefill benchmark, 8k-64k
rows, and the flat workspace of an 8k chunk at 128k context); the 256 MB one
is five times the L2 (a workspace at 1M context), where the rows come from
HBM, as the measuring rule for caches asks.
  * ``row-floor`` (once per case): ``xor_gathered_rows``
    (``benchmarks/row_gather_floor.py``) reads the same kind of rows (random
    ids) and only XORs them: the row traffic's own time, a floor under every
    prefill row of that case.
  * ``triton``: ``sparse_mla_fwd`` at the native head count.
  * ``flashmla``: ``flash_mla_sparse_fwd``; at h 16 its q is padded to 64 heads
    beforehand (the padding copy is not timed), as SGLang must on SM90.
  * ``triton-fp8``: ``sparse_mla_decode_paged`` with b = s_q, s_q = 1, reading
    the same rows from an fp8 V4 cache (page 64) instead of the bf16 buffer.

Columns: median latency (``triton.testing.do_bench``, L2 flushed before every
call, ``return_mode="median"``; decode rows are CUDA-graph replays through
``do_bench_cudagraph``, as serving runs decode, with the eager time beside
them); TFLOPS of useful work,
``2 * 2 * h * keys * 512`` per query row (Q K^T and P V, real heads only, so
FlashMLA's padded heads do not count); TB/s of key rows read,
``rows * keys * bytes_per_key`` (1024 bf16, 584 fp8); kernel launches per call
(torch.profiler); temporary memory, the ``torch.cuda.max_memory_allocated``
rise during one call minus the bytes of the returned tensors.  The copy line
times a device-to-device copy (bytes read + written) in the same run as the
bandwidth ceiling.

``--check`` compares each path with the fp32 torch reference (and FlashMLA
with ours) on small shapes before timing.  ``--sweep`` also times every
built-in launch configuration (and split counts for decode) on a few shapes,
to choose defaults.  Every row goes to ``--json FILE``, or with ``$OUT``
set to ``$OUT/bench_attention.json`` (else it is not saved).  A failing kernel prints its error in its row;
the table goes on.  ``--from-json`` prints the summary of a saved run (no GPU
needed); ``--markdown`` prints it as BENCHMARKS.md shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DRY_RUN = "--dry-run" in sys.argv
if DRY_RUN:
    # The interpreter must be on before the kernels are defined (at import).
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402

from sglang_dsv4_sparse import layout as L  # noqa: E402
from sglang_dsv4_sparse.benchmarking import (  # noqa: E402
    copy_bandwidth_tbps,
    graph_ms,
    header_line,
    markdown_table,
    median_ms,
    no_gpu,
    run_header,
    save_json,
)
from sglang_dsv4_sparse.kernels.sparse_attn import KernelConfig, sparse_mla_decode_paged, sparse_mla_fwd  # noqa: E402
from sglang_dsv4_sparse.kernels.sparse_attn import configs as launch_configs  # noqa: E402
from benchmarks.row_gather_floor import xor_gathered_rows  # noqa: E402
from benchmarks.staged import sparse_mla_decode_staged  # noqa: E402

SCALE = L.SOFTMAX_SCALE
FP8_KEY_BYTES = L.TOKEN_BYTES
BF16_KEY_BYTES = L.HEAD_DIM * 2
SWA_CACHE_BYTES = 9_600_000
C4_CACHE_BYTES = 153_000_000
PREFILL_TOPK = 640
# (s_q, kv rows): an L2-resident buffer (32 MB) and one five times the L2.
PREFILL_CASES = ((8192, 32768), (8192, 262144), (32768, 262144))
PREFILL_CASES_QUICK = ((8192, 32768), (8192, 262144))
# The --sweep runs over the large buffer: configs are chosen where rows come from HBM.
PREFILL_SWEEP_KV_ROWS = 262144

ROWS: list[dict] = []
DEV = "cpu" if DRY_RUN else "cuda"
if DRY_RUN:  # tiny shapes: exercises the script's logic on the CPU, timings meaningless
    SWA_CACHE_BYTES = 4 * L.page_bytes(L.SWA_PAGE_SIZE)
    C4_CACHE_BYTES = 40 * L.page_bytes(L.C4_PAGE_SIZE)
    PREFILL_CASES = PREFILL_CASES_QUICK = ((2, 2048),)
    PREFILL_SWEEP_KV_ROWS = 2048


# ----------------------------------------------------------------- utilities


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return (text[0] if text else type(err).__name__)[:160]


def _sync():
    if not DRY_RUN:
        torch.cuda.synchronize()


def _empty_cache():
    if not DRY_RUN:
        torch.cuda.empty_cache()


def _sm_major() -> int:
    return torch.cuda.get_device_capability()[0]


def _flash_mla():
    if DRY_RUN:
        return None, "dry run"
    try:
        import flash_mla
    except Exception as err:  # noqa: BLE001
        return None, f"flash_mla import failed: {_short(err)}"
    major = _sm_major()
    if major not in (9, 10):
        return None, f"FlashMLA sparse kernels need SM90/SM100, this is SM{major}x"
    return flash_mla, None


def _launches(fn) -> int | str:
    if DRY_RUN:
        return "-"
    try:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception as err:  # noqa: BLE001
        return f"? ({_short(err)[:40]})"


def _temp_bytes(fn) -> int:
    if DRY_RUN:
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    outputs = sum(t.untyped_storage().nbytes() for t in result if isinstance(t, torch.Tensor))
    del result
    return max(peak - outputs, 0)


def _measure(fn, rep_ms: float, count_launches: bool = True, graph: bool = False) -> dict:
    """Median ms, launches, temporary bytes; an exception becomes the row's error.

    ``graph``: time CUDA-graph replays (``do_bench_cudagraph``), as serving runs
    decode, so host time (Python wrappers, launches) is not counted; the eager
    ``do_bench`` median is kept as ``eager_ms``.
    """
    try:
        fn()  # compile / pick the config / build FlashMLA's metadata
        _sync()
        extra = {}
        if DRY_RUN:
            start = time.perf_counter()
            fn()
            ms = (time.perf_counter() - start) * 1e3
        else:
            ms = median_ms(fn, warmup_ms=max(5, rep_ms // 5), rep_ms=rep_ms)
            if graph:
                extra["eager_ms"] = ms
                ms = graph_ms(fn, rep_ms=rep_ms)
        return {
            **extra,
            "ms": ms,
            "launches": _launches(fn) if count_launches else None,
            "temp_bytes": _temp_bytes(fn),
        }
    except Exception as err:  # noqa: BLE001
        try:
            _sync()
        except Exception:  # noqa: BLE001 - a broken context fails the later rows too
            pass
        return {"error": _short(err)}


def _add(kind, shape, impl, meas, flops, key_bytes, note=""):
    row = {"kind": kind, "shape": shape, "impl": impl, "note": note, **meas}
    if "ms" in meas:
        s = meas["ms"] * 1e-3
        row["tflops"] = flops / s / 1e12
        row["tbps"] = key_bytes / s / 1e12
    ROWS.append(row)
    _print_row(row)
    return row


def _fmt_row(row) -> str:
    if "error" in row:
        body = f"ERROR {row['error']}"
    else:
        t = row["ms"]
        lat = f"{t * 1e3:9.1f} us" if t < 1 else f"{t:9.3f} ms"
        body = (
            f"{lat} {row['tflops']:7.1f} TF {row['tbps']:6.2f} TB/s "
            f"{str(row.get('launches') if row.get('launches') is not None else '-'):>4} ln {row['temp_bytes'] / 2**20:8.1f} MB"
        )
        if row.get("eager_ms") is not None:
            body += f"  (eager {row['eager_ms'] * 1e3:.1f} us)"
        if row.get("vs_flashmla"):
            body += f"  {row['vs_flashmla']}"
    note = f"  [{row['note']}]" if row.get("note") else ""
    return f"{row['kind']:8} {row['shape']:34} {row['impl']:11} {body}{note}"


def _print_row(row):
    print(_fmt_row(row), flush=True)


def _lat(row, sep: str = "") -> str:
    if row is None:
        return "-"
    if "error" in row:
        return "ERR"
    t = row["ms"]
    return f"{t * 1e3:.1f}{sep}us" if t < 1 else f"{t:.3f}{sep}ms"


def _groups(rows: list[dict]) -> dict:
    """Rows by (kind, shape), each a dict of implementation -> row."""
    groups: dict = {}
    for row in rows:
        if row["kind"] in ("decode", "prefill"):
            groups.setdefault((row["kind"], row["shape"]), {})[row["impl"]] = row
    return groups


def _summary_lines(rows: list[dict]) -> list[str]:
    """One line per shape: each implementation's latency, ours against FlashMLA, our rates."""
    lines = [
        f"{'kind':8} {'shape':28} {'triton':>10} {'flashmla':>10} {'staged':>10} {'tri-fp8':>10} "
        f"{'x fm':>6} {'TFLOPS':>7} {'TB/s':>6} {'ln':>3} {'tmp MB':>7}  config"
    ]
    for (kind, shape), impls in _groups(rows).items():
        if "*" in impls:  # a whole half failed
            lines.append(f"{kind:8} ERROR {impls['*'].get('error', '')}")
            continue
        # The row floor has no attention of its own: it fills the Triton column.
        ours, fm = impls.get("triton", impls.get("row-floor")), impls.get("flashmla")
        ratio = tflops = tbps = launches = temp = "-"
        note = ""
        if ours is not None and "ms" in ours:
            tflops, tbps = f"{ours['tflops']:.0f}", f"{ours['tbps']:.2f}"
            launches, temp = str(ours.get("launches")), f"{ours['temp_bytes'] / 2**20:.1f}"
            note = ours.get("note", "")
            if fm is not None and "ms" in fm:
                ratio = f"{ours['ms'] / fm['ms']:.2f}"
        lines.append(
            f"{kind:8} {shape:28} {_lat(ours):>10} {_lat(fm):>10} {_lat(impls.get('staged')):>10} "
            f"{_lat(impls.get('triton-fp8')):>10} {ratio:>6} {tflops:>7} {tbps:>6} {launches:>3} {temp:>7}  {note}"
        )
    return lines


def _markdown_lines(payload: dict) -> list[str]:
    """The summary as BENCHMARKS.md shows it: run header, copy ceiling, one row per shape."""
    meta = payload.get("meta", {})
    lines = [header_line(payload.get("header")) + f" Copy ceiling {meta.get('copy_tbps', float('nan')):.2f} TB/s"
             " (read + write), same run.", ""]
    head = ["shape", "Triton", "FlashMLA", "staged", "Triton fp8", "Triton / FlashMLA", "Triton TFLOPS", "temp MB",
            "Triton launch"]
    table = []
    for (kind, shape), impls in _groups(payload["rows"]).items():
        if "*" in impls:
            table.append([kind, f"ERROR {impls['*'].get('error', '')}"] + [""] * (len(head) - 2))
            continue
        ours, fm, floor = impls.get("triton"), impls.get("flashmla"), impls.get("row-floor")
        cells = [f"{kind} {shape}", _lat(ours, " "), _lat(fm, " "), _lat(impls.get("staged"), " "),
                 _lat(impls.get("triton-fp8"), " "), "-", "-", "-", "-"]
        if floor is not None:
            cells[1] = _lat(floor, " ") + (f" ({floor['tbps']:.2f} TB/s)" if "ms" in floor else "")
            cells[8] = "row-floor"
        if ours is not None and "ms" in ours:
            cells[6], cells[7] = f"{ours['tflops']:.0f}", f"{ours['temp_bytes'] / 2**20:.1f}"
            cells[8] = ours.get("note", "")
            if fm is not None and "ms" in fm:
                cells[5] = f"{ours['ms'] / fm['ms']:.2f}"
        table.append(cells)
    return lines + markdown_table(head, table)


def _ratio_notes(group: list[dict]):
    base = next((r for r in group if r["impl"] == "flashmla" and "ms" in r), None)
    if base is None:
        return
    for r in group:
        if r is not base and "ms" in r:
            r["vs_flashmla"] = f"x{r['ms'] / base['ms']:.2f} time"


# --------------------------------------------------------------------- inputs


def _random_v4_cache(num_pages: int, page_size: int, gen: torch.Generator) -> torch.Tensor:
    """Random V4 rows on the GPU: finite fp8 values, sane scales, bf16 RoPE."""
    pb = L.page_bytes(page_size)
    cache = torch.randint(0, 256, (num_pages, pb), dtype=torch.uint8, device=DEV, generator=gen)
    cache[(cache & 0x7F) == 0x7F] = 0x7E  # no fp8 NaN codes
    data = cache[:, : page_size * L.DATA_BYTES].view(num_pages, page_size, L.DATA_BYTES)
    rope = torch.randn(num_pages, page_size, L.ROPE_DIM, device=DEV, generator=gen).to(torch.bfloat16)
    data[:, :, L.NOPE_DIM :] = rope.view(torch.uint8)
    region = L.scale_region_offset(page_size)
    scales = cache[:, region : region + page_size * L.SCALE_BYTES].view(num_pages, page_size, L.SCALE_BYTES)
    scales.copy_(
        torch.randint(L.UE8M0_BIAS - 12, L.UE8M0_BIAS - 6, scales.shape, dtype=torch.uint8, device=DEV,
                      generator=gen)
    )
    return cache


def _decode_inputs(b, h, extra_topk, gen):
    swa_pages = max(SWA_CACHE_BYTES // L.page_bytes(L.SWA_PAGE_SIZE), 1)
    c4_pages = max(C4_CACHE_BYTES // L.page_bytes(L.C4_PAGE_SIZE), 1)
    swa = _random_v4_cache(swa_pages, L.SWA_PAGE_SIZE, gen)
    c4 = _random_v4_cache(c4_pages, L.C4_PAGE_SIZE, gen)
    swa_tokens, c4_tokens = swa_pages * L.SWA_PAGE_SIZE, c4_pages * L.C4_PAGE_SIZE
    # A window is 128 consecutive SWA slots at a random place; C4 rows are random.
    start = torch.randint(0, swa_tokens - L.SWA_WINDOW, (b, 1, 1), device=DEV, generator=gen)
    idx = (start + torch.arange(L.SWA_WINDOW, device=DEV)).to(torch.int32)
    xidx = torch.randint(0, c4_tokens, (b, 1, extra_topk), device=DEV, generator=gen).to(torch.int32)
    q = torch.randn(b, 1, h, L.HEAD_DIM, device=DEV, generator=gen).to(torch.bfloat16)
    sink = torch.randn(h, device=DEV, generator=gen)
    return dict(
        q=q,
        k_cache=L.flashmla_cache_view(swa, L.SWA_PAGE_SIZE),
        indices=idx,
        attn_sink=sink,
        extra_k_cache=L.flashmla_cache_view(c4, L.C4_PAGE_SIZE),
        extra_indices_in_kvcache=xidx,
        softmax_scale=SCALE,
    )


def _flashmla_decode_fn(flash_mla, kw):
    legacy = _sm_major() == 9
    meta, _ = flash_mla.get_mla_metadata()

    def run():
        return flash_mla.flash_mla_with_kvcache(
            kw["q"], kw["k_cache"], None, None, L.HEAD_DIM, meta, softmax_scale=kw["softmax_scale"],
            is_fp8_kvcache=True, indices=kw["indices"], attn_sink=kw["attn_sink"],
            extra_k_cache=kw["extra_k_cache"], extra_indices_in_kvcache=kw["extra_indices_in_kvcache"],
            use_legacy=legacy,
        )

    return run


# -------------------------------------------------------------------- benches


def copy_bandwidth():
    if DRY_RUN:
        src = torch.empty(2**20, dtype=torch.uint8)
        start = time.perf_counter()
        torch.empty_like(src).copy_(src)
        tbps = 2 * src.numel() / (time.perf_counter() - start) / 1e12
    else:
        tbps = copy_bandwidth_tbps(512 * 2**20)
    row = {"kind": "copy", "shape": "512 MiB d2d", "impl": "torch", "ms": float("nan"), "tbps": tbps, "tflops": 0.0,
           "launches": 1, "temp_bytes": 0, "note": "bytes read + written"}
    ROWS.append(row)
    print(f"copy     512 MiB device-to-device: {tbps:.2f} TB/s (bytes read + written)", flush=True)
    return tbps


def bench_decode(args, flash_mla, fm_note, gen):
    # h 16 is a TP-4 rank of DSv4-Flash: FlashMLA runs it padded to 64 heads, as serving must.
    cases = [(16, 512), (64, 512), (128, 1024)]
    batches = [1, 64] if args.quick else [1, 8, 64, 128]
    if DRY_RUN:
        cases, batches = [(64, 64), (16, 96)], [1, 2]
    for h, extra in cases:
        for b in batches:
            shape = f"b{b} h{h} swa128+c4_{extra}"
            keys = L.SWA_WINDOW + extra
            flops = 4 * h * keys * L.HEAD_DIM * b
            key_bytes = b * keys * FP8_KEY_BYTES
            try:
                kw = _decode_inputs(b, h, extra, gen)
            except Exception as err:  # noqa: BLE001
                _add("decode", shape, "inputs", {"error": _short(err)}, 0, 0)
                continue
            group = []
            meas = _measure(lambda: sparse_mla_decode_paged(**kw), args.rep_ms, graph=True)
            group.append(_add("decode", shape, "triton", meas, flops, key_bytes, _split_note(b, h, keys, kw["q"].device)))
            if flash_mla is not None:
                fkw, note = _padded_for_flashmla(kw)
                group.append(_add("decode", shape, "flashmla", _measure(_flashmla_decode_fn(flash_mla, fkw), args.rep_ms, graph=True),
                                  flops, key_bytes, note))
                del fkw
            else:
                group.append(_add("decode", shape, "flashmla", {"error": fm_note}, flops, key_bytes))
            group.append(_add("decode", shape, "staged", _measure(lambda: sparse_mla_decode_staged(**kw), args.rep_ms, graph=True),
                              flops, key_bytes))
            _ratio_notes(group)
            del kw
            _empty_cache()


def _padded_for_flashmla(kw):
    """FlashMLA's decode takes 64 or 128 heads: zero-pad q and the sink (copy untimed)."""
    h = kw["q"].shape[2]
    if h in (64, 128):
        return kw, ""
    q = kw["q"].new_zeros(kw["q"].shape[:2] + (64, L.HEAD_DIM))
    q[:, :, :h] = kw["q"]
    sink = kw["attn_sink"].new_zeros(64)
    sink[:h] = kw["attn_sink"]
    return {**kw, "q": q, "attn_sink": sink}, f"q padded {h}->64 heads (copy untimed)"


def _split_note(b, h, keys, device):
    block_h = launch_configs.decode_block_h(h, b)
    head_blocks = triton.cdiv(h, block_h)
    config_list, configs = launch_configs.decode_configs(h, block_h, b)
    key = ("decode_paged", device, config_list, L.SWA_PAGE_SIZE, L.C4_PAGE_SIZE, DRY_RUN)
    cfg = launch_configs.cached_config(key) or configs[0]
    slots = launch_configs.decode_program_slots(device, block_h)
    blocks = triton.cdiv(L.SWA_WINDOW, cfg.block_n) + triton.cdiv(keys - L.SWA_WINDOW, cfg.block_n)
    min_blocks = max(1, launch_configs.MIN_KEYS_PER_SPLIT // cfg.block_n)
    splits, _ = launch_configs.plan_splits(b, head_blocks, blocks, slots, min_blocks)
    return (f"{block_h} heads/program, {cfg}: {b * head_blocks * splits} programs, "
            f"{splits} split{'s' if splits > 1 else ''}")


def _kv_label(kv_rows):
    return f"kv{kv_rows // 1024}k"


def _prefill_ids(s_q, kv_rows, gen):
    return torch.randint(0, kv_rows, (s_q, 1, PREFILL_TOPK), device=DEV, generator=gen).to(torch.int32)


def _prefill_inputs(s_q, kv_rows, h, gen):
    idx = _prefill_ids(s_q, kv_rows, gen)
    q = torch.randn(s_q, h, L.HEAD_DIM, device=DEV, generator=gen).to(torch.bfloat16)
    sink = torch.randn(h, device=DEV, generator=gen)
    return q, idx, sink


def bench_prefill(args, flash_mla, fm_note, gen):
    cases = PREFILL_CASES_QUICK if args.quick else PREFILL_CASES
    heads = [16, 64] if args.quick or DRY_RUN else [16, 64, 128]
    legacy = not DRY_RUN and _sm_major() == 9
    for s_q, kv_rows in cases:
        kv_label = _kv_label(kv_rows)
        # One fp8 cache (page 64) holding the same rows as the bf16 buffer.
        kv_all = torch.randn(kv_rows, L.HEAD_DIM, device=DEV, generator=gen).to(torch.bfloat16)
        pages = kv_rows // L.C4_PAGE_SIZE
        fp8 = L.new_cache(pages, L.C4_PAGE_SIZE, device=DEV)
        L.quantize_into_paged_cache(fp8, torch.arange(kv_rows, device=DEV), kv_all, L.C4_PAGE_SIZE)
        kv = kv_all.view(kv_rows, 1, L.HEAD_DIM)
        # The rows alone: what gathering them costs with no attention math.
        idx = _prefill_ids(s_q, kv_rows, gen)
        _add("prefill", f"s_q{s_q} {kv_label} rows only", "row-floor",
             _measure(lambda: xor_gathered_rows(kv, idx), args.rep_ms), 0, s_q * PREFILL_TOPK * BF16_KEY_BYTES,
             "XOR of the gathered bf16 rows: a floor under any kernel's row traffic")
        del idx
        for h in heads:
            shape = f"s_q{s_q} {kv_label} h{h}"
            flops = 4 * h * PREFILL_TOPK * L.HEAD_DIM * s_q
            try:
                q, idx, sink = _prefill_inputs(s_q, kv_rows, h, gen)
            except Exception as err:  # noqa: BLE001
                _add("prefill", shape, "inputs", {"error": _short(err)}, 0, 0)
                continue
            group = []
            meas = _measure(lambda: sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=sink), args.rep_ms)
            chosen = launch_configs.cached_config(("prefill", q.device, launch_configs.block_h_for(h), DRY_RUN)) or "?"
            group.append(_add("prefill", shape, "triton", meas, flops, s_q * PREFILL_TOPK * BF16_KEY_BYTES,
                              f"{chosen}"))
            if flash_mla is not None:
                padded = max(h, 64)
                note = f"q padded {h}->{padded} heads (copy untimed)" if padded != h else ""
                try:
                    qp = q if padded == h else torch.cat([q, q.new_zeros(s_q, padded - h, L.HEAD_DIM)], 1)
                    sp = sink if padded == h else torch.cat([sink, sink.new_full((padded - h,), float("-inf"))])
                    meas = _measure(lambda: flash_mla.flash_mla_sparse_fwd(qp, kv, idx, SCALE, L.HEAD_DIM,
                                                                            attn_sink=sp, use_legacy=legacy),
                                    args.rep_ms)
                except Exception as err:  # noqa: BLE001
                    meas = {"error": _short(err)}
                group.append(_add("prefill", shape, "flashmla", meas, flops, s_q * PREFILL_TOPK * BF16_KEY_BYTES, note))
                qp = sp = None
            else:
                group.append(_add("prefill", shape, "flashmla", {"error": fm_note}, flops, 0))
            q4 = q.view(s_q, 1, h, L.HEAD_DIM)
            group.append(_add("prefill", shape, "triton-fp8",
                              _measure(lambda: sparse_mla_decode_paged(q4, L.flashmla_cache_view(fp8, L.C4_PAGE_SIZE),
                                                                       idx.view(s_q, 1, PREFILL_TOPK),
                                                                       attn_sink=sink, softmax_scale=SCALE),
                                       args.rep_ms),
                              flops, s_q * PREFILL_TOPK * FP8_KEY_BYTES, "paged fp8 cache, b = s_q"))
            _ratio_notes(group)
            del q, idx, sink, q4
            _empty_cache()
        del kv_all, fp8, kv
        _empty_cache()


# ---------------------------------------------------------------------- check


def run_check(flash_mla, gen):
    from sglang_dsv4_sparse.random_inputs import random_rows
    from sglang_dsv4_sparse.reference import (
        attention_tolerance,
        sparse_attention_reference,
        sparse_decode_paged_reference,
    )

    print("== --check: small shapes against the fp32 reference", flush=True)
    cpu_gen = torch.Generator().manual_seed(1)
    ok = True

    def report(name, got, ref, lse_got, lse_ref):
        nonlocal ok
        err = (got.float() - ref.float()).abs()
        tol = attention_tolerance(ref)  # FlashMLA's tolerance plus the bf16-P row term
        lse_err = (lse_got - lse_ref).abs().nan_to_num(0.0)
        lse_tol = 1e-5 + 8.01 / 65536 * lse_ref.abs().nan_to_num(0.0)
        passed = bool((err <= tol).all()) and bool((lse_err <= lse_tol).all())
        ok &= passed
        print(f"  {name:44} out max|err| {err.max().item():.2e}  lse max|err| {lse_err.max().item():.2e}  "
              f"{'ok' if passed else 'FAIL'}", flush=True)

    for h in (16, 64, 128):
        try:
            s_q, s_kv, topk = (2 if DRY_RUN else 64), 4096, PREFILL_TOPK
            q = torch.randn(s_q, h, L.HEAD_DIM, generator=cpu_gen).to(torch.bfloat16).to(DEV)
            kv = torch.randn(s_kv, 1, L.HEAD_DIM, generator=cpu_gen).to(torch.bfloat16).to(DEV)
            idx = torch.randint(-1, s_kv, (s_q, 1, topk), generator=cpu_gen).to(torch.int32).to(DEV)
            sink = torch.randn(h, generator=cpu_gen).to(DEV)
            out, _, lse = sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=sink)
            r_out, _, r_lse = sparse_attention_reference(q, kv, idx, SCALE, attn_sink=sink)
            report(f"sparse_mla_fwd h{h} vs reference", out, r_out, lse, r_lse)
            if flash_mla is not None and h in (64, 128):
                legacy = _sm_major() == 9
                f_out, _, f_lse = flash_mla.flash_mla_sparse_fwd(q, kv, idx, SCALE, L.HEAD_DIM, attn_sink=sink,
                                                                 use_legacy=legacy)
                report(f"sparse_mla_fwd h{h} vs flashmla", out, f_out, lse, f_lse)
        except Exception as err:  # noqa: BLE001
            ok = False
            print(f"  sparse_mla_fwd h{h}: ERROR {_short(err)}", flush=True)
    for b, h, extra in ((1, 64, 96), (1, 16, 64)) if DRY_RUN else ((4, 64, 512), (2, 128, 1024), (3, 16, 512)):
        try:
            kw = _decode_inputs(b, h, extra, gen)
            # Quantized random rows (not random bytes) so the logits are sane.
            for name, ps in (("k_cache", L.SWA_PAGE_SIZE), ("extra_k_cache", L.C4_PAGE_SIZE)):
                ids = (kw["indices"] if name == "k_cache" else kw["extra_indices_in_kvcache"]).reshape(-1).unique()
                L.quantize_into_paged_cache(kw[name], ids.long(), random_rows(ids.numel(), cpu_gen).to(DEV), ps)
            kw["indices"][0, 0, ::7] = -1
            out, lse = sparse_mla_decode_paged(**kw)
            r_out, r_lse = sparse_decode_paged_reference(
                kw["q"], kw["k_cache"], L.SWA_PAGE_SIZE, kw["indices"], None, SCALE, kw["attn_sink"],
                kw["extra_k_cache"], L.C4_PAGE_SIZE, kw["extra_indices_in_kvcache"], None,
            )
            report(f"decode_paged b{b} h{h} c4_{extra} vs reference", out, r_out, lse, r_lse)
            s_out, s_lse = sparse_mla_decode_staged(**kw)
            report(f"decode_staged b{b} h{h} c4_{extra} vs reference", s_out, r_out, s_lse, r_lse)
            if flash_mla is not None and h in (64, 128):
                f_out, f_lse = _flashmla_decode_fn(flash_mla, kw)()
                report(f"decode_paged b{b} h{h} c4_{extra} vs flashmla", out, f_out, lse, f_lse)
            del kw
        except Exception as err:  # noqa: BLE001
            ok = False
            print(f"  decode b{b} h{h}: ERROR {_short(err)}", flush=True)
    print(f"== --check {'passed' if ok else 'FAILED'}", flush=True)
    return ok


# ---------------------------------------------------------------------- sweep


def run_sweep(args, gen):
    print("== --sweep: every built-in config (and split counts) on a few shapes", flush=True)
    dec_shapes = ((1, 64, 512), (8, 64, 512), (16, 64, 512), (64, 64, 512), (128, 64, 512), (1, 128, 1024),
                  (8, 128, 1024), (128, 128, 1024), (8, 16, 512))
    pre_s_q = 8192
    if DRY_RUN:
        dec_shapes, pre_s_q = ((1, 64, 64), (2, 16, 96)), 2
    if args.only == "prefill":
        dec_shapes = ()
    for b, h, extra in dec_shapes:
        kw = _decode_inputs(b, h, extra, gen)
        keys = L.SWA_WINDOW + extra
        # Above 16 heads both head-block widths are timed: the rule in
        # decode_block_h picks between them by batch size.
        for block_h in (16,) if h <= 16 else (16, 64):
            wide = block_h == launch_configs.MAX_BLOCK_H
            configs = (launch_configs.DECODE_CONFIGS_WIDE if wide
                       else launch_configs.DECODE_CONFIGS_NARROW_FEW + launch_configs.DECODE_CONFIGS_NARROW_MANY)
            extra_dec = (KernelConfig(32, 8, 2), KernelConfig(16, 8, 2)) if wide else (KernelConfig(16, 4, 2),)
            configs = tuple(dict.fromkeys(tuple(configs) + extra_dec))
            if args.quick:
                configs = configs[:2]
            splits_options = [None] + ([1, 2, 4, 8, 16, 32] if b <= 8 else [1, 2, 4])
            if DRY_RUN or args.quick:
                splits_options = [None, 2]
            for cfg in configs:
                for ns in splits_options:
                    meas = _measure(
                        lambda: sparse_mla_decode_paged(**kw, num_splits=ns, config=cfg, block_h=block_h),
                        args.rep_ms, count_launches=False, graph=True,
                    )
                    _add("sweep-dec", f"b{b} h{h} c4_{extra}", f"h{block_h} {cfg}", meas,
                         4 * h * keys * L.HEAD_DIM * b, b * keys * FP8_KEY_BYTES,
                         f"num_splits={ns if ns is not None else 'rule'}")
        del kw
        _empty_cache()
    extra_cfgs = (KernelConfig(32, 8, 2), KernelConfig(64, 8, 3), KernelConfig(64, 4, 3), KernelConfig(32, 4, 4),
                  KernelConfig(64, 4, 2), KernelConfig(16, 4, 3), KernelConfig(32, 8, 3),
                  KernelConfig(16, 4, 1, prefetch=True), KernelConfig(32, 8, 1, prefetch=True))
    for h in () if args.only == "decode" else ((16, 64) if DRY_RUN else (16, 64, 128)):
        q, idx, sink = _prefill_inputs(pre_s_q, PREFILL_SWEEP_KV_ROWS, h, gen)
        kv = torch.randn(PREFILL_SWEEP_KV_ROWS, 1, L.HEAD_DIM, device=DEV, generator=gen).to(torch.bfloat16)
        configs = launch_configs.PREFILL_CONFIGS_WIDE if h > 32 else launch_configs.PREFILL_CONFIGS_H16
        for cfg in tuple(configs) + tuple(c for c in extra_cfgs if c not in configs):
            meas = _measure(lambda: sparse_mla_fwd(q, kv, idx, SCALE, attn_sink=sink, config=cfg), args.rep_ms,
                            count_launches=False)
            _add("sweep-pre", f"s_q{pre_s_q} {_kv_label(PREFILL_SWEEP_KV_ROWS)} h{h}", str(cfg), meas,
                 4 * h * PREFILL_TOPK * L.HEAD_DIM * pre_s_q, pre_s_q * PREFILL_TOPK * BF16_KEY_BYTES)
        del q, kv, idx, sink
        _empty_cache()


# ----------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--only", choices=("decode", "prefill"), help="run one half only")
    parser.add_argument("--check", action="store_true", help="correctness spot-check before timing")
    parser.add_argument("--sweep", action="store_true", help="also time every launch config (slow)")
    parser.add_argument("--rep-ms", type=float, default=60.0, help="do_bench repetition time per measurement")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the script's logic on tiny shapes on the CPU (Triton interpreter); no real timings")
    parser.add_argument("--json", metavar="FILE",
                        help="write every row here (default: $OUT/bench_attention.json when OUT is set, "
                             "else not saved)")
    parser.add_argument("--from-json", metavar="FILE", help="print the summary of a saved bench_attention.json and exit")
    parser.add_argument("--markdown", action="store_true", help="print the summary as BENCHMARKS.md shows it")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        if args.markdown:
            print("\n".join(_markdown_lines(saved)))
        else:
            meta = saved.get("meta", {})
            print(f"== summary ({meta.get('device', '?')}; copy ceiling {meta.get('copy_tbps', float('nan')):.2f} TB/s)")
            print("\n".join(_summary_lines(saved["rows"])))
        return 0

    if not DRY_RUN and not torch.cuda.is_available():
        return no_gpu("bench_attention.py", " (or --dry-run)")
    t0 = time.time()
    if DRY_RUN:
        device_name, sms = "CPU (Triton interpreter, dry run)", launch_configs.DEFAULT_NUM_SMS
    else:
        props = torch.cuda.get_device_properties(0)
        device_name, sms = props.name, props.multi_processor_count
    print(f"device {device_name} ({sms} SMs), torch {torch.__version__}, triton {triton.__version__}", flush=True)
    flash_mla, fm_note = _flash_mla()
    print(f"flash_mla: {'available' if flash_mla else fm_note}", flush=True)
    gen = torch.Generator(device=DEV)
    gen.manual_seed(0)

    check_ok = True
    if args.check:
        check_ok = run_check(flash_mla, gen)

    print("== timings", flush=True)
    copy_tbps = copy_bandwidth()
    for half, fn in (("decode", bench_decode), ("prefill", bench_prefill)):
        if args.only in (None, half):
            try:
                fn(args, flash_mla, fm_note, gen)
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                ROWS.append({"kind": half, "shape": "*", "impl": "*", "error": _short(err)})
    if args.sweep:
        try:
            run_sweep(args, gen)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            ROWS.append({"kind": "sweep", "shape": "*", "impl": "*", "error": _short(err)})

    print()
    print(f"== summary ({device_name}; copy ceiling {copy_tbps:.2f} TB/s)")
    for line in _summary_lines(ROWS):
        print(line)
    print(f"(TFLOPS = 4*h_real*keys*512 per row / time; TB/s = key bytes read / time; ln = launches per call; "
          f"MB = temporary memory; x = time / FlashMLA's; total {time.time() - t0:.0f} s)")

    meta = {"device": device_name, "sms": sms, "torch": torch.__version__,
            "triton": triton.__version__, "copy_tbps": copy_tbps, "check_ok": check_ok}
    payload = {"header": run_header(str(Path(__file__).resolve().parents[1])), "meta": meta, "rows": ROWS}
    if args.markdown:
        print("\n".join(_markdown_lines(payload)))
    save_json("bench_attention.json", payload, args.json)
    return 0 if check_ok else 1


if __name__ == "__main__":
    sys.exit(main())
